//! A stage's header: `Key: value` lines, and the bootstrap agent they name.

use std::collections::HashMap;
use std::path::PathBuf;

use super::parse::{Line, Problem};
use super::{Bootstrap, Header, HeaderKey};
use crate::text::one_line;

/// The header keys Apptainer accepts (lower case). `otherurl` takes a
/// number (`OtherURL1`). Anything else is an error there and here.
const APPTAINER_KEYS: [&str; 25] = [
    "bootstrap",
    "from",
    "includecmd",
    "mirrorurl",
    "updateurl",
    "osversion",
    "include",
    "library",
    "registry",
    "namespace",
    "stage",
    "product",
    "user",
    "regcode",
    "productpgp",
    "registerurl",
    "modules",
    "otherurl",
    "fingerprints",
    "confurl",
    "setopt",
    "target",
    "frontend",
    "filename",
    "buildargs",
];

/// Whether `key` (lower case) is one of Apptainer's header keys.
fn apptainer_key(key: &str) -> bool {
    if let Some(n) = key.strip_prefix("otherurl") {
        return !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    }
    APPTAINER_KEYS.contains(&key)
}

/// Keys every agent accepts. `IncludeCmd` is accepted and has no effect,
/// as in Apptainer today (it no longer reads it).
const COMMON_KEYS: [&str; 3] = ["bootstrap", "stage", "includecmd"];

/// The agents Apptainer has that rfake does not, and why.
const OTHER_AGENTS: [(&str, &str); 14] = [
    ("library", "the Sylabs library is not supported"),
    ("shub", "Singularity Hub is not supported"),
    (
        "oci",
        "not supported yet; use oci-archive, or build from the OCI layout directly",
    ),
    (
        "docker-daemon",
        "there is no Docker daemon to ask; use docker-archive (docker save)",
    ),
    (
        "http",
        "not supported; download the image and use localimage",
    ),
    (
        "https",
        "not supported; download the image and use localimage",
    ),
    ("ipfs", "not supported"),
    ("buildkit", "Dockerfile builds are not supported"),
    ("dockerfile", "Dockerfile builds are not supported"),
    ("busybox", "not supported; use docker with From: busybox"),
    ("arch", "pacstrap bootstraps are not supported"),
    ("yum", "yum bootstraps are not supported yet"),
    ("dnf", "dnf bootstraps are not supported yet"),
    ("zypper", "zypper bootstraps are not supported"),
];

/// The agents rfake reads, as `Bootstrap:` spells them.
const AGENTS: &str = "localimage, oci-archive, docker-archive, docker, oras, scratch, debootstrap";

/// One header line, trimmed: blank or a comment (`None`), else the text
/// before any `#`.
fn content(text: &str) -> Option<&str> {
    let t = text.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    Some(t.split('#').next().unwrap_or(""))
}

/// The `Key: value` pairs of a header, as Apptainer reads them (a trailing
/// `\` continues a value on the next line; a literal `\n` before it is a
/// newline). Keys are lower-cased; unknown and repeated keys are refused.
pub(super) fn keys(lines: &[Line]) -> Result<Vec<HeaderKey>, Problem> {
    let mut keys: Vec<HeaderKey> = Vec::new();
    // Key → where it is in `keys`, so that a repeat is found at once.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut pending: Option<HeaderKey> = None;
    for line in lines {
        let Some(text) = content(line.text) else {
            if let Some(done) = pending.take() {
                add(&mut keys, &mut seen, done)?;
            }
            continue;
        };
        let (mut key, value) = match pending.take() {
            Some(k) => {
                let value = k.value.clone() + text.trim();
                (k, value)
            }
            None => {
                let Some((name, value)) = text.split_once(':') else {
                    return Err(Problem::header(
                        line.no,
                        format!(
                            "`{}` is not a `Key: value` line (the header ends at the first \
                             section, a line starting with %)",
                            one_line(text.trim())
                        ),
                    ));
                };
                let key = HeaderKey {
                    key: name.trim().to_lowercase(),
                    value: String::new(),
                    line: line.no,
                };
                if !apptainer_key(&key.key) {
                    return Err(Problem::header(
                        line.no,
                        format!("unknown header keyword `{}`", one_line(name.trim())),
                    ));
                }
                (key, value.trim().to_string())
            }
        };
        match value.strip_suffix('\\') {
            Some(rest) => {
                key.value = match rest.strip_suffix("\\n") {
                    Some(before) => format!("{before}\n"),
                    None => rest.to_string(),
                };
                pending = Some(key);
            }
            None => {
                key.value = value;
                add(&mut keys, &mut seen, key)?;
            }
        }
    }
    if let Some(done) = pending {
        add(&mut keys, &mut seen, done)?;
    }
    Ok(keys)
}

/// Apptainer keeps the last of a repeated key; a repeat is more likely a
/// mistake than a wish, so it is refused.
fn add(
    keys: &mut Vec<HeaderKey>,
    seen: &mut HashMap<String, usize>,
    key: HeaderKey,
) -> Result<(), Problem> {
    if let Some(&first) = seen.get(&key.key) {
        return Err(Problem::header(
            key.line,
            format!(
                "{} given again (first at line {})",
                shown_key(&key.key),
                keys[first].line
            ),
        ));
    }
    seen.insert(key.key.clone(), keys.len());
    keys.push(key);
    Ok(())
}

/// `From:`, `OSVersion:`... as the documentation spells them.
fn shown_key(key: &str) -> String {
    let name = match key {
        "bootstrap" => "Bootstrap",
        "from" => "From",
        "stage" => "Stage",
        "osversion" => "OSVersion",
        "mirrorurl" => "MirrorURL",
        "include" => "Include",
        "includecmd" => "IncludeCmd",
        "registry" => "Registry",
        "namespace" => "Namespace",
        "fingerprints" => "Fingerprints",
        other => return format!("{}:", one_line(other)),
    };
    format!("{name}:")
}

/// The header of a stage that starts at line `first`, from its keys.
pub(super) fn header(keys: Vec<HeaderKey>, first: usize) -> Result<Header, Problem> {
    let Some(b) = keys.iter().find(|k| k.key == "bootstrap") else {
        return Err(Problem::header(
            first,
            "no Bootstrap: in this stage's header (rfake builds on a base: Bootstrap: \
             docker, localimage...)",
        ));
    };
    let line = b.line;
    let agent = b.value.as_str();
    let value = |name: &str| keys.iter().find(|k| k.key == name);
    // The value of a key the agent needs, non-empty.
    let needed = |name: &str| -> Result<String, Problem> {
        match value(name) {
            Some(k) if !k.value.is_empty() => Ok(k.value.clone()),
            Some(k) => Err(Problem::header(
                k.line,
                format!("{} is empty (Bootstrap: {agent} needs it)", shown_key(name)),
            )),
            None => Err(Problem::header(
                line,
                format!("Bootstrap: {agent} needs a {} line", shown_key(name)),
            )),
        }
    };
    // `docker://x` in From: is Apptainer's URI form, not its header form.
    let reference = |name: &str, scheme: &str| -> Result<String, Problem> {
        let r = needed(name)?;
        if r.starts_with(&format!("{scheme}://")) {
            let k = value(name).map_or(line, |k| k.line);
            return Err(Problem::header(
                k,
                format!(
                    "From: give the reference without `{scheme}://` (Bootstrap: {scheme} says it)"
                ),
            ));
        }
        Ok(r)
    };
    let (bootstrap, uses): (Bootstrap, &[&str]) = match agent {
        "localimage" => (
            Bootstrap::LocalImage(PathBuf::from(needed("from")?)),
            &["from"],
        ),
        "oci-archive" => (
            Bootstrap::OciArchive(PathBuf::from(needed("from")?)),
            &["from"],
        ),
        "docker-archive" => (
            Bootstrap::DockerArchive(PathBuf::from(needed("from")?)),
            &["from"],
        ),
        "docker" => {
            let mut r = reference("from", "docker")?;
            for prefix in ["namespace", "registry"] {
                if let Some(k) = value(prefix).filter(|k| !k.value.is_empty()) {
                    r = format!("{}/{r}", k.value);
                }
            }
            (Bootstrap::Docker(r), &["from", "registry", "namespace"])
        }
        "oras" => (Bootstrap::Oras(reference("from", "oras")?), &["from"]),
        "scratch" => (Bootstrap::Scratch, &[]),
        "debootstrap" => (
            Bootstrap::Debootstrap {
                os_version: needed("osversion")?,
                mirror: needed("mirrorurl")?,
                include: value("include")
                    .map(|k| {
                        k.value
                            .split(|c: char| c == ',' || c.is_whitespace())
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            &["osversion", "mirrorurl", "include"],
        ),
        "" => return Err(Problem::header(line, "Bootstrap: is empty")),
        other => {
            let problem = match OTHER_AGENTS.iter().find(|(name, _)| *name == other) {
                Some((_, why)) => format!("Bootstrap: {other}: {why} (rfake reads {AGENTS})"),
                None => format!(
                    "unknown bootstrap agent `{}` (rfake reads {AGENTS}; agents are lower case)",
                    one_line(other)
                ),
            };
            return Err(Problem::header(line, problem));
        }
    };
    for k in &keys {
        if COMMON_KEYS.contains(&k.key.as_str()) || uses.contains(&k.key.as_str()) {
            continue;
        }
        let problem = if k.key == "fingerprints" {
            "Fingerprints: rfake does not verify SIF signatures yet, so it cannot honour it; \
             remove the line to build without the check"
                .to_string()
        } else {
            format!("{} is not used by Bootstrap: {agent}", shown_key(&k.key))
        };
        return Err(Problem::header(k.line, problem));
    }
    if let Some(k) = value("stage").filter(|k| k.value.is_empty()) {
        return Err(Problem::header(k.line, "Stage: is empty"));
    }
    Ok(Header {
        bootstrap,
        line,
        keys,
    })
}

/// See [`super::looks_like_definition`]: looks at most at the first 64 KiB.
pub(super) fn looks_like_definition(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 << 10)];
    if head.contains(&0) {
        return false;
    }
    // A value continued by a trailing `\` goes on over the next line.
    let mut continued = false;
    for raw in head.split(|&b| b == b'\n') {
        let Ok(text) = std::str::from_utf8(raw) else {
            // The head may end inside a character; a line before it that is
            // not UTF-8 is not a header.
            return false;
        };
        let Some(text) = content(text) else {
            continued = false;
            continue;
        };
        let was_continued = std::mem::replace(&mut continued, text.trim_end().ends_with('\\'));
        if was_continued {
            continue;
        }
        let Some((key, _)) = text.split_once(':') else {
            return false;
        };
        let key = key.trim().to_lowercase();
        if key == "bootstrap" {
            return true;
        }
        if !apptainer_key(&key) {
            return false;
        }
    }
    false
}
