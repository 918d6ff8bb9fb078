//! `rfake cache list [--json]` and `rfake cache clean [--all|--older-than DURATION]`.

use std::ffi::OsString;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::{Cache, CacheError, Clean, Entry, Removal, Settings};
use crate::cli::CacheCommand;
use crate::error::Error;
use crate::text::{one_line, shown};

/// The cache is the one pulls use: `RFAKE_CACHEDIR`, else `cache_dir`,
/// else the default; a site-curated one (`cache_read_only`) is listed but
/// never cleaned.
pub fn run(
    command: CacheCommand,
    config: &crate::config::Config,
    env: &[(OsString, OsString)],
) -> Result<u8, Error> {
    let settings = Settings::new(config, env)?;
    match command {
        CacheCommand::List { json } => list(&settings.root, json)?,
        CacheCommand::Clean { all, older_than } => {
            let what = match (all, older_than) {
                (true, _) => Clean::All,
                (false, Some(age)) => Clean::OlderThan(age),
                (false, None) => Clean::Unneeded,
            };
            clean(&settings, what)?
        }
    }
    Ok(0)
}

fn list(root: &Path, json: bool) -> Result<(), CacheError> {
    // Listing never writes: opened read-only, a missing root is empty.
    let cache = Cache::open(root.to_path_buf(), true, 0)?;
    let entries = cache.list()?;
    let total: u64 = entries.iter().map(|e| e.size).sum();
    if json {
        let entries: Vec<_> = entries.iter().map(entry_json).collect();
        let doc = serde_json::json!({
            "root": root.to_string_lossy(),
            "entries": entries,
            "total_size": total,
        });
        println!("{doc:#}");
        return Ok(());
    }
    if entries.is_empty() {
        println!("the cache {} is empty", shown(root));
        return Ok(());
    }
    let now = SystemTime::now();
    println!(
        "{:<8} {:>10}  {:<11} {:<19}  REFERENCES",
        "KIND", "SIZE", "LAST USED", "DIGEST"
    );
    for e in &entries {
        let line = format!(
            "{:<8} {:>10}  {:<11} {:<19}  {}",
            e.kind.name(),
            crate::text::human_size(e.size),
            ago(now, e.last_used),
            short(e),
            refs_text(e),
        );
        println!("{}", line.trim_end());
    }
    let n = entries.len();
    println!(
        "total: {n} entr{}, {} in {}",
        if n == 1 { "y" } else { "ies" },
        crate::text::human_size(total),
        shown(root)
    );
    Ok(())
}

fn clean(settings: &Settings, what: Clean) -> Result<(), CacheError> {
    let root = &settings.root;
    if !root.exists() {
        println!("nothing to remove: there is no cache at {}", shown(root));
        return Ok(());
    }
    let cache = Cache::open(root.to_path_buf(), settings.read_only, 0)?;
    let report = cache.clean(what)?;
    print!("{}", clean_text(&report));
    Ok(())
}

fn clean_text(report: &Removal) -> String {
    let mut out = String::new();
    for e in &report.removed {
        out += &format!(
            "removed {} {} ({}){}\n",
            e.kind.name(),
            short(e),
            crate::text::human_size(e.size),
            match refs_text(e).as_str() {
                "" => String::new(),
                r => format!(" {r}"),
            }
        );
    }
    let n = report.removed.len();
    out += &format!(
        "freed {} ({n} entr{}",
        crate::text::human_size(report.freed),
        if n == 1 { "y" } else { "ies" }
    );
    if report.refs_removed > 0 {
        out += &format!(", {} reference record(s)", report.refs_removed);
    }
    if report.profiles_removed > 0 {
        out += &format!(", {} prefetch profile(s)", report.profiles_removed);
    }
    out += ")";
    if !report.busy.is_empty() {
        out += &format!("; kept {} in use by a running pull", report.busy.len());
    }
    out += &format!(
        "; the cache now holds {}\n",
        crate::text::human_size(report.total)
    );
    out
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "kind": e.kind.name(),
        "path": e.path.to_string_lossy(),
        "digest": e.digest.as_ref().map(ToString::to_string),
        "size": e.size,
        "last_used": e.last_used.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "references": e.references,
        "busy": e.busy,
    })
}

/// `sha256:0123456789ab`, or the file name of a temporary.
fn short(e: &Entry) -> String {
    match &e.digest {
        Some(d) => format!("{}:{}", d.algorithm, &d.hex[..12]),
        None => e
            .path
            .file_name()
            .map(|n| one_line(&n.to_string_lossy()))
            .unwrap_or_default(),
    }
}

fn refs_text(e: &Entry) -> String {
    let mut text = one_line(&e.references.join(", "));
    if e.busy {
        text = if text.is_empty() {
            "(in use)".to_string()
        } else {
            format!("{text} (in use)")
        };
    }
    text
}

/// `12 s ago`, `5 min ago`, `3 h ago`, `40 d ago`.
fn ago(now: SystemTime, then: SystemTime) -> String {
    let Ok(age) = now.duration_since(then) else {
        return "just now".to_string();
    };
    let s = age.as_secs();
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(crate::text::human_size(0), "0 B");
        assert_eq!(crate::text::human_size(1023), "1023 B");
        assert_eq!(crate::text::human_size(1536), "1.5 KiB");
        assert_eq!(crate::text::human_size(31 << 20), "31.0 MiB");
        assert_eq!(crate::text::human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn ages_in_the_largest_whole_unit() {
        let now = SystemTime::now();
        let at = |s| ago(now, now - Duration::from_secs(s));
        assert_eq!(at(5), "5 s ago");
        assert_eq!(at(300), "5 min ago");
        assert_eq!(at(7200), "2 h ago");
        assert_eq!(at(86400 * 40), "40 d ago");
        assert_eq!(ago(now, now + Duration::from_secs(9)), "just now");
    }
}
