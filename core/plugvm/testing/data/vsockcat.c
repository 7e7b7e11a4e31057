/* vsockcat: the test guest's AF_VSOCK client and server (busybox has none).
 * Built static by plugvm.testing.guest_image into /bin/vsockcat.
 *
 *   vsockcat listen PORT       accept one stream on PORT; what it sends goes to stdout
 *   vsockcat echo PORT         accept streams on PORT forever (a process each); send back what comes
 *   vsockcat connect CID PORT  connect to CID:PORT; stdin goes to it (then a half-close),
 *                              what it sends goes to stdout, both at once, until it closes
 *
 * Exit status 0 on success; 1 with one line on stderr when a call fails.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static void die(const char *what)
{
	fprintf(stderr, "vsockcat: %s: %s\n", what, strerror(errno));
	exit(1);
}

static unsigned int number(const char *text, const char *what)
{
	char *end;
	unsigned long value;

	errno = 0;
	value = strtoul(text, &end, 10);
	if (errno || *end || end == text || value > 0xFFFFFFFFul) {
		fprintf(stderr, "vsockcat: %s %s is not a number\n", what, text);
		exit(2);
	}
	return (unsigned int)value;
}

static int write_all(int fd, const char *buf, ssize_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= n;
	}
	return 0;
}

/* Copy from one fd to another until EOF. */
static void copy(int from, int to)
{
	char buf[65536];

	for (;;) {
		ssize_t n = read(from, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("read");
		if (n == 0)
			return;
		if (write_all(to, buf, n) < 0)
			die("write");
	}
}

static int listener(unsigned int port)
{
	struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
	int s = socket(AF_VSOCK, SOCK_STREAM, 0);

	if (s < 0)
		die("socket");
	if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("bind");
	if (listen(s, 64) < 0)
		die("listen");
	return s;
}

static int accept_one(int s)
{
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c >= 0)
			return c;
		if (errno != EINTR)
			die("accept");
	}
}

/* Both directions at once, so a peer that echoes never waits on us. */
static void duplex(int s)
{
	struct pollfd fds[2] = { { .fd = 0, .events = POLLIN }, { .fd = s, .events = POLLIN } };
	char buf[65536];

	while (fds[1].fd >= 0) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (fds[0].revents) {
			ssize_t n = read(0, buf, sizeof(buf));
			if (n > 0) {
				if (write_all(s, buf, n) < 0)
					die("send");
			} else if (n == 0 || errno != EINTR) {
				shutdown(s, SHUT_WR);
				fds[0].fd = -1;
			}
		}
		if (fds[1].revents) {
			ssize_t n = read(s, buf, sizeof(buf));
			if (n > 0) {
				if (write_all(1, buf, n) < 0)
					die("write");
			} else if (n == 0) {
				fds[1].fd = -1;
			} else if (errno != EINTR) {
				die("recv");
			}
		}
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "listen")) {
		int s = listener(number(argv[2], "port"));
		int c = accept_one(s);
		close(s);
		copy(c, 1);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "echo")) {
		int s = listener(number(argv[2], "port"));
		signal(SIGCHLD, SIG_IGN);	/* no zombies */
		for (;;) {
			int c = accept_one(s);
			pid_t pid = fork();
			if (pid == 0) {
				close(s);
				copy(c, c);
				_exit(0);
			}
			if (pid < 0)
				perror("vsockcat: fork");
			close(c);
		}
	}
	if (argc == 4 && !strcmp(argv[1], "connect")) {
		struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = number(argv[2], "cid"),
					    .svm_port = number(argv[3], "port") };
		int s = socket(AF_VSOCK, SOCK_STREAM, 0);
		if (s < 0)
			die("socket");
		if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0)
			die("connect");
		duplex(s);
		return 0;
	}
	fprintf(stderr, "usage: vsockcat listen PORT | echo PORT | connect CID PORT\n");
	return 2;
}
