//! The Slurm SPANK plugin (spank/): `srun --rfake-image=IMAGE CMD` runs
//! every task in the image, the tasks of a node in one container, with its
//! options and the test cluster's site options (slurm/cluster.sh: images
//! only under /var/tmp and /home, $state/spank/site bound at /rfake-site).
//!
//! Needs the cluster (slurm/cluster.sh start --nodes 3) with the plugin
//! installed (make -C spank install LIBDIR=$RFAKE_SLURM_DIR/spank, before
//! the start: tests/run.sh does both), RFAKE_SLURM_CONF and RFAKE_MPI_IMAGE.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Spank {
    conf: PathBuf,
    /// The MPI test image: Debian 12 with Open MPI and /opt/mpi-test.
    image: PathBuf,
}

fn spank() -> Option<Spank> {
    setup()?;
    let Some(conf) = std::env::var_os("RFAKE_SLURM_CONF").map(PathBuf::from) else {
        missing("a Slurm cluster (slurm/cluster.sh start), RFAKE_SLURM_CONF unset");
        return None;
    };
    let Some(image) = std::env::var_os("RFAKE_MPI_IMAGE").map(PathBuf::from) else {
        missing("the MPI test image (images/mpi/build-mpi-image.sh), RFAKE_MPI_IMAGE unset");
        return None;
    };
    if !conf.is_file() || !image.is_file() || !have("srun") {
        missing(&format!(
            "a Slurm cluster ({}) and the MPI test image ({})",
            conf.display(),
            image.display()
        ));
        return None;
    }
    let s = Spank { conf, image };
    let help = s.run("spank-probe", "srun --help");
    if !stdout(&help).contains("--rfake-image") {
        missing(
            "rfake's SPANK plugin in the cluster's plugstack.conf (make -C spank install \
             LIBDIR=/var/tmp/rfake-slurm/spank before slurm/cluster.sh start)",
        );
        return None;
    }
    let nodes = s.run("spank-probe", "sinfo -h -o %D");
    if stdout(&nodes).trim().parse::<u32>().unwrap_or(0) < 3 {
        missing("a Slurm cluster of 3 nodes (slurm/cluster.sh start --nodes 3)");
        return None;
    }
    Some(s)
}

impl Spank {
    /// The test's shell command line, bounded, with rfake in PATH (the
    /// plugin finds it in the task's PATH) from the user's home.
    fn command(&self, tag: &str, line: &str) -> Command {
        let mut c = scrubbed("timeout", tag);
        let path = format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            rfake_bin().parent().unwrap().display()
        );
        c.args(["-k", "5", "150", "sh", "-c", line])
            .env("PATH", path)
            .env("SLURM_CONF", &self.conf)
            .current_dir(home())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, tag: &str, line: &str) -> Output {
        self.command(tag, line).output().expect("sh")
    }

    fn img(&self) -> &str {
        self.image.to_str().unwrap()
    }
}

/// Single-quote `s` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `./ring`: the MPI test program compiled by the user with the host's
/// mpicc, in a directory of theirs (as a new user would build a program).
fn compile_ring(t: &str, s: &Spank, dir: &Path) -> Option<PathBuf> {
    if !have("mpicc") {
        missing("mpicc (Debian package libopenmpi-dev)");
        return None;
    }
    std::fs::write(
        dir.join("mpi-test.c"),
        include_str!("../images/mpi/mpi-test.c"),
    )
    .unwrap();
    let out = s.run(
        t,
        &format!("cd {} && mpicc -O2 -o ring mpi-test.c", dir.display()),
    );
    assert_status(&out, 0);
    Some(dir.join("ring"))
}

/// Image servers of `tag`'s processes: rfake's own (rfake-fuse) or
/// squashfuse.
fn server_count(tag: &str) -> usize {
    processes_tagged(tag)
        .into_iter()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "rfake-fuse" || comm.starts_with("squashfuse")
        })
        .count()
}

/// The issue's "done when": a user's `./ring` under
/// `srun --rfake-image=mpi.sqfs --mpi=pmix` on 3 nodes × 4 ranks passes the
/// ring, allreduce and 16 MiB checks, with exactly 3 containers (3 keepers,
/// 9 ranks joining) and 3 image servers.
#[test]
fn ring_on_three_nodes_one_container_and_one_server_each() {
    let Some(s) = spank() else { return };
    let t = tag("spank-ring");
    let dir = scratch_in_home("spank-ring-");
    let Some(ring) = compile_ring(&t, &s, dir.path()) else {
        return;
    };
    let mut c = s.command(
        &t,
        &format!(
            "cd {} && srun -N3 --ntasks-per-node=4 --mpi=pmix --rfake-image={} ./ring",
            dir.path().display(),
            s.img()
        ),
    );
    let child = c
        .env("RFAKE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Count the image servers while the step runs (the 16 MiB transfers
    // take seconds on this machine).
    let pid = child.id();
    let counter = std::thread::spawn({
        let t = t.clone();
        move || {
            let mut most = 0;
            let deadline = Instant::now() + Duration::from_secs(150);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                most = most.max(server_count(&t));
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        }
    });
    let out = child.wait_with_output().unwrap();
    let servers = counter.join().unwrap();
    let (o, e) = (stdout(&out), stderr(&out));
    assert_status(&out, 0);
    let oks = o
        .lines()
        .filter(|l| l.starts_with("mpi-test: rank") && l.ends_with(": ok"))
        .count();
    assert_eq!(oks, 12, "stdout: {o}\nstderr: {e}");
    for node in ["node1", "node2", "node3"] {
        assert_eq!(
            o.matches(&format!(" on {node}: ok")).count(),
            4,
            "4 ranks on {node}: {o}"
        );
    }
    for bad in ["vader", "single-copy", "CMA", "shared memory", "btl_"] {
        assert!(!e.contains(bad), "warning mentioning {bad:?}: {e}");
    }
    assert_eq!(e.matches("starting its keeper").count(), 3, "{e}");
    assert_eq!(e.matches("joining the container of").count(), 9, "{e}");
    assert!(e.contains(&format!("running {} as uid", "./ring")), "{e}");
    assert_eq!(servers, 3, "image servers seen at once: {e}");
    assert!(ring.is_file());
    assert_nothing_left(&t);
}

/// --rfake-mounts, -workdir, -env, -writable, and the site's mounts= (the
/// test cluster binds $state/spank/site at /rfake-site): on 3 nodes, every
/// task in the image; the plugin's variables never reach the payload.
#[test]
fn options_and_site_mounts() {
    let Some(s) = spank() else { return };
    let t = tag("spank-opts");
    let dir = scratch_in_home("spank-opts-");
    std::fs::write(dir.path().join("input"), "from the host\n").unwrap();
    let script = "echo pwd=$(pwd) foo=$FOO in=$(cat input) site=$(head -c 10 /rfake-site/README); \
                  test -x /opt/mpi-test/mpi-test && echo image; \
                  echo $SLURM_PROCID > /opt/written.$SLURM_PROCID && echo writable; \
                  env | grep -c '^RFAKE_SPANK_' || true";
    let out = s.run(
        &t,
        &format!(
            "srun -N3 -n3 --rfake-image={} --rfake-mounts={}:/data --rfake-workdir=/data \
             --rfake-env=FOO=bar,OTHER=x --rfake-writable sh -c {}",
            s.img(),
            dir.path().display(),
            quote(script)
        ),
    );
    assert_status(&out, 0);
    let o = stdout(&out);
    assert_eq!(
        o.matches("pwd=/data foo=bar in=from the host site=a file of")
            .count(),
        3,
        "{o}\n{}",
        stderr(&out)
    );
    assert_eq!(o.matches("image\n").count(), 3, "{o}");
    assert_eq!(o.matches("writable\n").count(), 3, "{o}");
    assert_eq!(
        o.lines().filter(|l| *l == "0").count(),
        3,
        "no RFAKE_SPANK_*: {o}"
    );
    assert_nothing_left(&t);
}

/// --rfake-root: root inside (with rfake's warning under a launcher); the
/// default keeps the uid; the payload's exit status is srun's.
#[test]
fn identity_and_exit_status() {
    let Some(s) = spank() else { return };
    let t = tag("spank-id");
    let out = s.run(
        &t,
        &format!("srun -n1 --rfake-image={} --rfake-root id -u", s.img()),
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out).trim(), "0");
    assert!(stderr(&out).contains("--fakeroot under a launcher"));
    let me = nix::unistd::getuid().as_raw().to_string();
    let out = s.run(&t, &format!("srun -n1 --rfake-image={} id -u", s.img()));
    assert_eq!(stdout(&out).trim(), me);
    let out = s.run(
        &t,
        &format!("srun -n1 --rfake-image={} --rfake-keep-id id -u", s.img()),
    );
    assert_eq!(stdout(&out).trim(), me);
    let out = s.run(
        &t,
        &format!("srun -n2 --rfake-image={} sh -c 'exit 3'", s.img()),
    );
    assert_status(&out, 3);
    let out = s.run(
        &t,
        &format!("srun -n1 --rfake-image={} no-such-command", s.img()),
    );
    assert_status(&out, 127);
    assert!(
        stderr(&out).contains("no-such-command: command not found in the image"),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&t);
}

/// Refused by srun before anything runs, one line naming the cause: an
/// image outside the site's images= directories (also through a symbolic
/// link from an allowed one), a missing image, an option without
/// --rfake-image, --rfake-keep-id with --rfake-root, a bad name,
/// --multi-prog.
#[test]
fn refusals() {
    let Some(s) = spank() else { return };
    let t = tag("spank-refuse");
    // /dev/shm is outside the test cluster's images=/var/tmp:/home.
    let outside = tempfile::Builder::new()
        .prefix("spank-test-")
        .suffix(".sqfs")
        .tempfile_in("/dev/shm")
        .unwrap();
    let dir = scratch_in_home("spank-refuse-");
    let link = dir.path().join("img.sqfs");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    for (opts, want) in [
        (
            format!("--rfake-image={}", outside.path().display()),
            "not under the image directories this site allows (/var/tmp:/home)".to_string(),
        ),
        (
            format!("--rfake-image={}", link.display()),
            "not under the image directories this site allows".to_string(),
        ),
        (
            "--rfake-image=/var/tmp/no-such-image.sqfs".to_string(),
            "--rfake-image=/var/tmp/no-such-image.sqfs: No such file or directory".to_string(),
        ),
        (
            // Relative: the step's directory's, checked by slurmstepd.
            "--rfake-image=no-such-image.sqfs".to_string(),
            "--rfake-image=no-such-image.sqfs: No such file or directory".to_string(),
        ),
        (
            "--rfake-env=A=b".to_string(),
            "the --rfake-* options need --rfake-image=IMAGE".to_string(),
        ),
        (
            format!("--rfake-image={} --rfake-keep-id --rfake-root", s.img()),
            "--rfake-keep-id and --rfake-root exclude each other".to_string(),
        ),
        (
            format!("--rfake-image={} --rfake-name=a/b", s.img()),
            "--rfake-name=a/b: a name is letters, digits".to_string(),
        ),
    ] {
        let out = s.run(&t, &format!("srun -n1 {opts} echo ran"));
        // 1 from the checks after option parsing, 255 from an option's own.
        assert!(
            matches!(out.status.code(), Some(1 | 255)),
            "{opts}: {:?}",
            out.status
        );
        assert!(!stdout(&out).contains("ran"), "{opts}");
        let e = stderr(&out);
        assert!(e.contains("error: rfake: "), "{opts}: {e}");
        assert!(e.contains(&want), "{opts}: want {want:?} in {e}");
    }
    // --multi-prog: slurmstepd gives each task its own arguments, out of
    // the plugin's reach; refused rather than run on the host.
    let conf = dir.path().join("multi.conf");
    std::fs::write(&conf, "0 echo ran\n").unwrap();
    let out = s.run(
        &t,
        &format!(
            "srun -n1 --multi-prog --rfake-image={} {}",
            s.img(),
            conf.display()
        ),
    );
    assert_status(&out, 1);
    assert!(!stdout(&out).contains("ran"));
    assert!(
        stderr(&out).contains("--rfake-image does not work with --multi-prog"),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&t);
}

/// sbatch and salloc --rfake-image: the batch script (salloc's command) runs
/// on the host, its srun steps in the image (Slurm hands the job's options
/// to the steps).
#[test]
fn sbatch_options_reach_the_steps() {
    let Some(s) = spank() else { return };
    let t = tag("spank-sbatch");
    let dir = scratch_in_home("spank-sbatch-");
    let script = dir.path().join("job.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         test -e /opt/mpi-test/mpi-test || echo script on the host\n\
         srun -N3 -n3 sh -c 'test -e /opt/mpi-test/mpi-test && echo step in the image'\n",
    )
    .unwrap();
    let log = dir.path().join("job.out");
    let out = s.run(
        &t,
        &format!(
            "sbatch --wait -N3 --rfake-image={} --output={} {}",
            s.img(),
            log.display(),
            script.display()
        ),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_status(&out, 0);
    assert_eq!(text.matches("script on the host").count(), 1, "{text}");
    assert_eq!(text.matches("step in the image").count(), 3, "{text}");
    // salloc: its command on the host, the sruns in it in the image.
    let out = s.run(
        &t,
        &format!(
            "salloc -N3 --rfake-image={} sh -c \
             'test -e /opt/mpi-test/mpi-test || echo salloc on the host; \
              srun -N3 -n3 sh -c \"test -e /opt/mpi-test/mpi-test && echo salloc step in the image\"'",
            s.img()
        ),
    );
    assert_status(&out, 0);
    let o = stdout(&out);
    assert_eq!(o.matches("salloc on the host").count(), 1, "{o}");
    assert_eq!(o.matches("salloc step in the image").count(), 3, "{o}");
    assert_nothing_left(&t);
}

/// --rfake-name: a later step of the job with the same name (and image)
/// gets the same container on each node, with what the first wrote in its
/// writable layer; a step without the name gets a new one; after the job
/// nothing is left (the job's epilog ends the holders).
#[test]
fn named_container_outlives_its_step_and_ends_with_the_job() {
    let Some(s) = spank() else { return };
    let t = tag("spank-named");
    let dir = scratch_in_home("spank-named-");
    let script = dir.path().join("job.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         step='echo $SLURMD_NODENAME $(readlink /proc/self/ns/mnt) $(cat /opt/mark 2>/dev/null || echo none)'\n\
         srun -N3 -n3 --rfake-name=work sh -c \"$step; echo \\$SLURM_STEP_ID > /opt/mark\" | sed 's/^/first /'\n\
         srun -N3 -n3 --rfake-name=work sh -c \"$step\" | sed 's/^/again /'\n\
         srun -N3 -n3 sh -c \"$step\" | sed 's/^/unnamed /'\n",
    )
    .unwrap();
    let log = dir.path().join("job.out");
    let out = s.run(
        &t,
        &format!(
            "sbatch --wait -N3 --rfake-image={} --rfake-writable --output={} {}",
            s.img(),
            log.display(),
            script.display()
        ),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_status(&out, 0);
    // node -> (first step's namespace, and what each step saw).
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    for node in ["node1", "node2", "node3"] {
        let get = |which: &str| {
            lines
                .iter()
                .find(|w| w.len() == 4 && w[0] == which && w[1] == node)
                .unwrap_or_else(|| panic!("no {which} line for {node}: {text}"))
                .clone()
        };
        let (first, again, unnamed) = (get("first"), get("again"), get("unnamed"));
        assert_eq!(first[3], "none", "{text}");
        assert_eq!(again[2], first[2], "the same container on {node}: {text}");
        assert_eq!(again[3], "0", "the first step's write on {node}: {text}");
        assert_ne!(unnamed[2], first[2], "a new container: {text}");
        assert_eq!(unnamed[3], "none", "{text}");
    }
    assert_nothing_left(&t);
}
