/*
 * rfake-spank-exec: the rfake SPANK plugin's helper for named containers
 * (--rfake-name; see rfake_spank.c and docs/slurm-mpi.md), two modes:
 *
 *   rfake-spank-exec --hold SOCKET   (the holder, started by the plugin on
 *     each node, detached, with the report pipe on fd 3) binds the abstract
 *     socket SOCKET (one holder per user, job, name, node and image), runs
 *     `rfake ARGS... /.rfake-spank/hold --wait` as a rank of the named
 *     container, with rfake's arguments from the plugin's variables
 *     (RFAKE_SPANK_RFAKE, RFAKE_SPANK_ARGC, RFAKE_SPANK_ARG_i), so that its
 *     keeper outlives the steps; copies rfake's output to fd 3 until the
 *     payload says it is in, and then waits: for SIGTERM (the plugin's job
 *     epilog sends it), which it passes on, or for rfake's end.
 *   rfake-spank-exec --wait          (inside the container, bound at
 *     /.rfake-spank/hold: this file is linked statically so that it runs in
 *     any image) says it is in and waits for a signal.
 *
 * On a failure it prints one line and exits 70 (EX_SOFTWARE: the plugin and
 * the helper disagree) or 71 (a system call failed).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 256
/* The line the payload prints once it runs inside the container. */
#define READY "rfake-spank-hold: ready\n"
/* How long the holder waits for that line. */
#define READY_TIMEOUT_S 120

static void fail(int code, const char *what, const char *detail)
{
	fprintf(stderr, "rfake-spank-exec[%d]: error: %s%s%s\n", (int) getpid(),
		what, detail ? ": " : "", detail ? detail : "");
	exit(code);
}

/*
 * rfake's argv from the plugin's variables, then `tail` (argc entries),
 * removing the variables from the environment.
 */
static char **rfake_argv(char **tail, int tail_n)
{
	const char *rfake = getenv("RFAKE_SPANK_RFAKE");
	const char *count = getenv("RFAKE_SPANK_ARGC");
	char *end = NULL, var[64], **args;
	long n;
	int k = 0;

	if (!rfake || !count)
		fail(70, "not started by the rfake SPANK plugin "
		     "(RFAKE_SPANK_RFAKE, RFAKE_SPANK_ARGC unset)", NULL);
	n = strtol(count, &end, 10);
	if (*end || n < 1 || n > MAX_ARGS)
		fail(70, "bad RFAKE_SPANK_ARGC", count);
	args = calloc((size_t) n + (size_t) tail_n + 2, sizeof *args);
	if (!args)
		fail(70, "out of memory", NULL);
	args[k++] = strdup(rfake);
	for (long i = 0; i < n; i++) {
		const char *v;
		snprintf(var, sizeof var, "RFAKE_SPANK_ARG_%ld", i);
		if (!(v = getenv(var)))
			fail(70, "missing variable", var);
		args[k++] = strdup(v);
		unsetenv(var);
	}
	for (int i = 0; i < tail_n; i++)
		args[k++] = tail[i];
	args[k] = NULL;
	unsetenv("RFAKE_SPANK_RFAKE");
	unsetenv("RFAKE_SPANK_ARGC");
	unsetenv("RFAKE_SPANK_ARGV0");
	return args;
}

static volatile sig_atomic_t child_pid;

static void pass_on(int sig)
{
	(void) sig;
	if (child_pid > 0)
		kill((pid_t) child_pid, SIGTERM);
}

static int hold(const char *name)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	size_t len = strlen(name);
	int s, out[2], report = 3, ready = 0;
	char *tail[] = { "/.rfake-spank/hold", "--wait" };
	char **args = rfake_argv(tail, 2), buf[4096], seen[sizeof READY] = "";
	time_t deadline = time(NULL) + READY_TIMEOUT_S;
	struct sigaction sa = { .sa_handler = pass_on };

	if (len + 1 > sizeof addr.sun_path)
		fail(70, "socket name too long", name);
	memcpy(addr.sun_path + 1, name, len);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		fail(71, "socket", strerror(errno));
	if (bind(s, (struct sockaddr *) &addr,
		 (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + len))) {
		/* Another holder of this container was quicker: it holds. */
		if (errno == EADDRINUSE) {
			(void) !write(report, READY, strlen(READY));
			return 0;
		}
		fail(71, "bind", strerror(errno));
	}
	if (listen(s, 16))
		fail(71, "listen", strerror(errno));
	if (pipe2(out, O_CLOEXEC))
		fail(71, "pipe", strerror(errno));
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	pid_t pid = fork();
	if (pid < 0)
		fail(71, "fork", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		close(report);
		signal(SIGPIPE, SIG_DFL);
		execv(args[0], args);
		fprintf(stderr, "rfake-spank-exec: %s: %s\n", args[0], strerror(errno));
		_exit(127);
	}
	child_pid = pid;
	close(out[1]);
	for (;;) {
		struct pollfd p[2] = { { out[0], POLLIN, 0 }, { s, POLLIN, 0 } };
		int status;
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (p[0].revents) {
			ssize_t n = read(out[0], buf, sizeof buf);
			if (n <= 0) {
				/* rfake ended (or closed its output): leave. */
				close(out[0]);
				break;
			}
			if (!ready) {
				(void) !write(report, buf, (size_t) n);
				/* The last bytes seen, to find READY across reads. */
				for (ssize_t i = 0; i < n; i++) {
					memmove(seen, seen + 1, sizeof seen - 2);
					seen[sizeof seen - 2] = buf[i];
					if (!strcmp(seen, READY)) {
						ready = 1;
						close(report);
						break;
					}
				}
			}
		}
		if (p[1].revents) {
			int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0)
				close(c);
		}
		if (waitpid(pid, &status, WNOHANG) == pid)
			return 0;
		if (!ready && time(NULL) > deadline) {
			const char *m = "rfake-spank-exec: the named container was "
				"not ready within 120 s\n";
			(void) !write(report, m, strlen(m));
			kill(pid, SIGKILL);
			break;
		}
	}
	waitpid(pid, NULL, 0);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--wait")) {
		/* Inside the container: in, until a signal ends it. */
		fputs(READY, stdout);
		fflush(stdout);
		for (;;)
			pause();
	}
	if (argc == 3 && !strcmp(argv[1], "--hold"))
		return hold(argv[2]);
	fail(70, "usage: rfake-spank-exec --hold SOCKET | --wait "
	     "(the rfake SPANK plugin starts it)", NULL);
	return 70;
}
