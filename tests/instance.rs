//! Instances: `rfake instance start/list/stop` and `exec instance://NAME`,
//! as the unprivileged test user. The image is the demo root with a
//! `%startscript` added, built as SquashFS once per run (served by rfake's
//! own image server, like a user's image).
//!
//! The Slurm test needs a running cluster (slurm/cluster.sh start and
//! RFAKE_SLURM_CONF), like tests/slurm.rs; elsewhere the job's end is
//! played by a process named `slurmstepd` that starts the instance and
//! then ends.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The startscript: says it ran and with what, writes a file into the
/// container's own writable layer (only the same container sees it),
/// leaves a daemon behind and keeps running.
const STARTSCRIPT: &str = "#!/bin/sh\n\
echo \"startscript ran with: $*\"\n\
echo \"from the startscript $1\" > /instance-marker\n\
sleep 1000 &\n\
exec sleep 1001\n";

/// The image, built once: DIR/instance.sqfs.
fn image(env: &Env) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!(
                "instance-test-image-{}",
                nix::unistd::getuid().as_raw()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let root = dir.join("root");
            let cp = Command::new("cp")
                .args(["-a", path_str(&env.image("demo")), path_str(&root)])
                .status()
                .unwrap();
            assert!(cp.success(), "copy the demo root");
            let script = root.join(".singularity.d/startscript");
            std::fs::write(&script, STARTSCRIPT).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            let out = dir.join("instance.sqfs");
            let built = rfake(
                "instance-build",
                &["build", path_str(&out), path_str(&root)],
            );
            assert_status(&built, 0);
            let _ = std::fs::remove_dir_all(&root);
            out
        })
        .clone()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// rfake with extra variables.
fn rfake_env(tag: &str, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = command(tag);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rfake")
}

/// The instances `rfake instance list --json` shows: (name, pid, job).
fn listed(tag: &str, vars: &[(&str, &str)]) -> Vec<(String, u32, Option<String>)> {
    let out = rfake_env(tag, vars, &["instance", "list", "--json"]);
    assert_status(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    v["instances"]
        .as_array()
        .expect("an instances array")
        .iter()
        .map(|i| {
            (
                i["instance"].as_str().unwrap().to_string(),
                i["pid"].as_u64().unwrap() as u32,
                i["job"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// A name unique to this test run.
fn name(base: &str) -> String {
    format!("{base}{}", std::process::id())
}

/// Wait (bounded) until `cond` holds.
#[track_caller]
fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn start_list_exec_stop() {
    let Some(env) = setup() else { return };
    let image = image(&env);
    let tag = tag("instance_basic");
    let n = name("basic");
    let out = rfake(
        &tag,
        &[
            "instance",
            "start",
            "--writable-tmpfs",
            path_str(&image),
            &n,
            "first",
            "second",
        ],
    );
    assert_status(&out, 0);
    assert!(
        stderr(&out).contains(&format!("instance {n} started")),
        "{}",
        stderr(&out)
    );
    let pid = listed(&tag, &[])
        .into_iter()
        .find(|(i, _, _)| *i == n)
        .map(|(_, pid, job)| {
            assert_eq!(job, None);
            pid
        })
        .expect("the instance is listed");
    // The plain listing too, Apptainer's columns.
    let plain = rfake(&tag, &["instance", "list", &n]);
    assert_status(&plain, 0);
    let text = stdout(&plain);
    assert!(text.starts_with("INSTANCE NAME"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(&n)
            && l.contains(&pid.to_string())
            && l.contains(path_str(&image))),
        "{text}"
    );
    // The startscript ran with the arguments, its output in the log.
    let json = rfake(&tag, &["instance", "list", "--json", &n]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let log = PathBuf::from(v["instances"][0]["logOutPath"].as_str().unwrap());
    wait_for("the startscript's output", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("startscript ran with: first second"))
    });
    // exec enters the same container: the file the startscript wrote in
    // its own writable layer is there (a new container would not have it).
    let uri = format!("instance://{n}");
    let exec = rfake(&tag, &["exec", &uri, "cat", "/instance-marker"]);
    assert_status(&exec, 0);
    assert_eq!(stdout(&exec), "from the startscript first\n");
    // run and shell too; the payload's status passes through.
    let run = rfake(&tag, &["exec", &uri, "sh", "-c", "exit 7"]);
    assert_status(&run, 7);
    let mut shell = command(&tag);
    shell
        .args(["shell", &uri])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = shell.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"cat /instance-marker; exit 3\n").unwrap();
    }
    let shell = child.wait_with_output().unwrap();
    assert_status(&shell, 3);
    assert_eq!(stdout(&shell), "from the startscript first\n");
    // A second start of the name is refused outside a job.
    let again = rfake(&tag, &["instance", "start", path_str(&image), &n]);
    assert_status(&again, 73);
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );
    // Stop: the startscript and its daemon go, the name disappears.
    let stop = rfake(&tag, &["instance", "stop", &n]);
    assert_status(&stop, 0);
    assert!(
        stderr(&stop).contains(&format!("stopping instance {n}")),
        "{}",
        stderr(&stop)
    );
    assert!(!listed(&tag, &[]).iter().any(|(i, _, _)| *i == n));
    let gone = rfake(&tag, &["exec", &uri, "true"]);
    assert_status(&gone, 66);
    assert!(
        stderr(&gone).contains(&format!("no instance {n}")),
        "{}",
        stderr(&gone)
    );
    wait_for(
        "the instance's processes to go",
        Duration::from_secs(5),
        || processes_tagged(&tag).is_empty(),
    );
    assert_nothing_left(&tag);
}

#[test]
fn stop_ends_launches_inside_and_takes_a_signal() {
    let Some(env) = setup() else { return };
    let image = image(&env);
    let tag = tag("instance_stop");
    let n = name("stopme");
    assert_status(
        &rfake(&tag, &["instance", "start", path_str(&image), &n]),
        0,
    );
    // A launch inside keeps running until the instance stops.
    let uri = format!("instance://{n}");
    let mut inside = command(&tag);
    inside
        .args(["exec", &uri, "sleep", "1000"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let inside = inside.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stop = rfake(&tag, &["instance", "stop", "-s", "INT", "-t", "2", &n]);
    assert_status(&stop, 0);
    let out = inside.wait_with_output().unwrap();
    assert_status(&out, 143);
    assert!(
        stderr(&out).contains(&format!("instance {n} stopped")),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&tag);
    // Nothing to stop: 66.
    let none = rfake(&tag, &["instance", "stop", &n]);
    assert_status(&none, 66);
    let bad = rfake(&tag, &["instance", "stop", "-s", "NOPE", &n]);
    assert_status(&bad, 64);
    let bad_name = rfake(&tag, &["instance", "start", path_str(&image), "a/b"]);
    assert_status(&bad_name, 64);
}

#[test]
fn a_killed_instance_is_never_listed() {
    let Some(env) = setup() else { return };
    let image = image(&env);
    let tag = tag("instance_killed");
    let n = name("killed");
    assert_status(
        &rfake(&tag, &["instance", "start", path_str(&image), &n]),
        0,
    );
    let (_, pid, _) = listed(&tag, &[])
        .into_iter()
        .find(|(i, _, _)| *i == n)
        .expect("listed");
    // SIGKILL: the keeper cannot remove its record. Its image server and
    // the startscript die with it (parent-death signal); a daemon the
    // startscript left is nobody's child any more and stays (in a job,
    // Slurm kills the cgroup: see the job tests): killed here.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the keeper's end", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    wait_for("the startscript's end", Duration::from_secs(5), || {
        processes_tagged(&tag).iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c == "sleep\x001000\x00")
        })
    });
    for p in processes_tagged(&tag) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(!listed(&tag, &[]).iter().any(|(i, _, _)| *i == n));
    let gone = rfake(&tag, &["exec", &format!("instance://{n}"), "true"]);
    assert_status(&gone, 66);
    // The name is free again.
    assert_status(
        &rfake(&tag, &["instance", "start", path_str(&image), &n]),
        0,
    );
    assert_status(&rfake(&tag, &["instance", "stop", &n]), 0);
    wait_for(
        "the instance's processes to go",
        Duration::from_secs(5),
        || processes_tagged(&tag).is_empty(),
    );
    assert_nothing_left(&tag);
}

#[test]
fn in_a_job_one_instance_per_node_and_name_ending_with_the_job() {
    let Some(env) = setup() else { return };
    let image = image(&env);
    let tag = tag("instance_job");
    let n = name("job");
    let job = format!("{}", 900_000 + std::process::id() % 99_999);
    let vars = [("SLURM_JOB_ID", job.as_str())];
    // The job's end is that of the slurmstepd it runs under: a script of
    // that name starts the instance twice (two tasks of a step, say), and
    // waits until told to end.
    let dir = tempfile::Builder::new()
        .prefix("instance-job-")
        .tempdir_in(home())
        .unwrap();
    let stepd = dir.path().join("slurmstepd");
    let go = dir.path().join("end");
    std::fs::write(
        &stepd,
        format!(
            "#!/bin/sh\n\
             \"$RFAKE\" instance start \"$IMAGE\" {n} & \"$RFAKE\" instance start \"$IMAGE\" {n}; s=$?\n\
             wait $! || s=1\n\
             echo started $s\n\
             while [ ! -e {end} ]; do sleep 0.1; done\n",
            end = path_str(&go)
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stepd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = scrubbed(&stepd, &tag);
    c.env("SLURM_JOB_ID", &job)
        .env("RFAKE", rfake_bin())
        .env("IMAGE", &image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(child.stdout.as_mut().unwrap());
        r.read_line(&mut line).unwrap();
    }
    assert_eq!(line, "started 0\n", "both starts succeed");
    let mine: Vec<_> = listed(&tag, &vars)
        .into_iter()
        .filter(|(i, _, _)| *i == n)
        .collect();
    assert_eq!(mine.len(), 1, "one instance per node and name: {mine:?}");
    assert_eq!(mine[0].2.as_deref(), Some(job.as_str()));
    // Every launch of the job reaches it; outside the job it is not there.
    let uri = format!("instance://{n}");
    assert_status(&rfake_env(&tag, &vars, &["exec", &uri, "true"]), 0);
    assert_status(&rfake(&tag, &["exec", &uri, "true"]), 66);
    let other = [("SLURM_JOB_ID", "1")];
    assert_status(&rfake_env(&tag, &other, &["exec", &uri, "true"]), 66);
    // The job ends: so does the instance, with everything it started.
    std::fs::write(&go, "").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    wait_for(
        "the instance to end with the job",
        Duration::from_secs(10),
        || processes_tagged(&tag).is_empty(),
    );
    assert!(!listed(&tag, &vars).iter().any(|(i, _, _)| *i == n));
    assert_nothing_left(&tag);
}

/// A real job: started in the batch script, reached by every step, gone
/// after the job (Slurm ends the batch step's processes with the job).
#[test]
fn slurm_job_instance_reachable_by_every_step_and_gone_after() {
    let Some(env) = setup() else { return };
    let Some(conf) = std::env::var_os("RFAKE_SLURM_CONF").map(PathBuf::from) else {
        missing("a Slurm cluster (slurm/cluster.sh start), RFAKE_SLURM_CONF unset");
        return;
    };
    if !conf.is_file() || !have("sbatch") {
        missing(&format!(
            "a Slurm cluster with its client commands ({})",
            conf.display()
        ));
        return;
    }
    let image = image(&env);
    let tag = tag("instance_slurm");
    let n = name("slurm");
    let dir = tempfile::Builder::new()
        .prefix("slurm-instance-")
        .tempdir_in(home())
        .unwrap();
    let rf = path_str(&rfake_bin()).to_string();
    let script = format!(
        "#!/bin/sh\n\
         set -e\n\
         {rf} instance start --writable-tmpfs {img} {n} job\n\
         srun -n1 -N1 --overlap {rf} exec instance://{n} cat /instance-marker > step0.txt\n\
         srun -n1 -N1 --overlap {rf} exec instance://{n} cat /instance-marker > step1.txt\n\
         {rf} instance list --json > list.json\n",
        img = path_str(&image)
    );
    std::fs::write(dir.path().join("job.sh"), script).unwrap();
    let slurm = |cmd: &str, args: &[&str]| {
        let mut c = scrubbed("timeout", &tag);
        c.env("SLURM_CONF", &conf)
            .args(["-k", "5", "60", cmd])
            .args(args)
            .stdin(Stdio::null());
        c.output().expect(cmd)
    };
    let chdir = format!("--chdir={}", dir.path().display());
    let out = slurm(
        "sbatch",
        &[
            "--parsable",
            "--wait",
            "-N1",
            &chdir,
            path_str(&dir.path().join("job.sh")),
        ],
    );
    assert_status(&out, 0);
    let id = stdout(&out)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    for step in ["step0.txt", "step1.txt"] {
        let text = std::fs::read_to_string(dir.path().join(step)).unwrap_or_default();
        assert_eq!(text, "from the startscript job\n", "{step} of job {id}");
    }
    let list = std::fs::read_to_string(dir.path().join("list.json")).unwrap();
    assert!(
        list.contains(&n) && list.contains(&format!("\"job\": \"{id}\"")),
        "{list}"
    );
    // After the job: gone (the emulated nodes share this host).
    let vars = [("SLURM_JOB_ID", id.as_str())];
    wait_for("the job's instance to end", Duration::from_secs(15), || {
        !listed(&tag, &vars).iter().any(|(i, _, _)| *i == n) && processes_tagged(&tag).is_empty()
    });
}
