//! MPI through rfake under MPICH's hydra (`mpiexec.hydra`, Debian's
//! `mpich`) on this one machine, with the MPICH test image
//! (images/mpich/): hydra sets no job identifier in its ranks, so they
//! join by the hydra_pmi_proxy above them; one container and one image
//! server per job and node, the 16 MiB ring passes. Every launch has a
//! hard timeout.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The MPICH image: RFAKE_MPICH_IMAGE, else `mpich.sqfs` beside
/// RFAKE_MPI_IMAGE (tests/run.sh installs both in its stage).
fn image() -> Option<PathBuf> {
    setup()?;
    if !have("mpiexec.hydra") {
        missing("mpiexec.hydra (apt-get install mpich)");
        return None;
    }
    let image = std::env::var_os("RFAKE_MPICH_IMAGE")
        .map(PathBuf::from)
        .or_else(|| {
            let mpi = PathBuf::from(std::env::var_os("RFAKE_MPI_IMAGE")?);
            Some(mpi.with_file_name("mpich.sqfs"))
        });
    match image {
        Some(image) if image.is_file() => Some(image),
        other => {
            missing(&format!(
                "the MPICH test image (images/mpich/build-mpich-image.sh) at {:?}: set \
                 RFAKE_MPICH_IMAGE",
                other
            ));
            None
        }
    }
}

/// A shell command line, bounded, in the tests' scrubbed environment
/// (hydra passes it on to the ranks, the test's tag with it).
fn run(tag: &str, line: &str) -> Output {
    scrubbed("timeout", tag)
        .args(["-k", "5", "150", "sh", "-c", line])
        .current_dir(home())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run")
}

/// Image servers running for `tag`: rfake's own (rfake-fuse) or squashfuse.
fn server_count(tag: &str) -> usize {
    processes_tagged(tag)
        .into_iter()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "rfake-fuse" || comm.starts_with("squashfuse")
        })
        .count()
}

/// `mpiexec.hydra -n N rfake -v exec [OPTS] IMAGE PAYLOAD...`
fn hydra_line(ranks: usize, opts: &str, image: &Path, payload: &str) -> String {
    format!(
        "mpiexec.hydra -n {ranks} {} -v exec {opts} {} {payload}",
        rfake_bin().display(),
        image.display()
    )
}

fn ok_lines(o: &str) -> usize {
    o.lines()
        .filter(|l| l.starts_with("mpi-test: rank") && l.ends_with(": ok"))
        .count()
}

/// The hydra keys (`hydra.PID.START`) the ranks' `-v` lines name.
fn keys(e: &str) -> std::collections::BTreeSet<String> {
    e.lines()
        .filter(|l| l.contains("starting its keeper"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("hydra.")))
        .map(str::to_string)
        .collect()
}

#[test]
fn hydra_ranks_share_one_container_and_pass_the_ring() {
    let Some(img) = image() else { return };
    let t = tag("hydra-ring");
    let dir = tempfile::Builder::new()
        .prefix("hydra-")
        .tempdir_in(home())
        .unwrap();
    // Each rank notes its namespaces, then runs the test program.
    let payload = format!(
        "sh -c 'readlink /proc/self/ns/user /proc/self/ns/mnt >{}/ns.$PMI_RANK && \
         exec /opt/mpi-test/mpi-test --verbose'",
        dir.path().display()
    );
    // Image servers, sampled while the job runs.
    let (stop, most, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let sampler = {
        let (stop, most, seen, t) = (stop.clone(), most.clone(), seen.clone(), t.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = server_count(&t);
                most.fetch_max(n, Ordering::Relaxed);
                if n > 0 {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = run(&t, &hydra_line(4, "", &img, &payload));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "stdout: {o}\nstderr: {e}");
    assert_eq!(ok_lines(&o), 4, "stdout: {o}\nstderr: {e}");
    assert!(o.contains("16 MiB to rank 3 and back"), "{o}");
    // One container: one keeper, three ranks joined it, by hydra's proxy.
    assert_eq!(e.matches("starting its keeper").count(), 1, "{e}");
    assert_eq!(
        e.matches("joining the container of hydra.").count(),
        3,
        "{e}"
    );
    assert!(e.contains("(PMI_RANK under hydra_pmi_proxy "), "{e}");
    assert!(
        e.contains("running under a launcher (PMI_RANK is set): keeping your uid"),
        "{e}"
    );
    let ns: Vec<String> = (0..4)
        .map(|r| std::fs::read_to_string(dir.path().join(format!("ns.{r}"))).unwrap())
        .collect();
    assert!(
        ns[0].contains("user:[") && ns[0].contains("mnt:["),
        "{ns:?}"
    );
    assert!(
        ns.iter().all(|n| *n == ns[0]),
        "one user and mount namespace: {ns:?}"
    );
    // One image server, seen while the ranks ran.
    assert!(seen.load(Ordering::Relaxed) > 0, "no image server seen");
    assert_eq!(most.load(Ordering::Relaxed), 1, "image servers at once");
    assert_nothing_left(&t);
}

/// Two jobs at once, one of them with its ranks under a wrapper shell.
#[test]
fn two_hydra_jobs_get_a_container_each() {
    let Some(img) = image() else { return };
    let t = tag("hydra-two");
    let one = hydra_line(2, "", &img, "/opt/mpi-test/mpi-test --mib 1");
    // The other job's ranks are under a shell between the proxy and rfake
    // (`; exit` keeps sh from exec'ing rfake).
    let wrapped = format!(
        "mpiexec.hydra -n 2 sh -c '{} -v exec {} /opt/mpi-test/mpi-test --mib 1; exit $?'",
        rfake_bin().display(),
        img.display()
    );
    let out = run(&t, &format!("{one} & {wrapped} & wait %1 && wait %2"));
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "stdout: {o}\nstderr: {e}");
    assert_eq!(ok_lines(&o), 4, "stdout: {o}\nstderr: {e}");
    assert_eq!(e.matches("starting its keeper").count(), 2, "{e}");
    assert_eq!(
        e.matches("joining the container of hydra.").count(),
        2,
        "{e}"
    );
    assert_eq!(keys(&e).len(), 2, "two jobs, two keys: {e}");
    assert_nothing_left(&t);
}

/// Why hydra's ranks must share: each in a user namespace of its own,
/// MPICH's UCX shared-memory transport cannot open its peer's memory
/// (`open(/proc/PID/fd/N)`: permission denied) and MPI_Init fails.
#[test]
fn hydra_ranks_without_joining_fail_in_mpi_init() {
    let Some(img) = image() else { return };
    let t = tag("hydra-nojoin");
    let out = run(
        &t,
        &hydra_line(2, "--no-join", &img, "/opt/mpi-test/mpi-test --timeout 30"),
    );
    let (o, e) = (stdout(&out), stderr(&out));
    assert_ne!(out.status.code(), Some(0), "stdout: {o}\nstderr: {e}");
    assert_eq!(ok_lines(&o), 0, "stdout: {o}\nstderr: {e}");
    assert!(!e.contains("starting its keeper"), "{e}");
    // Both containers were made and both programs started: the failure is
    // the program's. (What it prints varies: UCX's `Shared memory error`
    // and MPICH's MPI_Init error stack, or nothing when hydra ends the job
    // before the output is through.)
    assert_eq!(
        e.matches("running /opt/mpi-test/mpi-test as").count(),
        2,
        "{e}"
    );
    assert_nothing_left(&t);
}
