//! The client against a scripted HTTP server on loopback (tests only):
//! what the real test registry cannot show: a bearer-token realm, a
//! redirect to another host, a wrong `Docker-Content-Digest`, a server that
//! ignores `Range`, a body cut short, 5xx and 429.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::client::{Client, ClientOptions};
use super::reference::Reference;
use crate::digest::{Digest, Hasher};
use crate::exit::ExitKind;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    host: String,
    authorization: Option<String>,
    range: Option<String>,
}

/// What to answer: status, headers, body; `cut` sends only that many body
/// bytes, then closes.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut: Option<usize>,
}

fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    Answer {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
        cut: None,
    }
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// Serve `script` on 127.0.0.1 until the test ends; the requests seen.
fn serve(script: Script) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            // A thread per connection: the client keeps its connections.
            let (script, log) = (script.clone(), log.clone());
            std::thread::spawn(move || handle(stream, &script, &log));
        }
    });
    (port, seen)
}

fn handle(stream: TcpStream, script: &Script, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut seen = Seen {
            path,
            host: String::new(),
            authorization: None,
            range: None,
        };
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            let v = v.trim().to_string();
            match k.to_ascii_lowercase().as_str() {
                "host" => seen.host = v,
                "authorization" => seen.authorization = Some(v),
                "range" => seen.range = Some(v),
                _ => {}
            }
        }
        let a = script(&seen);
        log.lock().unwrap().push(seen);
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            a.status,
            a.body.len()
        );
        for (k, v) in &a.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let body = &a.body[..a.cut.unwrap_or(a.body.len())];
        if out
            .write_all(head.as_bytes())
            .and_then(|_| out.write_all(body))
            .is_err()
            || a.cut.is_some()
        {
            return;
        }
    }
}

fn sha256(bytes: &[u8]) -> Digest {
    let mut h = Hasher::Sha256(sha2::Digest::new());
    h.update(bytes);
    Digest::parse(&format!("sha256:{}", h.hex())).unwrap()
}

fn client(auth_files: Vec<std::path::PathBuf>) -> Client {
    Client::new(ClientOptions {
        ca_file: None,
        auth_files,
        user_agent: "rfake-test".into(),
    })
    .unwrap()
}

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
const BLOB: &[u8] = b"0123456789abcdefghij";

#[test]
fn bearer_tokens_redirects_and_ranges() {
    let manifest_digest = sha256(MANIFEST);
    let blob_digest = sha256(BLOB);
    let md = manifest_digest.to_string();
    let (port, seen) = serve(Arc::new(move |s: &Seen| {
        let realm = format!(
            "Bearer realm=\"http://{}/token\",service=\"test registry\",scope=\"repository:lib/img:pull\"",
            s.host
        );
        let bearer = s.authorization.as_deref() == Some("Bearer T1");
        match s.path.as_str() {
            p if p.starts_with("/token?") => {
                answer(200, &[], br#"{"token":"T1","expires_in":300}"#)
            }
            p if p.starts_with("/storage/") => {
                // Another host: it must not get the registry's token.
                assert_eq!(s.authorization, None, "Authorization leaked to {}", s.host);
                match &s.range {
                    Some(r) => {
                        let from: usize = r
                            .trim_start_matches("bytes=")
                            .trim_end_matches('-')
                            .parse()
                            .unwrap();
                        let cr = format!("bytes {from}-{}/{}", BLOB.len() - 1, BLOB.len());
                        answer(206, &[("Content-Range", &cr)], &BLOB[from..])
                    }
                    None => answer(200, &[], BLOB),
                }
            }
            _ if !bearer => answer(
                401,
                &[("WWW-Authenticate", &realm)],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"x"}]}"#,
            ),
            p if p == "/v2/lib/img/manifests/1" || p == format!("/v2/lib/img/manifests/{md}") => {
                answer(
                    200,
                    &[
                        ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
                        ("Docker-Content-Digest", &md),
                    ],
                    MANIFEST,
                )
            }
            p if p.starts_with("/v2/lib/img/blobs/") => {
                let to = format!(
                    "http://localhost:{}/storage/blob",
                    s.host.rsplit(':').next().unwrap()
                );
                answer(307, &[("Location", &to)], b"")
            }
            _ => answer(404, &[], b""),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    let registry = format!("127.0.0.1:{port}");
    let creds = super::auth::Credentials {
        username: "u".into(),
        password: "p".into(),
    };
    super::auth::save(&auth, &registry, &creds).unwrap();
    let mut c = client(vec![auth]);
    let r = Reference::parse(&format!("{registry}/lib/img:1")).unwrap();

    let m = c.manifest(&r, "1").unwrap();
    assert_eq!(m.digest, manifest_digest);
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m.bytes, MANIFEST);
    let m2 = c.manifest(&r, &manifest_digest.to_string()).unwrap();
    assert_eq!(m2.digest, manifest_digest);

    let mut sink = Vec::new();
    assert_eq!(
        c.blob(&r, &blob_digest, 20, 0, &mut sink, &mut |_| {})
            .unwrap(),
        0
    );
    assert_eq!(sink, BLOB);
    let mut sink = Vec::new();
    assert_eq!(
        c.blob(&r, &blob_digest, 20, 15, &mut sink, &mut |_| {})
            .unwrap(),
        15
    );
    assert_eq!(sink, &BLOB[15..]);

    let seen = seen.lock().unwrap();
    let tokens: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.starts_with("/token"))
        .collect();
    // One token for the scope, fetched with the saved credentials.
    assert_eq!(tokens.len(), 1, "{seen:#?}");
    assert_eq!(
        tokens[0].path,
        "/token?service=test%20registry&scope=repository:lib/img:pull"
    );
    assert_eq!(
        tokens[0].authorization.as_deref(),
        Some(creds.basic_header().as_str())
    );
    assert!(
        seen.iter()
            .any(|s| s.path.starts_with("/storage/") && s.host.starts_with("localhost"))
    );
}

#[test]
fn bad_answers() {
    let good = sha256(MANIFEST).to_string();
    let (port, _) = serve(Arc::new(move |s: &Seen| match s.path.as_str() {
        "/v2/x/manifests/wrong-digest" => answer(
            200,
            &[(
                "Docker-Content-Digest",
                &format!("sha256:{}", "1".repeat(64)),
            )],
            MANIFEST,
        ),
        "/v2/x/manifests/json" => answer(
            200,
            &[
                ("Content-Type", "application/json"),
                ("Docker-Content-Digest", &good),
            ],
            MANIFEST,
        ),
        "/v2/x/manifests/huge" => answer(200, &[], &vec![b' '; (4 << 20) + 1]),
        "/v2/x/manifests/e500" => answer(
            500,
            &[],
            br#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#,
        ),
        "/v2/x/manifests/e429" => answer(429, &[], b""),
        "/v2/x/manifests/e403" => answer(403, &[], b""),
        "/v2/x/manifests/basic" => answer(401, &[("WWW-Authenticate", "Basic realm=\"r\"")], b""),
        "/v2/x/manifests/nochallenge" => answer(401, &[], b""),
        p if p.starts_with("/v2/x/blobs/") => {
            // Ignores Range and cuts the body short.
            let mut a = answer(200, &[], BLOB);
            if s.range.is_none() {
                a.cut = Some(7);
            }
            a
        }
        _ => answer(
            404,
            &[],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        ),
    }));
    let mut c = client(Vec::new());
    let r = Reference::parse(&format!("127.0.0.1:{port}/x:1")).unwrap();
    let fail = |c: &mut Client, reference: &str| c.manifest(&r, reference).unwrap_err();

    let e = fail(&mut c, "wrong-digest");
    assert_eq!(e.exit_kind(), ExitKind::BadImage, "{e}");
    assert!(e.to_string().contains("does not match its digest"), "{e}");
    let m = c.manifest(&r, "json").unwrap();
    assert_eq!(
        m.media_type, "application/vnd.oci.image.manifest.v1+json",
        "from the document"
    );
    let e = fail(&mut c, "huge");
    assert_eq!(e.exit_kind(), ExitKind::BadImage, "{e}");
    assert!(e.to_string().contains("4 MiB"), "{e}");
    let e = fail(&mut c, "e500");
    assert_eq!(e.exit_kind(), ExitKind::RegistryProtocol, "{e}");
    assert!(e.to_string().contains("500: UNKNOWN disk on fire"), "{e}");
    assert_eq!(fail(&mut c, "e429").exit_kind(), ExitKind::RegistryProtocol);
    let e = fail(&mut c, "e403");
    assert_eq!(e.exit_kind(), ExitKind::Refused, "{e}");
    assert!(e.to_string().contains("no credential file"), "{e}");
    let e = fail(&mut c, "basic");
    assert_eq!(e.exit_kind(), ExitKind::Refused, "{e}");
    assert!(e.to_string().contains("asks for a login"), "{e}");
    assert_eq!(
        fail(&mut c, "nochallenge").exit_kind(),
        ExitKind::RegistryProtocol
    );
    let e = fail(&mut c, "nope");
    assert_eq!(e.exit_kind(), ExitKind::NoInput, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "127.0.0.1:{port}/x:nope: not found in the registry (HTTP 404: MANIFEST_UNKNOWN manifest unknown)"
        )
    );
    let e = fail(&mut c, &format!("sha256:{}", "2".repeat(64)));
    assert_eq!(e.exit_kind(), ExitKind::NoInput, "{e}");

    let d = sha256(BLOB);
    // Range ignored (200): the whole blob, starting at 0.
    let mut sink = Vec::new();
    assert_eq!(c.blob(&r, &d, 20, 5, &mut sink, &mut |_| {}).unwrap(), 0);
    assert_eq!(sink, BLOB);
    // Cut short: truncated (76), what arrived was written.
    let mut sink = Vec::new();
    let e = c.blob(&r, &d, 20, 0, &mut sink, &mut |_| {}).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::RegistryProtocol, "{e}");
    assert!(
        e.to_string()
            .contains("truncated download: the connection ended after 7 of 20 bytes"),
        "{e}"
    );
    assert_eq!(sink, &BLOB[..7]);
    // A sink that fails: 71.
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = c.blob(&r, &d, 20, 5, &mut Full, &mut |_| {}).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::OsError, "{e}");
}
