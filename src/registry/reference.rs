//! Image references as users write them: `docker://NAME[:TAG][@DIGEST]`,
//! `oras://...`, `oci-archive:PATH`, `docker-archive:PATH`, or a plain path.
//!
//! Names follow Docker's normalization (distribution/reference): the first
//! component is a registry when it contains `.` or `:`, is `localhost`, or
//! has an upper-case letter; otherwise the image is on Docker Hub
//! (`docker.io`), where a one-component name is under `library/`.

use std::ffi::OsStr;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use super::RegistryError;
use crate::digest::Digest;

/// What an IMAGE argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A SquashFS or SIF file or a root directory.
    Path(PathBuf),
    /// `docker://`: an image in a registry (OCI distribution API).
    Docker(Reference),
    /// `oras://`: a SIF pushed to a registry as an OCI artifact.
    Oras(Reference),
    /// `oci-archive:PATH`: an OCI layout in a tar file.
    OciArchive(PathBuf),
    /// `docker-archive:PATH`: `docker save` / `podman save` output.
    DockerArchive(PathBuf),
}

/// Docker Hub's canonical registry name and where its API really is.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "https://registry-1.docker.io";
/// Distribution's limit on a repository name (with the registry).
const NAME_MAX: usize = 255;
/// Distribution's limit on a tag.
const TAG_MAX: usize = 128;

impl ImageRef {
    /// Whether `arg` is (or is meant as) a reference rather than a path: a
    /// malformed reference counts, so that pulling it reports why.
    pub fn is_reference(arg: &OsStr) -> bool {
        !matches!(ImageRef::parse(arg), Ok(ImageRef::Path(_)))
    }

    /// Parse an IMAGE argument; a malformed reference is a usage error.
    /// Anything without a known prefix (and without `SCHEME://`) is a path.
    pub fn parse(arg: &OsStr) -> Result<ImageRef, RegistryError> {
        let bytes = arg.as_encoded_bytes();
        let shown = || arg.to_string_lossy().into_owned();
        let utf8 = |rest| utf8_name(rest, &shown());
        if let Some(rest) = bytes.strip_prefix(b"docker://") {
            return Ok(ImageRef::Docker(Reference::parse_named(
                &shown(),
                utf8(rest)?,
            )?));
        }
        if let Some(rest) = bytes.strip_prefix(b"oras://") {
            return Ok(ImageRef::Oras(Reference::parse_named(
                &shown(),
                utf8(rest)?,
            )?));
        }
        for (prefix, make) in [
            (
                &b"oci-archive:"[..],
                ImageRef::OciArchive as fn(PathBuf) -> ImageRef,
            ),
            (&b"docker-archive:"[..], ImageRef::DockerArchive),
        ] {
            if let Some(rest) = bytes.strip_prefix(prefix) {
                if rest.is_empty() {
                    return Err(RegistryError::bad_reference(&shown(), "no archive path"));
                }
                // SAFETY: `rest` is a suffix of `arg`'s encoded bytes split
                // after an ASCII prefix, so it is valid encoded OsStr bytes.
                let path = unsafe { OsStr::from_encoded_bytes_unchecked(rest) };
                return Ok(make(PathBuf::from(path)));
            }
        }
        // `library://`, `shub://`, `http://`...: schemes rfake does not
        // speak. A path with `://` in it can be written `./NAME`.
        if let Some(end) = find(bytes, b"://") {
            let scheme = &bytes[..end];
            if !scheme.is_empty()
                && scheme
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
            {
                return Err(RegistryError::bad_reference(
                    &shown(),
                    format!(
                        "unsupported scheme {}:// (rfake pulls docker://, oras://, \
                         oci-archive: and docker-archive:; write ./NAME for a path)",
                        String::from_utf8_lossy(scheme)
                    ),
                ));
            }
        }
        Ok(ImageRef::Path(PathBuf::from(arg)))
    }
}

fn utf8_name<'a>(rest: &'a [u8], shown: &str) -> Result<&'a str, RegistryError> {
    std::str::from_utf8(rest)
        .map_err(|_| RegistryError::bad_reference(shown, "the name is not UTF-8"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A name in a registry, normalized as Docker does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io` for Docker Hub, else `host[:port]` as written.
    pub registry: String,
    /// `library/debian` for a one-component Docker Hub name.
    pub repository: String,
    /// `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// Wins over the tag for fetching when both are given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parse `NAME[:TAG][@DIGEST]` (no scheme).
    #[cfg(test)]
    pub fn parse(input: &str) -> Result<Reference, RegistryError> {
        Reference::parse_named(input, input)
    }

    /// Parse `s`, naming `input` (the whole argument) in errors.
    fn parse_named(input: &str, s: &str) -> Result<Reference, RegistryError> {
        let bad = |detail: &str| RegistryError::bad_reference(input, detail);
        if s.is_empty() {
            return Err(bad("no image name"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).ok_or_else(|| {
                    bad("malformed digest (expected sha256:<64 hex> or sha512:<128 hex>)")
                })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/'
        // (a ':' before it is a registry's port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(|d| bad(&d))?;
        }
        let (registry, path) = split_registry(name);
        let registry = match registry {
            Some(r) => {
                check_registry(r).map_err(|d| bad(&d))?;
                if r == "index.docker.io" || r == "registry-1.docker.io" {
                    DOCKER_HUB.to_string()
                } else {
                    r.to_string()
                }
            }
            None => DOCKER_HUB.to_string(),
        };
        if path.is_empty() {
            return Err(bad("no image name after the registry"));
        }
        for component in path.split('/') {
            check_component(component).map_err(|d| bad(&d))?;
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Where the registry's API is: `https://registry-1.docker.io` for
    /// Docker Hub, `http://` for a loopback registry, else `https://`.
    pub fn api_base(&self) -> String {
        api_base(&self.registry)
    }

    /// What `/v2/<repository>/manifests/<x>` takes: the digest if there is
    /// one, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The API base URL for a registry name (`host[:port]`, normalized).
///
/// Loopback registries (`localhost`, `127.0.0.0/8`, `::1`) are spoken to
/// over plain HTTP, as Docker does for them: the traffic never leaves the
/// host. Everything else is HTTPS, always verified.
pub fn api_base(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API.to_string()
    } else if is_loopback(registry) {
        format!("http://{registry}")
    } else {
        format!("https://{registry}")
    }
}

/// Whether `host[:port]` names this host's loopback interface.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a.is_loopback(),
        Ok(IpAddr::V6(a)) => a == Ipv6Addr::LOCALHOST,
        Err(_) => false,
    }
}

/// The host part of `host[:port]` (`[v6]` kept bracketed).
pub fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |i| &registry[..=i]);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// A registry name as a user gives it to `rfake registry login`:
/// `host[:port]`, also `https://host/...` (as Docker's config keys are);
/// Docker Hub's aliases become `docker.io`.
pub fn normalize_registry(input: &str) -> Result<String, RegistryError> {
    let s = input
        .strip_prefix("https://")
        .or_else(|| input.strip_prefix("http://"))
        .unwrap_or(input);
    let s = s.split('/').next().unwrap_or(s);
    check_registry(s).map_err(|d| RegistryError::bad_reference(input, d))?;
    Ok(match s {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        _ => s.to_string(),
    })
}

/// Split off the registry: the first component when it contains `.` or
/// `:`, is `localhost`, or has an upper-case letter (Docker's rule).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `host[:port]`: DNS labels of letters, digits and `-`, or an IPv6
/// address in brackets; a port of digits.
fn check_registry(r: &str) -> Result<(), String> {
    let (host, port) = if r.starts_with('[') {
        let close = r.find(']').ok_or("unclosed '[' in the registry name")?;
        let addr = &r[1..close];
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "malformed IPv6 address {addr:?} in the registry name"
            ));
        }
        let rest = &r[close + 1..];
        match rest.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if rest.is_empty() => (None, None),
            None => return Err("malformed registry name".to_string()),
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Err(format!("malformed registry host {host:?}"));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("malformed registry port {port:?}"));
        }
    }
    Ok(())
}

/// A path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or `-`s.
fn check_component(c: &str) -> Result<(), String> {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let ok = !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]) && {
        let mut i = 0;
        let mut fine = true;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            // A separator: '.', '_', "__" or a run of '-'.
            let start = i;
            if b[i] == b'-' {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            } else if b[i] == b'_' && b.get(i + 1) == Some(&b'_') {
                i += 2;
            } else if b[i] == b'.' || b[i] == b'_' {
                i += 1;
            } else {
                fine = false;
                break;
            }
            if i == start || i >= b.len() || !alnum(b[i]) {
                fine = false;
                break;
            }
        }
        fine
    };
    if ok {
        Ok(())
    } else if c.is_empty() {
        Err("empty path component in the name".to_string())
    } else if c.bytes().any(|x| x.is_ascii_uppercase()) {
        Err(format!("repository names must be lower case ({c:?})"))
    } else {
        Err(format!(
            "malformed name component {c:?} (lower-case letters, digits and . _ __ - between them)"
        ))
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(t: &str) -> Result<(), String> {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if b.is_empty() {
        return Err("empty tag after ':'".to_string());
    }
    if b.len() > TAG_MAX {
        return Err("tag longer than 128 characters".to_string());
    }
    if !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err(format!(
            "malformed tag {t:?} (letters, digits, _ . -, not starting with . or -)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn docker(s: &str) -> Reference {
        match ImageRef::parse(OsStr::new(s)).unwrap() {
            ImageRef::Docker(r) => r,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn usage(s: &str) -> String {
        let e = ImageRef::parse(OsStr::new(s)).unwrap_err();
        assert_eq!(e.exit_kind(), crate::exit::ExitKind::Usage, "{s}: {e}");
        e.to_string()
    }

    #[test]
    fn docker_hub_normalization() {
        for (input, canonical) in [
            ("docker://debian", "docker.io/library/debian:latest"),
            ("docker://debian:12", "docker.io/library/debian:12"),
            (
                "docker://pytorch/pytorch",
                "docker.io/pytorch/pytorch:latest",
            ),
            (
                "docker://docker.io/debian",
                "docker.io/library/debian:latest",
            ),
            (
                "docker://index.docker.io/debian:12",
                "docker.io/library/debian:12",
            ),
            ("docker://registry-1.docker.io/a/b", "docker.io/a/b:latest"),
            (
                "docker://docker.io/library/debian",
                "docker.io/library/debian:latest",
            ),
        ] {
            assert_eq!(docker(input).to_string(), canonical, "{input}");
        }
        let r = docker("docker://debian");
        assert_eq!(r.api_base(), "https://registry-1.docker.io");
        assert_eq!(r.reference(), "latest");
    }

    #[test]
    fn registry_detection() {
        for (input, registry, repository) in [
            ("docker://localhost/x", "localhost", "x"),
            ("docker://localhost:5000/a/b", "localhost:5000", "a/b"),
            ("docker://127.0.0.1:15000/demo", "127.0.0.1:15000", "demo"),
            ("docker://ghcr.io/o/r", "ghcr.io", "o/r"),
            (
                "docker://nvcr.io/nvidia/pytorch:24.01-py3",
                "nvcr.io",
                "nvidia/pytorch",
            ),
            ("docker://[::1]:5000/demo", "[::1]:5000", "demo"),
            ("docker://Myhost/demo", "Myhost", "demo"),
            // no '.', ':' or "localhost": a Docker Hub user, not a host
            ("docker://myhost/demo", "docker.io", "myhost/demo"),
            ("docker://a.b.c:1/x/y/z", "a.b.c:1", "x/y/z"),
        ] {
            let r = docker(input);
            assert_eq!(
                (r.registry.as_str(), r.repository.as_str()),
                (registry, repository)
            );
        }
    }

    #[test]
    fn tags_and_digests() {
        let r = docker("docker://127.0.0.1:5000/demo:1.0");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.digest, None);
        assert_eq!(r.api_base(), "http://127.0.0.1:5000");
        assert_eq!(r.reference(), "1.0");

        let r = docker(&format!("docker://127.0.0.1:5000/demo@sha256:{HEX}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/demo@sha256:{HEX}"));

        // NAME:TAG@DIGEST keeps both; the digest is what is fetched.
        let r = docker(&format!("docker://debian:12@sha256:{HEX}"));
        assert_eq!(r.tag.as_deref(), Some("12"));
        assert_eq!(r.reference(), format!("sha256:{HEX}"));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/debian:12@sha256:{HEX}")
        );

        // The port's ':' is not a tag.
        let r = docker("docker://localhost:5000/demo");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn other_kinds() {
        let p = |s: &str| ImageRef::parse(OsStr::new(s)).unwrap();
        assert!(
            matches!(p("oras://ghcr.io/o/sif:1"), ImageRef::Oras(r) if r.repository == "o/sif")
        );
        assert_eq!(
            p("oci-archive:/x/y.tar"),
            ImageRef::OciArchive("/x/y.tar".into())
        );
        assert_eq!(
            p("docker-archive:y.tar"),
            ImageRef::DockerArchive("y.tar".into())
        );
        assert_eq!(p("image.sif"), ImageRef::Path("image.sif".into()));
        assert_eq!(p("/abs/dir/"), ImageRef::Path("/abs/dir/".into()));
        assert_eq!(p("./a://b"), ImageRef::Path("./a://b".into()));
        // Paths are bytes: a non-UTF-8 path stays a path.
        use std::os::unix::ffi::OsStrExt;
        let raw = OsStr::from_bytes(b"img\xff.sqfs");
        assert_eq!(ImageRef::parse(raw).unwrap(), ImageRef::Path(raw.into()));
        let raw = OsStr::from_bytes(b"oci-archive:\xff.tar");
        assert_eq!(
            ImageRef::parse(raw).unwrap(),
            ImageRef::OciArchive(OsStr::from_bytes(b"\xff.tar").into())
        );
    }

    #[test]
    fn malformed() {
        for (input, says) in [
            ("docker://", "no image name"),
            ("oras://", "no image name"),
            ("docker://debian:", "empty tag"),
            ("docker://debian:-x", "malformed tag"),
            ("docker://debian:a/b", "malformed registry port"),
            ("docker://Debian", "lower case"),
            ("docker://a//b", "empty path component"),
            ("docker://a_-b", "malformed name component"),
            ("docker://-a", "malformed name component"),
            ("docker://a./b", "malformed registry host"),
            ("docker://host:99999/x", "malformed registry port"),
            ("docker://host:/x", "malformed registry port"),
            ("docker://[zz]:5/x", "IPv6"),
            (
                "docker://localhost:5000/",
                "no image name after the registry",
            ),
            ("docker://debian@sha256:abc", "malformed digest"),
            ("docker://debian@md5:0123", "malformed digest"),
            ("docker://debian@", "malformed digest"),
            ("oci-archive:", "no archive path"),
            ("library://alpine", "unsupported scheme library://"),
            ("https://example.com/x", "unsupported scheme https://"),
        ] {
            let message = usage(input);
            assert!(message.contains(says), "{input}: {message}");
            assert!(message.starts_with(input), "{input}: {message}");
        }
        let long_tag = format!("docker://debian:{}", "a".repeat(129));
        assert!(usage(&long_tag).contains("longer than 128"));
        let long_name = format!("docker://x.io/{}", "a".repeat(251));
        assert!(usage(&long_name).contains("longer than 255"));
        use std::os::unix::ffi::OsStrExt;
        let e = ImageRef::parse(OsStr::from_bytes(b"docker://a\xff")).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn separators_in_components() {
        for ok in ["a.b", "a_b", "a__b", "a---b", "a1-2.3_4"] {
            assert!(check_component(ok).is_ok(), "{ok}");
        }
        for bad in ["a___b", "a._b", "a.", ".a", "a-", "_a", "a..b", "a:b"] {
            assert!(check_component(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_rule() {
        for l in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:15000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(l), "{l}");
            assert!(api_base(l).starts_with("http://"), "{l}");
        }
        for r in [
            "example.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(r), "{r}");
            assert!(api_base(r).starts_with("https://"), "{r}");
        }
    }

    #[test]
    fn registry_names_for_login() {
        for (input, norm) in [
            ("ghcr.io", "ghcr.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("docker.io", "docker.io"),
            ("127.0.0.1:15443", "127.0.0.1:15443"),
            ("https://quay.io", "quay.io"),
        ] {
            assert_eq!(normalize_registry(input).unwrap(), norm);
        }
        assert!(normalize_registry("bad host").is_err());
        assert!(normalize_registry("").is_err());
    }
}
