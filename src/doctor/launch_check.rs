//! The MPI check under a launcher: the first rank of a job step on a node
//! (the one that starts the shared container's keeper) compares the
//! image's MPI stack with the host's and warns, once, when the model in
//! use may not work; the other ranks of the step on the node join the
//! container and say nothing. One warning per node, step and image, not
//! per rank.
//!
//! It runs while the keeper builds the container in its own process, so it
//! adds nothing to the launch's time unless the image is slow to read; it
//! reads the image's package database in-process (milliseconds), never
//! starts anything, and never fails a launch: a problem is logged at debug
//! level and the launch goes on. Nothing is written: a cache file per node
//! would be one more file created per node and step, on the shared home
//! when there is no node-local runtime directory, which is the metadata
//! load on the file system that launches at scale must avoid.

use std::path::Path;

use super::mpi::{self, Outcome};
use crate::launch::Plan;

/// Which model a launch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// The image's MPI, the host's launcher.
    Hybrid,
    /// The host's MPI bound in by a profile.
    Bind,
}

/// The first rank of a joining launch (under a launcher, or with
/// `--join-key`), once its keeper is starting: warn when the model in use
/// may not work. A launch with a bind profile uses the bind model, any
/// other the hybrid model.
pub fn first_rank(plan: &Plan) {
    let profiled = plan
        .overrides
        .iter()
        .any(|o| o.origin.starts_with("profile "))
        || plan.steps.iter().any(|s| {
            matches!(s, crate::container::rootfs::Step::Bind(b) if b.origin.starts_with("profile "))
        });
    let model = if profiled { Model::Bind } else { Model::Hybrid };
    let t = std::time::Instant::now();
    let warning = check(&plan.image.path, model);
    log::debug!("MPI check: {:.1?}", t.elapsed());
    if let Some(warning) = warning {
        log::warn!("{warning}");
    }
}

/// The warning for `image` under `model`, if any.
pub fn check(image: &Path, model: Model) -> Option<String> {
    let files = match crate::inspect::inspect(image, None) {
        Ok((_, files)) => files,
        Err(e) => {
            log::debug!("MPI check: {e}");
            return None;
        }
    };
    let image_stack = mpi::read(&files);
    let host_stack = mpi::read(&crate::inspect::ImageFiles::Directory("/".into()));
    let a = mpi::assess(&image_stack, &host_stack);
    let (name, verdict) = match model {
        Model::Hybrid => ("hybrid", &a.hybrid),
        Model::Bind => ("bind", &a.bind),
    };
    let how = match verdict.outcome {
        Outcome::Works | Outcome::NotApplicable => return None,
        Outcome::Likely => "may not work",
        Outcome::Fails => "will not work",
    };
    let reason = verdict
        .reasons
        .get(verdict.decisive)
        .cloned()
        .unwrap_or_default();
    Some(format!(
        "MPI: the {name} model {how} with {}: {reason} (`rfake doctor --image {}` says more)",
        crate::text::shown(image),
        crate::text::shown(image)
    ))
}
