/*
 * rfake_spank.c: a Slurm SPANK plugin that runs every task of a job step
 * inside an rfake container: `srun --rfake-image=IMAGE CMD` does what
 * `srun rfake exec IMAGE CMD` does, with the ranks of one node sharing one
 * container (rfake's join).
 *
 * How a task enters the container (see docs/slurm-mpi.md, "The SPANK
 * plugin"): slurmstepd forks each task, and the child runs, in this order
 * (Slurm 22.05, src/slurmd/slurmstepd/task.c, exec_task): the MPI plugin's
 * task hook (PMIx variables), task_g_pre_launch (CPU binding, cgroup),
 * slurm_spank_task_init (here), the TaskProlog scripts, TMPDIR,
 * set_user_limits, and execve(argv[0], argv, env). This plugin changes
 * only argv[0]: it becomes rfake, which takes `exec --join ... IMAGE
 * ORIGINAL-ARGV0` from variables the plugin left in the task's environment
 * (src/spank.rs) and removes them. Everything slurmstepd does for the
 * task still happens, on the host, in the same process: the CPU binding and
 * cgroup (inherited by rfake and the payload), the PMIx environment (passed
 * into the container as with rfake exec), the task prologs and the limits.
 * The argv array cannot grow (slurmstepd owns it), hence the variables.
 *
 * The batch script (sbatch) and the extern step run on the host; the steps
 * they start inherit the options (Slurm passes a job's SPANK options to the
 * sruns inside it through the environment).
 *
 * Site options, in plugstack.conf after the plugin's path:
 *   rfake=PATH      the rfake binary (default: rfake in the task's PATH)
 *   helper=PATH     rfake-spank-exec, for named containers (default
 *                   /usr/lib/rfake/rfake-spank-exec)
 *   images=DIR:DIR  images must be under one of these directories (after
 *                   resolving symbolic links); default: anywhere
 *   mounts=SPEC,... binds every container gets (rfake's -B syntax)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

SPANK_PLUGIN(rfake, 1);

#define HELPER_DEFAULT "/usr/lib/rfake/rfake-spank-exec"
/* The variables rfake (src/spank.rs) and rfake-spank-exec --hold read. */
#define ENV_RFAKE "RFAKE_SPANK_RFAKE"
#define ENV_ARGC "RFAKE_SPANK_ARGC"
#define ENV_ARG "RFAKE_SPANK_ARG_"
#define ENV_ARGV0 "RFAKE_SPANK_ARGV0"
/* Most arguments the plugin passes to rfake before the image. */
#define MAX_ARGS 256
/* The holder's line once it is in a named container (rfake-spank-exec.c). */
#define READY "rfake-spank-hold: ready\n"
/* Longest --rfake-name: it is part of an abstract socket's name. */
#define MAX_NAME 40

/* Site options (plugstack.conf). */
static char *site_rfake;
static char *site_helper;
static char *site_images;
static char *site_mounts;

/* The user's options. */
static char *opt_image;
static char *opt_mounts;
static char *opt_workdir;
static char *opt_env;
static char *opt_name;
static int opt_writable;
static int opt_keep_id;
static int opt_root;

enum { OPT_IMAGE = 1, OPT_MOUNTS, OPT_WORKDIR, OPT_ENV, OPT_WRITABLE,
       OPT_KEEP_ID, OPT_ROOT, OPT_NAME };

static int set_opt(int val, const char *arg, int remote);

struct spank_option spank_options[] = {
	{ "rfake-image", "IMAGE",
	  "[rfake] run every task in IMAGE (SquashFS, SIF, directory or "
	  "docker://...): rfake exec IMAGE CMD",
	  1, OPT_IMAGE, set_opt },
	{ "rfake-mounts", "SRC[:DST[:ro]],...",
	  "[rfake] bind host paths into the container (rfake's -B)",
	  1, OPT_MOUNTS, set_opt },
	{ "rfake-workdir", "DIR",
	  "[rfake] start the tasks in DIR inside the container (rfake's --pwd)",
	  1, OPT_WORKDIR, set_opt },
	{ "rfake-env", "NAME=VALUE,...",
	  "[rfake] set variables inside the container (rfake's --env)",
	  1, OPT_ENV, set_opt },
	{ "rfake-writable", NULL,
	  "[rfake] a writable tmpfs layer over the image, shared by the "
	  "node's tasks (rfake's --writable-tmpfs)",
	  0, OPT_WRITABLE, set_opt },
	{ "rfake-keep-id", NULL,
	  "[rfake] keep your uid inside (the default under srun)",
	  0, OPT_KEEP_ID, set_opt },
	{ "rfake-root", NULL,
	  "[rfake] appear as root inside (rfake's --fakeroot; PMIx may refuse it)",
	  0, OPT_ROOT, set_opt },
	{ "rfake-name", "NAME",
	  "[rfake] a named container: the job's later steps with the same "
	  "name and image reuse it on each node; it ends with the job",
	  1, OPT_NAME, set_opt },
	SPANK_OPTIONS_TABLE_END
};

static int set_str(char **slot, const char *name, const char *arg)
{
	if (!arg || !*arg) {
		slurm_error("rfake: --%s wants a value", name);
		return -1;
	}
	free(*slot);
	*slot = strdup(arg);
	return *slot ? 0 : -1;
}

static int set_opt(int val, const char *arg, int remote)
{
	(void) remote;
	switch (val) {
	case OPT_IMAGE: return set_str(&opt_image, "rfake-image", arg);
	case OPT_MOUNTS: return set_str(&opt_mounts, "rfake-mounts", arg);
	case OPT_WORKDIR: return set_str(&opt_workdir, "rfake-workdir", arg);
	case OPT_ENV: return set_str(&opt_env, "rfake-env", arg);
	case OPT_NAME:
		if (set_str(&opt_name, "rfake-name", arg))
			return -1;
		if (strlen(opt_name) > MAX_NAME) {
			slurm_error("rfake: --rfake-name: at most %d characters",
				    MAX_NAME);
			return -1;
		}
		/* It becomes part of a join key: keep it a plain word. */
		for (const char *p = opt_name; *p; p++) {
			if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') ||
			      ('0' <= *p && *p <= '9') || *p == '-' || *p == '_' ||
			      *p == '.')) {
				slurm_error("rfake: --rfake-name=%s: a name is letters, "
					    "digits, '-', '_' and '.'", opt_name);
				return -1;
			}
		}
		return 0;
	case OPT_WRITABLE: opt_writable = 1; return 0;
	case OPT_KEEP_ID: opt_keep_id = 1; return 0;
	case OPT_ROOT: opt_root = 1; return 0;
	}
	return -1;
}

/* `key=value` site options from plugstack.conf. */
static int parse_site(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		const char *eq = strchr(av[i], '=');
		char **slot = NULL;
		if (eq) {
			size_t n = (size_t) (eq - av[i]);
			if (n == 5 && !strncmp(av[i], "rfake", n))
				slot = &site_rfake;
			else if (n == 6 && !strncmp(av[i], "helper", n))
				slot = &site_helper;
			else if (n == 6 && !strncmp(av[i], "images", n))
				slot = &site_images;
			else if (n == 6 && !strncmp(av[i], "mounts", n))
				slot = &site_mounts;
		}
		if (slot && (slot == &site_rfake || slot == &site_helper) &&
		    eq[1] != '/') {
			slurm_error("rfake: plugstack.conf: %s: an absolute path, please",
				    av[i]);
			return -1;
		}
		if (!slot || !eq[1]) {
			slurm_error("rfake: plugstack.conf: unknown or empty option "
				    "'%s' (rfake=, helper=, images=, mounts=)", av[i]);
			return -1;
		}
		free(*slot);
		*slot = strdup(eq + 1);
		if (!*slot)
			return -1;
	}
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	if (parse_site(ac, av))
		return -1;
	/* The spank_options table covers srun and slurmstepd; sbatch and
	 * salloc learn the options only this way. */
	if (spank_context() == S_CTX_ALLOCATOR) {
		for (struct spank_option *o = spank_options; o->name; o++)
			if (spank_option_register(sp, o) != ESPANK_SUCCESS)
				return -1;
	}
	return 0;
}

/*
 * Whether the resolved path `path` is under one of the colon-separated
 * directories of `dirs`, compared on whole components of their resolved
 * paths (never a string prefix: /images2 is not under /images).
 */
static int under_allowed(const char *path, const char *dirs)
{
	char *copy = strdup(dirs), *save = NULL, *dir;
	int ok = 0;
	if (!copy)
		return 0;
	for (dir = strtok_r(copy, ":", &save); dir && !ok;
	     dir = strtok_r(NULL, ":", &save)) {
		char real[PATH_MAX];
		size_t n;
		if (!realpath(dir, real))
			continue;
		n = strlen(real);
		if (n == 1) /* "/" */
			ok = 1;
		else if (!strncmp(path, real, n) &&
			 (path[n] == '/' || path[n] == '\0'))
			ok = 1;
	}
	free(copy);
	return ok;
}

/*
 * The image as a resolved path (images given as references, docker://...,
 * are passed on as they are when no images= list restricts them). Returns
 * a malloc'ed string, or NULL with the error logged.
 */
static char *check_image(const char *image)
{
	char real[PATH_MAX];
	if (strstr(image, "://") || !strncmp(image, "oci-archive:", 12) ||
	    !strncmp(image, "docker-archive:", 15)) {
		if (site_images) {
			slurm_error("rfake: --rfake-image=%s: this site allows "
				    "only image files under %s", image, site_images);
			return NULL;
		}
		return strdup(image);
	}
	if (!realpath(image, real)) {
		slurm_error("rfake: --rfake-image=%s: %s", image, strerror(errno));
		return NULL;
	}
	if (site_images && !under_allowed(real, site_images)) {
		slurm_error("rfake: --rfake-image=%s: not under the image "
			    "directories this site allows (%s)", image, site_images);
		return NULL;
	}
	return strdup(real);
}

static int check_opts(void)
{
	if (!opt_image) {
		if (opt_mounts || opt_workdir || opt_env || opt_name ||
		    opt_writable || opt_keep_id || opt_root) {
			slurm_error("rfake: the --rfake-* options need "
				    "--rfake-image=IMAGE");
			return -1;
		}
		return 0;
	}
	if (opt_keep_id && opt_root) {
		slurm_error("rfake: --rfake-keep-id and --rfake-root exclude "
			    "each other");
		return -1;
	}
	return 0;
}

/*
 * Whether this srun was given --multi-prog: slurmstepd then gives each task
 * an argument array of its own, which the plugin cannot see, and the tasks
 * would run on the host. srun tells SPANK nothing about it, so its command
 * line is read (a command with a literal --multi-prog argument is refused
 * too: the message says why).
 */
static int srun_multi_prog(void)
{
	char buf[65536];
	ssize_t n;
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC), found = 0;
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	for (char *p = buf; p < buf + n; p += strlen(p) + 1)
		if (!strcmp(p, "--multi-prog"))
			found = 1;
	return found;
}

/*
 * srun, sbatch, salloc: refuse bad options before anything is allocated
 * (slurmstepd checks again: it is what counts).
 */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void) sp; (void) ac; (void) av;
	if (check_opts())
		return -1;
	if (opt_image && spank_context() == S_CTX_LOCAL && srun_multi_prog()) {
		slurm_error("rfake: --rfake-image does not work with --multi-prog "
			    "(its tasks would run on the host): give each line of the "
			    "configuration `rfake exec IMAGE ...` instead");
		return -1;
	}
	/* A relative image is the step's working directory's, which may not
	 * be srun's (--chdir): slurmstepd checks it then. */
	if (opt_image && spank_context() != S_CTX_REMOTE &&
	    (opt_image[0] == '/' || access(opt_image, F_OK) == 0)) {
		char *img = check_image(opt_image);
		if (!img)
			return -1;
		free(img);
	}
	return 0;
}

/* The first executable `name` in the colon-separated `path`. */
static char *search_path(const char *name, const char *path)
{
	char *copy, *save = NULL, *dir, buf[PATH_MAX];
	if (strchr(name, '/'))
		return strdup(name);
	if (!path || !(copy = strdup(path)))
		return NULL;
	for (dir = strtok_r(copy, ":", &save); dir;
	     dir = strtok_r(NULL, ":", &save)) {
		if (snprintf(buf, sizeof buf, "%s/%s", *dir ? dir : ".", name) <
		    (int) sizeof buf && access(buf, X_OK) == 0) {
			free(copy);
			return strdup(buf);
		}
	}
	free(copy);
	return NULL;
}

struct args {
	int n;
	char *v[MAX_ARGS];
};

static int add(struct args *a, const char *s)
{
	if (a->n >= MAX_ARGS) {
		slurm_error("rfake: too many --rfake-mounts/--rfake-env entries "
			    "(at most %d arguments)", MAX_ARGS);
		return -1;
	}
	a->v[a->n] = strdup(s);
	return a->v[a->n++] ? 0 : -1;
}

/* `flag ITEM` for each comma-separated item of `list`. */
static int add_each(struct args *a, const char *flag, const char *list)
{
	char *copy = strdup(list), *save = NULL, *item;
	int rc = 0;
	if (!copy)
		return -1;
	for (item = strtok_r(copy, ",", &save); item && !rc;
	     item = strtok_r(NULL, ",", &save))
		rc = add(a, flag) || add(a, item);
	free(copy);
	return rc;
}

static int setenv_num(spank_t sp, const char *name, int i, const char *val)
{
	char var[64];
	snprintf(var, sizeof var, "%s%d", name, i);
	return spank_setenv(sp, var, val, 1) == ESPANK_SUCCESS ? 0 : -1;
}

/* FNV-1a, to put the image in the holder's socket name. */
static unsigned long long fnv(const char *s)
{
	unsigned long long h = 14695981039346656037ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 1099511628211ULL;
	return h;
}

/* The abstract socket a named container's holder binds. */
static void holder_name(char *buf, size_t len, unsigned uid, uint32_t job,
			const char *image)
{
	char host[65] = "";
	gethostname(host, sizeof host - 1);
	snprintf(buf, len, "rfake-spank-hold-%u-%u-%s-%s-%016llx", uid, job,
		 opt_name, host, fnv(image));
}

/*
 * A named container outlives the step through a holder on each node: a
 * detached rfake-spank-exec --hold that stays a rank of the container until
 * the job's epilog ends it (slurm_spank_job_epilog). The node's first task
 * starts it unless its socket answers, and waits until it is in, so that
 * the keeper cannot end with this step.
 */
static int ensure_holder(spank_t sp, uint32_t job, const char *image,
			 const char *helper)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char name[sizeof addr.sun_path - 1], buf[4096];
	size_t got = 0;
	int s, rep[2];
	char **env = NULL;
	pid_t pid;
	time_t deadline;

	holder_name(name, sizeof name, getuid(), job, image);
	memcpy(addr.sun_path + 1, name, strlen(name));
	socklen_t alen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) +
				      1 + strlen(name));
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s >= 0 && connect(s, (struct sockaddr *) &addr, alen) == 0) {
		struct ucred cred;
		socklen_t cl = sizeof cred;
		int mine = !getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &cl) &&
			   cred.uid == getuid();
		close(s);
		if (mine)
			return 0;
		slurm_error("rfake: --rfake-name=%s: its holder's socket belongs "
			    "to another user", opt_name);
		return -1;
	}
	if (s >= 0)
		close(s);
	if (spank_get_item(sp, S_JOB_ENV, &env) != ESPANK_SUCCESS || !env ||
	    pipe2(rep, O_CLOEXEC)) {
		slurm_error("rfake: --rfake-name=%s: cannot start its holder",
			    opt_name);
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		/* Detached: its own session, not this task's child, so that
		 * it outlives the step (proctrack/linuxproc follows parent
		 * pids). */
		setsid();
		if (fork() != 0)
			_exit(0);
		int null = open("/dev/null", O_RDWR);
		if (rep[1] != 3) {
			dup2(rep[1], 3);
			close(rep[1]);
		} else {
			fcntl(3, F_SETFD, 0);
		}
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		close_range(4, ~0U, 0);
		char *args[] = { (char *) helper, "--hold", name, NULL };
		execve(helper, args, env);
		_exit(127);
	}
	close(rep[1]);
	if (pid < 0) {
		close(rep[0]);
		return -1;
	}
	waitpid(pid, NULL, 0);
	deadline = time(NULL) + 130;
	while (time(NULL) < deadline && got < sizeof buf - 1) {
		struct pollfd p = { rep[0], POLLIN, 0 };
		if (poll(&p, 1, 1000) <= 0)
			continue;
		ssize_t n = read(rep[0], buf + got, sizeof buf - 1 - got);
		if (n <= 0)
			break;
		got += (size_t) n;
		buf[got] = '\0';
		if (strstr(buf, READY))
			break;
	}
	close(rep[0]);
	buf[got] = '\0';
	if (!strstr(buf, READY)) {
		slurm_error("rfake: --rfake-name=%s: its holder did not start: %s",
			    opt_name, got ? buf : "no answer");
		return -1;
	}
	return 0;
}

/*
 * Each task, in the forked child as the user, after the CPU binding and
 * before execve: point argv[0] at rfake and leave rfake's arguments in the
 * task's environment.
 */
int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	uint32_t job = 0, step = 0;
	int argc = 0;
	char **argv = NULL, path[PATH_MAX * 4] = "", jobs[32], key[128];
	char *image, *rfake;
	const char *helper = site_helper ? site_helper : HELPER_DEFAULT;
	struct args a = { 0 };
	int task = -1;
	(void) ac; (void) av;

	if (!opt_image)
		return 0;
	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS)
		return -1;
	/* The batch script, the extern and interactive steps stay on the
	 * host: the steps they start are the ones to containerise. */
	if (step == SLURM_BATCH_SCRIPT || step == SLURM_EXTERN_CONT ||
	    step == SLURM_INTERACTIVE_STEP)
		return 0;
	if (check_opts())
		return -1;
	if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS ||
	    argc < 1 || !argv || !argv[0]) {
		slurm_error("rfake: the step has no command");
		return -1;
	}
	if (!(image = check_image(opt_image)))
		return -1;
	if (site_rfake) {
		rfake = strdup(site_rfake);
	} else {
		if (spank_getenv(sp, "PATH", path, sizeof path) != ESPANK_SUCCESS)
			path[0] = '\0';
		char *found = search_path("rfake", path);
		/* Absolute: slurmstepd execs argv[0] as it is. */
		rfake = found ? realpath(found, NULL) : NULL;
		free(found);
		if (!rfake) {
			slurm_error("rfake: rfake is not in the task's PATH (%s); "
				    "the site can name it: rfake=PATH in "
				    "plugstack.conf", path);
			return -1;
		}
	}

	if (add(&a, "exec"))
		return -1;
	if (opt_name) {
		/* Per user, node and image too: rfake's rendezvous name
		 * covers them. */
		snprintf(key, sizeof key, "spank.%u.%s", job, opt_name);
		if (add(&a, "--join-key") || add(&a, key))
			return -1;
	} else if (add(&a, "--join")) {
		return -1;
	}
	if (site_mounts && add_each(&a, "-B", site_mounts))
		return -1;
	if (opt_name) {
		/* Every rank binds the holder's payload: the first rank's
		 * binds make the container (rfake's join). */
		char bind[PATH_MAX + 32];
		snprintf(bind, sizeof bind, "%s:/.rfake-spank/hold:ro", helper);
		if (add(&a, "-B") || add(&a, bind))
			return -1;
	}
	if (opt_mounts && add_each(&a, "-B", opt_mounts))
		return -1;
	if (opt_env && add_each(&a, "--env", opt_env))
		return -1;
	if (opt_workdir && (add(&a, "--pwd") || add(&a, opt_workdir)))
		return -1;
	if (opt_writable && add(&a, "--writable-tmpfs"))
		return -1;
	if (opt_keep_id && add(&a, "--keep-id"))
		return -1;
	if (opt_root && add(&a, "--fakeroot"))
		return -1;
	if (add(&a, image))
		return -1;

	snprintf(jobs, sizeof jobs, "%d", a.n);
	if (spank_setenv(sp, ENV_RFAKE, rfake, 1) != ESPANK_SUCCESS ||
	    spank_setenv(sp, ENV_ARGC, jobs, 1) != ESPANK_SUCCESS ||
	    spank_setenv(sp, ENV_ARGV0, argv[0], 1) != ESPANK_SUCCESS)
		return -1;
	for (int i = 0; i < a.n; i++)
		if (setenv_num(sp, ENV_ARG, i, a.v[i]))
			return -1;
	if (opt_name && spank_get_item(sp, S_TASK_ID, &task) == ESPANK_SUCCESS &&
	    task == 0 && ensure_holder(sp, job, image, helper))
		return -1;
	/* slurmstepd execs argv[0] with this array next: rfake, which takes
	 * its arguments from the variables above (src/spank.rs), then the
	 * command's own. The old string is slurmstepd's. */
	argv[0] = rfake;
	return 0;
}

/*
 * The job's end, on each node (root): end the holders of its named
 * containers. A holder is a process of the job's user running
 * `rfake-spank-exec --hold rfake-spank-hold-UID-JOB-...`; it passes the
 * SIGTERM on to its rfake, whose keeper then ends with the last rank.
 */
int slurm_spank_job_epilog(spank_t sp, int ac, char **av)
{
	uint32_t job = 0;
	uid_t uid = 0;
	char prefix[64];
	DIR *d;
	struct dirent *e;
	(void) ac; (void) av;

	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS)
		return 0;
	snprintf(prefix, sizeof prefix, "rfake-spank-hold-%u-%u-",
		 (unsigned) uid, job);
	if (!(d = opendir("/proc")))
		return 0;
	while ((e = readdir(d))) {
		char path[64], cmd[512];
		struct stat st;
		ssize_t n;
		int fd;
		pid_t pid = (pid_t) atoi(e->d_name);
		if (pid <= 0)
			continue;
		snprintf(path, sizeof path, "/proc/%d/cmdline", (int) pid);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		n = read(fd, cmd, sizeof cmd - 1);
		if (fstat(fd, &st) || st.st_uid != uid || n <= 0) {
			close(fd);
			continue;
		}
		close(fd);
		cmd[n] = '\0';
		/* argv[0] NUL "--hold" NUL name */
		const char *a0 = cmd, *base = strrchr(a0, '/');
		const char *a1 = a0 + strlen(a0) + 1;
		if (a1 >= cmd + n)
			continue;
		const char *a2 = a1 + strlen(a1) + 1;
		if (a2 >= cmd + n)
			continue;
		base = base ? base + 1 : a0;
		if (!strcmp(base, "rfake-spank-exec") && !strcmp(a1, "--hold") &&
		    !strncmp(a2, prefix, strlen(prefix)))
			kill(pid, SIGTERM);
	}
	closedir(d);
	return 0;
}
