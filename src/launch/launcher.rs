//! The MPI and Slurm launchers rfake runs under, told by the variables they
//! set: whether ranks keep the user's uid (PMIx requires it) and which
//! ranks share one container (the join key).

use std::ffi::OsString;

use crate::env;

/// Which ranks share a container, and why that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinKey {
    pub key: String,
    /// The variables (or option) it came from, for `-v`.
    pub origin: String,
}

/// The launcher rfake runs under, by the variables it sets.
pub fn launcher(env_list: &[(OsString, OsString)]) -> Option<&'static str> {
    const MARKERS: [&str; 6] = [
        "PMIX_RANK",
        "PMI_RANK",
        "OMPI_COMM_WORLD_RANK",
        "SLURM_STEP_ID",
        "PMI_SIZE",
        "PMIX_NAMESPACE",
    ];
    MARKERS
        .into_iter()
        .find(|m| env::get(env_list, m).is_some())
}

fn var(env_list: &[(OsString, OsString)], name: &str) -> Option<String> {
    env::get(env_list, name).map(|v| v.to_string_lossy().into_owned())
}

/// The key for the current job step on this node, if a launcher set one.
pub fn key_from_env(env_list: &[(OsString, OsString)]) -> Option<JoinKey> {
    if let (Some(job), Some(step)) = (
        var(env_list, "SLURM_JOB_ID"),
        var(env_list, "SLURM_STEP_ID"),
    ) {
        return Some(JoinKey {
            key: format!("slurm.{job}.{step}"),
            origin: "SLURM_JOB_ID, SLURM_STEP_ID".into(),
        });
    }
    if let Some(ns) = var(env_list, "PMIX_NAMESPACE") {
        return Some(JoinKey {
            key: format!("pmix.{ns}"),
            origin: "PMIX_NAMESPACE".into(),
        });
    }
    for name in ["OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_ess_jobid"] {
        if let Some(id) = var(env_list, name) {
            return Some(JoinKey {
                key: format!("ompi.{id}"),
                origin: name.into(),
            });
        }
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
}
