//! From a reference to one image: indexes and manifest lists followed to
//! the manifest for an architecture, and what that manifest holds (an OCI
//! or Docker v2 image, or a SIF pushed as an ORAS artifact).

use std::collections::HashMap;

use serde::Deserialize;

use super::RegistryError;
use super::client::{Client, Fetched};
use super::reference::Reference;
use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The layer of a SIF pushed with ORAS (`apptainer push oras://...`).
pub const SIF_LAYER: &str = "application/vnd.sylabs.sif.layer.v1.sif";
const SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Layer types rfake unpacks: tar, gzip'd tar, zstd'd tar.
const LAYER_TYPES: [&str; 5] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];
/// How deep indexes may nest.
const MAX_DEPTH: usize = 8;

/// An image resolved for one architecture.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The image manifest (never the index).
    pub manifest: Fetched,
    /// The index the reference named, when it named one.
    pub index_digest: Option<Digest>,
    pub content: Content,
}

/// What the image manifest describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An OCI or Docker v2 image: gzip, zstd or uncompressed tar layers.
    Oci {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// A SIF pushed as an ORAS artifact: its one layer is the SIF file.
    Sif { blob: Descriptor },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    manifests: Option<Vec<RawDescriptor>>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    platform: Option<Platform>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    variant: Option<String>,
}

enum Kind {
    Index,
    Manifest,
    Schema1,
    Other(String),
}

/// Resolve `r` to one image for `arch` (Go names: amd64, arm64, ppc64le,
/// riscv64, s390x, 386, arm; `arm/v7` names a variant), following indexes
/// (nested up to 8 deep) and skipping attestation manifests.
pub fn resolve(client: &mut Client, r: &Reference, arch: &str) -> Result<Resolved, RegistryError> {
    let what = r.to_string();
    let mut fetched = client.manifest(r, &r.reference())?;
    let mut index_digest = None;
    for _ in 0..=MAX_DEPTH {
        let doc = parse(&what, &fetched.bytes)?;
        match kind(&fetched.media_type, &doc) {
            Kind::Index => {
                if index_digest.is_none() {
                    index_digest = Some(fetched.digest.clone());
                }
                let child = select(&what, &doc, arch)?;
                let next = client.manifest(r, &child.digest.to_string())?;
                if next.bytes.len() as u64 != child.size {
                    return Err(RegistryError::bad_content(
                        &what,
                        format!(
                            "manifest {} has {} bytes, its index says {}",
                            child.digest,
                            next.bytes.len(),
                            child.size
                        ),
                    ));
                }
                fetched = next;
            }
            Kind::Manifest => {
                let content = content_of(&what, &doc)?;
                return Ok(Resolved {
                    manifest: fetched,
                    index_digest,
                    content,
                });
            }
            Kind::Schema1 => {
                return Err(RegistryError::bad_content(
                    &what,
                    "Docker image manifest schema 1 (deprecated, unsigned layers) is not supported: \
                     push the image again with a current tool",
                ));
            }
            Kind::Other(t) => {
                return Err(RegistryError::bad_content(
                    &what,
                    format!("unsupported manifest media type {t:?}"),
                ));
            }
        }
    }
    Err(RegistryError::bad_content(
        &what,
        format!("indexes nested more than {MAX_DEPTH} deep"),
    ))
}

fn parse(what: &str, bytes: &[u8]) -> Result<Doc, RegistryError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::bad_content(what, format!("malformed manifest: {e}")))
}

fn kind(media_type: &str, doc: &Doc) -> Kind {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Kind::Index,
        OCI_MANIFEST | DOCKER_MANIFEST => Kind::Manifest,
        t if SCHEMA1.contains(&t) || doc.schema_version == Some(1) => Kind::Schema1,
        // No type at all (an OCI document may leave it out): by its fields.
        "" if doc.manifests.is_some() => Kind::Index,
        "" if doc.config.is_some() => Kind::Manifest,
        t => Kind::Other(t.to_string()),
    }
}

/// Split `arch` into (architecture, variant): `arm/v7`, `linux/arm64`,
/// and the kernel's names `x86_64`, `aarch64`.
fn wanted(arch: &str) -> (String, Option<String>) {
    let arch = arch.strip_prefix("linux/").unwrap_or(arch);
    let (a, v) = match arch.split_once('/') {
        Some((a, v)) => (a, Some(v.to_string())),
        None => (arch, None),
    };
    let a = match a {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" => "386",
        a => a,
    };
    (a.to_string(), v)
}

fn is_attestation(d: &RawDescriptor) -> bool {
    d.annotations
        .get("vnd.docker.reference.type")
        .map(String::as_str)
        == Some("attestation-manifest")
        || d.platform.as_ref().is_some_and(|p| p.os == "unknown")
}

/// The index entry for linux/`arch`.
fn select(what: &str, doc: &Doc, arch: &str) -> Result<Descriptor, RegistryError> {
    let entries: Vec<&RawDescriptor> = doc
        .manifests
        .iter()
        .flatten()
        .filter(|d| !is_attestation(d))
        .collect();
    let (want_arch, want_variant) = wanted(arch);
    let variant_ok = |v: &Option<String>| match (&want_variant, v) {
        (None, _) => true,
        (Some(w), Some(v)) => w == v,
        // arm64 without a variant is v8.
        (Some(w), None) => want_arch == "arm64" && w == "v8",
    };
    let found = entries.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os.eq_ignore_ascii_case("linux")
                && p.architecture == want_arch
                && variant_ok(&p.variant)
        })
    });
    // An index of one entry without a platform (some artifact indexes).
    let found = found.or_else(|| match entries.as_slice() {
        [only] if only.platform.is_none() => Some(only),
        _ => None,
    });
    match found {
        Some(d) => descriptor(what, d),
        None => {
            let mut has: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| {
                    let mut s = if p.os.eq_ignore_ascii_case("linux") {
                        p.architecture.clone()
                    } else {
                        format!("{}/{}", p.os, p.architecture)
                    };
                    if let Some(v) = &p.variant {
                        s.push('/');
                        s.push_str(v);
                    }
                    s
                })
                .collect();
            has.dedup();
            let has = if has.is_empty() {
                "no platform-specific image".to_string()
            } else {
                format!("it has: {}", has.join(", "))
            };
            Err(RegistryError::bad_content(
                what,
                format!("no image for {arch}; {has} (choose one with --arch)"),
            ))
        }
    }
}

fn descriptor(what: &str, d: &RawDescriptor) -> Result<Descriptor, RegistryError> {
    let digest = Digest::parse(&d.digest).ok_or_else(|| {
        RegistryError::bad_content(
            what,
            format!(
                "malformed or unsupported digest {:?} in the manifest",
                d.digest
            ),
        )
    })?;
    Ok(Descriptor {
        media_type: d.media_type.clone(),
        digest,
        size: d.size,
    })
}

/// What the image manifest `bytes` describes (a manifest kept in the
/// cache, read again for an offline launch); `what` names it in messages.
pub fn manifest_content(what: &str, bytes: &[u8]) -> Result<Content, RegistryError> {
    content_of(what, &parse(what, bytes)?)
}

fn content_of(what: &str, doc: &Doc) -> Result<Content, RegistryError> {
    let layers = doc.layers.as_deref().unwrap_or_default();
    let sif: Vec<&RawDescriptor> = layers
        .iter()
        .filter(|l| l.media_type == SIF_LAYER)
        .collect();
    match sif.as_slice() {
        [one] => {
            return Ok(Content::Sif {
                blob: descriptor(what, one)?,
            });
        }
        [] => {}
        _ => {
            return Err(RegistryError::bad_content(
                what,
                format!("{} SIF layers in one artifact (expected one)", sif.len()),
            ));
        }
    }
    let config = doc
        .config
        .as_ref()
        .ok_or_else(|| RegistryError::bad_content(what, "malformed manifest: no config"))?;
    if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
        return Err(RegistryError::bad_content(
            what,
            format!(
                "not a container image: its config is {:?} (an OCI artifact rfake does not run)",
                config.media_type
            ),
        ));
    }
    let config = descriptor(what, config)?;
    let layers = layers
        .iter()
        .map(|l| {
            check_layer_type(what, l)?;
            descriptor(what, l)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Content::Oci { config, layers })
}

fn check_layer_type(what: &str, l: &RawDescriptor) -> Result<(), RegistryError> {
    let t = l.media_type.as_str();
    if LAYER_TYPES.contains(&t) {
        return Ok(());
    }
    let why = if t.ends_with("+encrypted") {
        "an encrypted layer (ocicrypt), which rfake cannot decrypt"
    } else if t.contains("nondistributable") || t.contains("foreign") {
        "a foreign (non-distributable) layer, stored outside the registry"
    } else {
        "an unsupported layer media type"
    };
    Err(RegistryError::bad_content(
        what,
        format!("layer {} is {why} ({t:?})", l.digest),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitKind;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn entry(arch: &str, os: &str, variant: Option<&str>, n: u8) -> String {
        let v = variant
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":100,
               "platform":{{"architecture":"{arch}","os":"{os}"{v}}}}}"#,
            d(n)
        )
    }

    fn index(entries: &[String]) -> Doc {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            entries.join(",")
        );
        parse("x", text.as_bytes()).unwrap()
    }

    fn attestation(n: u8) -> String {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":100,
               "platform":{{"architecture":"unknown","os":"unknown"}},
               "annotations":{{"vnd.docker.reference.type":"attestation-manifest",
                               "vnd.docker.reference.digest":"{}"}}}}"#,
            d(n),
            d(1)
        )
    }

    #[test]
    fn picks_the_architecture() {
        let doc = index(&[
            attestation(9),
            entry("amd64", "linux", None, 1),
            entry("arm", "linux", Some("v6"), 2),
            entry("arm", "linux", Some("v7"), 3),
            entry("arm64", "linux", Some("v8"), 4),
            entry("amd64", "windows", None, 5),
        ]);
        let pick = |a: &str| select("x", &doc, a).unwrap().digest.to_string();
        assert_eq!(pick("amd64"), d(1));
        assert_eq!(pick("x86_64"), d(1));
        assert_eq!(pick("linux/amd64"), d(1));
        assert_eq!(pick("arm/v7"), d(3));
        assert_eq!(pick("arm"), d(2));
        assert_eq!(pick("arm64"), d(4));
        assert_eq!(pick("aarch64"), d(4));
        assert_eq!(pick("arm64/v8"), d(4));
        let e = select("docker.io/library/x:1", &doc, "riscv64").unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::BadImage);
        assert_eq!(
            e.to_string(),
            "docker.io/library/x:1: no image for riscv64; it has: amd64, arm/v6, arm/v7, \
             arm64/v8, windows/amd64 (choose one with --arch)"
        );
    }

    #[test]
    fn arm64_without_variant_is_v8() {
        let doc = index(&[entry("arm64", "linux", None, 4)]);
        assert_eq!(
            select("x", &doc, "arm64/v8").unwrap().digest.to_string(),
            d(4)
        );
    }

    #[test]
    fn attestations_are_never_picked() {
        let doc = index(&[attestation(9)]);
        let e = select("x", &doc, "amd64").unwrap_err();
        assert!(e.to_string().contains("no platform-specific image"), "{e}");
        // An index of one platform-less entry (an artifact index) is followed.
        let doc = parse(
            "x",
            format!(
                r#"{{"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5}}]}}"#,
                d(7)
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(select("x", &doc, "amd64").unwrap().digest.to_string(), d(7));
    }

    fn manifest(config_type: &str, layer_types: &[&str]) -> Doc {
        let layers: Vec<String> = layer_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    r#"{{"mediaType":"{t}","digest":"{}","size":{}}}"#,
                    d(i as u8 + 10),
                    1000 + i
                )
            })
            .collect();
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
                "config":{{"mediaType":"{config_type}","digest":"{}","size":7}},
                "layers":[{}]}}"#,
            d(1),
            layers.join(",")
        );
        parse("x", text.as_bytes()).unwrap()
    }

    #[test]
    fn image_content() {
        let doc = manifest(OCI_CONFIG, &LAYER_TYPES);
        match content_of("x", &doc).unwrap() {
            Content::Oci { config, layers } => {
                assert_eq!(config.digest.to_string(), d(1));
                assert_eq!(config.size, 7);
                assert_eq!(layers.len(), 5);
                assert_eq!(
                    layers[2].media_type,
                    "application/vnd.oci.image.layer.v1.tar+zstd"
                );
                assert_eq!(layers[1].size, 1001);
            }
            other => panic!("{other:?}"),
        }
        let doc = manifest(
            DOCKER_CONFIG,
            &["application/vnd.docker.image.rootfs.diff.tar.gzip"],
        );
        assert!(matches!(
            content_of("x", &doc).unwrap(),
            Content::Oci { .. }
        ));
    }

    #[test]
    fn sif_artifacts() {
        let doc = manifest("application/vnd.sylabs.sif.config.v1+json", &[SIF_LAYER]);
        assert_eq!(
            content_of("x", &doc).unwrap(),
            Content::Sif {
                blob: Descriptor {
                    media_type: SIF_LAYER.into(),
                    digest: Digest::parse(&d(10)).unwrap(),
                    size: 1000
                }
            }
        );
        let doc = manifest(
            "application/vnd.sylabs.sif.config.v1+json",
            &[SIF_LAYER, SIF_LAYER],
        );
        assert!(content_of("x", &doc).is_err());
    }

    #[test]
    fn refused_content() {
        for (config, layer, says) in [
            (
                OCI_CONFIG,
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                "encrypted",
            ),
            (
                DOCKER_CONFIG,
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "foreign",
            ),
            (
                OCI_CONFIG,
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "foreign",
            ),
            (
                OCI_CONFIG,
                "application/x-bogus",
                "unsupported layer media type",
            ),
            (
                "application/vnd.cncf.helm.config.v1+json",
                "application/x-tar",
                "not a container image",
            ),
        ] {
            let e = content_of("ref", &manifest(config, &[layer])).unwrap_err();
            assert_eq!(e.exit_kind(), ExitKind::BadImage);
            assert!(e.to_string().contains(says), "{layer}: {e}");
        }
        let bad_digest = parse(
            "x",
            format!(
                r#"{{"config":{{"mediaType":"{OCI_CONFIG}","digest":"md5:00","size":1}},"layers":[]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(
            content_of("x", &bad_digest)
                .unwrap_err()
                .to_string()
                .contains("md5:00")
        );
        assert!(parse("x", b"{\"layers\":[{\"digest\":\"a\",\"size\":-1}]}").is_err());
        assert!(parse("x", b"[").is_err());
    }

    #[test]
    fn kinds() {
        let doc = |t: &str| parse("x", t.as_bytes()).unwrap();
        assert!(matches!(kind(OCI_INDEX, &doc("{}")), Kind::Index));
        assert!(matches!(kind(DOCKER_LIST, &doc("{}")), Kind::Index));
        assert!(matches!(kind(DOCKER_MANIFEST, &doc("{}")), Kind::Manifest));
        assert!(matches!(kind("", &doc(r#"{"manifests":[]}"#)), Kind::Index));
        assert!(matches!(
            kind("", &doc(r#"{"config":{"digest":"x","size":1}}"#)),
            Kind::Manifest
        ));
        assert!(matches!(kind(SCHEMA1[1], &doc("{}")), Kind::Schema1));
        assert!(matches!(
            kind("", &doc(r#"{"schemaVersion":1,"fsLayers":[]}"#)),
            Kind::Schema1
        ));
        assert!(matches!(kind("application/x", &doc("{}")), Kind::Other(_)));
    }
}
