/*
 * ceiling.c - the fastest page-server client this benchmark can think of,
 * as a reference for `deno task bench --mode remote --ceiling`.
 *
 * It does only what any lazy-pages daemon must do per byte, in C, with
 * nothing else running: ask CRIU's page server for every lazy page
 * (PS_IOV_GET, pipelined, REQ_PAGES pages a request, DEPTH requests on the
 * wire), recv() each reply into a small buffer and UFFDIO_COPY it into a
 * userfaultfd-registered region of its own. No restore, no restored
 * process, no faults, no bookkeeping: its time is a floor for the transfer
 * on this machine, not a daemon.
 *
 * Build: gcc -O2 -o ceiling ceiling.c
 * Usage: ceiling ADDRESS PORT REQ_PAGES DEPTH < RANGES
 *        RANGES: lines "PID VADDR PAGES" (decimal), the PE_LAZY entries
 * Prints one line: {"pages":N,"transferS":T,"closeS":C} and exits 0, or a
 * message on stderr and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define PS_IOV_GET 7
#define PS_IOV_CLOSE 0x1023

struct psi {
	uint32_t cmd, nr_pages;
	uint64_t vaddr, dst_id;
};

/* One request: where its pages go in the local region. */
struct req {
	struct psi h;
	size_t off;
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void recv_all(int s, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = recv(s, (char *)buf + got, n - got, 0);
		if (k <= 0)
			die(k == 0 ? "page server closed" : "recv");
		got += k;
	}
}

static void send_all(int s, const void *buf, size_t n)
{
	if (send(s, buf, n, MSG_NOSIGNAL) != (ssize_t)n)
		die("send");
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: ceiling ADDRESS PORT REQ_PAGES DEPTH < RANGES\n");
		return 1;
	}
	unsigned long per = strtoul(argv[3], NULL, 10), depth = strtoul(argv[4], NULL, 10);
	if (per == 0 || depth == 0)
		return fprintf(stderr, "REQ_PAGES and DEPTH must be positive\n"), 1;

	size_t cap = 1024, n = 0, total = 0;
	struct req *q = malloc(cap * sizeof(*q));
	unsigned long pid, vaddr, pages;
	while (scanf("%lu %lu %lu", &pid, &vaddr, &pages) == 3) {
		while (pages > 0) {
			unsigned long k = pages < per ? pages : per;
			if (n + 1 >= cap && !(q = realloc(q, (cap *= 2) * sizeof(*q))))
				die("realloc");
			q[n].h = (struct psi){ PS_IOV_GET, k, vaddr, pid };
			q[n++].off = total * PAGE;
			total += k;
			vaddr += k * PAGE;
			pages -= k;
		}
	}
	if (total == 0)
		return fprintf(stderr, "no ranges on stdin\n"), 1;

	char *dst = mmap(NULL, total * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *buf = mmap(NULL, per * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (dst == MAP_FAILED || buf == MAP_FAILED)
		die("mmap");
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = {
		.range = { (unsigned long)dst, total * PAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg))
		die("userfaultfd");

	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	if (s < 0 || inet_pton(AF_INET, argv[1], &a.sin_addr) != 1 || connect(s, (void *)&a, sizeof(a)))
		die("connect");
	int one = 1;
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	double t0 = now();
	size_t sent = 0, done = 0, copied = 0;
	while (done < n) {
		while (sent < n && sent - done < depth)
			send_all(s, &q[sent++].h, sizeof(struct psi));
		struct req *r = &q[done];
		struct psi h;
		recv_all(s, &h, sizeof(h));
		if (h.vaddr != r->h.vaddr || h.dst_id != r->h.dst_id || h.nr_pages < 1 || h.nr_pages > r->h.nr_pages)
			return fprintf(stderr, "unexpected reply\n"), 1;
		recv_all(s, buf, h.nr_pages * PAGE);
		struct uffdio_copy c = {
			.dst = (unsigned long)dst + r->off,
			.src = (unsigned long)buf,
			.len = h.nr_pages * PAGE,
		};
		if (ioctl(uffd, UFFDIO_COPY, &c))
			die("UFFDIO_COPY");
		copied += h.nr_pages;
		if (h.nr_pages < r->h.nr_pages) {
			/* A short reply (the end of one of the server's runs): ask
			 * for the rest at the end of the queue. */
			if (n + 1 >= cap && !(q = realloc(q, (cap *= 2) * sizeof(*q))))
				die("realloc");
			r = &q[done];
			q[n].h = r->h;
			q[n].h.nr_pages -= h.nr_pages;
			q[n].h.vaddr += h.nr_pages * PAGE;
			q[n++].off = r->off + h.nr_pages * PAGE;
		}
		done++;
	}
	double t1 = now();
	/* The end of the session as lazyd does it: CLOSE, half-close, status. */
	struct psi bye = { PS_IOV_CLOSE, 0, 0, 0 };
	int32_t status;
	send_all(s, &bye, sizeof(bye));
	shutdown(s, SHUT_WR);
	recv_all(s, &status, sizeof(status));
	double t2 = now();
	close(s);
	if (copied != total)
		return fprintf(stderr, "copied %zu of %zu pages\n", copied, total), 1;
	printf("{\"pages\":%zu,\"transferS\":%.6f,\"closeS\":%.6f}\n", total, t1 - t0, t2 - t1);
	return 0;
}
