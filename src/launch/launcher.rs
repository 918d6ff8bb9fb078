//! The launchers rfake runs under (Slurm, Flux, LSF, PBS; Open MPI, PMIx,
//! Cray PALS, MPICH's hydra), told by the variables they set and, for
//! hydra, which sets no job identifier, by its proxy above the rank:
//! whether ranks keep the user's uid (PMIx requires it) and which ranks
//! share one container (the join key). See docs/slurm-mpi.md, "When it
//! happens" and "Other launchers".

use std::ffi::OsString;

use crate::env;

/// Which ranks share a container, and why that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinKey {
    pub key: String,
    /// The variables (or option) it came from, for `-v`.
    pub origin: String,
}

/// The launcher rfake runs under, by the variables it sets: a rank or task
/// of a parallel launch (not a batch script).
pub fn launcher(env_list: &[(OsString, OsString)]) -> Option<&'static str> {
    const MARKERS: [&str; 8] = [
        "PMIX_RANK",
        "PMI_RANK",
        "OMPI_COMM_WORLD_RANK",
        "SLURM_STEP_ID",
        "PMI_SIZE",
        "PMIX_NAMESPACE",
        // Flux's job shell, in every task (its batch script has it unset).
        "FLUX_TASK_RANK",
        // HPE Cray PALS (mpiexec/aprun under PBS on Cray EX).
        "PALS_RANKID",
    ];
    MARKERS
        .into_iter()
        .find(|m| env::get(env_list, m).is_some())
}

/// What a key is taken from, for the error of `--join` without one.
pub const SOURCES: &str = "SLURM_JOB_ID with SLURM_STEP_ID, FLUX_JOB_ID, PMIX_NAMESPACE, \
                           OMPI_MCA_ess_base_jobid, PALS_APID, a hydra_pmi_proxy above a PMI rank, \
                           LSB_JOBID or PBS_JOBID in a rank";

fn var(env_list: &[(OsString, OsString)], name: &str) -> Option<String> {
    env::get(env_list, name).map(|v| v.to_string_lossy().into_owned())
}

/// A process above this one: launchers that set no job identifier in
/// their ranks' environment (MPICH's hydra) are told by their process.
pub use crate::container::process::Ancestor;

/// MPICH's per-node proxy, the parent of every rank hydra starts on a node
/// (also the name of Intel MPI's, which is hydra's).
const HYDRA_PROXY: &str = "hydra_pmi_proxy";
/// How far up to look for it (a rank may be under shells and wrappers).
const ANCESTOR_DEPTH: usize = 32;

/// The processes above this one, parent first, up to (not including) pid 1.
pub fn ancestors() -> Vec<Ancestor> {
    crate::container::process::ancestors(std::path::Path::new("/proc"), ANCESTOR_DEPTH)
}

/// The key for the current job step on this node, if a launcher set one.
pub fn key_from_env(env_list: &[(OsString, OsString)]) -> Option<JoinKey> {
    key_with(env_list, &ancestors)
}

/// [`key_from_env`] with the process tree given: the first that applies of
/// the job steps of batch systems (Slurm, Flux), MPI launchers (PMIx,
/// Open MPI, Cray PALS, hydra) and, for a rank none of those named, the
/// job of LSF or PBS.
pub fn key_with(
    env_list: &[(OsString, OsString)],
    ancestors: &dyn Fn() -> Vec<Ancestor>,
) -> Option<JoinKey> {
    let key = |key: String, origin: &str| {
        Some(JoinKey {
            key,
            origin: origin.into(),
        })
    };
    if let (Some(job), Some(step)) = (
        var(env_list, "SLURM_JOB_ID"),
        var(env_list, "SLURM_STEP_ID"),
    ) {
        return key(format!("slurm.{job}.{step}"), "SLURM_JOB_ID, SLURM_STEP_ID");
    }
    // Every `flux run`/`flux submit` is a job of its own: its id names the
    // step. Ids are unique within one Flux instance only, and instances
    // nest (a `flux batch` job is one): FLUX_URI, the local broker of the
    // instance, tells them apart.
    if let Some(job) = var(env_list, "FLUX_JOB_ID") {
        let uri = var(env_list, "FLUX_URI").unwrap_or_default();
        return key(format!("flux.{job}.{uri}"), "FLUX_JOB_ID, FLUX_URI");
    }
    if let Some(ns) = var(env_list, "PMIX_NAMESPACE") {
        return key(format!("pmix.{ns}"), "PMIX_NAMESPACE");
    }
    for name in ["OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_ess_jobid"] {
        if let Some(id) = var(env_list, name) {
            return key(format!("ompi.{id}"), name);
        }
    }
    // HPE Cray PALS: the application id of one mpiexec/aprun launch.
    if let Some(apid) = var(env_list, "PALS_APID") {
        return key(format!("pals.{apid}"), "PALS_APID");
    }
    // Hydra sets no job identifier in a rank (PMI_RANK, PMI_SIZE, PMI_FD,
    // MPI_LOCALRANKID, MPI_LOCALNRANKS only), but starts one proxy per node
    // and job, the parent of that node's ranks: the proxy is the key.
    if ["PMI_RANK", "PMI_FD"]
        .iter()
        .any(|v| env::get(env_list, v).is_some())
    {
        if let Some(proxy) = ancestors().into_iter().find(|a| a.comm == HYDRA_PROXY) {
            return key(
                format!("hydra.{}.{}", proxy.pid, proxy.start),
                &format!("PMI_RANK under {HYDRA_PROXY} {}", proxy.pid),
            );
        }
    }
    // LSF and PBS have no steps: their job is the key, for ranks only (the
    // batch script itself does not join, as under Slurm). An array job's
    // elements share LSB_JOBID; PBS_JOBID has the index in it.
    launcher(env_list)?;
    if let Some(job) = var(env_list, "LSB_JOBID") {
        let index = var(env_list, "LSB_JOBINDEX").unwrap_or_else(|| "0".into());
        return key(format!("lsf.{job}.{index}"), "LSB_JOBID, LSB_JOBINDEX");
    }
    if let Some(job) = var(env_list, "PBS_JOBID") {
        return key(format!("pbs.{job}"), "PBS_JOBID");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, v: &str) -> (std::ffi::OsString, std::ffi::OsString) {
        (k.into(), v.into())
    }

    #[test]
    fn keys_from_launchers() {
        let slurm = [
            e("SLURM_JOB_ID", "42"),
            e("SLURM_STEP_ID", "0"),
            e("PMIX_NAMESPACE", "x"),
        ];
        assert_eq!(key_from_env(&slurm).unwrap().key, "slurm.42.0");
        assert_eq!(launcher(&slurm), Some("SLURM_STEP_ID"));
        let pmix = [
            e("PMIX_NAMESPACE", "prterun-node-123@1"),
            e("PMIX_RANK", "0"),
        ];
        assert_eq!(key_from_env(&pmix).unwrap().key, "pmix.prterun-node-123@1");
        assert_eq!(launcher(&pmix), Some("PMIX_RANK"));
        let ompi = [
            e("OMPI_MCA_ess_base_jobid", "123"),
            e("OMPI_COMM_WORLD_RANK", "1"),
        ];
        assert_eq!(
            key_from_env(&ompi).unwrap().origin,
            "OMPI_MCA_ess_base_jobid"
        );
        assert_eq!(key_from_env(&[e("PATH", "/bin")]), None);
        assert_eq!(
            launcher(&[e("SLURM_JOB_ID", "1")]),
            None,
            "a job script, not a step"
        );
    }

    fn none() -> Vec<Ancestor> {
        Vec::new()
    }

    fn proc(pid: u32, comm: &str, start: u64) -> Ancestor {
        Ancestor {
            pid,
            comm: comm.into(),
            start,
        }
    }

    /// Hydra's ranks, as `mpiexec.hydra -n 2 env` shows them (MPICH 4.0.2):
    /// no job identifier, only the proxy above them.
    fn hydra_rank(rank: &str) -> Vec<(OsString, OsString)> {
        vec![
            e("PMI_RANK", rank),
            e("PMI_SIZE", "2"),
            e("PMI_FD", "6"),
            e("MPI_LOCALRANKID", rank),
            e("MPI_LOCALNRANKS", "2"),
            e("HYDI_CONTROL_FD", "7"),
        ]
    }

    #[test]
    fn hydra_ranks_join_by_their_proxy() {
        // Two ranks of one job on one node: the same proxy, through a
        // wrapper shell for one of them.
        let tree = || {
            vec![
                proc(900, "hydra_pmi_proxy", 5000),
                proc(899, "mpiexec.hydra", 4990),
            ]
        };
        let wrapped = || {
            vec![
                proc(950, "sh", 5100),
                proc(900, "hydra_pmi_proxy", 5000),
                proc(899, "mpiexec.hydra", 4990),
            ]
        };
        let a = key_with(&hydra_rank("0"), &tree).unwrap();
        let b = key_with(&hydra_rank("1"), &wrapped).unwrap();
        assert_eq!(a.key, "hydra.900.5000");
        assert_eq!(a, b);
        assert_eq!(launcher(&hydra_rank("0")), Some("PMI_RANK"));
        // Another job: another proxy; the same pid reused later: another
        // start time.
        let other = || vec![proc(1200, "hydra_pmi_proxy", 9000)];
        let reused = || vec![proc(900, "hydra_pmi_proxy", 9100)];
        assert_ne!(key_with(&hydra_rank("0"), &other).unwrap(), a);
        assert_ne!(key_with(&hydra_rank("0"), &reused).unwrap(), a);
        // PMI variables without a proxy above (another PMI-1 server): no key.
        assert_eq!(key_with(&hydra_rank("0"), &none), None);
        // Hydra under Slurm (its proxies started by srun): the step.
        let mut slurm = hydra_rank("0");
        slurm.extend([e("SLURM_JOB_ID", "7"), e("SLURM_STEP_ID", "3")]);
        assert_eq!(key_with(&slurm, &tree).unwrap().key, "slurm.7.3");
        // The process tree is only read for PMI ranks.
        let panics = || -> Vec<Ancestor> { panic!("read the process tree") };
        assert_eq!(key_with(&[e("PATH", "/bin")], &panics), None);
    }

    #[test]
    fn flux_tasks_join_by_job_and_instance() {
        // flux-environment(7): every task of a job has FLUX_JOB_ID (F58),
        // FLUX_TASK_RANK, FLUX_TASK_LOCAL_ID and FLUX_URI (the local
        // broker); the initial program of `flux batch`/`flux alloc` has
        // them unset.
        let task = |job: &str, uri: &str, rank: &str| {
            vec![
                e("FLUX_JOB_ID", job),
                e("FLUX_URI", uri),
                e("FLUX_TASK_RANK", rank),
                e("FLUX_TASK_LOCAL_ID", rank),
                e("FLUX_JOB_SIZE", "4"),
                e("PMI_RANK", rank),
                e("PMI_FD", "5"),
            ]
        };
        let uri = "local:///run/flux/local";
        let a = key_with(&task("ƒ2y8mzbwH", uri, "0"), &none).unwrap();
        assert_eq!(a.key, "flux.ƒ2y8mzbwH.local:///run/flux/local");
        assert_eq!(a.origin, "FLUX_JOB_ID, FLUX_URI");
        assert_eq!(key_with(&task("ƒ2y8mzbwH", uri, "3"), &none).unwrap(), a);
        assert_ne!(key_with(&task("ƒ2y8n1pLM", uri, "0"), &none).unwrap(), a);
        // The same id in a nested instance (a `flux batch` job's own broker).
        let nested = "local:///tmp/flux-Ab12Cd/local-0";
        assert_ne!(key_with(&task("ƒ2y8mzbwH", nested, "0"), &none).unwrap(), a);
        assert_eq!(
            launcher(&[e("FLUX_TASK_RANK", "0")]),
            Some("FLUX_TASK_RANK")
        );
        // A batch script: FLUX_URI only.
        assert_eq!(key_with(&[e("FLUX_URI", uri)], &none), None);
        assert_eq!(launcher(&[e("FLUX_URI", uri)]), None);
    }

    #[test]
    fn lsf_and_pbs_ranks_join_by_job() {
        // LSF: LSB_JOBID, and LSB_JOBINDEX (0 outside job arrays; the
        // elements of an array share LSB_JOBID).
        let lsf = |index: &str, rank: Option<&str>| {
            let mut v = vec![
                e("LSB_JOBID", "4711"),
                e("LSB_JOBINDEX", index),
                e("LSB_HOSTS", "n1 n1 n2 n2"),
            ];
            if let Some(r) = rank {
                v.push(e("PMI_RANK", r));
            }
            v
        };
        let k = key_with(&lsf("0", Some("1")), &none).unwrap();
        assert_eq!(k.key, "lsf.4711.0");
        assert_eq!(k.origin, "LSB_JOBID, LSB_JOBINDEX");
        assert_ne!(key_with(&lsf("2", Some("1")), &none).unwrap(), k);
        assert_eq!(key_with(&lsf("0", None), &none), None, "the job script");
        // jsrun serves PMIx: its namespace, not the job.
        let mut jsrun = lsf("0", None);
        jsrun.extend([e("PMIX_NAMESPACE", "jsm.4711.1"), e("PMIX_RANK", "0")]);
        assert_eq!(key_with(&jsrun, &none).unwrap().key, "pmix.jsm.4711.1");

        // PBS/OpenPBS: PBS_JOBID (array subjobs: 123[4].server); TM tasks
        // have PBS_TASKNUM, PBS_NODENUM, PBS_VNODENUM, which differ per task.
        let pbs = |task: &str| {
            vec![
                e("PBS_JOBID", "123[4].pbs01"),
                e("PBS_ENVIRONMENT", "PBS_BATCH"),
                e("PBS_TASKNUM", task),
                e("PBS_NODENUM", "0"),
                e("PMI_RANK", task),
            ]
        };
        let k = key_with(&pbs("1"), &none).unwrap();
        assert_eq!(k.key, "pbs.123[4].pbs01");
        assert_eq!(key_with(&pbs("2"), &none).unwrap(), k);
        assert_eq!(
            key_with(&[e("PBS_JOBID", "123.pbs01"), e("PBS_TASKNUM", "1")], &none),
            None,
            "the job script"
        );
        // Cray PALS under PBS: one application of the job.
        let mut pals = pbs("1");
        pals.extend([e("PALS_APID", "6f8a1c2e-aa"), e("PALS_RANKID", "1")]);
        assert_eq!(key_with(&pals, &none).unwrap().key, "pals.6f8a1c2e-aa");
        assert_eq!(launcher(&[e("PALS_RANKID", "0")]), Some("PALS_RANKID"));
        // Hydra in a PBS job (`-bootstrap pbs`): the proxy is closer.
        let tree = || vec![proc(31, "hydra_pmi_proxy", 77)];
        assert_eq!(key_with(&pbs("1"), &tree).unwrap().key, "hydra.31.77");
    }

    #[test]
    fn this_process_tree() {
        // The test's own parents: cargo's test harness runs under a shell
        // or cargo, which is alive.
        let up = ancestors();
        assert!(!up.is_empty());
        assert_eq!(up[0].pid, nix::unistd::getppid().as_raw() as u32);
        assert!(up.iter().all(|a| a.start > 0 && a.pid > 1));
    }
}
