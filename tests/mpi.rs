//! MPI through rfake on a real Slurm cluster with Open MPI: one container
//! per node shared by its ranks, the user's uid inside, no MCA workaround.
//! Every launch has a hard timeout: a broken shared-memory path hangs.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Mpi {
    conf: PathBuf,
    image: PathBuf,
}

/// The tests take turns: the Open MPI jobs of the test user on a node share
/// one session directory top (`/tmp/ompi.NODE.UID`; the containers bind the
/// host's /tmp), Open MPI 4.1 removes it when a job ends, and tests running
/// at once put their jobs on the same nodes. A job starting at that moment
/// fails:
/// mpirun with "A call to mkdir was unable to create the desired directory
/// ... File exists", a rank with "A system call failed during shared memory
/// initialization" and a segmentation fault (each seen once in CI). On a
/// cluster each node has its own /tmp.
static OPEN_MPI: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_mpi_turn() -> std::sync::MutexGuard<'static, ()> {
    OPEN_MPI.lock().unwrap_or_else(|e| e.into_inner())
}

fn mpi() -> Option<Mpi> {
    setup()?;
    let Some(conf) = std::env::var_os("RFAKE_SLURM_CONF").map(PathBuf::from) else {
        missing("a Slurm cluster (slurm/cluster.sh start), RFAKE_SLURM_CONF unset");
        return None;
    };
    let Some(image) = std::env::var_os("RFAKE_MPI_IMAGE").map(PathBuf::from) else {
        missing("the MPI test image (images/mpi/build-mpi-image.sh), RFAKE_MPI_IMAGE unset");
        return None;
    };
    if !image.is_file() {
        missing(&format!("the MPI test image {}", image.display()));
        return None;
    }
    Some(Mpi { conf, image })
}

impl Mpi {
    /// A shell command line run with the cluster's configuration, bounded.
    fn run(&self, tag: &str, line: &str) -> Output {
        Command::new("timeout")
            .args(["-k", "5", "150", "sh", "-c", line])
            .env("SLURM_CONF", &self.conf)
            .env("RFAKE_TEST_TAG", tag)
            .env("RFAKE_CONFIG", common::test_site_config())
            .env("RFAKE_USER_CONFIG", "")
            .current_dir(home())
            .output()
            .expect("run")
    }

    fn rfake_exec(&self) -> String {
        format!(
            "{} -v exec {} /opt/mpi-test/mpi-test",
            rfake_bin().display(),
            self.image.display()
        )
    }
}

/// Assert a passing MPI run: status 0, `ok` from every rank, no
/// shared-memory or single-copy warnings, and the ranks of each node in one
/// container (all but one rank per node joined an existing one).
#[track_caller]
fn assert_mpi_ok(out: &Output, ranks: usize, nodes: usize) {
    let (o, e) = (stdout(out), stderr(out));
    assert_eq!(
        out.status.code(),
        Some(0),
        "status {:?}\nstdout: {o}\nstderr: {e}",
        out.status
    );
    let oks = o
        .lines()
        .filter(|l| l.starts_with("mpi-test: rank") && l.ends_with(": ok"))
        .count();
    assert_eq!(oks, ranks, "stdout: {o}\nstderr: {e}");
    for bad in ["vader", "single-copy", "CMA", "shared memory", "btl_"] {
        assert!(!e.contains(bad), "warning mentioning {bad:?}: {e}");
    }
    let leaders = e.matches("starting its keeper").count();
    let joined = e.matches("joining the container of").count();
    assert_eq!(leaders, nodes, "one container per node: {e}");
    assert_eq!(leaders + joined, ranks, "{e}");
    assert!(e.contains("keeping your uid"), "{e}");
}

#[test]
fn srun_pmix_one_node() {
    let Some(m) = mpi() else { return };
    let _turn = open_mpi_turn();
    let t = tag("mpi-srun1");
    let out = m.run(&t, &format!("srun --mpi=pmix -N1 -n2 {}", m.rfake_exec()));
    assert_mpi_ok(&out, 2, 1);
    assert_nothing_left(&t);
}

#[test]
fn srun_pmix_two_nodes() {
    let Some(m) = mpi() else { return };
    let _turn = open_mpi_turn();
    let t = tag("mpi-srun2");
    let out = m.run(&t, &format!("srun --mpi=pmix -N2 -n4 {}", m.rfake_exec()));
    assert_mpi_ok(&out, 4, 2);
    assert_nothing_left(&t);
}

/// Three nodes, four ranks each: one container per node (3 keepers, 9
/// ranks joining).
#[test]
fn srun_pmix_three_nodes() {
    let Some(m) = mpi() else { return };
    let _turn = open_mpi_turn();
    let t = tag("mpi-srun3");
    let out = m.run(
        &t,
        &format!(
            "srun --mpi=pmix -N3 -n12 --ntasks-per-node=4 {}",
            m.rfake_exec()
        ),
    );
    assert_mpi_ok(&out, 12, 3);
    assert_nothing_left(&t);
}

/// The host's mpirun across a 3-node allocation, 4 slots a node.
#[test]
fn mpirun_across_three_nodes() {
    let Some(m) = mpi() else { return };
    let _turn = open_mpi_turn();
    let t = tag("mpi-mpirun3");
    let out = m.run(
        &t,
        &format!(
            "salloc -N3 --ntasks-per-node=4 mpirun -np 12 {}",
            m.rfake_exec()
        ),
    );
    assert_mpi_ok(&out, 12, 3);
    assert_eq!(stdout(&out).matches(" on node3: ok").count(), 4);
    assert_nothing_left(&t);
}

#[test]
fn mpirun_inside_an_allocation() {
    let Some(m) = mpi() else { return };
    let _turn = open_mpi_turn();
    let t = tag("mpi-mpirun");
    let out = m.run(
        &t,
        &format!("salloc -N1 -n2 mpirun -np 2 {}", m.rfake_exec()),
    );
    assert_mpi_ok(&out, 2, 1);
    let out = m.run(
        &t,
        &format!(
            "salloc -N2 -n2 mpirun -np 2 --map-by node {}",
            m.rfake_exec()
        ),
    );
    assert_mpi_ok(&out, 2, 2);
    assert_nothing_left(&t);
}

#[test]
fn mpi_example_job_scripts() {
    let Some(m) = mpi() else { return };
    let _turn = open_mpi_turn();
    let dir = tempfile::Builder::new()
        .prefix("mpi-examples-")
        .tempdir_in(home())
        .unwrap();
    let t = tag("mpi-examples");
    for (name, script) in [
        (
            "mpi-srun",
            include_str!("../slurm/examples/mpi-srun.sbatch"),
        ),
        (
            "mpi-mpirun",
            include_str!("../slurm/examples/mpi-mpirun.sbatch"),
        ),
    ] {
        let path = dir.path().join(format!("{name}.sbatch"));
        std::fs::write(&path, script).unwrap();
        let outfile = dir.path().join(format!("{name}.out"));
        let line = format!(
            "PATH={}:$PATH sbatch --wait --export=ALL,RFAKE_MPI_IMAGE={} --output={} {}",
            rfake_bin().parent().unwrap().display(),
            m.image.display(),
            outfile.display(),
            path.display()
        );
        let out = m.run(&t, &line);
        let log = std::fs::read_to_string(&outfile).unwrap_or_default();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}\n{log}",
            stderr(&out)
        );
        assert_eq!(log.matches(": ok").count(), 2, "{name}: {log}");
    }
    assert_nothing_left(&t);
}
