//! `rfake doctor --image IMAGE`: the image's MPI stack against the host's,
//! read without starting anything.
//!
//! Each side is read the same way, from a root of files ([`ImageFiles`]:
//! the image through libsquashfs, the host as the directory `/`): the
//! package database (`/var/lib/dpkg/status`) when there is one, else the
//! shared libraries' sonames in the usual library directories. The
//! verdict names the two ways an MPI program runs in a container:
//!
//! - the **hybrid** model: the image's own MPI, started by the host's
//!   launcher: `srun --mpi=pmix` (the host's PMIx server talks to the
//!   image's PMIx client) or the host's `mpirun` (Open MPI's launcher talks
//!   its own wire protocol to the ranks: the same release series on both
//!   sides), or hydra's PMI wire protocol for MPICH;
//! - the **bind** model: the host's MPI libraries bound over the image's
//!   (a bind profile): the same ABI (Open MPI's `libmpi.so.40`, or the MPICH
//!   ABI `libmpich.so.12` of MPICH, Intel MPI, Cray MPICH, MVAPICH), and
//!   the image's C library at least as new as the host's, which built them.

use std::fmt;

use crate::inspect::ImageFiles;

/// The largest package database read (Debian's is some MiB on a big host).
const STATUS_MAX: u64 = 64 << 20;

/// Where libraries are looked for when there is no package database.
const LIB_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/lib64",
];

/// Which MPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Open MPI, `libmpi.so.40` from 3.0 to 5.x.
    OpenMpi,
    /// The MPICH ABI, `libmpich.so.12`: MPICH, Intel MPI, Cray MPICH, MVAPICH.
    Mpich,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::OpenMpi => "Open MPI",
            Family::Mpich => "MPICH",
        }
    }

    fn soname(self) -> &'static str {
        match self {
            Family::OpenMpi => "libmpi.so.40",
            Family::Mpich => "libmpich.so.12",
        }
    }
}

/// A component found: its version when a package database says it, and
/// how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Upstream version ("4.1.4"), without epoch or packaging revision.
    pub version: Option<String>,
    /// The package or the library that showed it.
    pub from: String,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{v} ({})", self.from),
            None => write!(f, "version unknown ({})", self.from),
        }
    }
}

/// The MPI stack of one root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stack {
    /// "dpkg status", or "libraries" (sonames only).
    pub source: &'static str,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: Option<String>,
    pub open_mpi: Option<Found>,
    pub mpich: Option<Found>,
    pub pmix: Option<Found>,
    pub ucx: Option<Found>,
    pub libfabric: Option<Found>,
    pub glibc: Option<Found>,
}

impl Stack {
    fn mpi(&self, family: Family) -> Option<&Found> {
        match family {
            Family::OpenMpi => self.open_mpi.as_ref(),
            Family::Mpich => self.mpich.as_ref(),
        }
    }

    /// The MPI families present, Open MPI first.
    pub fn families(&self) -> Vec<Family> {
        [Family::OpenMpi, Family::Mpich]
            .into_iter()
            .filter(|f| self.mpi(*f).is_some())
            .collect()
    }
}

/// Read the stack of the root `files`.
pub fn read(files: &ImageFiles) -> Stack {
    let os = files
        .read_text("/etc/os-release", 64 << 10)
        .as_deref()
        .and_then(os_name);
    let mut stack = match files.read_file("/var/lib/dpkg/status", STATUS_MAX) {
        Ok(bytes) => from_dpkg(&String::from_utf8_lossy(&bytes)),
        Err(_) => from_libraries(files),
    };
    stack.os = os;
    stack
}

fn os_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(crate::text::one_line(v.trim_matches('"')))
    })
}

/// Which component a Debian package is, by name.
fn component_of(package: &str) -> Option<&'static str> {
    // Library packages are renamed with their soname (libpmix2, libucx0,
    // libopenmpi3, libmpich12) and for the 64-bit time_t transition
    // (libpmix2t64): match the stem.
    let stem = package.trim_end_matches("t64");
    Some(match stem {
        s if s.starts_with("libopenmpi") && !s.ends_with("-dev") => "openmpi",
        s if s.starts_with("libmpich") && !s.ends_with("-dev") => "mpich",
        s if s.starts_with("libpmix") && !s.ends_with("-dev") => "pmix",
        s if s.starts_with("libucx") && !s.ends_with("-dev") => "ucx",
        s if s.starts_with("libfabric") && !s.ends_with("-dev") && !s.contains("bin") => {
            "libfabric"
        }
        "libc6" => "glibc",
        _ => return None,
    })
}

/// "1:4.1.4-3+b1" -> "4.1.4".
pub fn upstream(version: &str) -> String {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    let v = v.rsplit_once('-').map_or(v, |(v, _)| v);
    v.to_string()
}

/// The stack from a dpkg status file: installed packages only.
pub fn from_dpkg(status: &str) -> Stack {
    let mut stack = Stack {
        source: "dpkg status",
        ..Stack::default()
    };
    for stanza in status.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
        };
        // The package's name first: most stanzas end there (a host's
        // database holds thousands, a handful of which matter).
        let Some(package) = field("Package") else {
            continue;
        };
        let Some(component) = component_of(package) else {
            continue;
        };
        let Some(version) = field("Version") else {
            continue;
        };
        if !field("Status").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        let found = Some(Found {
            version: Some(upstream(version)),
            from: format!("package {package}"),
        });
        let slot = match component {
            "openmpi" => &mut stack.open_mpi,
            "mpich" => &mut stack.mpich,
            "pmix" => &mut stack.pmix,
            "ucx" => &mut stack.ucx,
            "libfabric" => &mut stack.libfabric,
            _ => &mut stack.glibc,
        };
        // The first package seen of a component wins (one version each).
        if slot.is_none() {
            *slot = found;
        }
    }
    stack
}

/// The stack from the libraries present: sonames only, no versions.
fn from_libraries(files: &ImageFiles) -> Stack {
    let mut names: Vec<String> = Vec::new();
    for dir in LIB_DIRS {
        if let Ok(entries) = files.list(dir) {
            names.extend(entries.into_iter().map(|e| e.path));
        }
    }
    let mut stack = from_library_names(&names);
    // glibc says its version in a banner ("... release version 2.36.").
    if let Some(libc) = &mut stack.glibc {
        if let Ok(bytes) = files.read_file(&libc.from, 8 << 20) {
            libc.version = glibc_banner(&bytes);
        }
    }
    stack
}

/// The version in glibc's banner, `release version 2.36.`.
fn glibc_banner(bytes: &[u8]) -> Option<String> {
    const MARK: &[u8] = b"release version ";
    let at = bytes.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let version: String = bytes[at..]
        .iter()
        .take(16)
        .map(|&b| b as char)
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = version.trim_end_matches('.');
    (!numbers(version).is_empty()).then(|| version.to_string())
}

/// The stack from library paths (`/usr/lib64/libmpi.so.40`...).
pub fn from_library_names(paths: &[String]) -> Stack {
    let find = |soname: &str| {
        paths
            .iter()
            .find(|p| p.rsplit('/').next() == Some(soname))
            .map(|p| Found {
                version: None,
                from: p.clone(),
            })
    };
    Stack {
        source: "libraries",
        os: None,
        open_mpi: find("libmpi.so.40"),
        mpich: find("libmpich.so.12").or_else(|| find("libmpi.so.12")),
        pmix: find("libpmix.so.2"),
        ucx: find("libucp.so.0"),
        libfabric: find("libfabric.so.1"),
        glibc: find("libc.so.6"),
    }
}

/// "4.1.4" -> [4, 1, 4]; digits up to the first other character of each part.
fn numbers(version: &str) -> Vec<u64> {
    version
        .split('.')
        .map_while(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn version_of(f: Option<&Found>) -> Option<Vec<u64>> {
    let v = numbers(f?.version.as_deref()?);
    (!v.is_empty()).then_some(v)
}

fn shown(f: Option<&Found>) -> String {
    match f.and_then(|f| f.version.clone()) {
        Some(v) => v,
        None if f.is_some() => "present, version unknown".into(),
        None => "none".into(),
    }
}

/// Whether a model will work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Works,
    /// Probably works; something could not be checked or is a risk.
    Likely,
    Fails,
    /// Does not apply (no MPI in the image).
    NotApplicable,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Works => "works",
            Outcome::Likely => "MAY FAIL",
            Outcome::Fails => "FAILS",
            Outcome::NotApplicable => "n/a",
        }
    }
}

/// One model's verdict and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    /// The reason that decided the outcome (the first of the worst).
    pub decisive: usize,
}

/// Reasons as they are found, each with the outcome it implies.
#[derive(Default)]
struct Notes {
    outcome: Option<Outcome>,
    reasons: Vec<String>,
    decisive: usize,
}

impl Notes {
    fn note(&mut self, outcome: Outcome, reason: String) {
        let now = self.outcome.unwrap_or(Outcome::Works);
        if self.outcome.is_none() || worst(now, outcome) != now {
            self.outcome = Some(worst(now, outcome));
            self.decisive = self.reasons.len();
        }
        self.reasons.push(reason);
    }

    fn verdict(self) -> Verdict {
        Verdict {
            outcome: self.outcome.unwrap_or(Outcome::Works),
            reasons: self.reasons,
            decisive: self.decisive,
        }
    }
}

/// The two models' verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub hybrid: Verdict,
    pub bind: Verdict,
}

impl Assessment {
    /// At least one model works (or likely does), or there is no MPI.
    pub fn usable(&self) -> bool {
        [self.hybrid.outcome, self.bind.outcome]
            .iter()
            .any(|o| matches!(o, Outcome::Works | Outcome::Likely | Outcome::NotApplicable))
    }
}

fn worst(a: Outcome, b: Outcome) -> Outcome {
    let rank = |o| match o {
        Outcome::Works => 0,
        Outcome::Likely => 1,
        Outcome::Fails => 2,
        Outcome::NotApplicable => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// Compare the image's stack with the host's.
pub fn assess(image: &Stack, host: &Stack) -> Assessment {
    let families = image.families();
    let Some(&family) = families.first() else {
        let none = Verdict {
            outcome: Outcome::NotApplicable,
            reasons: vec!["the image has no MPI library (libmpi.so.40, libmpich.so.12)".into()],
            decisive: 0,
        };
        return Assessment {
            hybrid: none.clone(),
            bind: none,
        };
    };
    Assessment {
        hybrid: hybrid(family, image, host),
        bind: bind(family, image, host),
    }
}

/// The library ABI of an MPI version: Open MPI's `libmpi.so.40` since
/// 3.0 (`.20` in 2.x, `.12` in 1.10), the MPICH ABI since MPICH 3.1.
fn abi(family: Family, version: &[u64]) -> &'static str {
    let v = (version[0], version.get(1).copied().unwrap_or(0));
    match family {
        Family::OpenMpi if v >= (3, 0) => "libmpi.so.40",
        Family::OpenMpi if v >= (2, 0) => "libmpi.so.20",
        Family::OpenMpi => "libmpi.so.12 or older",
        Family::Mpich if v >= (3, 1) => "libmpich.so.12",
        Family::Mpich => "an MPICH ABI before 3.1",
    }
}

/// The image's MPI with the host's launcher.
fn hybrid(family: Family, image: &Stack, host: &Stack) -> Verdict {
    let mut v = Notes::default();
    let mpi = image.mpi(family);
    match family {
        Family::OpenMpi => {
            // srun --mpi=pmix: the host's PMIx server, the image's client.
            // PMIx promises cross-version compatibility from v2.1.1 on
            // (its "Cross-Version Compatibility" page); v1 had none.
            let (i, h) = (
                version_of(image.pmix.as_ref()),
                version_of(host.pmix.as_ref()),
            );
            match (&i, &h) {
                (Some(i), Some(h)) if i[0] >= 2 && h[0] >= 2 => v.note(
                    Outcome::Works,
                    format!(
                        "srun --mpi=pmix: the host's PMIx {} serves the image's PMIx {} client \
                     (PMIx 2.1+ talk across versions{})",
                        shown(host.pmix.as_ref()),
                        shown(image.pmix.as_ref()),
                        if i[0] == h[0] {
                            ", and these are the same series"
                        } else {
                            ""
                        }
                    ),
                ),
                (Some(_), Some(_)) => {
                    v.note(
                        Outcome::Fails,
                        format!(
                            "srun --mpi=pmix: PMIx {} (host) and {} (image): PMIx 1.x talks to no \
                         other version",
                            shown(host.pmix.as_ref()),
                            shown(image.pmix.as_ref())
                        ),
                    );
                }
                (_, None) if host.pmix.is_none() => {
                    v.note(
                        Outcome::Likely,
                        "srun --mpi=pmix: no PMIx on the host (Slurm's mpi/pmix plugin needs \
                         libpmix)"
                            .into(),
                    );
                }
                _ => {
                    v.note(
                        Outcome::Likely,
                        format!(
                            "srun --mpi=pmix: PMIx {} (host) and {} (image): not compared",
                            shown(host.pmix.as_ref()),
                            shown(image.pmix.as_ref())
                        ),
                    );
                }
            }
            // mpirun: Open MPI's launcher and its ranks speak one
            // release series' protocol (ORTE in 4.x, PRRTE in 5.x).
            let (i, h) = (version_of(mpi), version_of(host.open_mpi.as_ref()));
            match (&i, &h) {
                (Some(i), Some(h)) if i.get(..2) == h.get(..2) => v.note(
                    Outcome::Works,
                    format!(
                        "mpirun: the host's Open MPI {} starts the image's Open MPI {} (the same \
                     {}.{} series)",
                        shown(host.open_mpi.as_ref()),
                        shown(mpi),
                        i[0],
                        i.get(1).copied().unwrap_or(0)
                    ),
                ),
                (Some(_), Some(_)) => {
                    v.note(
                        Outcome::Likely,
                        format!(
                            "mpirun: the host's Open MPI {} cannot start ranks of the image's Open \
                         MPI {} (another release series); use srun --mpi=pmix",
                            shown(host.open_mpi.as_ref()),
                            shown(mpi)
                        ),
                    );
                }
                _ if host.open_mpi.is_none() => v.note(
                    Outcome::Works,
                    "mpirun: no Open MPI on the host; use srun --mpi=pmix".into(),
                ),
                _ => {
                    v.note(
                        Outcome::Likely,
                        format!(
                            "mpirun: Open MPI {} (host) and {} (image): not compared",
                            shown(host.open_mpi.as_ref()),
                            shown(mpi)
                        ),
                    );
                }
            }
        }
        Family::Mpich => {
            // Hydra and Slurm's pmi2 speak the PMI-1/PMI-2 wire protocols,
            // which every MPICH-ABI library speaks.
            match &host.mpich {
                Some(h) => v.note(
                    Outcome::Works,
                    format!(
                        "mpiexec.hydra: the host's MPICH {} starts the image's MPICH {} over the \
                     PMI wire protocol, which does not change between versions",
                        shown(Some(h)),
                        shown(mpi)
                    ),
                ),
                None => {
                    v.note(
                        Outcome::Likely,
                        "no MPICH (hydra) on the host: use srun --mpi=pmi2 or the image's own \
                         mpiexec with --join-key"
                            .into(),
                    );
                }
            }
        }
    }
    // The fabric: the image's MPI uses its own UCX or libfabric.
    for (name, i, h) in [
        ("UCX", image.ucx.as_ref(), host.ucx.as_ref()),
        (
            "libfabric",
            image.libfabric.as_ref(),
            host.libfabric.as_ref(),
        ),
    ] {
        match (i, h) {
            (None, Some(h)) => {
                v.note(
                    Outcome::Likely,
                    format!(
                        "the host has {name} {} and the image none: its MPI uses shared memory and \
                     TCP only, not the fast network",
                        shown(Some(h))
                    ),
                );
            }
            (Some(i), Some(h)) => match (version_of(Some(i)), version_of(Some(h))) {
                (Some(iv), Some(hv)) if iv < hv => v.note(
                    Outcome::Works,
                    format!(
                        "{name} {} in the image is older than the host's {}: a provider or \
                     transport the host's network needs may be missing",
                        shown(Some(i)),
                        shown(Some(h))
                    ),
                ),
                _ => v.note(
                    Outcome::Works,
                    format!(
                        "{name}: {} in the image, {} on the host",
                        shown(Some(i)),
                        shown(Some(h))
                    ),
                ),
            },
            _ => {}
        }
    }
    v.verdict()
}

/// The host's MPI bound over the image's.
fn bind(family: Family, image: &Stack, host: &Stack) -> Verdict {
    let mut v = Notes::default();
    let (i, h) = (image.mpi(family), host.mpi(family));
    let Some(h) = h else {
        let others: Vec<&str> = host.families().iter().map(|f| f.name()).collect();
        return Verdict {
            outcome: Outcome::Fails,
            decisive: 0,
            reasons: vec![format!(
                "the image's program needs {} ({}); the host has {}",
                family.name(),
                family.soname(),
                if others.is_empty() {
                    "no MPI".to_string()
                } else {
                    format!("only {} (another ABI)", others.join(", "))
                }
            )],
        };
    };
    let (iv, hv) = (version_of(i), version_of(Some(h)));
    if let (Some(ia), Some(ha)) = (
        iv.as_deref().map(|v| abi(family, v)),
        hv.as_deref().map(|v| abi(family, v)),
    ) {
        if ia != ha {
            return Verdict {
                outcome: Outcome::Fails,
                decisive: 0,
                reasons: vec![format!(
                    "the image's {} {} has the ABI {ia}, the host's {} {} {ha}: the host's \
                     library cannot stand in for the image's",
                    family.name(),
                    shown(i),
                    family.name(),
                    shown(Some(h))
                )],
            };
        }
    }
    match (iv, hv) {
        (Some(iv), Some(hv)) if hv >= iv => v.note(
            Outcome::Works,
            format!(
                "the host's {} {} has the image's ABI ({}) and is not older than its {}",
                family.name(),
                shown(Some(h)),
                family.soname(),
                shown(i)
            ),
        ),
        (Some(_), Some(_)) => {
            v.note(
                Outcome::Likely,
                format!(
                    "the host's {} {} is older than the image's {}: a program built against the \
                 newer one may need a function the older lacks",
                    family.name(),
                    shown(Some(h)),
                    shown(i)
                ),
            );
        }
        _ => {
            v.note(
                Outcome::Likely,
                format!(
                    "the host's {} ({}) has the image's ABI {}; versions not compared",
                    family.name(),
                    shown(Some(h)),
                    family.soname()
                ),
            );
        }
    }
    // The host's libraries were linked against the host's glibc: the
    // image's must be at least as new (symbol versions are only added).
    match (
        version_of(image.glibc.as_ref()),
        version_of(host.glibc.as_ref()),
    ) {
        (Some(iv), Some(hv)) if iv >= hv => v.note(
            Outcome::Works,
            format!(
                "glibc {} in the image is not older than the host's {}, which the host's \
             libraries need",
                shown(image.glibc.as_ref()),
                shown(host.glibc.as_ref())
            ),
        ),
        (Some(_), Some(_)) => {
            v.note(
                Outcome::Fails,
                format!(
                    "glibc {} in the image is older than the host's {}: the host's libraries \
                 would fail to load (GLIBC_{} not found)",
                    shown(image.glibc.as_ref()),
                    shown(host.glibc.as_ref()),
                    shown(host.glibc.as_ref())
                ),
            );
        }
        _ => {
            v.note(
                Outcome::Likely,
                format!(
                    "glibc {} (image) and {} (host): not compared",
                    shown(image.glibc.as_ref()),
                    shown(host.glibc.as_ref())
                ),
            );
        }
    }
    v.note(
        Outcome::Works,
        "bind the host's MPI, PMIx and fabric libraries with a profile (--profile)".into(),
    );
    v.verdict()
}

/// The comparison as `rfake doctor --image` prints it.
pub fn render(image_name: &str, image: &Stack, host: &Stack, a: &Assessment) -> String {
    let mut out = String::new();
    let os = |s: &Stack| {
        format!(
            "{}, from {}",
            s.os.as_deref().unwrap_or("unknown system"),
            s.source
        )
    };
    out.push_str(&format!("image      {image_name} ({})\n", os(image)));
    out.push_str(&format!("host       {}\n", os(host)));
    out.push_str(&format!("{:<11}{:<28}{}\n", "", "image", "host"));
    let rows: [(&str, Option<&Found>, Option<&Found>); 6] = [
        ("Open MPI", image.open_mpi.as_ref(), host.open_mpi.as_ref()),
        ("MPICH", image.mpich.as_ref(), host.mpich.as_ref()),
        ("PMIx", image.pmix.as_ref(), host.pmix.as_ref()),
        ("UCX", image.ucx.as_ref(), host.ucx.as_ref()),
        (
            "libfabric",
            image.libfabric.as_ref(),
            host.libfabric.as_ref(),
        ),
        ("glibc", image.glibc.as_ref(), host.glibc.as_ref()),
    ];
    for (name, i, h) in rows {
        out.push_str(&format!("{name:<11}{:<28}{}\n", shown(i), shown(h)));
    }
    for (model, v) in [("hybrid", &a.hybrid), ("bind", &a.bind)] {
        out.push_str(&format!(
            "{:<11}{}\n",
            format!("{model}:"),
            v.outcome.word()
        ));
        for r in &v.reasons {
            out.push_str(&format!("           - {r}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(package: &str, version: &str) -> String {
        format!(
            "Package: {package}\nStatus: install ok installed\nArchitecture: amd64\n\
             Version: {version}\nDescription: x\n more\n"
        )
    }

    fn status(packages: &[(&str, &str)]) -> Stack {
        let text: Vec<String> = packages.iter().map(|(p, v)| stanza(p, v)).collect();
        from_dpkg(&text.join("\n"))
    }

    fn debian12() -> Stack {
        status(&[
            ("libc6", "2.36-9+deb12u14"),
            ("libopenmpi3", "4.1.4-3+b1"),
            ("libpmix2", "4.2.2-1+deb12u1"),
            ("libucx0", "1.13.1-1"),
            ("libfabric1", "1.17.0-3"),
        ])
    }

    #[test]
    fn versions_from_dpkg() {
        assert_eq!(upstream("1:4.1.4-3+b1"), "4.1.4");
        assert_eq!(upstream("2.36-9+deb12u14"), "2.36");
        assert_eq!(upstream("11.2.185"), "11.2.185");
        let s = debian12();
        assert_eq!(s.open_mpi.unwrap().version.as_deref(), Some("4.1.4"));
        assert_eq!(s.pmix.unwrap().from, "package libpmix2");
        assert_eq!(s.glibc.unwrap().version.as_deref(), Some("2.36"));
        assert!(s.mpich.is_none());
        // Removed packages (config-files) and -dev packages do not count.
        let text = "Package: libmpich12\nStatus: deinstall ok config-files\nVersion: 4.0.2-3\n\n\
                    Package: libpmix-dev\nStatus: install ok installed\nVersion: 5.0.1-4\n\n\
                    Package: libpmix2t64\nStatus: install ok installed\nVersion: 5.0.1-4\n";
        let s = from_dpkg(text);
        assert!(s.mpich.is_none());
        assert_eq!(s.pmix.unwrap().version.as_deref(), Some("5.0.1"));
    }

    #[test]
    fn sonames_without_a_package_database() {
        let s = from_library_names(&[
            "/usr/lib64/libmpi.so.40".into(),
            "/usr/lib64/libmpi.so.40.30.4".into(),
            "/usr/lib64/libc.so.6".into(),
            "/usr/lib64/libfabric.so.1".into(),
        ]);
        assert_eq!(s.open_mpi.as_ref().unwrap().from, "/usr/lib64/libmpi.so.40");
        assert!(s.open_mpi.unwrap().version.is_none());
        assert!(s.libfabric.is_some() && s.ucx.is_none() && s.pmix.is_none());
    }

    #[test]
    fn glibc_version_from_its_banner() {
        let libc = b"\x7fELF...GNU C Library (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36.\nCopyright";
        assert_eq!(glibc_banner(libc).as_deref(), Some("2.36"));
        assert_eq!(glibc_banner(b"release version x"), None);
        assert_eq!(glibc_banner(b"nothing"), None);
    }

    #[test]
    fn the_same_debian_on_both_sides_works_both_ways() {
        let a = assess(&debian12(), &debian12());
        assert_eq!(a.hybrid.outcome, Outcome::Works, "{:?}", a.hybrid);
        assert_eq!(a.bind.outcome, Outcome::Works, "{:?}", a.bind);
        assert!(a.hybrid.reasons[0].contains("PMIx 4.2.2 serves the image's PMIx 4.2.2"));
        assert!(a.hybrid.reasons[1].contains("the same 4.1 series"));
    }

    #[test]
    fn another_series_or_an_older_glibc() {
        // An Open MPI 5 image on a host with Open MPI 4.1: srun works,
        // mpirun does not; the bind model needs glibc >= the host's.
        let image = status(&[
            ("libc6", "2.31-13"),
            ("libopenmpi40", "5.0.3-1"),
            ("libpmix2t64", "5.0.1-4"),
        ]);
        let a = assess(&image, &debian12());
        assert_eq!(a.hybrid.outcome, Outcome::Likely, "{:?}", a.hybrid);
        assert!(a.hybrid.reasons[1].contains("cannot start ranks"));
        assert_eq!(a.hybrid.decisive, 1);
        assert!(
            a.hybrid
                .reasons
                .iter()
                .any(|r| r.contains("UCX 1.13.1") && r.contains("shared memory and TCP only")),
            "{:?}",
            a.hybrid
        );
        assert_eq!(a.bind.outcome, Outcome::Fails, "{:?}", a.bind);
        assert!(
            a.bind
                .reasons
                .iter()
                .any(|r| r.contains("GLIBC_2.36 not found"))
        );
        assert!(a.usable());
    }

    #[test]
    fn an_mpich_image_on_an_open_mpi_host() {
        let image = status(&[("libc6", "2.36-9"), ("libmpich12", "4.0.2-3")]);
        let host = debian12();
        let a = assess(&image, &host);
        assert_eq!(a.hybrid.outcome, Outcome::Likely);
        assert_eq!(a.bind.outcome, Outcome::Fails);
        assert!(a.bind.reasons[0].contains("the host has only Open MPI (another ABI)"));
        let host = status(&[("libc6", "2.36-9"), ("libmpich12", "4.1.0-1")]);
        let a = assess(&image, &host);
        assert_eq!(a.hybrid.outcome, Outcome::Works, "{:?}", a.hybrid);
        assert_eq!(a.bind.outcome, Outcome::Works, "{:?}", a.bind);
    }

    #[test]
    fn an_old_open_mpi_fits_neither_model() {
        // Ubuntu 18.04's Open MPI 2.1 with PMIx 1.2: no PMIx server talks
        // to it, and libmpi.so.20 is another ABI.
        let image = status(&[
            ("libc6", "2.27-3ubuntu1"),
            ("libopenmpi2", "2.1.1-8"),
            ("libpmix1", "1.2.5-1"),
        ]);
        let a = assess(&image, &debian12());
        assert_eq!(a.hybrid.outcome, Outcome::Fails, "{:?}", a.hybrid);
        assert_eq!(a.bind.outcome, Outcome::Fails, "{:?}", a.bind);
        assert!(a.bind.reasons[0].contains("libmpi.so.20"), "{:?}", a.bind);
        assert!(!a.usable());
    }

    #[test]
    fn no_mpi_in_the_image() {
        let a = assess(&status(&[("libc6", "2.36-9")]), &debian12());
        assert_eq!(a.hybrid.outcome, Outcome::NotApplicable);
        assert!(a.usable());
    }
}
