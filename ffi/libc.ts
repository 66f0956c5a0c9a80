/**
 * The one libc symbol table of lazyd, opened lazily with `Deno.dlopen`.
 *
 * Every parameter carries its C type in a comment. Conventions:
 *
 * - 64-bit integer parameters (`long`, `size_t`, `off_t`, `unsigned long`)
 *   are `i64`/`u64`/`usize`; Deno types them as `bigint`, and their results
 *   always come back as `bigint` (Deno 2 never returns a `number` for them).
 *   The wrappers in the other `ffi/` modules convert to `number` with a
 *   `Number.isSafeInteger` check.
 * - `pointer` parameters take a `Deno.PointerObject` (or `null`). Structs
 *   that the kernel reads or writes, and above all structs that contain
 *   further pointers (`msghdr`, `iovec`, `uffdio_copy.src`), live in
 *   `mmap`'d memory (see `buffer.ts`) so their addresses never change.
 * - `buffer` parameters take a `Uint8Array`; its address is only used for
 *   the duration of the (synchronous) call.
 * - Variadic functions (`syscall`, `ioctl`, `open`, `fcntl`) are declared
 *   with fixed parameters. That is sound on x86_64 System V for integer and
 *   pointer arguments: a variadic callee finds them in the same registers,
 *   and `%al` (the vector-register count that libffi does not set) only
 *   decides whether the callee spills `%xmm` registers it never reads.
 *
 * All symbols are synchronous (`nonblocking: false`) except
 * `epoll_wait_nonblocking`, which runs on a Deno worker thread and therefore
 * cannot report `errno` (see `epoll.ts`).
 *
 * @module
 */

/** The libc symbols lazyd uses, with their C signatures. */
export const SYMBOLS = {
  /** `long syscall(long number, ...)`; for syscalls without a libc wrapper. */
  syscall: {
    parameters: [
      "i64", // long number
      "i64", // long a1
      "i64", // long a2
      "i64", // long a3
      "i64", // long a4
      "i64", // long a5
      "i64", // long a6
    ],
    result: "i64", // long
    nonblocking: false,
  },
  /** `int ioctl(int fd, unsigned long request, ...)`; the arg is a struct. */
  ioctl: {
    parameters: [
      "i32", // int fd
      "u64", // unsigned long request
      "pointer", // void *arg
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int socket(int domain, int type, int protocol)` */
  socket: {
    parameters: [
      "i32", // int domain
      "i32", // int type
      "i32", // int protocol
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int socketpair(int domain, int type, int protocol, int sv[2])` */
  socketpair: {
    parameters: [
      "i32", // int domain
      "i32", // int type
      "i32", // int protocol
      "buffer", // int sv[2]
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen)` */
  bind: {
    parameters: [
      "i32", // int sockfd
      "buffer", // const struct sockaddr *addr
      "u32", // socklen_t addrlen
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int listen(int sockfd, int backlog)` */
  listen: {
    parameters: [
      "i32", // int sockfd
      "i32", // int backlog
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags)` */
  accept4: {
    parameters: [
      "i32", // int sockfd
      "pointer", // struct sockaddr *addr (NULL)
      "pointer", // socklen_t *addrlen (NULL)
      "i32", // int flags
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen)` */
  connect: {
    parameters: [
      "i32", // int sockfd
      "buffer", // const struct sockaddr *addr
      "u32", // socklen_t addrlen
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int shutdown(int sockfd, int how)` */
  shutdown: {
    parameters: [
      "i32", // int sockfd
      "i32", // int how
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen)` */
  getsockopt: {
    parameters: [
      "i32", // int sockfd
      "i32", // int level
      "i32", // int optname
      "pointer", // void *optval
      "pointer", // socklen_t *optlen
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen)` */
  setsockopt: {
    parameters: [
      "i32", // int sockfd
      "i32", // int level
      "i32", // int optname
      "buffer", // const void *optval
      "u32", // socklen_t optlen
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags)` */
  recvmsg: {
    parameters: [
      "i32", // int sockfd
      "pointer", // struct msghdr *msg
      "i32", // int flags
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /** `ssize_t sendmsg(int sockfd, const struct msghdr *msg, int flags)` */
  sendmsg: {
    parameters: [
      "i32", // int sockfd
      "pointer", // const struct msghdr *msg
      "i32", // int flags
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /** `ssize_t send(int sockfd, const void *buf, size_t len, int flags)` */
  send: {
    parameters: [
      "i32", // int sockfd
      "buffer", // const void *buf
      "usize", // size_t len
      "i32", // int flags
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /** `ssize_t recv(int sockfd, void *buf, size_t len, int flags)` */
  recv: {
    parameters: [
      "i32", // int sockfd
      "buffer", // void *buf
      "usize", // size_t len
      "i32", // int flags
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /**
   * `int getaddrinfo(const char *node, const char *service,
   * const struct addrinfo *hints, struct addrinfo **res)`
   */
  getaddrinfo: {
    parameters: [
      "buffer", // const char *node
      "buffer", // const char *service
      "buffer", // const struct addrinfo *hints
      "buffer", // struct addrinfo **res
    ],
    result: "i32", // int (0 or an EAI_* code)
    nonblocking: false,
  },
  /** `void freeaddrinfo(struct addrinfo *res)` */
  freeaddrinfo: {
    parameters: [
      "pointer", // struct addrinfo *res
    ],
    result: "void",
    nonblocking: false,
  },
  /** `const char *gai_strerror(int errcode)` */
  gai_strerror: {
    parameters: [
      "i32", // int errcode
    ],
    result: "pointer", // const char *
    nonblocking: false,
  },
  /** `ssize_t read(int fd, void *buf, size_t count)` */
  read: {
    parameters: [
      "i32", // int fd
      "buffer", // void *buf
      "usize", // size_t count
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /** `ssize_t write(int fd, const void *buf, size_t count)` */
  write: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *buf
      "usize", // size_t count
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /** `ssize_t pread64(int fd, void *buf, size_t count, off64_t offset)` */
  pread64: {
    parameters: [
      "i32", // int fd
      "buffer", // void *buf
      "usize", // size_t count
      "i64", // off64_t offset
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /** `int close(int fd)` */
  close: {
    parameters: [
      "i32", // int fd
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int open(const char *pathname, int flags, ... mode_t mode)` */
  open: {
    parameters: [
      "buffer", // const char *pathname (NUL-terminated)
      "i32", // int flags
      "u32", // mode_t mode
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int fcntl(int fd, int cmd, ... long arg)` */
  fcntl: {
    parameters: [
      "i32", // int fd
      "i32", // int cmd
      "i64", // long arg
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int epoll_create1(int flags)` */
  epoll_create1: {
    parameters: [
      "i32", // int flags
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)` */
  epoll_ctl: {
    parameters: [
      "i32", // int epfd
      "i32", // int op
      "i32", // int fd
      "pointer", // struct epoll_event *event
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)` */
  epoll_wait: {
    parameters: [
      "i32", // int epfd
      "pointer", // struct epoll_event *events
      "i32", // int maxevents
      "i32", // int timeout (ms, -1 = forever)
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /**
   * `epoll_wait` again, run on a worker thread (returns a Promise). errno of
   * that thread is not readable from JS.
   */
  epoll_wait_nonblocking: {
    name: "epoll_wait",
    parameters: [
      "i32", // int epfd
      "pointer", // struct epoll_event *events
      "i32", // int maxevents
      "i32", // int timeout (ms, -1 = forever)
    ],
    result: "i32", // int
    nonblocking: true,
  },
  /** `int eventfd(unsigned int initval, int flags)` */
  eventfd: {
    parameters: [
      "u32", // unsigned int initval
      "i32", // int flags
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int kill(pid_t pid, int sig)` */
  kill: {
    parameters: [
      "i32", // pid_t pid
      "i32", // int sig
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `uid_t getuid(void)` */
  getuid: {
    parameters: [],
    result: "u32", // uid_t
    nonblocking: false,
  },
  /** `pid_t getpid(void)` */
  getpid: {
    parameters: [],
    result: "i32", // pid_t
    nonblocking: false,
  },
  /** `void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)` */
  mmap: {
    parameters: [
      "pointer", // void *addr
      "usize", // size_t length
      "i32", // int prot
      "i32", // int flags
      "i32", // int fd
      "i64", // off_t offset
    ],
    result: "pointer", // void * (MAP_FAILED = (void *)-1)
    nonblocking: false,
  },
  /** `int munmap(void *addr, size_t length)` */
  munmap: {
    parameters: [
      "pointer", // void *addr
      "usize", // size_t length
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int madvise(void *addr, size_t length, int advice)` */
  madvise: {
    parameters: [
      "pointer", // void *addr
      "usize", // size_t length
      "i32", // int advice
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int *__errno_location(void)`: the calling thread's errno. */
  __errno_location: {
    parameters: [],
    result: "pointer", // int *
    nonblocking: false,
  },
  /** `char *strerror(int errnum)` */
  strerror: {
    parameters: [
      "i32", // int errnum
    ],
    result: "pointer", // char *
    nonblocking: false,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The typed symbol functions of {@linkcode SYMBOLS}. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Libc | undefined;

/**
 * The libc symbols, opening `libc.so.6` on first use. The library stays
 * open for the life of the process (it is libc; closing it would gain
 * nothing).
 */
export function libc(): Libc {
  return (lib ??= Deno.dlopen("libc.so.6", SYMBOLS).symbols);
}
