/*
 * rfake-spank-exec: the first program of every task of a step started with
 * srun --rfake-image. The SPANK plugin (rfake_spank.c) made it the task's
 * argv[0] and left in the environment rfake's path, its arguments up to the
 * image and the task's own argv[0]; this execs
 *
 *     rfake ARG_0 ... ARG_{n-1} ORIGINAL-ARGV0 ARGV[1] ...
 *
 * after removing those variables, so the payload never sees them.
 * On a failure it prints one line and exits 70 (EX_SOFTWARE: the plugin and
 * the helper disagree) or 127 (rfake cannot be executed), as a shell would.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ARGS 256

static void fail(int code, const char *what, const char *detail)
{
	fprintf(stderr, "rfake-spank-exec[%d]: error: %s%s%s\n", (int) getpid(),
		what, detail ? ": " : "", detail ? detail : "");
	exit(code);
}

int main(int argc, char **argv)
{
	const char *rfake = getenv("RFAKE_SPANK_RFAKE");
	const char *count = getenv("RFAKE_SPANK_ARGC");
	const char *argv0 = getenv("RFAKE_SPANK_ARGV0");
	char *end = NULL, var[64], **args;
	long n;
	int k = 0;

	if (!rfake || !count || !argv0)
		fail(70, "not started by the rfake SPANK plugin "
		     "(RFAKE_SPANK_RFAKE, RFAKE_SPANK_ARGC, RFAKE_SPANK_ARGV0 unset)",
		     NULL);
	n = strtol(count, &end, 10);
	if (*end || n < 1 || n > MAX_ARGS)
		fail(70, "bad RFAKE_SPANK_ARGC", count);
	args = calloc((size_t) n + (size_t) argc + 2, sizeof *args);
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
	args[k++] = strdup(argv0);
	for (int i = 1; i < argc; i++)
		args[k++] = argv[i];
	args[k] = NULL;
	unsetenv("RFAKE_SPANK_RFAKE");
	unsetenv("RFAKE_SPANK_ARGC");
	unsetenv("RFAKE_SPANK_ARGV0");
	execv(args[0], args);
	fail(errno == ENOENT ? 127 : 126, args[0], strerror(errno));
	return 127;
}
