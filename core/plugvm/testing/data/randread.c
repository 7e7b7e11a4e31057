/* randread: random O_DIRECT reads with several requests in flight, for bench/disk.py
 * (fio's libaio engine with iodepth=N, without fio's dozen shared libraries).
 * Built static by plugvm.testing.guest_image into /bin/randread.
 *
 *   randread DEVICE BLOCK DEPTH SECONDS
 *
 * Keeps DEPTH reads of BLOCK bytes each in flight on DEVICE through Linux native AIO
 * (io_submit), each at a block-aligned offset drawn at random over the whole device,
 * resubmitting each as it completes, for SECONDS by the guest's CLOCK_MONOTONIC.
 * Prints one line, "OPS SECONDS": the reads completed and the time they took.
 *
 * Exit status 0 on success; 1 with one line on stderr when a call fails or a read is short.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 256

static void die(const char *what)
{
	fprintf(stderr, "randread: %s: %s\n", what, strerror(errno));
	exit(1);
}

static unsigned long number(const char *text, const char *what, unsigned long max)
{
	char *end;
	unsigned long value;

	errno = 0;
	value = strtoul(text, &end, 10);
	if (errno || *end || end == text || value == 0 || value > max) {
		fprintf(stderr, "randread: %s %s is not a number in 1..%lu\n", what, text, max);
		exit(2);
	}
	return value;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* xorshift64*: the offsets need only be spread evenly, and the same for every VMM. */
static uint64_t state = 0x9E3779B97F4A7C15ull;

static uint64_t next_random(void)
{
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return state * 0x2545F4914F6CDD1Dull;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: randread DEVICE BLOCK DEPTH SECONDS\n");
		return 2;
	}
	unsigned long block = number(argv[2], "BLOCK", 1ul << 20);
	unsigned long depth = number(argv[3], "DEPTH", MAX_DEPTH);
	unsigned long seconds = number(argv[4], "SECONDS", 3600);
	if (block % 512) {
		fprintf(stderr, "randread: BLOCK %lu is not a multiple of 512\n", block);
		return 2;
	}
	int fd = open(argv[1], O_RDONLY | O_DIRECT);
	if (fd < 0)
		die(argv[1]);
	uint64_t size;
	struct stat st;
	if (fstat(fd, &st) < 0)
		die("fstat");
	if (S_ISREG(st.st_mode))
		size = st.st_size;          /* an image file: how the host-side unit test runs it */
	else if (ioctl(fd, BLKGETSIZE64, &size) < 0)
		die("BLKGETSIZE64");
	uint64_t blocks = size / block;
	if (blocks == 0) {
		fprintf(stderr, "randread: %s is smaller than one block\n", argv[1]);
		return 1;
	}
	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, depth, &ctx) < 0)
		die("io_setup");

	static struct iocb iocbs[MAX_DEPTH];
	struct iocb *list[MAX_DEPTH];
	struct io_event events[MAX_DEPTH];
	char *buffers;
	if (posix_memalign((void **)&buffers, 4096, depth * block))
		die("posix_memalign");
	for (unsigned long i = 0; i < depth; i++) {
		iocbs[i].aio_fildes = fd;
		iocbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
		iocbs[i].aio_buf = (uint64_t)(uintptr_t)(buffers + i * block);
		iocbs[i].aio_nbytes = block;
		iocbs[i].aio_data = i;
	}

	double start = now(), end = start + seconds;
	unsigned long ops = 0, inflight = 0, ready = depth;
	for (unsigned long i = 0; i < depth; i++)
		list[i] = &iocbs[i];
	for (;;) {
		/* Offer every free slot again unless time is up; then drain what is in flight. */
		if (ready && now() < end) {
			for (unsigned long i = 0; i < ready; i++)
				list[i]->aio_offset = (next_random() % blocks) * block;
			long n = syscall(SYS_io_submit, ctx, ready, list);
			if (n < 0)
				die("io_submit");
			if ((unsigned long)n != ready) {
				fprintf(stderr, "randread: io_submit took %ld of %lu\n", n, ready);
				return 1;
			}
			inflight += ready;
			ready = 0;
		}
		if (inflight == 0)
			break;
		long got = syscall(SYS_io_getevents, ctx, 1, MAX_DEPTH, events, NULL);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			die("io_getevents");
		}
		for (long i = 0; i < got; i++) {
			if (events[i].res != (int64_t)block) {
				errno = events[i].res < 0 ? (int)-events[i].res : EIO;
				die("read");
			}
			list[ready++] = &iocbs[events[i].data];
		}
		inflight -= got;
		ops += got;
	}
	printf("%lu %.3f\n", ops, now() - start);
	return 0;
}
