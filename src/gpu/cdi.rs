//! Container Device Interface specs (github.com/cncf-tags/container-device-interface,
//! `SPEC.md`): read from the spec directories, checked, and a requested
//! device turned into [`ContainerEdits`].
//!
//! What is read: `cdiVersion` 0.3.0 to 0.8.0, `kind` (`VENDOR/CLASS`),
//! `devices` (each a `name` and its `containerEdits`), the spec-wide
//! `containerEdits` (applied once when any of the spec's devices is used),
//! `annotations` (ignored). Of the edits: `env`, `deviceNodes` (`path`, and
//! `hostPath` when the node lives elsewhere on the host; `type`, `major`,
//! `minor`, `fileMode`, `uid`, `gid`, `permissions` describe a node to
//! *create*, which rfake never does: it binds the host's), `mounts` (binds
//! only), `hooks` (the NVIDIA toolkit's `create-symlinks` and
//! `update-ldcache`, done in-process; the rest refused). `additionalGids`
//! cannot be granted in a one-entry user namespace: ignored with a warning.
//! `intelRdt` and `netDevices` are refused.
//!
//! Files: `*.json`, `*.yaml`, `*.yml` in each directory, in name order. A
//! later directory has priority over an earlier one (`/var/run/cdi`, where
//! tools write specs at boot, over `/etc/cdi`), as the CDI library does; the
//! same device in two files of one directory is an error naming both.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ContainerEdits, DeviceNode, GpuError, LinkEdit, MountEdit};
use crate::env::Override;
use crate::text::shown;

/// The spec directories when the configuration names none.
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];
/// The spec versions read (the published ones that have `containerEdits`
/// as they are today).
pub const VERSIONS: [&str; 6] = ["0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0"];
/// The largest spec file read: NVIDIA's for an 8-GPU node is some 40 KiB.
const SPEC_LIMIT: u64 = 4 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    devices: Vec<Device>,
    #[serde(default)]
    container_edits: Option<Edits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Device {
    name: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    container_edits: Edits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<Node>,
    #[serde(default)]
    hooks: Vec<Hook>,
    #[serde(default)]
    mounts: Vec<SpecMount>,
    #[serde(default)]
    intel_rdt: Option<serde_json::Value>,
    #[serde(default)]
    additional_gids: Vec<u32>,
    #[serde(default)]
    net_devices: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Node {
    path: PathBuf,
    #[serde(default)]
    host_path: Option<PathBuf>,
    // Attributes of a node to create: rfake binds the host's instead.
    #[serde(default, rename = "type")]
    _kind: Option<String>,
    #[serde(default, rename = "major")]
    _major: Option<i64>,
    #[serde(default, rename = "minor")]
    _minor: Option<i64>,
    #[serde(default, rename = "fileMode")]
    _file_mode: Option<u32>,
    #[serde(default, rename = "permissions")]
    _permissions: Option<String>,
    #[serde(default, rename = "uid")]
    _uid: Option<u32>,
    #[serde(default, rename = "gid")]
    _gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpecMount {
    host_path: PathBuf,
    container_path: PathBuf,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Hook {
    hook_name: String,
    path: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default, rename = "env")]
    _env: Vec<String>,
    #[serde(default, rename = "timeout")]
    _timeout: Option<i64>,
}

/// One spec file, read and checked.
#[derive(Debug)]
pub struct SpecFile {
    pub path: PathBuf,
    /// Which directory (its index in the list): a higher one has priority.
    pub priority: usize,
    pub kind: String,
    spec: Spec,
}

impl SpecFile {
    /// The names of its devices, in file order.
    pub fn device_names(&self) -> impl Iterator<Item = &str> {
        self.spec.devices.iter().map(|d| d.name.as_str())
    }
}

/// The specs found in the spec directories.
#[derive(Debug, Default)]
pub struct Registry {
    pub files: Vec<SpecFile>,
    /// The directories looked in, for messages.
    pub dirs: Vec<PathBuf>,
}

/// A `--device` request: `VENDOR/CLASS=NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.kind, self.name)
    }
}

/// `VENDOR` is a domain-like name, `CLASS` and device names are
/// alphanumeric with `_`, `.`, `-` (and `:` in names) inside.
fn valid_name(s: &str, extra: &[char]) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if ok(c))
        && s.chars().last().is_some_and(ok)
        && s.chars()
            .all(|c| ok(c) || c == '_' || c == '.' || c == '-' || extra.contains(&c))
}

fn valid_kind(kind: &str) -> bool {
    matches!(kind.split_once('/'), Some((v, c)) if valid_name(v, &[]) && valid_name(c, &[]))
}

/// Parse `--device VENDOR/CLASS=NAME`.
pub fn parse_request(text: &str) -> Result<DeviceRequest, GpuError> {
    let bad = |why: &str| GpuError::Request {
        text: text.to_string(),
        why: why.to_string(),
    };
    let (kind, name) = text
        .split_once('=')
        .ok_or_else(|| bad("expected VENDOR/CLASS=NAME (nvidia.com/gpu=0, amd.com/gpu=all)"))?;
    if !valid_kind(kind) {
        return Err(bad(
            "the kind before '=' must be VENDOR/CLASS (nvidia.com/gpu)",
        ));
    }
    if !valid_name(name, &[':']) {
        return Err(bad(
            "the device name after '=' must be alphanumeric ('0', 'all', 'GPU-...')",
        ));
    }
    Ok(DeviceRequest {
        kind: kind.to_string(),
        name: name.to_string(),
    })
}

/// Read every spec file in `dirs` (missing directories are skipped).
pub fn load(dirs: &[PathBuf]) -> Result<Registry, GpuError> {
    let mut reg = Registry {
        files: Vec::new(),
        dirs: dirs.to_vec(),
    };
    for (priority, dir) in dirs.iter().enumerate() {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(GpuError::Spec {
                    path: dir.clone(),
                    what: format!("cannot read the directory: {e}"),
                });
            }
        };
        let mut names: Vec<OsString> = entries.filter_map(|e| Some(e.ok()?.file_name())).collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => Format::Json,
                Some("yaml" | "yml") => Format::Yaml,
                _ => continue,
            };
            let text = crate::input::read_text(&path, SPEC_LIMIT).map_err(|e| GpuError::Spec {
                path: path.clone(),
                what: e.to_string(),
            })?;
            let spec = parse(&path, &text, format)?;
            reg.files.push(SpecFile {
                kind: spec.kind.clone(),
                path,
                priority,
                spec,
            });
        }
    }
    reg.check_conflicts()?;
    Ok(reg)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// Parse and check one spec's text.
fn parse(path: &Path, text: &str, format: Format) -> Result<Spec, GpuError> {
    let malformed = |what: String| GpuError::Spec {
        path: path.to_path_buf(),
        what,
    };
    let spec: Spec = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| {
            malformed(format!(
                "line {} column {}: {}",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ))
        })?,
        Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {} column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            malformed(format!("{at}{}", strip_position(&e.to_string())))
        })?,
    };
    check(&spec).map_err(malformed)?;
    Ok(spec)
}

/// serde's messages end with " at line L column C"; the position is said
/// once, first.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The checks the spec's format cannot express, each naming the field.
fn check(spec: &Spec) -> Result<(), String> {
    if !VERSIONS.contains(&spec.cdi_version.as_str()) {
        return Err(format!(
            "cdiVersion: {:?} is not one rfake reads ({})",
            spec.cdi_version,
            VERSIONS.join(", ")
        ));
    }
    if !valid_kind(&spec.kind) {
        return Err(format!(
            "kind: {:?} is not VENDOR/CLASS (nvidia.com/gpu)",
            spec.kind
        ));
    }
    if spec.devices.is_empty() {
        return Err("devices: the spec has none".into());
    }
    let _ = (
        &spec.annotations,
        spec.devices.iter().map(|d| &d.annotations),
    );
    let mut seen = std::collections::HashSet::new();
    for (i, d) in spec.devices.iter().enumerate() {
        if !valid_name(&d.name, &[':']) {
            return Err(format!(
                "devices[{i}].name: {:?} is not a valid device name",
                d.name
            ));
        }
        if !seen.insert(d.name.as_str()) {
            return Err(format!("devices[{i}].name: {:?} appears twice", d.name));
        }
        check_edits(&d.container_edits, &format!("devices[{i}].containerEdits"))?;
    }
    if let Some(e) = &spec.container_edits {
        check_edits(e, "containerEdits")?;
    }
    Ok(())
}

fn check_edits(e: &Edits, at: &str) -> Result<(), String> {
    for (i, var) in e.env.iter().enumerate() {
        if crate::env::parse_assignment(var, "").is_err() {
            return Err(format!("{at}.env[{i}]: {var:?} is not NAME=value"));
        }
    }
    for (i, n) in e.device_nodes.iter().enumerate() {
        if !n.path.is_absolute() {
            return Err(format!("{at}.deviceNodes[{i}].path: must be absolute"));
        }
        if n.host_path.as_ref().is_some_and(|h| !h.is_absolute()) {
            return Err(format!("{at}.deviceNodes[{i}].hostPath: must be absolute"));
        }
    }
    for (i, m) in e.mounts.iter().enumerate() {
        if !m.host_path.is_absolute() {
            return Err(format!("{at}.mounts[{i}].hostPath: must be absolute"));
        }
        if !m.container_path.is_absolute() {
            return Err(format!("{at}.mounts[{i}].containerPath: must be absolute"));
        }
        if let Some(kind) = m.kind.as_deref().filter(|k| *k != "bind" && *k != "none") {
            return Err(format!(
                "{at}.mounts[{i}].type: {kind:?}: rfake makes bind mounts only"
            ));
        }
        for o in &m.options {
            mount_option(o).map_err(|why| format!("{at}.mounts[{i}].options: {o:?}: {why}"))?;
        }
    }
    for (i, h) in e.hooks.iter().enumerate() {
        hook_action(h).map_err(|why| format!("{at}.hooks[{i}]: {why}"))?;
    }
    if e.intel_rdt.is_some() {
        return Err(format!("{at}.intelRdt: not supported by rfake"));
    }
    if !e.net_devices.is_empty() {
        return Err(format!("{at}.netDevices: not supported by rfake"));
    }
    Ok(())
}

/// A mount option's effect: `Some(true)` read-only, `Some(false)`
/// read-write, `None` nothing to do (every bind is `nosuid`, `nodev` and
/// recursive anyway).
fn mount_option(o: &str) -> Result<Option<bool>, &'static str> {
    match o {
        "ro" => Ok(Some(true)),
        "rw" => Ok(Some(false)),
        "bind" | "rbind" | "nosuid" | "nodev" | "private" | "rprivate" | "slave" | "rslave"
        | "noexec" | "exec" | "suid" | "dev" | "relatime" | "noatime" | "nodiratime" => Ok(None),
        _ => Err("not a bind mount option rfake knows"),
    }
}

/// What a hook asks for, done in-process.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HookAction {
    /// `create-symlinks --link TARGET::LINK`.
    Symlinks(Vec<(PathBuf, PathBuf)>),
    /// `update-ldcache --folder DIR`.
    LdCache(Vec<PathBuf>),
    /// `enable-cuda-compat --host-driver-version V`: weigh the image's
    /// CUDA compat libraries against V (see `gpu::compat`).
    CudaCompat(Option<String>),
    /// A hook that has nothing to do in rfake's containers: its name, why.
    Nothing(&'static str, &'static str),
}

/// The NVIDIA toolkit's hooks, as `nvidia-ctk cdi generate` writes them:
/// `nvidia-ctk hook NAME ARGS` (toolkit up to 1.16) or `nvidia-cdi-hook
/// NAME ARGS` (1.17 and later).
fn hook_action(h: &Hook) -> Result<HookAction, String> {
    let program = h.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let words: Vec<&str> = h.args.iter().map(String::as_str).collect();
    let rest = match (program, words.as_slice()) {
        ("nvidia-ctk", [_, "hook", rest @ ..]) => rest,
        ("nvidia-cdi-hook", [_, rest @ ..]) => rest,
        _ => {
            return Err(format!(
                "{} hook {}: rfake runs no hook programs (only the NVIDIA toolkit's \
                 create-symlinks and update-ldcache, done by rfake itself)",
                h.hook_name,
                shown(&h.path)
            ));
        }
    };
    let (name, flags) = rest.split_first().ok_or("a hook without a command")?;
    match *name {
        "create-symlinks" => {
            let links = flag_values(flags, "--link")?
                .into_iter()
                .map(|l| {
                    let (target, link) = l
                        .split_once("::")
                        .ok_or_else(|| format!("--link {l:?}: expected TARGET::LINK"))?;
                    if !link.starts_with('/') || target.is_empty() {
                        return Err(format!(
                            "--link {l:?}: LINK must be absolute and TARGET not empty"
                        ));
                    }
                    Ok((PathBuf::from(target), PathBuf::from(link)))
                })
                .collect::<Result<_, String>>()?;
            Ok(HookAction::Symlinks(links))
        }
        "update-ldcache" => {
            let folders: Vec<PathBuf> = flag_values(flags, "--folder")?
                .into_iter()
                .map(PathBuf::from)
                .collect();
            if let Some(f) = folders.iter().find(|f| !f.is_absolute()) {
                return Err(format!("--folder {}: must be absolute", shown(f)));
            }
            Ok(HookAction::LdCache(folders))
        }
        // The driver may not create device nodes in the container: in a
        // one-entry user namespace it never can (mknod is refused).
        "disable-device-node-modification" => Ok(HookAction::Nothing(
            "disable-device-node-modification",
            "device nodes cannot be created in rfake's containers anyway",
        )),
        // The image's CUDA forward-compatibility libraries: done when the
        // payload starts (gpu::compat), as for --nv.
        "enable-cuda-compat" => Ok(HookAction::CudaCompat(
            flag_values(flags, "--host-driver-version")?
                .last()
                .map(|v| v.to_string()),
        )),
        other => Err(format!(
            "{} hook {} {other}: not a hook rfake knows how to do \
             (create-symlinks, update-ldcache)",
            h.hook_name,
            shown(&h.path)
        )),
    }
}

/// The values of `--flag VALUE` and `--flag=VALUE`; other flags are ignored
/// (`--ldconfig-path`, `--container-spec`).
fn flag_values<'a>(flags: &[&'a str], flag: &str) -> Result<Vec<&'a str>, String> {
    let mut out = Vec::new();
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if *f == flag {
            out.push(*it.next().ok_or_else(|| format!("{flag} without a value"))?);
        } else if let Some(v) = f.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            out.push(v);
        }
    }
    Ok(out)
}

impl Registry {
    /// Two files of the same priority defining one device: the CDI library
    /// refuses that too.
    fn check_conflicts(&self) -> Result<(), GpuError> {
        let mut seen: BTreeMap<(usize, &str, &str), &Path> = BTreeMap::new();
        for f in &self.files {
            for name in f.device_names() {
                if let Some(other) = seen.insert((f.priority, &f.kind, name), &f.path) {
                    return Err(GpuError::Spec {
                        path: f.path.clone(),
                        what: format!(
                            "device {}={name} is also defined in {}",
                            f.kind,
                            shown(other)
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The file that defines `kind=name`, the highest priority first.
    fn find(&self, kind: &str, name: &str) -> Option<&SpecFile> {
        self.files
            .iter()
            .filter(|f| f.kind == kind && f.device_names().any(|n| n == name))
            .max_by_key(|f| f.priority)
    }

    /// Every `kind=name` known, for the unknown-device message.
    pub fn known(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .files
            .iter()
            .flat_map(|f| f.device_names().map(move |n| format!("{}={n}", f.kind)))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The edits for `requests`, in order; each spec's own edits once.
    /// `=all` is the spec's device named `all` when it has one (NVIDIA's
    /// do), else every device of the kind.
    pub fn edits(&self, requests: &[DeviceRequest]) -> Result<ContainerEdits, GpuError> {
        let mut out = ContainerEdits::default();
        let mut spec_edits_done: Vec<&Path> = Vec::new();
        // The devices selected, per file: the others' nodes are hidden.
        let mut selected: Vec<(&SpecFile, Vec<&str>)> = Vec::new();
        for req in requests {
            let picks: Vec<(&SpecFile, &Device)> = match self.find(&req.kind, &req.name) {
                Some(f) => vec![(f, device(f, &req.name))],
                None if req.name == "all" => {
                    let files: Vec<&SpecFile> =
                        self.files.iter().filter(|f| f.kind == req.kind).collect();
                    let mut picks: Vec<(&SpecFile, &Device)> = Vec::new();
                    for f in &files {
                        for d in &f.spec.devices {
                            // The highest priority definition of each name.
                            if self.find(&req.kind, &d.name).map(|g| &g.path) == Some(&f.path) {
                                picks.push((f, d));
                            }
                        }
                    }
                    picks
                }
                None => vec![],
            };
            if picks.is_empty() {
                return Err(self.unknown(req));
            }
            for (file, dev) in picks {
                let origin = format!("{}={} in {}", file.kind, dev.name, shown(&file.path));
                if !spec_edits_done.contains(&file.path.as_path()) {
                    spec_edits_done.push(&file.path);
                    if let Some(e) = &file.spec.container_edits {
                        let origin = format!("{} in {}", file.kind, shown(&file.path));
                        add(&mut out, e, &origin);
                    }
                }
                add(&mut out, &dev.container_edits, &origin);
                match selected.iter_mut().find(|(f, _)| f.path == file.path) {
                    Some((_, names)) => names.push(&dev.name),
                    None => selected.push((file, vec![&dev.name])),
                }
            }
        }
        // Nodes of the devices not asked for, unless a chosen one uses them
        // too: with `nvidia.com/gpu=0`, /dev/nvidia1 is not in the container.
        let wanted: Vec<PathBuf> = out.device_nodes.iter().map(|n| n.path.clone()).collect();
        for (file, names) in selected {
            for d in &file.spec.devices {
                if names.contains(&d.name.as_str()) {
                    continue;
                }
                for n in &d.container_edits.device_nodes {
                    if !wanted.contains(&n.path) && !out.hidden_nodes.contains(&n.path) {
                        out.hidden_nodes.push(n.path.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    fn unknown(&self, req: &DeviceRequest) -> GpuError {
        let dirs: Vec<String> = self.dirs.iter().map(|d| shown(d)).collect();
        let known = self.known();
        GpuError::UnknownDevice {
            request: req.to_string(),
            known: if known.is_empty() {
                format!("no CDI spec found in {}", dirs.join(", "))
            } else {
                format!("known: {}", known.join(", "))
            },
        }
    }
}

fn device<'a>(f: &'a SpecFile, name: &str) -> &'a Device {
    f.spec
        .devices
        .iter()
        .find(|d| d.name == name)
        .expect("found by name")
}

/// Add one `containerEdits` to `out`, translated (already checked).
fn add(out: &mut ContainerEdits, e: &Edits, origin: &str) {
    for var in &e.env {
        if let Ok(o) = crate::env::parse_assignment(var, origin) {
            out.env.push(Override {
                origin: format!("CDI {origin}"),
                ..o
            });
        }
    }
    for n in &e.device_nodes {
        let node = DeviceNode {
            path: crate::container::binds::normalize(&n.path),
            host_path: crate::container::binds::normalize(n.host_path.as_ref().unwrap_or(&n.path)),
            origin: format!("CDI {origin}"),
        };
        if !out.device_nodes.iter().any(|d| d.path == node.path) {
            out.device_nodes.push(node);
        }
    }
    for m in &e.mounts {
        let readonly = m
            .options
            .iter()
            .filter_map(|o| mount_option(o).ok().flatten())
            .next_back()
            .unwrap_or(false);
        let edit = MountEdit {
            host_path: crate::container::binds::normalize(&m.host_path),
            container_path: crate::container::binds::normalize(&m.container_path),
            readonly,
            origin: format!("CDI {origin}"),
        };
        if !out
            .mounts
            .iter()
            .any(|x| x.container_path == edit.container_path)
        {
            out.mounts.push(edit);
        }
    }
    for h in &e.hooks {
        match hook_action(h) {
            Ok(HookAction::Symlinks(links)) => {
                for (target, link) in links {
                    let edit = LinkEdit {
                        link: crate::container::binds::normalize(&link),
                        target,
                        origin: format!("CDI {origin} (create-symlinks)"),
                    };
                    if !out.symlinks.iter().any(|l| l.link == edit.link) {
                        out.symlinks.push(edit);
                    }
                }
            }
            Ok(HookAction::LdCache(folders)) => {
                for f in folders {
                    let f = crate::container::binds::normalize(&f);
                    if !out.library_dirs.contains(&f) {
                        out.library_dirs.push(f);
                    }
                }
            }
            Ok(HookAction::CudaCompat(Some(v))) => out.cuda_compat = Some(v),
            Ok(HookAction::CudaCompat(None)) => out.notes.push(format!(
                "CDI {origin}: hook enable-cuda-compat skipped: no --host-driver-version"
            )),
            Ok(HookAction::Nothing(name, why)) => out
                .notes
                .push(format!("CDI {origin}: hook {name} skipped: {why}")),
            Err(_) => {} // refused by `check` when the file was read
        }
    }
    if !e.additional_gids.is_empty() {
        out.notes.push(format!(
            "CDI {origin}: additionalGids {:?} ignored: a rootless container keeps your groups",
            e.additional_gids
        ));
    }
}

#[cfg(test)]
mod tests;
