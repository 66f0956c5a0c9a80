/*
 * lazyd launcher: the front of dist/lazyd in its self-contained mode.
 *
 * dist/lazyd is this small static program with two zstd frames and a
 * trailer appended:
 *
 *   [launcher ELF][runtime.zst][bundle.zst][struct trailer]
 *
 * The runtime is the pinned Deno binary, the bundle is lazyd as one ES
 * module. At start the launcher makes sure both are unpacked in a cache
 * directory (once per content hash) and then exec()s
 * `deno run <flags> <bundle> <user args...>`. Exec, not fork: the process
 * the user started becomes Deno, so exit codes and signals need no relaying
 * and the warm start costs only an execve more than `deno run`.
 *
 * Cache directories, first usable wins: $LAZYD_CACHE_DIR,
 * $XDG_CACHE_HOME/lazyd, $HOME/.cache/lazyd (if HOME is ours),
 * /tmp/lazyd-$EUID, /dev/shm/lazyd-$EUID. Each must be a directory owned by us that nobody
 * else can write to (the shared ones could otherwise be planted). Files are
 * unpacked to a private temporary name, fsync()ed and rename()d into place,
 * so the final name only ever holds complete content: concurrent first runs
 * race harmlessly (the last rename wins with identical bytes) and need no
 * lock. A file counts as ready when it is a regular file of the right size,
 * owned by us and not writable by others; the zstd frame checksum verified
 * the bytes when it was unpacked.
 *
 * When no directory is both writable and executable (read-only HOME,
 * noexec /tmp), the runtime is unpacked into a memfd and executed from
 * there (execveat AT_EMPTY_PATH). The bundle then goes to a writable
 * (noexec is fine, it is only read) cache directory or, failing that, to a
 * second memfd that stays open across exec and is read as /proc/self/fd/N.
 *
 * Deno gets the user's environment with DENO_DIR pointing into the cache
 * directory (its code cache), DENO_NO_UPDATE_CHECK=1 and LAZYD_EXE, the
 * path of dist/lazyd itself. Unpacked files are named by content hash and
 * never deleted: a new bundle adds a small file, a new Deno version a new
 * runtime; removing the directory is always safe.
 *
 * LAZYD_LAUNCHER_TRACE=1 prints what the launcher decides on stderr.
 * The launcher never downloads anything; it needs only Linux and /proc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zstd.h>

#include "launcher_args.h" /* generated: DENO_ARGS, from permissions.ts */

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U /* Linux 6.3+: ask for an executable memfd */
#endif

#define MAGIC "LAZYDPK1"

/* One appended payload; all numbers little-endian (x86_64 native). */
struct payload {
  uint64_t off;   /* offset of the zstd frame in dist/lazyd */
  uint64_t zlen;  /* its compressed length */
  uint64_t size;  /* its decompressed length */
  char name[64];  /* cache file name, e.g. deno-2.9.6-<hash>; NUL-padded */
};

/* The last bytes of dist/lazyd. */
struct trailer {
  struct payload runtime;
  struct payload bundle;
  char magic[8];
};

_Static_assert(sizeof(struct trailer) == 184, "trailer layout");

static int trace;
static int self_fd = -1;
static struct trailer tr;
extern char **environ;

static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("lazyd launcher: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

#define TRACE(...) \
  do {             \
    if (trace) say(__VA_ARGS__); \
  } while (0)

static _Noreturn void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("lazyd launcher: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(127); /* like a shell's "cannot execute" */
}

static int valid_name(const char *n) {
  /* A plain file name: no path tricks from a damaged trailer. */
  return n[0] != '\0' && n[0] != '.' && memchr(n, '\0', 64) != NULL &&
         strchr(n, '/') == NULL;
}

static void read_trailer(const char *argv0) {
  self_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (self_fd < 0 && strchr(argv0, '/')) /* no /proc: try argv[0] */
    self_fd = open(argv0, O_RDONLY | O_CLOEXEC);
  if (self_fd < 0) die("cannot open own executable: %s", strerror(errno));
  struct stat st;
  if (fstat(self_fd, &st) != 0) die("fstat: %s", strerror(errno));
  uint64_t size = (uint64_t)st.st_size;
  if (size < sizeof tr ||
      pread(self_fd, &tr, sizeof tr, (off_t)(size - sizeof tr)) !=
          (ssize_t)sizeof tr ||
      memcmp(tr.magic, MAGIC, 8) != 0)
    die("no payload found: this file is damaged or truncated");
  const struct payload *ps[2] = {&tr.runtime, &tr.bundle};
  for (int i = 0; i < 2; i++) {
    const struct payload *p = ps[i];
    if (p->zlen == 0 || p->size == 0 || p->off > size - sizeof tr ||
        p->zlen > size - sizeof tr - p->off || !valid_name(p->name))
      die("payload table is damaged: this file is damaged or truncated");
  }
}

/* Unpacks payload p into the empty file fd (a cache temp file or a memfd). */
static int unpack(const struct payload *p, int fd) {
  int err = posix_fallocate(fd, 0, (off_t)p->size); /* ENOSPC now, not SIGBUS later */
  if (err) {
    errno = err;
    return -1;
  }
  long pg = sysconf(_SC_PAGESIZE);
  off_t aoff = (off_t)p->off & ~(off_t)(pg - 1);
  size_t delta = (size_t)((off_t)p->off - aoff);
  char *src = mmap(NULL, p->zlen + delta, PROT_READ, MAP_PRIVATE, self_fd, aoff);
  if (src == MAP_FAILED) return -1;
  void *dst = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (dst == MAP_FAILED) {
    err = errno;
    munmap(src, p->zlen + delta);
    errno = err;
    return -1;
  }
  madvise(src, p->zlen + delta, MADV_SEQUENTIAL);
  /* One-shot decompression straight into the destination: no window
   * buffer (the frames use a long window) and the frame checksum is
   * verified. */
  size_t r = ZSTD_decompress(dst, p->size, src + delta, p->zlen);
  munmap(src, p->zlen + delta);
  munmap(dst, p->size);
  if (ZSTD_isError(r) || r != p->size) {
    say("payload %s does not decompress (%s): this file is damaged",
        p->name, ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short");
    errno = EIO;
    return -1;
  }
  return 0;
}

/* A file already in the cache that we can trust. */
static int ready(int dirfd, const struct payload *p, mode_t mode) {
  struct stat st;
  return fstatat(dirfd, p->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISREG(st.st_mode) && (uint64_t)st.st_size == p->size &&
         st.st_uid == geteuid() && (st.st_mode & 022) == 0 &&
         (st.st_mode & mode) == mode;
}

/* Makes dir/p->name hold payload p; 0 when it does. */
static int ensure(int dirfd, const char *dir, const struct payload *p,
                  mode_t mode) {
  if (ready(dirfd, p, mode)) return 0;
  char tmp[96];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p->name, (long)getpid());
  unlinkat(dirfd, tmp, 0); /* a leftover of a crashed run with our pid */
  int fd = openat(dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  if (unpack(p, fd) != 0 || fchmod(fd, mode) != 0 || fsync(fd) != 0) {
    int err = errno;
    close(fd);
    unlinkat(dirfd, tmp, 0);
    errno = err;
    return -1;
  }
  close(fd); /* before exec: an open writer would make execve fail ETXTBSY */
  if (renameat(dirfd, tmp, dirfd, p->name) != 0) {
    int err = errno;
    unlinkat(dirfd, tmp, 0);
    errno = err;
    return -1;
  }
  fsync(dirfd);
  TRACE("unpacked %s/%s", dir, p->name);
  return 0;
}

/* mkdir -p with mode 0700; returns the final mkdir's errno (EEXIST: 0). */
static int mkdirs(const char *path) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return ENAMETOOLONG;
  for (char *s = buf + 1; *s; s++) {
    if (*s == '/') {
      *s = '\0';
      mkdir(buf, 0700);
      *s = '/';
    }
  }
  return mkdir(buf, 0700) == 0 || errno == EEXIST ? 0 : errno;
}

/* Opens a cache directory we own and only we can write; -1 otherwise. */
static int open_cache(const char *dir) {
  int mkerr = mkdirs(dir);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    TRACE("cache %s: %s", dir, strerror(mkerr ? mkerr : errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 022)) {
    TRACE("cache %s: not ours alone, skipped", dir);
    close(fd);
    return -1;
  }
  return fd;
}

/* buf = a/b; a path too long for PATH_MAX is not worth handling. */
static void path2(char *buf, const char *a, const char *b) {
  if (snprintf(buf, PATH_MAX, "%s/%s", a, b) >= PATH_MAX)
    die("path too long: %s/%s", a, b);
}

static int noexec(int dirfd) {
  struct statvfs sv;
  return fstatvfs(dirfd, &sv) == 0 && (sv.f_flag & ST_NOEXEC);
}

static char *self_path(const char *argv0) {
  static char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = '\0';
    return buf;
  }
  return realpath(argv0, buf) ? buf : (char *)argv0;
}

/* Replaces this process with Deno; returns only if execve failed. */
static void run_deno(int runtime_fd, const char *runtime_path,
                     const char *bundle, const char *deno_dir, int argc,
                     char **argv) {
  size_t nd = sizeof DENO_ARGS / sizeof DENO_ARGS[0];
  char **args = calloc(nd + (size_t)argc + 3, sizeof *args);
  size_t n = 0, ne = 0;
  while (environ[ne]) ne++;
  char **env = calloc(ne + 4, sizeof *env);
  if (!args || !env) die("out of memory");
  /* A fixed argv[0]: Deno must not guess a role from the file's name. */
  args[n++] = "lazyd";
  for (size_t i = 0; i < nd; i++) args[n++] = (char *)DENO_ARGS[i];
  args[n++] = (char *)bundle;
  for (int i = 1; i < argc; i++) args[n++] = argv[i];
  args[n] = NULL;

  /* The user's environment, minus what we set: Deno's cache goes next to
   * the runtime, update checks are pointless, and LAZYD_EXE tells lazyd
   * where its own executable is (Deno.execPath() names the runtime). */
  static char dd[PATH_MAX + 16], exe[PATH_MAX + 16];
  n = 0;
  for (size_t i = 0; i < ne; i++) {
    if (strncmp(environ[i], "DENO_DIR=", 9) == 0 ||
        strncmp(environ[i], "DENO_NO_UPDATE_CHECK=", 21) == 0 ||
        strncmp(environ[i], "LAZYD_EXE=", 10) == 0)
      continue;
    env[n++] = environ[i];
  }
  if (deno_dir) {
    snprintf(dd, sizeof dd, "DENO_DIR=%s", deno_dir);
    env[n++] = dd;
  }
  env[n++] = "DENO_NO_UPDATE_CHECK=1";
  snprintf(exe, sizeof exe, "LAZYD_EXE=%s", self_path(argv[0]));
  env[n++] = exe;
  env[n] = NULL;

  fflush(stderr);
  if (runtime_path) {
    TRACE("exec %s %s", runtime_path, bundle);
    execve(runtime_path, args, env);
  } else {
    TRACE("exec memfd %s", bundle);
    /* The memfd is close-on-exec: fine for an ELF, the kernel keeps its
     * own reference to the executable. */
    execveat(runtime_fd, "", args, env, AT_EMPTY_PATH);
  }
  TRACE("exec failed: %s", strerror(errno));
  free(args);
  free(env);
}

static int memfd(const char *name, unsigned flags) {
  int fd = memfd_create(name, flags | MFD_ALLOW_SEALING | MFD_EXEC);
  if (fd < 0 && errno == EINVAL) /* kernel before 6.3: no MFD_EXEC */
    fd = memfd_create(name, flags | MFD_ALLOW_SEALING);
  return fd;
}

static int unpack_memfd(const struct payload *p, unsigned flags) {
  int fd = memfd(p->name, flags);
  if (fd < 0) die("memfd_create: %s", strerror(errno));
  if (unpack(p, fd) != 0) die("cannot unpack %s: %s", p->name, strerror(errno));
  /* Sealed: nothing can change the code between here and exec. */
  fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  return fd;
}

int main(int argc, char **argv) {
  trace = getenv("LAZYD_LAUNCHER_TRACE") != NULL;
  if (argc < 1) die("no argv[0]");
  read_trailer(argv[0]);

  char cand[5][PATH_MAX];
  int nc = 0;
  const char *e;
  if ((e = getenv("LAZYD_CACHE_DIR")) && e[0] == '/' && strlen(e) < PATH_MAX)
    strcpy(cand[nc++], e);
  if ((e = getenv("XDG_CACHE_HOME")) && e[0] == '/')
    path2(cand[nc++], e, "lazyd");
  /* Only our own HOME: root with another user's HOME (sudo) must not leave
   * a root-owned directory in that user's cache. */
  struct stat hs;
  if ((e = getenv("HOME")) && e[0] == '/' && stat(e, &hs) == 0 &&
      hs.st_uid == geteuid())
    path2(cand[nc++], e, ".cache/lazyd");
  snprintf(cand[nc++], PATH_MAX, "/tmp/lazyd-%ld", (long)geteuid());
  snprintf(cand[nc++], PATH_MAX, "/dev/shm/lazyd-%ld", (long)geteuid());

  static char runtime[PATH_MAX], bundle[PATH_MAX], deno_dir[PATH_MAX];
  const char *data_dir = NULL; /* writable, maybe noexec: bundle + DENO_DIR */
  for (int i = 0; i < nc; i++) {
    int dfd = open_cache(cand[i]);
    if (dfd < 0) continue;
    const char *d = cand[i];
    if (!noexec(dfd) && ensure(dfd, d, &tr.runtime, 0700) == 0 &&
        ensure(dfd, d, &tr.bundle, 0600) == 0) {
      path2(runtime, d, tr.runtime.name);
      path2(bundle, d, tr.bundle.name);
      path2(deno_dir, d, "deno");
      close(dfd);
      run_deno(-1, runtime, bundle, deno_dir, argc, argv);
      /* exec refused (e.g. a noexec we could not see): keep it as data */
      if (!data_dir) data_dir = d;
      continue;
    }
    if (!data_dir && ensure(dfd, d, &tr.bundle, 0600) == 0) data_dir = d;
    else TRACE("cache %s: unusable (%s)", d, noexec(dfd) ? "noexec" : strerror(errno));
    close(dfd);
  }

  /* No executable cache: run the runtime from memory. */
  TRACE("no executable cache directory; running from memfd");
  int rfd = unpack_memfd(&tr.runtime, MFD_CLOEXEC);
  if (data_dir) {
    path2(bundle, data_dir, tr.bundle.name);
    path2(deno_dir, data_dir, "deno");
  } else {
    /* Not close-on-exec: Deno opens it as /proc/self/fd/N after exec (and
     * so do children it spawns inherit it; it is sealed, so harmless). */
    int bfd = unpack_memfd(&tr.bundle, 0);
    snprintf(bundle, sizeof bundle, "/proc/self/fd/%d", bfd);
  }
  run_deno(rfd, NULL, bundle, data_dir ? deno_dir : NULL, argc, argv);
  die("cannot execute the Deno runtime from memory: %s", strerror(errno));
}
