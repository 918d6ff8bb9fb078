//! Docker archives: what `docker save` and `podman save --format
//! docker-archive` write. `manifest.json` is an array of images:
//!
//! ```json
//! [{"Config": "<hex>.json", "RepoTags": ["name:tag"], "Layers": ["<hex>/layer.tar", ...]}]
//! ```
//!
//! `Config` and `Layers` are member paths in the archive; the configuration
//! is the OCI one (see [`super::oci::apply_config`]); the layers (plain or
//! compressed tars) are applied in order with the OCI whiteout rules. Of
//! several images, the first is taken, with a warning. A blob stored under
//! `blobs/<algorithm>/<hex>` (Docker 25 and later) is checked against that
//! digest.

use std::path::Path;

use serde_json::Value;

use super::super::ImageMeta;
use super::super::tree::Tree;
use super::archive::Archive;
use super::layer::{Origin, apply_layer};
use super::oci::{Digest, JSON_LIMIT, Verify, apply_config, parse_json};
use super::{Cx, SourceError, one_line};

/// Load the docker archive at `path`.
pub(super) fn load(
    cx: &mut Cx,
    path: &Path,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<(), SourceError> {
    let archive = Archive::open(path)?;
    let manifest_place = archive.place("manifest.json");
    let Some(bytes) = archive.read_member("manifest.json", JSON_LIMIT)? else {
        return Err(SourceError::invalid(&manifest_place, "missing"));
    };
    let manifest = parse_json(&bytes, &manifest_place)?;
    let images = manifest
        .as_array()
        .ok_or_else(|| SourceError::invalid(&manifest_place, "expected an array of images"))?;
    let Some(image) = images.first() else {
        return Err(SourceError::invalid(&manifest_place, "lists no image"));
    };
    if images.len() > 1 {
        cx.warn(format!(
            "{manifest_place}: {} images in the archive; using the first ({})",
            images.len(),
            tags(image)
        ));
    }

    let config_name = image
        .get("Config")
        .and_then(Value::as_str)
        .ok_or_else(|| SourceError::invalid(&manifest_place, "no \"Config\" member named"))?;
    let config_place = archive.place(config_name);
    let config = read_checked(&archive, config_name)?.ok_or_else(|| {
        SourceError::invalid(
            &manifest_place,
            format!("Config {}: not in the archive", one_line(config_name)),
        )
    })?;
    apply_config(
        cx,
        &parse_json(&config, &config_place)?,
        &config_place,
        meta,
    )?;

    let layers = match image.get("Layers") {
        Some(Value::Array(layers)) => layers
            .iter()
            .map(|l| l.as_str())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SourceError::invalid(&manifest_place, "Layers: expected strings"))?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(SourceError::invalid(
                &manifest_place,
                "Layers: expected an array of member names",
            ));
        }
    };
    for (i, name) in layers.iter().enumerate() {
        let what = format!("layer {} of {}", i + 1, layers.len());
        let Some(blob) = archive.member_blob(name)? else {
            return Err(SourceError::invalid(
                &manifest_place,
                format!("{what}: {} is not in the archive", one_line(name)),
            ));
        };
        let origin = Origin {
            archive: archive.path(),
            inner: Some(format!("{what} ({})", one_line(name))),
        };
        let digest = blob_digest(name);
        apply_layer(cx, &origin, &blob, digest.as_ref().map(|d| (d, None)), tree)?;
    }
    Ok(())
}

/// "name:tag, ..." or "untagged", for messages.
fn tags(image: &Value) -> String {
    let tags: Vec<&str> = image
        .get("RepoTags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if tags.is_empty() {
        "untagged".to_string()
    } else {
        one_line(&tags.join(", "))
    }
}

/// The digest a member stored under `blobs/<algorithm>/<hex>` must have.
fn blob_digest(name: &str) -> Option<Digest> {
    let rest = name.trim_start_matches("./").strip_prefix("blobs/")?;
    let (algorithm, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{algorithm}:{hex}"))
}

/// The member `name` (a metadata file), checked against its digest when
/// its name is one.
fn read_checked(archive: &Archive, name: &str) -> Result<Option<Vec<u8>>, SourceError> {
    let Some(bytes) = archive.read_member(name, JSON_LIMIT)? else {
        return Ok(None);
    };
    if let Some(digest) = blob_digest(name) {
        Verify::new(&bytes[..], &digest).check(&digest, None, &archive.place(name))?;
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Compression, Options, SourceKind, detect};
    use super::*;
    use crate::exit::ExitKind;
    use serde_json::json;
    use std::fs;

    /// A docker archive holding `layers` (member name, bytes) and
    /// `config`, whose manifest lists `listed` (default: the layers) for
    /// `1 + extra_images` images.
    fn docker_archive(
        layers: &[(&str, Vec<u8>)],
        listed: Option<&[&str]>,
        config: &Value,
        extra_images: usize,
    ) -> Vec<u8> {
        let config_bytes = config.to_string().into_bytes();
        let config_name = format!("{}.json", sha256_hex(&config_bytes));
        let mut t = TarMaker::default();
        for (name, bytes) in layers {
            t = t.file(name, bytes, 0o444);
        }
        let names: Vec<&str> = layers.iter().map(|(name, _)| *name).collect();
        let image = json!({
            "Config": config_name,
            "RepoTags": ["localhost/x:1"],
            "Layers": listed.unwrap_or(&names),
        });
        let manifest = json!(vec![image; 1 + extra_images]);
        t.file(&config_name, &config_bytes, 0o444)
            .file("manifest.json", manifest.to_string().as_bytes(), 0o444)
            .file("repositories", b"{}", 0o444)
            .finish()
    }

    #[test]
    fn docker_archive_layers_and_config() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("image.tar");
        let layer1 = TarMaker::default()
            .file("etc/a", b"a", 0o644)
            .file("etc/b", b"b", 0o644)
            .finish();
        let layer2 = TarMaker::default().file("etc/.wh.a", b"", 0o644).finish();
        let layer2_gz = compress(&layer2, Compression::Gzip);
        let blob = format!("blobs/sha256/{}", sha256_hex(&layer2_gz));
        let config = json!({"config": {"Env": ["X=1"], "Cmd": ["/bin/sh"]}});
        let tar = docker_archive(
            &[
                (&format!("{}/layer.tar", "0".repeat(64)), layer1),
                (&blob, layer2_gz),
            ],
            None,
            &config,
            1,
        );
        fs::write(&path, tar).unwrap();
        assert_eq!(detect(&path).unwrap(), SourceKind::DockerArchive);
        let l = load_source(&path, &Options::default()).unwrap();
        assert_eq!(paths(&l.tree), ["", "etc", "etc/b"]);
        assert_eq!(l.meta.env, [("X".to_string(), "1".to_string())]);
        assert_eq!(l.meta.cmd, ["/bin/sh"]);
        assert_eq!(
            l.warnings,
            [format!(
                "{}: manifest.json: 2 images in the archive; using the first (localhost/x:1)",
                path.display()
            )]
        );
    }

    #[test]
    fn missing_layer_and_bad_blob() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("image.tar");
        let config = json!({"config": {}});
        let tar = docker_archive(&[], Some(&["abc/layer.tar"]), &config, 0);
        fs::write(&path, &tar).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: manifest.json: layer 1 of 1: abc/layer.tar is not in the archive",
                path.display()
            )
        );
        assert_eq!(e.exit_kind(), ExitKind::BadImage);

        let layer = TarMaker::default().file("x", b"x", 0o644).finish();
        let wrong = format!("blobs/sha256/{}", sha256_hex(b"something else"));
        fs::write(&path, docker_archive(&[(&wrong, layer)], None, &config, 0)).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("the content does not match its digest"),
            "{e}"
        );
    }
}
