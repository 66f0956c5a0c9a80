/*
 * workload.c - lazyd's memory-verifying test process.
 *
 * Build: gcc -O2 -pthread -o workload workload.c
 * Usage: workload SIZE_MIB LOGFILE [-c CHILDREN] [-z] [-t THREADS] [-p PERMILLE]
 *                 [-e] [-r] [-l] [-i INTERVAL_MS]
 *
 * Every 8-byte word of the anonymous buffer holds a function of its index,
 * the process's salt and the page's generation, so any page that was lost,
 * zero-filled or delivered to the wrong address is detected.
 *
 *   -c N   fork N children before "ready"; each owns a buffer of its own
 *          (different salt) and verifies it when the parent does
 *   -z     also leave one exited, unreaped child (a zombie in the dump)
 *   -t N   the final pass runs in N threads, each on a slice (concurrent faults)
 *   -p P   a dirty round rewrites P/1000 of the pages (pre-copy tests)
 *   -e     before the final pass, exercise the userfaultfd events a restored
 *          process can cause: mremap grow, swap of two regions with
 *          MREMAP_FIXED, MADV_DONTNEED, munmap, then fork (the child
 *          verifies everything at its current place)
 *   -r     visit pages in a random order in the final pass and report the
 *          first-touch latency distribution
 *   -l     report the first-touch latency distribution of the final pass
 *          in any order (-r implies it)
 *
 * Signals: SIGUSR1 = one dirty round; SIGUSR2 = final pass, then exit 0 (all
 * memory right) or 1; SIGTERM = exit 3.
 * Log lines (O_APPEND, one write each): "ready pid=.. pages=..", "dirty round=K
 * pages=M", "final ok pass_ms=F p50_us=.. p99_us=..", "BAD ...", "exit CODE".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define WPP (PAGE / 8)

static volatile sig_atomic_t want_dirty, want_final, want_term;
static uint64_t *mem;
static unsigned long npages, nrounds, permille = 100, nthreads = 1;
static uint64_t salt;
static int logfd = -1, events, randomized, latency;
static volatile unsigned long bad;

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int selected(unsigned long p, unsigned long k)
{
	return mix64(p ^ ((uint64_t)k << 40) ^ salt ^ 0x0ddba11cafef00d5ULL) % 1000 < permille;
}

static unsigned long page_gen(unsigned long p)
{
	for (unsigned long k = nrounds; k >= 1; k--)
		if (selected(p, k))
			return k;
	return 0;
}

static uint64_t word_val(uint64_t w, uint64_t gen)
{
	return mix64(w ^ (gen << 44) ^ salt);
}

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void logf_(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	buf[n++] = '\n';
	if (write(logfd, buf, n) != n)
		_exit(4);
}

static void fill_page(uint64_t *at, unsigned long p, unsigned long gen)
{
	for (unsigned long i = 0; i < WPP; i++)
		at[i] = word_val(p * WPP + i, gen);
}

/* Checks the page that holds original page p's data, now at address at. */
static int check_page(const uint64_t *at, unsigned long p)
{
	unsigned long gen = page_gen(p);
	for (unsigned long i = 0; i < WPP; i++) {
		uint64_t want = word_val(p * WPP + i, gen);
		if (at[i] != want) {
			if (__sync_fetch_and_add(&bad, 1) < 3)
				logf_("BAD pid=%d page=%lu word=%lu got=0x%016" PRIx64 " want=0x%016" PRIx64,
				      getpid(), p, i, at[i], want);
			return 1;
		}
	}
	return 0;
}

static int check_zero(const uint64_t *at, unsigned long pages, const char *what)
{
	for (unsigned long i = 0; i < pages * WPP; i++)
		if (at[i]) {
			__sync_fetch_and_add(&bad, 1);
			logf_("BAD pid=%d %s page=%lu not zero", getpid(), what, i / WPP);
			return 1;
		}
	return 0;
}

/* Pages that the events scenario moved or dropped: where page p lives now,
 * or NULL when it must not be checked at its original place. */
static uint64_t *where[2];
static unsigned long ev_lo[2], ev_hi[2]; /* swapped regions X and Y */
static unsigned long skip_lo = ~0UL, skip_hi = ~0UL; /* dropped pages */

static const uint64_t *page_addr(unsigned long p)
{
	for (int r = 0; r < 2; r++)
		if (where[r] && p >= ev_lo[r] && p < ev_hi[r])
			return where[r] + (p - ev_lo[r]) * WPP;
	return mem + p * WPP;
}

struct slice {
	unsigned long lo, hi;
	unsigned long *order;
	double *lat;
};

static void *verify_slice(void *arg)
{
	struct slice *s = arg;
	for (unsigned long k = s->lo; k < s->hi; k++) {
		unsigned long p = s->order ? s->order[k] : k;
		if (p >= skip_lo && p < skip_hi)
			continue;
		const uint64_t *at = page_addr(p);
		if (s->lat) {
			double t = mono();
			(void)*(volatile const uint64_t *)at;
			s->lat[k] = mono() - t;
		}
		check_page(at, p);
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The scenarios of CRIU's uffd-events test, on lazy memory that may not have
 * arrived yet. Runs in the restored process right before the final pass. */
static void exercise_events(void)
{
	unsigned long q = npages / 16;
	pid_t child;
	int st;

	if (q < 2)
		return;
	/* swap X = pages [8q, 9q) and Y = [10q, 11q) through a temporary place */
	size_t len = q * PAGE;
	uint64_t *x = mem + 8 * q * WPP, *y = mem + 10 * q * WPP;
	void *tmp = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (tmp == MAP_FAILED || mremap(x, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, tmp) == MAP_FAILED ||
	    mremap(y, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, x) == MAP_FAILED ||
	    mremap(tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, y) == MAP_FAILED) {
		bad++;
		logf_("BAD mremap swap: %s", strerror(errno));
		return;
	}
	ev_lo[0] = 8 * q, ev_hi[0] = 9 * q, where[0] = y;   /* X's data now at y */
	ev_lo[1] = 10 * q, ev_hi[1] = 11 * q, where[1] = x; /* Y's data now at x */
	/* grow Z = [12q, 13q) to twice its size: it moves; the new tail is zero */
	uint64_t *z = mem + 12 * q * WPP;
	uint64_t *nz = mremap(z, len, 2 * len, MREMAP_MAYMOVE);
	if (nz == MAP_FAILED) {
		bad++;
		logf_("BAD mremap grow: %s", strerror(errno));
		return;
	}
	/* Z is checked here, wherever it went; the final pass skips it. */
	for (unsigned long p = 0; p < q; p++)
		check_page(nz + p * WPP, 12 * q + p);
	check_zero(nz + q * WPP, q, "grown tail");
	munmap(nz, 2 * len);
	/* MADV_DONTNEED on [14q, 15q): reads as zero afterwards */
	uint64_t *d = mem + 14 * q * WPP;
	madvise(d, len, MADV_DONTNEED);
	check_zero(d, q, "dontneed");
	/* munmap [15q, 16q) */
	munmap(mem + 15 * q * WPP, len);
	skip_lo = 12 * q;
	skip_hi = 16 * q; /* Z was checked above, the rest is zero or gone */
	/* fork last: the child inherits what is still lazy, moved and dropped
	 * ranges included, and checks all of it at the current places */
	child = fork();
	if (child == 0) {
		struct slice all = { 0, npages, NULL, NULL };
		verify_slice(&all);
		_exit(bad ? 1 : 0);
	}
	if (child < 0 || waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st)) {
		bad++;
		logf_("BAD fork child failed status=%d", st);
	}
	logf_("events done q=%lu", q);
}

static int final_pass(void)
{
	pthread_t th[64];
	struct slice sl[64];
	unsigned long *order = NULL;
	double *lat = NULL;
	double t0;

	if (events)
		exercise_events();
	if (randomized) {
		order = malloc(npages * sizeof(*order));
		for (unsigned long i = 0; i < npages; i++)
			order[i] = i;
		for (unsigned long i = npages - 1; i > 0; i--) {
			unsigned long j = mix64(i ^ salt) % (i + 1), t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
	}
	if (randomized || latency)
		lat = calloc(npages, sizeof(*lat));
	t0 = mono();
	for (unsigned long t = 0; t < nthreads; t++) {
		sl[t] = (struct slice){ npages * t / nthreads, npages * (t + 1) / nthreads, order, lat };
		if (nthreads == 1)
			verify_slice(&sl[t]);
		else
			pthread_create(&th[t], NULL, verify_slice, &sl[t]);
	}
	if (nthreads > 1)
		for (unsigned long t = 0; t < nthreads; t++)
			pthread_join(th[t], NULL);
	double ms = (mono() - t0) * 1e3;
	if (lat) {
		qsort(lat, npages, sizeof(*lat), cmp_double);
		logf_("latency p50_us=%.1f p99_us=%.1f max_us=%.1f", lat[npages / 2] * 1e6,
		      lat[npages * 99 / 100] * 1e6, lat[npages - 1] * 1e6);
	}
	if (!bad)
		logf_("final ok pid=%d pass_ms=%.1f pages=%lu", getpid(), ms, npages);
	return bad ? 1 : 0;
}

static void on_sig(int sig)
{
	if (sig == SIGUSR1)
		want_dirty = 1;
	else if (sig == SIGUSR2)
		want_final = 1;
	else
		want_term = 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: workload SIZE_MIB LOGFILE [-c N] [-z] [-t N] [-p PERMILLE] [-e] [-r] [-l] [-i MS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned long size_mib, children = 0, interval_ms = 100;
	int zombie = 0;
	pid_t kids[64];
	struct sigaction sa;

	if (argc < 3)
		usage();
	size_mib = strtoul(argv[1], NULL, 0);
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "-c") && i + 1 < argc)
			children = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "-t") && i + 1 < argc)
			nthreads = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "-p") && i + 1 < argc)
			permille = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "-i") && i + 1 < argc)
			interval_ms = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "-z"))
			zombie = 1;
		else if (!strcmp(argv[i], "-e"))
			events = 1;
		else if (!strcmp(argv[i], "-r"))
			randomized = 1;
		else if (!strcmp(argv[i], "-l"))
			latency = 1;
		else
			usage();
	}
	if (!size_mib || children > 64 || nthreads < 1 || nthreads > 64 || permille > 1000)
		usage();
	logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0) {
		perror("open log");
		return 2;
	}
	if (getsid(0) != getpid())
		setsid(); /* CRIU dumps a session leader without --shell-job */

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sig;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (zombie && fork() == 0)
		_exit(0);
	/* Children get their own salt and buffer; fork before allocating so no
	 * memory is shared copy-on-write between the dumped processes. */
	unsigned long id = 0;
	for (unsigned long c = 0; c < children; c++) {
		pid_t k = fork();
		if (k == 0) {
			id = c + 1;
			children = 0;
			break;
		}
		kids[c] = k;
	}
	salt = mix64(0x5eed0123456789abULL + id);
	npages = size_mib * (1024 * 1024 / PAGE);
	mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		logf_("mmap failed: %s", strerror(errno));
		return 2;
	}
	/* THP would make the kernel track and deliver 2 MiB at a time. */
	madvise(mem, npages * PAGE, MADV_NOHUGEPAGE);
	for (unsigned long p = 0; p < npages; p++)
		fill_page(mem + p * WPP, p, 0);
	logf_("ready pid=%d id=%lu pages=%lu", getpid(), id, npages);

	for (;;) {
		if (want_term) {
			logf_("exit 3");
			return 3;
		}
		if (want_dirty) {
			unsigned long cnt = 0;
			want_dirty = 0;
			nrounds++;
			for (unsigned long p = 0; p < npages; p++)
				if (selected(p, nrounds))
					fill_page(mem + p * WPP, p, nrounds), cnt++;
			for (unsigned long c = 0; c < children; c++)
				kill(kids[c], SIGUSR1);
			logf_("dirty round=%lu pid=%d pages=%lu", nrounds, getpid(), cnt);
		}
		if (want_final) {
			for (unsigned long c = 0; c < children; c++)
				kill(kids[c], SIGUSR2);
			int code = final_pass();
			for (unsigned long c = 0; c < children; c++) {
				int st = 0;
				if (waitpid(kids[c], &st, 0) != kids[c] || !WIFEXITED(st) || WEXITSTATUS(st)) {
					logf_("BAD child %d status=%d", kids[c], st);
					code = 1;
				}
			}
			logf_("exit %d pid=%d", code, getpid());
			return code;
		}
		struct timespec ts = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
}
