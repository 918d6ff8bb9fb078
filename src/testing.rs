//! What the unit tests share about their prerequisites (tests only).
//!
//! A missing prerequisite (a tool, the shared test data) skips the test
//! with a note, except under `CI=true` (`tests/run.sh` in CI), where it is
//! a failure: CI installs everything the tests need.

use std::path::{Path, PathBuf};

/// Note that `what` is missing and return; under `CI=true`, fail.
pub fn missing(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prerequisite missing under CI=true: {what}"
    );
    eprintln!("note: {what} missing: skipped");
}

/// Whether `path` exists; when not, [`missing`] says `what` it is.
pub fn have(path: &Path, what: &str) -> bool {
    let found = path.exists();
    if !found {
        missing(&format!("{} ({what})", path.display()));
    }
    found
}

/// A test data directory: `$env`, else `default` relative to the crate;
/// `None` (after [`missing`]) when it does not exist.
pub fn data_dir(env: &str, default: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(env).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default),
        PathBuf::from,
    );
    if dir.is_dir() {
        Some(dir)
    } else {
        missing(&format!("test data {} (set {env})", dir.display()));
        None
    }
}
