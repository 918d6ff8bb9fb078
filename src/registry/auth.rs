//! Registry credentials from the files users already have, the
//! `WWW-Authenticate` challenges registries answer with, and the file
//! `rfake registry login` writes.
//!
//! Files, first entry wins (as podman reads them): `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json`. Each is
//! `{"auths": {"KEY": {"auth": base64("user:password")}}}` where KEY is
//! `host[:port]`, `host[:port]/namespace...` (the longest match wins), or a
//! URL `https://host/...`; Docker Hub's entry may be under `docker.io`,
//! `index.docker.io`, `registry-1.docker.io` or `https://index.docker.io/v1/`.
//! `credHelpers`/`credsStore` (external programs) are recognised and
//! reported as unsupported rather than silently ignored.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::RegistryError;
use crate::exit::ExitKind;

/// The most of a credential file rfake reads.
const AUTH_FILE_MAX: u64 = 4 << 20;

/// Docker's key for Docker Hub, which `docker login` writes.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token) for basic auth.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.username)
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// What the credential files say about one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Credentials from `file`.
    Found {
        credentials: Credentials,
        file: PathBuf,
    },
    /// `file` delegates this registry to a credential helper program,
    /// which rfake does not run.
    Helper { helper: String, file: PathBuf },
    /// No file has an entry; `consulted` are the files that exist.
    None { consulted: Vec<PathBuf> },
}

impl Lookup {
    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            Lookup::Found { credentials, .. } => Some(credentials),
            _ => None,
        }
    }

    /// For a 401/403 message: what rfake sent, from where.
    pub fn describe(&self, registry: &str) -> String {
        match self {
            Lookup::Found { credentials, file } => format!(
                "rfake sent the credentials of {:?} for {registry} from {}",
                credentials.username,
                crate::text::shown(file)
            ),
            Lookup::Helper { helper, file } => format!(
                "{} gives {registry} to the credential helper docker-credential-{helper}, \
                 which rfake does not support: run `rfake registry login {registry}`",
                crate::text::shown(file)
            ),
            Lookup::None { consulted } if consulted.is_empty() => format!(
                "no credentials for {registry} (no credential file: $REGISTRY_AUTH_FILE, \
                 $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)"
            ),
            Lookup::None { consulted } => format!(
                "no credentials for {registry} in {}",
                consulted
                    .iter()
                    .map(|p| crate::text::shown(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The credential files, in the order they are consulted.
pub fn default_files(env: &[(OsString, OsString)]) -> Vec<PathBuf> {
    let get = |name| crate::env::get(env, name).filter(|v| !v.is_empty());
    let mut files = Vec::new();
    if let Some(f) = get("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = get("XDG_RUNTIME_DIR") {
        files.push(Path::new(d).join("containers/auth.json"));
    }
    if let Some(h) = get("HOME") {
        files.push(Path::new(h).join(".docker/config.json"));
    }
    files
}

/// The file `rfake registry login` writes: `$REGISTRY_AUTH_FILE`, else
/// `~/.docker/config.json`.
pub fn login_file(env: &[(OsString, OsString)]) -> Option<PathBuf> {
    let get = |name| crate::env::get(env, name).filter(|v| !v.is_empty());
    get("REGISTRY_AUTH_FILE")
        .map(PathBuf::from)
        .or_else(|| get("HOME").map(|h| Path::new(h).join(".docker/config.json")))
}

/// Look `registry`/`repository` up in `files`, in order.
pub fn lookup(
    files: &[PathBuf],
    registry: &str,
    repository: &str,
) -> Result<Lookup, RegistryError> {
    let mut consulted = Vec::new();
    for file in files {
        let Some(doc) = read_file(file)? else {
            continue;
        };
        consulted.push(file.clone());
        if let Some(found) = lookup_in(&doc, file, registry, repository)? {
            return Ok(found);
        }
    }
    Ok(Lookup::None { consulted })
}

/// Read a credential file; `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<serde_json::Value>, RegistryError> {
    let fail = |detail: String, kind| RegistryError::File {
        path: path.to_path_buf(),
        detail,
        kind,
    };
    let bytes = match crate::input::read_regular(path, AUTH_FILE_MAX) {
        Ok(b) => b,
        Err(crate::input::InputError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(fail(format!("credential file: {e}"), ExitKind::NoInput)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(serde_json::Value::Object(Default::default())));
    }
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| fail(format!("malformed credential file: {e}"), ExitKind::Config))?;
    if !doc.is_object() {
        return Err(fail(
            "malformed credential file: not a JSON object".to_string(),
            ExitKind::Config,
        ));
    }
    Ok(Some(doc))
}

/// The host[:port][/path] a config key names (`https://` and a Docker Hub
/// alias normalized; a trailing `/v1/` of a URL key dropped).
fn key_name(key: &str) -> String {
    let (url, rest) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(rest) => (true, rest),
        None => (false, key),
    };
    let rest = rest.trim_end_matches('/');
    // A URL key names a host (Docker's "https://index.docker.io/v1/").
    let rest = if url {
        rest.split('/').next().unwrap_or(rest)
    } else {
        rest
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

/// How specifically `key` matches `registry/repository`: the number of
/// path components it names after the host, or `None`.
fn key_matches(key: &str, registry: &str, repository: &str) -> Option<usize> {
    let name = key_name(key);
    let (host, path) = name.split_once('/').unwrap_or((&name, ""));
    if host != registry {
        return None;
    }
    if path.is_empty() {
        return Some(0);
    }
    let full = format!("{repository}/");
    full.starts_with(&format!("{path}/"))
        .then(|| path.split('/').count())
}

fn lookup_in(
    doc: &serde_json::Value,
    file: &Path,
    registry: &str,
    repository: &str,
) -> Result<Option<Lookup>, RegistryError> {
    let malformed = |detail: String| RegistryError::File {
        path: file.to_path_buf(),
        detail: format!("malformed credential file: {detail}"),
        kind: ExitKind::Config,
    };
    // A per-registry helper overrides the file's own entries (Docker's rule).
    if let Some(helpers) = doc.get("credHelpers").and_then(|v| v.as_object()) {
        for (key, helper) in helpers {
            if key_matches(key, registry, repository).is_some() {
                return Ok(Some(Lookup::Helper {
                    helper: helper.as_str().unwrap_or("?").to_string(),
                    file: file.to_path_buf(),
                }));
            }
        }
    }
    let mut best: Option<(usize, &str, &serde_json::Value)> = None;
    if let Some(auths) = doc.get("auths") {
        let auths = auths
            .as_object()
            .ok_or_else(|| malformed("\"auths\" is not an object".to_string()))?;
        for (key, entry) in auths {
            if let Some(rank) = key_matches(key, registry, repository)
                && best.is_none_or(|(r, _, _)| rank > r)
            {
                best = Some((rank, key, entry));
            }
        }
    }
    let auth = best.and_then(|(_, key, entry)| {
        entry
            .get("auth")
            .and_then(|a| a.as_str())
            .filter(|a| !a.is_empty())
            .map(|a| (key, a))
    });
    match auth {
        Some((key, auth)) => {
            let credentials = decode_auth(auth).ok_or_else(|| {
                malformed(format!(
                    "entry {key:?}: \"auth\" is not base64 of user:password"
                ))
            })?;
            Ok(Some(Lookup::Found {
                credentials,
                file: file.to_path_buf(),
            }))
        }
        // An entry without "auth" under a global store: the secret is in the
        // store (Docker writes `{}` entries then).
        None => match doc.get("credsStore").and_then(|v| v.as_str()) {
            Some(store) if best.is_some() => Ok(Some(Lookup::Helper {
                helper: store.to_string(),
                file: file.to_path_buf(),
            })),
            _ => Ok(None),
        },
    }
}

/// `base64("user:password")` → credentials.
fn decode_auth(auth: &str) -> Option<Credentials> {
    let raw = BASE64.decode(auth.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// The keys of `auths` that are entries for `registry` (every spelling).
fn keys_for<'a>(
    auths: &'a serde_json::Map<String, serde_json::Value>,
    registry: &str,
) -> Vec<&'a String> {
    auths.keys().filter(|k| key_name(k) == registry).collect()
}

/// Save `credentials` for `registry` in `path`, keeping the file's other
/// keys and entries; written to a temporary file in the same directory
/// (0600) and renamed over it. Docker Hub is written under Docker's own
/// key, `https://index.docker.io/v1/`, which Docker and podman both read.
pub fn save(path: &Path, registry: &str, credentials: &Credentials) -> Result<(), RegistryError> {
    let mut doc = read_file(path)?.unwrap_or_else(|| serde_json::json!({}));
    let root = doc.as_object_mut().expect("read_file returns objects");
    let auths = root
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| RegistryError::File {
            path: path.to_path_buf(),
            detail: "malformed credential file: \"auths\" is not an object".to_string(),
            kind: ExitKind::Config,
        })?;
    let key = if registry == "docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    };
    // Other spellings of the same registry would shadow or confuse: drop them.
    for other in keys_for(auths, registry)
        .into_iter()
        .filter(|k| **k != key)
        .cloned()
        .collect::<Vec<_>>()
    {
        auths.remove(&other);
    }
    let entry = auths.entry(key).or_insert_with(|| serde_json::json!({}));
    if !entry.is_object() {
        *entry = serde_json::json!({});
    }
    entry.as_object_mut().expect("an object").insert(
        "auth".to_string(),
        serde_json::Value::String(
            BASE64.encode(format!("{}:{}", credentials.username, credentials.password)),
        ),
    );
    write_atomically(path, &doc)
}

/// Remove `registry`'s entries (every spelling) from `path`; whether
/// there was one.
pub fn remove(path: &Path, registry: &str) -> Result<bool, RegistryError> {
    let Some(mut doc) = read_file(path)? else {
        return Ok(false);
    };
    let Some(auths) = doc.get_mut("auths").and_then(|a| a.as_object_mut()) else {
        return Ok(false);
    };
    let keys: Vec<String> = keys_for(auths, registry).into_iter().cloned().collect();
    if keys.is_empty() {
        return Ok(false);
    }
    for k in &keys {
        auths.remove(k);
    }
    write_atomically(path, &doc)?;
    Ok(true)
}

/// Write `doc` to a new 0600 file beside `path`, fsync it, rename it over
/// `path`: a reader sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, doc: &serde_json::Value) -> Result<(), RegistryError> {
    let fail = |what: &str, e: std::io::Error| RegistryError::File {
        path: path.to_path_buf(),
        detail: format!("{what}: {e}"),
        kind: ExitKind::OsError,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| fail("cannot create its directory", e))?;
    let mut text = serde_json::to_vec_pretty(doc).expect("JSON values serialize");
    text.push(b'\n');
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".rfake-{}.tmp", std::process::id()));
    let tmp = dir.join(name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask cannot widen 0600, but make sure of it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("cannot write", e));
    }
    Ok(())
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm="..",service="..",scope=".."`: get a token at realm.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// `Basic realm=".."`: send the credentials with every request.
    Basic,
}

/// Parse a `WWW-Authenticate` value (RFC 7235: a scheme, then
/// comma-separated `name=value` or `name="quoted \" value"`). Only the
/// first challenge is read (registries send one).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm").filter(|r| !r.is_empty())?,
            service: get("service"),
            scope: get("scope"),
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else {
        None
    }
}

fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|c| c.is_ascii_whitespace() || *c == ',')
        {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_ascii_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            return out;
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            // A token68 or a stray word: nothing registries send.
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim_end().to_string();
        }
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        BASE64.encode(s)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/debian:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer  realm = "https://h/t" , scope="a:b:pull,push""#),
            Some(Challenge::Bearer {
                realm: "https://h/t".into(),
                service: None,
                scope: Some("a:b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm=https://h/token,service=x"#),
            Some(Challenge::Bearer {
                realm: "https://h/token".into(),
                service: Some("x".into()),
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="a\"b""#),
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Basic"), Some(Challenge::Basic));
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(parse_challenge(r#"Negotiate abc=="#), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn default_file_order() {
        let env: Vec<(OsString, OsString)> = [
            ("HOME", "/home/u"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
            ("REGISTRY_AUTH_FILE", "/etc/a.json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        assert_eq!(
            default_files(&env),
            vec![
                PathBuf::from("/etc/a.json"),
                PathBuf::from("/run/user/1/containers/auth.json"),
                PathBuf::from("/home/u/.docker/config.json"),
            ]
        );
        assert_eq!(login_file(&env), Some(PathBuf::from("/etc/a.json")));
        let home_only: Vec<(OsString, OsString)> = vec![("HOME".into(), "/h".into())];
        assert_eq!(
            default_files(&home_only),
            vec![PathBuf::from("/h/.docker/config.json")]
        );
        assert_eq!(
            login_file(&home_only),
            Some(PathBuf::from("/h/.docker/config.json"))
        );
        assert!(default_files(&[]).is_empty());
    }

    #[test]
    fn lookup_in_order_and_by_key_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(
            dir.path(),
            "first.json",
            &format!(
                r#"{{"auths":{{"127.0.0.1:15443":{{"auth":"{}"}}}}}}"#,
                b64("alice:pw1")
            ),
        );
        let second = write(
            dir.path(),
            "second.json",
            &format!(
                r#"{{"auths":{{
                    "127.0.0.1:15443":{{"auth":"{}"}},
                    "https://index.docker.io/v1/":{{"auth":"{}"}},
                    "https://ghcr.io":{{"auth":"{}"}},
                    "quay.io/org":{{"auth":"{}"}},
                    "quay.io":{{"auth":"{}"}}
                }},"other":{{"kept":true}}}}"#,
                b64("bob:pw2"),
                b64("hub:pw:with:colons"),
                b64("gh:tok"),
                b64("org:x"),
                b64("quay:y")
            ),
        );
        let missing = dir.path().join("missing.json");
        let files = vec![missing.clone(), first.clone(), second.clone()];
        let found = |reg: &str, repo: &str| lookup(&files, reg, repo).unwrap();

        assert_eq!(
            found("127.0.0.1:15443", "demo"),
            Lookup::Found {
                credentials: creds("alice", "pw1"),
                file: first.clone()
            }
        );
        assert_eq!(
            found("docker.io", "library/debian").credentials(),
            Some(&creds("hub", "pw:with:colons"))
        );
        assert_eq!(
            found("ghcr.io", "o/r").credentials(),
            Some(&creds("gh", "tok"))
        );
        // The longest namespace match wins.
        assert_eq!(
            found("quay.io", "org/img").credentials(),
            Some(&creds("org", "x"))
        );
        assert_eq!(
            found("quay.io", "organ/img").credentials(),
            Some(&creds("quay", "y"))
        );
        // Nothing: the message names the files that exist.
        let none = found("example.com", "x");
        assert_eq!(
            none,
            Lookup::None {
                consulted: vec![first.clone(), second.clone()]
            }
        );
        let msg = none.describe("example.com");
        assert!(
            msg.contains("first.json") && msg.contains("second.json"),
            "{msg}"
        );
        assert!(!msg.contains("missing.json"), "{msg}");
        assert!(
            Lookup::None { consulted: vec![] }
                .describe("h")
                .contains("no credential file")
        );
    }

    #[test]
    fn docker_hub_key_variants() {
        let dir = tempfile::tempdir().unwrap();
        for key in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "https://registry-1.docker.io",
        ] {
            let f = write(
                dir.path(),
                "c.json",
                &format!(r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#, b64("u:p")),
            );
            let l = lookup(&[f], "docker.io", "library/debian").unwrap();
            assert_eq!(l.credentials(), Some(&creds("u", "p")), "{key}");
        }
    }

    #[test]
    fn helpers_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "c.json",
            &format!(
                r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}},"quay.io":{{}}}},
                    "credHelpers":{{"ghcr.io":"gh"}},"credsStore":"desktop"}}"#,
                b64("u:p")
            ),
        );
        let files = [f.clone()];
        assert_eq!(
            lookup(&files, "ghcr.io", "x").unwrap(),
            Lookup::Helper {
                helper: "gh".into(),
                file: f.clone()
            }
        );
        // An empty entry under a credsStore: the secret is in the store.
        let l = lookup(&files, "quay.io", "x").unwrap();
        assert_eq!(
            l,
            Lookup::Helper {
                helper: "desktop".into(),
                file: f.clone()
            }
        );
        assert!(l.describe("quay.io").contains("docker-credential-desktop"));
        // No entry at all: nothing (the store may not know it either).
        assert_eq!(
            lookup(&files, "x.io", "x").unwrap(),
            Lookup::None { consulted: vec![f] }
        );
    }

    #[test]
    fn malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        for (text, says) in [
            ("{", "malformed credential file"),
            ("[]", "not a JSON object"),
            (r#"{"auths":[]}"#, "\"auths\" is not an object"),
            (
                r#"{"auths":{"h.io":{"auth":"!!"}}}"#,
                "not base64 of user:password",
            ),
            (
                &format!(r#"{{"auths":{{"h.io":{{"auth":"{}"}}}}}}"#, b64("nocolon")),
                "not base64",
            ),
        ] {
            let f = write(dir.path(), "bad.json", text);
            let e = lookup(&[f], "h.io", "x").unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
            assert!(e.to_string().contains("bad.json"), "{e}");
            assert_eq!(e.exit_kind(), ExitKind::Config);
        }
        // An empty file is an empty object (as podman treats it).
        let f = write(dir.path(), "empty.json", "\n");
        assert!(matches!(
            lookup(&[f], "h.io", "x").unwrap(),
            Lookup::None { .. }
        ));
        // A directory is not a credential file.
        let e = lookup(&[dir.path().to_path_buf()], "h.io", "x").unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::NoInput, "{e}");
    }

    #[test]
    fn save_keeps_other_keys_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        save(&path, "127.0.0.1:15443", &creds("alice", "pw")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);

        // Other top-level keys and other entries' fields survive.
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}},"index.docker.io":{{"auth":"{}","email":"e"}}}},"psFormat":"x"}}"#,
                b64("g:h"),
                b64("old:old")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, "docker.io", &creds("hub", "new")).unwrap();
        save(&path, "127.0.0.1:15443", &creds("alice", "pw")).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "x");
        assert_eq!(doc["auths"]["ghcr.io"]["auth"], b64("g:h"));
        assert_eq!(doc["auths"][DOCKER_HUB_KEY]["auth"], b64("hub:new"));
        assert!(doc["auths"].get("index.docker.io").is_none(), "{doc}");
        assert_eq!(doc["auths"]["127.0.0.1:15443"]["auth"], b64("alice:pw"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let files = [path.clone()];
        assert_eq!(
            lookup(&files, "docker.io", "library/x")
                .unwrap()
                .credentials(),
            Some(&creds("hub", "new"))
        );
        // No temporary left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("config.json")]);

        assert!(remove(&path, "docker.io").unwrap());
        assert!(!remove(&path, "docker.io").unwrap());
        assert!(!remove(&dir.path().join("none.json"), "docker.io").unwrap());
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(doc["auths"].get(DOCKER_HUB_KEY).is_none());
        assert_eq!(doc["auths"]["ghcr.io"]["auth"], b64("g:h"));
        assert_eq!(doc["psFormat"], "x");
    }

    #[test]
    fn save_refuses_a_malformed_file_and_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "config.json", "{not json");
        let e = save(&path, "h.io", &creds("u", "p")).unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::Config);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
    }

    #[test]
    fn credentials_do_not_print_the_password() {
        let c = creds("u", "secret");
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.basic_header(), format!("Basic {}", b64("u:secret")));
    }
}
