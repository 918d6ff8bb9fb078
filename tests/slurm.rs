//! rfake under Slurm: batch jobs, srun steps, job arrays, scancel, and the
//! job scripts of slurm/examples/.
//!
//! These tests need a running cluster: slurm/cluster.sh start (as root), and
//! RFAKE_SLURM_CONF naming its slurm.conf. They submit as the unprivileged
//! test user, like every other launch test, and bound every wait.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a job may take from submission to its end (they take seconds).
const JOB_DEADLINE: Duration = Duration::from_secs(60);
/// The cluster's KillWait (slurm/cluster.sh): SIGTERM to SIGKILL on scancel.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The example job scripts, compiled in: the checkout itself may not be
/// readable by the test user.
const SINGLE_SBATCH: &str = include_str!("../slurm/examples/single.sbatch");
const ARRAY_SBATCH: &str = include_str!("../slurm/examples/array.sbatch");

/// Everything a Slurm test needs; `None` means skipped.
struct Cluster {
    conf: PathBuf,
    env: Env,
}

fn cluster() -> Option<Cluster> {
    let env = setup()?;
    let Some(conf) = std::env::var_os("RFAKE_SLURM_CONF").map(PathBuf::from) else {
        missing("a Slurm cluster (slurm/cluster.sh start), RFAKE_SLURM_CONF unset");
        return None;
    };
    if !conf.is_file() {
        missing(&format!(
            "a Slurm cluster (slurm/cluster.sh start): no {}",
            conf.display()
        ));
        return None;
    }
    if !have("sbatch") {
        missing("the Slurm client commands (Debian package slurm-client)");
        return None;
    }
    let c = Cluster { conf, env };
    let out = c.run("slurm-probe", "sinfo", &["-h", "-o", "%D %t"]);
    if !out.status.success() {
        missing(&format!(
            "a running Slurm cluster (slurm/cluster.sh start): sinfo with {}: {}",
            c.conf.display(),
            stderr(&out).trim()
        ));
        return None;
    }
    Some(c)
}

/// A scratch directory under the user's home (bound into containers, and on
/// a file system every emulated node sees), removed at the end of the test.
fn workdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("slurm-{name}-"))
        .tempdir_in(home())
        .expect("temporary directory under $HOME")
}

/// Single-quote `s` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

impl Cluster {
    /// A Slurm client command, bounded by timeout(1), in the scrubbed
    /// environment plus SLURM_CONF; jobs inherit that environment (and the
    /// test's tag) through sbatch/srun's default --export=ALL.
    fn slurm(&self, tag: &str, cmd: &str, args: &[&str]) -> Command {
        let mut c = scrubbed("timeout", tag);
        c.env("SLURM_CONF", &self.conf)
            .args(["-k", "5", "60", cmd])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    #[track_caller]
    fn run(&self, tag: &str, cmd: &str, args: &[&str]) -> Output {
        self.slurm(tag, cmd, args).output().expect(cmd)
    }

    /// Write `script` to DIR/NAME and sbatch it from DIR; the job id.
    #[track_caller]
    fn sbatch(&self, tag: &str, dir: &Path, name: &str, script: &str, opts: &[&str]) -> String {
        let path = dir.join(name);
        std::fs::write(&path, script).expect("write the job script");
        let chdir = format!("--chdir={}", dir.display());
        let mut args = vec!["--parsable", chdir.as_str()];
        args.extend_from_slice(opts);
        args.push(path_str(&path));
        let out = self.run(tag, "sbatch", &args);
        assert_status(&out, 0);
        let id = stdout(&out)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
            "sbatch printed no job id: {}",
            stdout(&out)
        );
        id
    }

    /// The records of `scontrol show job ID` (one per array task), as
    /// key=value maps.
    fn job_records(&self, tag: &str, id: &str) -> Vec<BTreeMap<String, String>> {
        let out = self.run(tag, "scontrol", &["show", "job", "-o", id]);
        assert_status(&out, 0);
        stdout(&out)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                line.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    /// Wait (bounded) until job `id` (every task of an array) has ended and
    /// finished completing; its records.
    #[track_caller]
    fn wait_job(&self, tag: &str, id: &str, within: Duration) -> Vec<BTreeMap<String, String>> {
        const ENDED: &[&str] = &[
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "PREEMPTED",
            "BOOT_FAIL",
            "DEADLINE",
        ];
        let deadline = Instant::now() + within;
        loop {
            let records = self.job_records(tag, id);
            let ended = !records.is_empty()
                && records.iter().all(|r| {
                    r.get("JobState")
                        .is_some_and(|s| ENDED.contains(&s.as_str()))
                });
            // squeue lists jobs that still run or complete (processes left).
            let queued = self.run(tag, "squeue", &["-h", "-j", id, "-o", "%i %T"]);
            if ended && stdout(&queued).trim().is_empty() {
                return records;
            }
            if Instant::now() > deadline {
                panic!(
                    "job {id} did not end within {within:?}: {records:?}\nsqueue: {}",
                    stdout(&queued)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The single record of a non-array job, once it has ended.
    #[track_caller]
    fn wait_single(&self, tag: &str, id: &str) -> BTreeMap<String, String> {
        let mut records = self.wait_job(tag, id, JOB_DEADLINE);
        assert_eq!(records.len(), 1, "job {id}: {records:?}");
        records.remove(0)
    }

    /// How many nodes the cluster has.
    fn nodes(&self, tag: &str) -> usize {
        let out = self.run(tag, "sinfo", &["-h", "-N", "-o", "%N"]);
        assert_status(&out, 0);
        stdout(&out)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A job script (sh) that runs `command`, exec'd so that rfake is the batch
/// step's own process.
fn job_script(command: &str) -> String {
    format!("#!/bin/sh\nexec {command}\n")
}

/// `rfake exec IMAGE sh -c SCRIPT`, quoted for a job script.
fn rfake_sh(image: &Path, script: &str) -> String {
    format!(
        "{} exec {} sh -c {}",
        quote(path_str(&rfake_bin())),
        quote(path_str(image)),
        quote(script)
    )
}

#[test]
fn sbatch_job_output_and_exit_code() {
    let Some(c) = cluster() else { return };
    let tag = tag("sbatch_exit");
    let dir = workdir("exit");
    let image = c.env.image("demo.sqfs");
    let script = job_script(&rfake_sh(
        &image,
        "echo hello from $SLURM_JOB_ID; echo to stderr >&2; exit 3",
    ));
    let out_pattern = dir.path().join("job-%j.out");
    let submitted = Instant::now();
    let id = c.sbatch(
        &tag,
        dir.path(),
        "job.sh",
        &script,
        &[&format!("--output={}", out_pattern.display())],
    );
    let job = c.wait_single(&tag, &id);
    eprintln!(
        "sbatch: job {id} ended {:?} after submission",
        submitted.elapsed()
    );
    let output = read(&dir.path().join(format!("job-{id}.out")));
    assert_eq!(
        job["ExitCode"], "3:0",
        "job {id}: {job:?}\noutput: {output}"
    );
    assert_eq!(job["JobState"], "FAILED", "{job:?}");
    assert!(
        output.lines().any(|l| l == format!("hello from {id}")),
        "output of job {id}: {output:?}"
    );
    assert!(
        output.contains("to stderr"),
        "stderr joins the output: {output:?}"
    );
    assert_nothing_left(&tag);
}

#[test]
fn srun_runs_every_task_in_a_container() {
    let Some(c) = cluster() else { return };
    let tag = tag("srun_tasks");
    let dir = workdir("srun");
    let image = c.env.image("demo.sqfs");
    // Spread the tasks over two nodes when there are two.
    let nodes = c.nodes(&tag).min(2).to_string();
    let chdir = format!("--chdir={}", dir.path().display());
    let out = c.run(
        &tag,
        "srun",
        &[
            &chdir,
            "-N",
            &nodes,
            "-n4",
            path_str(&rfake_bin()),
            "exec",
            path_str(&image),
            "sh",
            "-c",
            "echo rank $SLURM_PROCID of $SLURM_NTASKS job $SLURM_JOB_ID step $SLURM_STEP_ID \
             node $SLURMD_NODENAME pid $$ in $(cat /etc/rfake-demo.txt >/dev/null && echo image)",
        ],
    );
    assert_status(&out, 0);
    let text = stdout(&out);
    let mut ranks = Vec::new();
    let mut hosts = std::collections::BTreeSet::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        assert!(
            w.len() == 14 && w[0] == "rank" && w[2] == "of" && w[3] == "4" && w[13] == "image",
            "unexpected line {line:?} in\n{text}"
        );
        assert!(
            !w[5].is_empty() && w[5].bytes().all(|b| b.is_ascii_digit()),
            "{line}"
        );
        assert!(
            w[7].bytes().all(|b| b.is_ascii_digit()),
            "SLURM_STEP_ID: {line}"
        );
        ranks.push(w[1].parse::<u32>().expect("rank"));
        hosts.insert(w[9].to_string());
    }
    ranks.sort();
    assert_eq!(
        ranks,
        vec![0, 1, 2, 3],
        "output:\n{text}\nstderr: {}",
        stderr(&out)
    );
    assert_eq!(hosts.len().to_string(), nodes, "nodes used: {hosts:?}");
    assert_nothing_left(&tag);
}

#[test]
fn array_tasks_see_their_index() {
    let Some(c) = cluster() else { return };
    let tag = tag("array");
    let dir = workdir("array");
    let image = c.env.image("demo.sqfs");
    let script = job_script(&rfake_sh(&image, "echo task $SLURM_ARRAY_TASK_ID"));
    let out_pattern = dir.path().join("task-%A_%a.out");
    let id = c.sbatch(
        &tag,
        dir.path(),
        "array.sh",
        &script,
        &[
            "--array=1-4",
            &format!("--output={}", out_pattern.display()),
        ],
    );
    let records = c.wait_job(&tag, &id, JOB_DEADLINE);
    assert_eq!(records.len(), 4, "array {id}: {records:?}");
    for r in &records {
        assert_eq!(r["JobState"], "COMPLETED", "{r:?}");
        assert_eq!(r["ExitCode"], "0:0", "{r:?}");
    }
    for i in 1..=4 {
        let output = read(&dir.path().join(format!("task-{id}_{i}.out")));
        assert_eq!(output.trim(), format!("task {i}"), "array task {i}");
    }
    assert_nothing_left(&tag);
}

#[test]
fn scancel_stops_the_container_cleanly() {
    let Some(c) = cluster() else { return };
    let tag = tag("scancel");
    let dir = workdir("scancel");
    let image = c.env.image("demo.sqfs");
    let ready = dir.path().join("ready");
    let marker = dir.path().join("terminated");
    // The payload says it runs, then waits; SIGTERM makes it write the marker.
    let payload = format!(
        "trap 'echo got TERM > {marker}; exit 0' TERM; echo up > {ready}; \
         while :; do sleep 1; done",
        marker = quote(path_str(&marker)),
        ready = quote(path_str(&ready)),
    );
    let id = c.sbatch(
        &tag,
        dir.path(),
        "long.sh",
        &job_script(&rfake_sh(&image, &payload)),
        &[&format!(
            "--output={}",
            dir.path().join("long.out").display()
        )],
    );
    let deadline = Instant::now() + JOB_DEADLINE;
    while !ready.exists() {
        let state = c.job_records(&tag, &id);
        assert!(
            Instant::now() < deadline,
            "job {id} did not start its payload: {state:?}\noutput: {}",
            std::fs::read_to_string(dir.path().join("long.out")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !processes_tagged(&tag).is_empty(),
        "the job runs tagged processes"
    );

    let cancelled = Instant::now();
    let out = c.run(&tag, "scancel", &[&id]);
    assert_status(&out, 0);
    // SIGTERM at once, SIGKILL after KillWait: everything is over by then.
    let job = c.wait_job(&tag, &id, KILL_WAIT + Duration::from_secs(10));
    let took = cancelled.elapsed();
    eprintln!("scancel: job {id} gone {took:?} after scancel");
    assert_eq!(job[0]["JobState"], "CANCELLED", "{job:?}");
    assert_eq!(
        read(&marker).trim(),
        "got TERM",
        "the payload saw SIGTERM (job gone after {took:?})"
    );
    assert!(
        took < KILL_WAIT + Duration::from_secs(10),
        "job gone only after {took:?}"
    );
    assert_nothing_left(&tag);
}

#[test]
fn missing_command_fails_the_job_with_rfakes_message() {
    let Some(c) = cluster() else { return };
    let tag = tag("notfound");
    let dir = workdir("notfound");
    let image = c.env.image("demo.sqfs");
    let script = job_script(&format!(
        "{} exec {} no-such-command-in-image",
        quote(path_str(&rfake_bin())),
        quote(path_str(&image))
    ));
    let id = c.sbatch(
        &tag,
        dir.path(),
        "notfound.sh",
        &script,
        &[&format!(
            "--output={}",
            dir.path().join("nf-%j.out").display()
        )],
    );
    let job = c.wait_single(&tag, &id);
    let output = read(&dir.path().join(format!("nf-{id}.out")));
    assert_eq!(job["JobState"], "FAILED", "{job:?}\noutput: {output}");
    assert_ne!(job["ExitCode"], "0:0", "{job:?}");
    assert_eq!(
        job["ExitCode"], "127:0",
        "rfake's code for a missing command"
    );
    assert!(
        output.contains("no-such-command-in-image: command not found in the image"),
        "output of job {id}: {output:?}"
    );
    assert_nothing_left(&tag);
}

/// The environment additions for the example scripts: rfake on PATH, the
/// image in RFAKE_IMAGE.
fn example_opts(image: &Path) -> (String, String) {
    let bin_dir = rfake_bin()
        .parent()
        .expect("rfake's directory")
        .to_path_buf();
    (
        format!(
            "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            bin_dir.display()
        ),
        format!("--export=ALL,RFAKE_IMAGE={}", image.display()),
    )
}

/// Submit an example job script from `dir` with the image exported, as a
/// user would (rfake from PATH); its job id.
fn submit_example(
    c: &Cluster,
    tag: &str,
    dir: &Path,
    image: &Path,
    name: &str,
    script: &str,
) -> String {
    let (path, export) = example_opts(image);
    std::fs::write(dir.join(name), script).unwrap();
    let chdir = format!("--chdir={}", dir.display());
    let out = c
        .slurm(tag, "sbatch", &["--parsable", &chdir, &export, name])
        .env("PATH", path)
        .current_dir(dir)
        .output()
        .expect("sbatch");
    assert_status(&out, 0);
    stdout(&out).trim().split(';').next().unwrap().to_string()
}

#[test]
fn example_single_sbatch() {
    let Some(c) = cluster() else { return };
    let tag = tag("ex_single");
    let dir = workdir("ex-single");
    let image = c.env.image("demo.sqfs");
    let id = submit_example(&c, &tag, dir.path(), &image, "single.sbatch", SINGLE_SBATCH);
    let job = c.wait_single(&tag, &id);
    // The example's own #SBATCH --output, relative to the submit directory.
    let output = read(&dir.path().join(format!("rfake-single-{id}.out")));
    assert_eq!(job["ExitCode"], "0:0", "{job:?}\noutput: {output}");
    assert!(
        output.contains(&format!("hello from job {id} on ")) && output.contains("rfake demo"),
        "output of job {id}: {output:?}"
    );
    assert_nothing_left(&tag);
}

#[test]
fn example_array_sbatch() {
    let Some(c) = cluster() else { return };
    let tag = tag("ex_array");
    let dir = workdir("ex-array");
    let image = c.env.image("demo.sqfs");
    let id = submit_example(&c, &tag, dir.path(), &image, "array.sbatch", ARRAY_SBATCH);
    let records = c.wait_job(&tag, &id, JOB_DEADLINE);
    assert_eq!(records.len(), 4, "array {id}: {records:?}");
    for r in &records {
        assert_eq!(r["ExitCode"], "0:0", "{r:?}");
    }
    for i in 1..=4 {
        let output = read(&dir.path().join(format!("rfake-array-{id}_{i}.out")));
        assert_eq!(
            output.trim(),
            format!("array task {i} of job {id}"),
            "array task {i}"
        );
    }
    assert_nothing_left(&tag);
}
