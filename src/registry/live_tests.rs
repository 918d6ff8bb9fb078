//! The client against a real registry (tests only): `RFAKE_TEST_REGISTRY`
//! names a plain-HTTP loopback registry that accepts pushes
//! (`127.0.0.1:PORT`; tests/run.sh starts one). The test pushes its own
//! small images through the registry API first, so it depends on nothing
//! else. Without the variable it is skipped, except under `CI=true`.
//! The main integration tests are tests/registry.rs.

use std::path::PathBuf;

use ureq::Agent;

use super::client::{Client, ClientOptions};
use super::manifest::{self, Content, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, SIF_LAYER};
use super::reference::Reference;
use crate::digest::{Digest, Hasher};
use crate::exit::ExitKind;

fn sha256(bytes: &[u8]) -> Digest {
    let mut h = Hasher::Sha256(sha2::Digest::new());
    h.update(bytes);
    Digest::parse(&format!("sha256:{}", h.hex())).unwrap()
}

struct Pusher {
    agent: Agent,
    base: String,
    /// `Authorization` for a registry that wants a login.
    login: Option<String>,
}

impl Pusher {
    fn blob(&self, repo: &str, bytes: &[u8]) -> (Digest, u64) {
        let digest = sha256(bytes);
        let started = self
            .agent
            .post(&format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .header("Authorization", self.login.as_deref().unwrap_or(""))
            .send_empty()
            .unwrap();
        assert_eq!(started.status().as_u16(), 202, "start upload to {repo}");
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let done = self
            .agent
            .put(&format!("{url}{sep}digest={digest}"))
            .header("Authorization", self.login.as_deref().unwrap_or(""))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        assert_eq!(done.status().as_u16(), 201, "finish upload to {repo}");
        (digest, bytes.len() as u64)
    }

    fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Digest {
        let r = self
            .agent
            .put(&format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("Authorization", self.login.as_deref().unwrap_or(""))
            .header("Content-Type", media_type)
            .send(bytes)
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "push manifest {repo}:{reference}");
        sha256(bytes)
    }
}

fn descriptor(media_type: &str, (digest, size): &(Digest, u64)) -> String {
    format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{size}}}"#)
}

fn client() -> Client {
    client_with(None, Vec::new())
}

fn client_with(ca_file: Option<PathBuf>, auth_files: Vec<PathBuf>) -> Client {
    Client::new(ClientOptions {
        ca_file,
        auth_files,
        user_agent: "rfake-test".into(),
    })
    .unwrap()
}

#[test]
fn against_a_real_registry() {
    let Ok(registry) = std::env::var("RFAKE_TEST_REGISTRY") else {
        crate::testing::missing("RFAKE_TEST_REGISTRY (a plain loopback registry, 127.0.0.1:PORT)");
        return;
    };
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let push = Pusher {
        agent,
        base: format!("http://{registry}"),
        login: None,
    };
    let repo = "rfake-unit/client";

    // A 3 MiB layer of varied bytes, a config, manifests for two
    // architectures, an attestation, an index over them, a SIF artifact.
    let layer_bytes: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let layer = push.blob(repo, &layer_bytes);
    let config = push.blob(
        repo,
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let image = |layer_type: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
            descriptor(OCI_CONFIG, &config),
            descriptor(layer_type, &layer)
        )
    };
    let amd64 = image("application/vnd.oci.image.layer.v1.tar+gzip");
    let arm64 = image("application/vnd.oci.image.layer.v1.tar+zstd");
    let amd64_digest = push.manifest(repo, "amd64", OCI_MANIFEST, amd64.as_bytes());
    let arm64_digest = push.manifest(repo, "arm64", OCI_MANIFEST, arm64.as_bytes());
    let entry = |digest: &Digest, len: usize, platform: &str| {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{len},"platform":{platform}}}"#
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{},{}]}}"#,
        entry(
            &arm64_digest,
            arm64.len(),
            r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#
        ),
        entry(
            &amd64_digest,
            amd64.len(),
            r#"{"architecture":"unknown","os":"unknown"}"#
        ),
        entry(
            &amd64_digest,
            amd64.len(),
            r#"{"architecture":"amd64","os":"linux"}"#
        ),
    );
    let index_digest = push.manifest(repo, "multi", OCI_INDEX, index.as_bytes());
    let sif_bytes = b"SIF_MAGIC not really a SIF, bytes for the test".to_vec();
    let sif = push.blob(repo, &sif_bytes);
    let sif_config = push.blob(repo, b"{}");
    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        descriptor("application/vnd.sylabs.sif.config.v1+json", &sif_config),
        descriptor(SIF_LAYER, &sif)
    );
    push.manifest(repo, "sif", OCI_MANIFEST, artifact.as_bytes());

    let mut c = client();
    let at = |tag: &str| Reference::parse(&format!("{registry}/{repo}:{tag}")).unwrap();

    // The index, resolved for each architecture.
    let resolved = manifest::resolve(&mut c, &at("multi"), "amd64").unwrap();
    assert_eq!(resolved.index_digest.as_ref(), Some(&index_digest));
    assert_eq!(resolved.manifest.digest, amd64_digest);
    assert_eq!(resolved.manifest.media_type, OCI_MANIFEST);
    match &resolved.content {
        Content::Oci {
            config: cfg,
            layers,
        } => {
            assert_eq!(cfg.digest, config.0);
            assert_eq!(layers.len(), 1);
            assert_eq!((&layers[0].digest, layers[0].size), (&layer.0, layer.1));
        }
        other => panic!("{other:?}"),
    }
    let resolved = manifest::resolve(&mut c, &at("multi"), "arm64").unwrap();
    assert_eq!(resolved.manifest.digest, arm64_digest);
    let e = manifest::resolve(&mut c, &at("multi"), "riscv64").unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::BadImage);
    assert!(
        e.to_string()
            .ends_with("no image for riscv64; it has: arm64/v8, amd64 (choose one with --arch)"),
        "{e}"
    );

    // A single manifest by tag and by digest; the SIF artifact.
    let resolved = manifest::resolve(&mut c, &at("amd64"), "arm64").unwrap();
    assert_eq!(
        resolved.index_digest, None,
        "a plain manifest is taken as it is"
    );
    let by_digest = Reference::parse(&format!("{registry}/{repo}@{amd64_digest}")).unwrap();
    assert_eq!(
        c.manifest(&by_digest, &by_digest.reference())
            .unwrap()
            .bytes,
        amd64.as_bytes()
    );
    let resolved = manifest::resolve(&mut c, &at("sif"), "amd64").unwrap();
    assert!(
        matches!(&resolved.content, Content::Sif { blob } if blob.digest == sif.0),
        "{:?}",
        resolved.content
    );

    // Blobs: whole, resumed from an offset (206), and a partial as long as
    // the blob (fetched whole: 0).
    let fetch = |c: &mut Client, offset: u64, size: u64| {
        let mut sink = Vec::new();
        let mut last = 0;
        let r = c.blob(&at("x"), &layer.0, size, offset, &mut sink, &mut |n| {
            last = n
        });
        r.map(|start| {
            assert_eq!(last, sink.len() as u64);
            (start, sink)
        })
    };
    let (start, whole) = fetch(&mut c, 0, layer.1).unwrap();
    assert_eq!((start, whole.len()), (0, layer_bytes.len()));
    assert!(whole == layer_bytes);
    let offset = 1_234_567;
    let (start, tail) = fetch(&mut c, offset, layer.1).unwrap();
    assert_eq!(start, offset);
    assert!(tail == layer_bytes[offset as usize..]);
    let (start, again) = fetch(&mut c, layer.1, layer.1).unwrap();
    assert_eq!((start, again.len() as u64), (0, layer.1));

    // Fewer bytes than the descriptor says: truncated (76); more: 65.
    let e = fetch(&mut c, 0, layer.1 + 10).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::RegistryProtocol, "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = fetch(&mut c, 0, layer.1 - 1).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::BadImage, "{e}");

    // 404s: tag, repository, digest.
    for missing in [
        format!("{registry}/{repo}:no-such-tag"),
        format!("{registry}/rfake-unit/no-such-repo:1"),
        format!("{registry}/{repo}@sha256:{}", "0".repeat(64)),
    ] {
        let r = Reference::parse(&missing).unwrap();
        let e = manifest::resolve(&mut c, &r, "amd64").unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::NoInput, "{missing}: {e}");
        assert!(e.to_string().contains("not found"), "{e}");
    }

    // Nothing listening: unreachable (68), naming the registry.
    let r = Reference::parse("127.0.0.1:9/x:1").unwrap();
    let e = manifest::resolve(&mut c, &r, "amd64").unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::RegistryUnreachable, "{e}");
    assert_eq!(e.to_string(), "registry 127.0.0.1:9: connection refused");
}

/// `RFAKE_TEST_REGISTRY_TLS` (host:port, not a loopback name),
/// `_CA`, `_USER`, `_PASSWORD`: TLS with a private CA and htpasswd.
#[test]
fn tls_and_basic_auth() {
    let var = |n: &str| std::env::var(format!("RFAKE_TEST_REGISTRY_{n}")).ok();
    let (Some(registry), Some(ca), Some(user), Some(password)) =
        (var("TLS"), var("CA"), var("USER"), var("PASSWORD"))
    else {
        crate::testing::missing("RFAKE_TEST_REGISTRY_TLS, _CA, _USER, _PASSWORD");
        return;
    };
    let credentials = super::auth::Credentials {
        username: user,
        password,
    };
    let pem = std::fs::read(&ca).unwrap();
    let roots: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i.unwrap() {
            ureq::tls::PemItem::Certificate(c) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(roots.into())
                .build(),
        )
        .build()
        .new_agent();
    let push = Pusher {
        agent,
        base: format!("https://{registry}"),
        login: Some(credentials.basic_header()),
    };
    let repo = "rfake-unit/tls";
    let layer = push.blob(repo, b"layer bytes");
    let config = push.blob(repo, b"{}");
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        descriptor(OCI_CONFIG, &config),
        descriptor("application/vnd.oci.image.layer.v1.tar", &layer)
    );
    let digest = push.manifest(repo, "1", OCI_MANIFEST, image.as_bytes());
    let r = Reference::parse(&format!("{registry}/{repo}:1")).unwrap();

    // Credentials from the second file consulted (the first does not exist).
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.json");
    super::auth::save(&auth_file, &r.registry, &credentials).unwrap();
    let files = vec![dir.path().join("none.json"), auth_file.clone()];
    let mut c = client_with(Some(ca.clone().into()), files);
    let resolved = manifest::resolve(&mut c, &r, "amd64").unwrap();
    assert_eq!(resolved.manifest.digest, digest);
    let mut sink = Vec::new();
    c.blob(&r, &layer.0, layer.1, 0, &mut sink, &mut |_| {})
        .unwrap();
    assert_eq!(sink, b"layer bytes");
    assert_eq!(
        c.check_login(&r.registry, &credentials).unwrap(),
        super::client::LoginCheck::Accepted
    );

    // No credentials: 77, saying where rfake looked.
    let mut c = client_with(Some(ca.clone().into()), vec![dir.path().join("none.json")]);
    let e = manifest::resolve(&mut c, &r, "amd64").unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Refused, "{e}");
    assert!(e.to_string().contains("no credentials for"), "{e}");
    // Wrong password: 77, naming the file the credentials came from.
    let wrong = super::auth::Credentials {
        username: credentials.username.clone(),
        password: "wrong".into(),
    };
    super::auth::save(&auth_file, &r.registry, &wrong).unwrap();
    let mut c = client_with(Some(ca.clone().into()), vec![auth_file.clone()]);
    let e = manifest::resolve(&mut c, &r, "amd64").unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Refused, "{e}");
    assert!(e.to_string().contains("auth.json"), "{e}");
    assert_eq!(
        c.check_login(&r.registry, &wrong).unwrap_err().exit_kind(),
        ExitKind::Refused
    );

    // Without the CA: 68, saying how to give it.
    let mut c = client_with(None, vec![auth_file]);
    let e = manifest::resolve(&mut c, &r, "amd64").unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::RegistryUnreachable, "{e}");
    assert!(e.to_string().contains("certificate not trusted"), "{e}");
    assert!(e.to_string().contains("--ca-file"), "{e}");
}
