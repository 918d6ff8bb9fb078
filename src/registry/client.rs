//! The OCI distribution API over blocking HTTP (ureq): manifests and blobs
//! by name, with the registry's auth challenges answered.
//!
//! Why ureq and not an async client (oci-client, reqwest): rfake runs the
//! container after `unshare(CLONE_NEWUSER)`, which the kernel refuses to a
//! multi-threaded process. ureq is blocking and starts no thread (DNS
//! resolution is synchronous as long as no resolve timeout is set, so
//! none is), so a pull can run in the same process right before the
//! launch. It also lets a blob download start at any byte (`Range`), which
//! the cache uses to resume, and never decodes a body (the crate's gzip
//! feature is off): blobs arrive byte for byte as their digest says.
//!
//! Transport rules:
//! - TLS is always verified, against the system's roots
//!   (rustls-native-certs: `/etc/ssl/certs`, `SSL_CERT_FILE`, `SSL_CERT_DIR`)
//!   plus the PEM certificates of `--ca-file`/`registry_ca_file`;
//! - a loopback registry (`localhost`, `127.0.0.0/8`, `::1`) is spoken to
//!   over plain HTTP (see [`super::reference::api_base`]);
//! - proxies from `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY` (and lower case),
//!   except for the hosts in `NO_PROXY`;
//! - redirects (blob storage) are followed; the `Authorization` header goes
//!   only to the same host, never to the storage the blob is redirected to;
//! - connecting may take 30 s; after that a read may wait 60 s for data
//!   (a stalled transfer fails, a slow one does not).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use ureq::config::RedirectAuthHeaders;
use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::RegistryError;
use super::auth::{self, Challenge, Credentials, Lookup};
use super::reference::{Reference, api_base, is_loopback};
use crate::digest::Digest;
use crate::exit::ExitKind;

/// How long a connection (with its TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read may wait for data: a stall, not a slow transfer.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest manifest or index rfake reads (containerd's limit too).
pub const MANIFEST_MAX: u64 = 4 << 20;
/// The most of an error or token response read.
const SMALL_BODY_MAX: u64 = 64 << 10;
/// The largest CA file read.
const CA_FILE_MAX: u64 = 16 << 20;

/// The manifest types rfake asks for, in order of preference.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub struct ClientOptions {
    /// Extra PEM CA certificates, added to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Credential files, consulted in order ([`auth::default_files`]).
    pub auth_files: Vec<PathBuf>,
    /// `rfake/<version>`.
    pub user_agent: String,
}

/// A registry client: one connection pool, tokens cached per registry and
/// scope for the life of the client.
pub struct Client {
    agent: Agent,
    auth_files: Vec<PathBuf>,
    /// `Authorization` values by (registry, scope).
    tokens: HashMap<(String, String), String>,
    /// What the credential files say, by (registry, repository).
    lookups: HashMap<(String, String), Lookup>,
}

/// A manifest or index as fetched, checked against its digest.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// From `Content-Type`, else the document's `mediaType`.
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// What a login check found.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginCheck {
    /// The registry accepted the credentials.
    Accepted,
    /// The registry asks for no credentials at all (`GET /v2/` is 200).
    NotNeeded,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, RegistryError> {
        let roots = root_certificates(opts.ca_file.as_deref())?;
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(std::sync::Arc::new(roots)))
            .build();
        let config = Agent::config_builder()
            // 4xx/5xx are answers to read (challenges, error JSON).
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(STALL_TIMEOUT))
            // No resolve timeout: with one, ureq resolves in a thread.
            .timeout_resolve(None)
            .max_redirects(10)
            // Same host only: a blob redirected to S3 or a CDN does not get
            // the registry's token or password.
            .redirect_auth_headers(RedirectAuthHeaders::SameHost)
            .user_agent(opts.user_agent.as_str())
            .build();
        Ok(Client {
            agent: config.new_agent(),
            auth_files: opts.auth_files,
            tokens: HashMap::new(),
            lookups: HashMap::new(),
        })
    }

    /// GET `/v2/<repo>/manifests/<reference>` (Accept: OCI and Docker index
    /// and manifest types), at most 4 MiB. Checked against the digest when
    /// `reference` is one; else its sha256 is the digest, and the
    /// `Docker-Content-Digest` header, when sent, must agree.
    pub fn manifest(&mut self, r: &Reference, reference: &str) -> Result<Fetched, RegistryError> {
        let what = if reference.contains(':') {
            format!("{}/{}@{reference}", r.registry, r.repository)
        } else {
            format!("{}/{}:{reference}", r.registry, r.repository)
        };
        let wanted = if reference.contains(':') {
            Some(
                Digest::parse(reference)
                    .ok_or_else(|| RegistryError::bad_reference(&what, "malformed digest"))?,
            )
        } else {
            None
        };
        let url = format!("{}/v2/{}/manifests/{reference}", r.api_base(), r.repository);
        let accept = MANIFEST_TYPES.join(", ");
        let mut response = self.get(r, &url, &[("Accept", accept)], &what)?;
        if let Some(len) = content_length(&response)
            && len > MANIFEST_MAX
        {
            return Err(too_large(&what, len));
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MANIFEST_MAX)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => too_large(&what, MANIFEST_MAX + 1),
                e => body_error(&r.registry, &what, e),
            })?;
        let header_digest = header(&response, "docker-content-digest");
        let digest = match wanted {
            Some(d) => {
                check_digest(&what, &d, &bytes)?;
                d
            }
            None => {
                if let Some(h) = header_digest.as_deref() {
                    let d = Digest::parse(h.trim()).ok_or_else(|| {
                        RegistryError::protocol(
                            &what,
                            format!("malformed Docker-Content-Digest {h:?}"),
                        )
                    })?;
                    check_digest(&what, &d, &bytes)?;
                }
                let mut h = crate::digest::Hasher::Sha256(sha2::Digest::new());
                h.update(&bytes);
                Digest::parse(&format!("sha256:{}", h.hex())).expect("a sha256 hex")
            }
        };
        let media_type = media_type_of(header(&response, "content-type").as_deref(), &bytes);
        Ok(Fetched {
            media_type,
            digest,
            bytes,
        })
    }

    /// GET `/v2/<repo>/blobs/<digest>` from byte `offset` (a `Range`
    /// request when `offset > 0`), following redirects, into `sink`;
    /// `progress(bytes written by this call)` as it goes. Returns where
    /// the written data starts: `offset` when the server honoured the range
    /// (206), 0 when it sent the whole blob (200; the caller then drops
    /// what it had). Checks the length against `expected_size` (a short
    /// body is a truncated download, 76); the caller checks the digest.
    pub fn blob(
        &mut self,
        r: &Reference,
        digest: &Digest,
        expected_size: u64,
        offset: u64,
        sink: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, RegistryError> {
        let what = format!("blob {digest} of {}/{}", r.registry, r.repository);
        // A partial as long as the blob (or longer) cannot be resumed:
        // fetch it whole and let the caller start over.
        let offset = if offset >= expected_size { 0 } else { offset };
        let url = format!("{}/v2/{}/blobs/{digest}", r.api_base(), r.repository);
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("Range", format!("bytes={offset}-")));
        }
        let mut response = self.get(r, &url, &headers, &what)?;
        let start = match response.status().as_u16() {
            206 if offset > 0 => {
                let range = header(&response, "content-range").unwrap_or_default();
                match content_range_start(&range) {
                    Some(s) if s == offset => offset,
                    _ => {
                        return Err(RegistryError::protocol(
                            &what,
                            format!("asked for bytes {offset}- and got Content-Range {range:?}"),
                        ));
                    }
                }
            }
            200 => 0,
            status => {
                return Err(RegistryError::protocol(
                    &what,
                    format!("unexpected HTTP status {status} for a blob"),
                ));
            }
        };
        let wanted = expected_size - start;
        if let Some(len) = content_length(&response)
            && len > wanted
        {
            return Err(RegistryError::bad_content(
                &what,
                format!(
                    "the registry sends {} bytes, the manifest says the blob has {expected_size}",
                    start + len
                ),
            ));
        }
        let mut reader = response.body_mut().with_config().reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut done: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(match io_to_ureq(e) {
                        Ok(ureq::Error::Timeout(_)) => RegistryError::protocol(
                            &what,
                            format!(
                                "download stalled: no data for {} s after {} of {expected_size} bytes",
                                STALL_TIMEOUT.as_secs(),
                                start + done
                            ),
                        ),
                        Ok(e) if !is_eof(&e) => body_error(&r.registry, &what, e),
                        Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
                            body_error(&r.registry, &what, ureq::Error::Io(e))
                        }
                        _ => truncated(&what, start + done, expected_size),
                    });
                }
            };
            if done + n as u64 > wanted {
                return Err(RegistryError::bad_content(
                    &what,
                    format!(
                        "the registry sent more than the {expected_size} bytes the manifest says"
                    ),
                ));
            }
            sink.write_all(&buf[..n])
                .map_err(|source| RegistryError::Sink {
                    what: what.clone(),
                    source,
                })?;
            done += n as u64;
            progress(done);
        }
        if done < wanted {
            return Err(truncated(&what, start + done, expected_size));
        }
        Ok(start)
    }

    /// Check `credentials` against `registry` as `docker login` does:
    /// `GET /v2/`, then answer its challenge with them.
    pub fn check_login(
        &mut self,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<LoginCheck, RegistryError> {
        let what = format!("registry {registry}");
        let url = format!("{}/v2/", api_base(registry));
        let response = self.send(registry, &url, &[], None)?;
        match response.status().as_u16() {
            200 => return Ok(LoginCheck::NotNeeded),
            401 => {}
            _ => return Err(status_error(&what, response, "")),
        }
        let refused = || RegistryError::Denied {
            what: what.clone(),
            detail: format!(
                "the registry refused the user name and password of {:?}",
                credentials.username
            ),
        };
        let basic = credentials.basic_header();
        match challenge_of(&response) {
            Some(Challenge::Basic) => {
                let response = self.send(registry, &url, &[], Some(&basic))?;
                match response.status().as_u16() {
                    200 => Ok(LoginCheck::Accepted),
                    401 | 403 => Err(refused()),
                    _ => Err(status_error(&what, response, "")),
                }
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let mut query = Vec::new();
                if let Some(s) = &service {
                    query.push(("service", s.as_str()));
                }
                query.push(("account", credentials.username.as_str()));
                check_realm(registry, &realm, true)?;
                let token_url = with_query(&realm, &query);
                let response = self.send(registry, &token_url, &[], Some(&basic))?;
                match response.status().as_u16() {
                    200 => Ok(LoginCheck::Accepted),
                    401 | 403 => Err(refused()),
                    _ => Err(status_error(
                        &format!("token endpoint {realm}"),
                        response,
                        "",
                    )),
                }
            }
            None => Err(RegistryError::protocol(
                &what,
                "401 without a Bearer or Basic WWW-Authenticate challenge",
            )),
        }
    }

    /// GET `url` for `r`, answering one auth challenge; returns a 2xx
    /// response, else the error its status means.
    fn get(
        &mut self,
        r: &Reference,
        url: &str,
        headers: &[(&str, String)],
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        let scope = format!("repository:{}:pull", r.repository);
        let key = (r.registry.clone(), scope.clone());
        let mut answered = false;
        loop {
            let authorization = self.tokens.get(&key).cloned();
            let response = self.send(&r.registry, url, headers, authorization.as_deref())?;
            let status = response.status().as_u16();
            if status == 401 && !answered {
                // First 401, or a cached token that expired: answer the
                // challenge once.
                answered = true;
                let challenge = challenge_of(&response).ok_or_else(|| {
                    RegistryError::protocol(
                        what,
                        "401 without a Bearer or Basic WWW-Authenticate challenge",
                    )
                })?;
                let value = self.answer(r, challenge, &scope, what)?;
                self.tokens.insert(key.clone(), value);
                continue;
            }
            if (200..300).contains(&status) {
                return Ok(response);
            }
            let lookup = self.lookup(r)?;
            let detail = match status {
                401 | 403 => lookup.describe(&r.registry),
                _ => String::new(),
            };
            return Err(status_error(what, response, &detail));
        }
    }

    /// The `Authorization` value answering `challenge` for `r`.
    fn answer(
        &mut self,
        r: &Reference,
        challenge: Challenge,
        scope: &str,
        what: &str,
    ) -> Result<String, RegistryError> {
        let lookup = self.lookup(r)?;
        let credentials = lookup.credentials().cloned();
        match challenge {
            Challenge::Basic => match credentials {
                Some(c) => Ok(c.basic_header()),
                None => Err(RegistryError::Denied {
                    what: what.to_string(),
                    detail: format!(
                        "the registry asks for a login: {}",
                        lookup.describe(&r.registry)
                    ),
                }),
            },
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                check_realm(&r.registry, &realm, credentials.is_some())?;
                let scope = asked.unwrap_or_else(|| scope.to_string());
                let mut query = Vec::new();
                if let Some(s) = &service {
                    query.push(("service", s.as_str()));
                }
                query.push(("scope", scope.as_str()));
                let token_url = with_query(&realm, &query);
                let basic = credentials.as_ref().map(Credentials::basic_header);
                let mut response = self.send(&r.registry, &token_url, &[], basic.as_deref())?;
                let token_what = format!("token endpoint {realm} for {what}");
                match response.status().as_u16() {
                    200 => {}
                    401 | 403 => {
                        return Err(RegistryError::Denied {
                            what: token_what,
                            detail: format!("refused: {}", lookup.describe(&r.registry)),
                        });
                    }
                    _ => return Err(status_error(&token_what, response, "")),
                }
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(SMALL_BODY_MAX)
                    .read_to_vec()
                    .map_err(|e| body_error(&r.registry, &token_what, e))?;
                let token = token_of(&body).ok_or_else(|| {
                    RegistryError::protocol(&token_what, "the answer has no token")
                })?;
                Ok(format!("Bearer {token}"))
            }
        }
    }

    fn lookup(&mut self, r: &Reference) -> Result<Lookup, RegistryError> {
        let key = (r.registry.clone(), r.repository.clone());
        if let Some(l) = self.lookups.get(&key) {
            return Ok(l.clone());
        }
        let l = auth::lookup(&self.auth_files, &r.registry, &r.repository)?;
        self.lookups.insert(key, l.clone());
        Ok(l)
    }

    /// One GET; a transport failure is mapped to its error naming `registry`.
    fn send(
        &self,
        registry: &str,
        url: &str,
        headers: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut request = self.agent.get(url);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        log::debug!("GET {url}");
        request
            .call()
            .map_err(|e| transport_error(registry, url, e))
    }
}

/// The system's root certificates plus those of `ca_file`.
fn root_certificates(
    ca_file: Option<&std::path::Path>,
) -> Result<Vec<Certificate<'static>>, RegistryError> {
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        log::debug!("system CA certificates: {e}");
    }
    let mut roots: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if let Some(path) = ca_file {
        let fail = |detail: String, kind| RegistryError::File {
            path: path.to_path_buf(),
            detail,
            kind,
        };
        let pem = crate::input::read_regular(path, CA_FILE_MAX)
            .map_err(|e| fail(format!("CA file: {e}"), ExitKind::NoInput))?;
        let mut n = 0;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => {
                    roots.push(c.to_owned());
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(fail(
                        format!("CA file: malformed PEM: {e}"),
                        ExitKind::Usage,
                    ));
                }
            }
        }
        if n == 0 {
            return Err(fail(
                "CA file: no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_string(),
                ExitKind::Usage,
            ));
        }
    }
    Ok(roots)
}

/// Credentials go to a token realm only over HTTPS or on this host.
fn check_realm(registry: &str, realm: &str, with_credentials: bool) -> Result<(), RegistryError> {
    let host = realm
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(rest));
    match host {
        Some(h) if with_credentials && !is_loopback(h) => Err(RegistryError::protocol(
            format!("registry {registry}"),
            format!(
                "the token endpoint {realm} is plain HTTP: rfake does not send credentials there"
            ),
        )),
        _ if !realm.starts_with("https://") && !realm.starts_with("http://") => {
            Err(RegistryError::protocol(
                format!("registry {registry}"),
                format!("the token endpoint {realm:?} is not an http(s) URL"),
            ))
        }
        _ => Ok(()),
    }
}

fn challenge_of(response: &Response<Body>) -> Option<Challenge> {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(auth::parse_challenge)
}

/// `{"token": ..}` or `{"access_token": ..}` (OAuth2 spelling).
fn token_of(body: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["token", "access_token"]
        .iter()
        .filter_map(|k| doc.get(k).and_then(|v| v.as_str()))
        .find(|t| !t.is_empty())
        .map(str::to_string)
}

/// `url?k=v&...`, values percent-encoded.
fn with_query(url: &str, query: &[(&str, &str)]) -> String {
    let mut out = url.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in query {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        sep = '&';
    }
    out
}

fn header(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn content_length(response: &Response<Body>) -> Option<u64> {
    header(response, "content-length").and_then(|v| v.trim().parse().ok())
}

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

/// The manifest's media type: the `Content-Type` (parameters dropped)
/// unless it is missing or generic JSON, then the document's `mediaType`.
fn media_type_of(content_type: Option<&str>, bytes: &[u8]) -> String {
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_ascii_lowercase())
        .filter(|c| {
            !c.is_empty()
                && c != "application/json"
                && c != "text/plain"
                && c != "application/octet-stream"
        });
    header.unwrap_or_else(|| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|d| {
                d.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    })
}

fn check_digest(what: &str, digest: &Digest, bytes: &[u8]) -> Result<(), RegistryError> {
    let mut h = digest.hasher();
    h.update(bytes);
    let hex = h.hex();
    if hex == digest.hex {
        Ok(())
    } else {
        Err(RegistryError::bad_content(
            what,
            format!(
                "the content does not match its digest {digest} (it hashes to {}:{hex})",
                digest.algorithm
            ),
        ))
    }
}

fn too_large(what: &str, len: u64) -> RegistryError {
    RegistryError::bad_content(
        what,
        format!(
            "manifest of {len} bytes, more than the {} rfake reads",
            crate::input::size_text(MANIFEST_MAX)
        ),
    )
}

fn truncated(what: &str, got: u64, expected: u64) -> RegistryError {
    RegistryError::protocol(
        what,
        format!("truncated download: the connection ended after {got} of {expected} bytes"),
    )
}

/// The error an unexpected status means; `detail` (the credentials
/// consulted) is added for 401/403. The registry's own error code and
/// message (`{"errors":[{"code","message"}]}`) are quoted when it sent them.
fn status_error(what: &str, mut response: Response<Body>, detail: &str) -> RegistryError {
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(SMALL_BODY_MAX)
        .read_to_vec()
        .unwrap_or_default();
    // Go's TLS server answers plain HTTP with this 400.
    if status == 400 && String::from_utf8_lossy(&body).contains("HTTP request to an HTTPS server") {
        return RegistryError::protocol(
            what,
            "the registry speaks HTTPS, and rfake speaks plain HTTP to a loopback address \
             or localhost: reach it by a host name (e.g. one in /etc/hosts)",
        );
    }
    let said = registry_message(&body);
    let said = said.map(|s| format!(": {s}")).unwrap_or_default();
    let what = what.to_string();
    match status {
        401 | 403 => RegistryError::Denied {
            what,
            detail: format!("HTTP {status}{said}; {detail}"),
        },
        404 => RegistryError::NotFound {
            what,
            detail: format!("HTTP 404{said}"),
        },
        429 => RegistryError::Protocol {
            what,
            detail: format!("HTTP 429 too many requests{said}: try again later"),
        },
        _ => RegistryError::Protocol {
            what,
            detail: format!("unexpected HTTP status {status}{said}"),
        },
    }
}

/// `CODE message` from a registry's error document, one line.
fn registry_message(body: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = doc.get("errors")?.as_array()?.first()?;
    let code = first.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let message = first.get("message").and_then(|c| c.as_str()).unwrap_or("");
    let text = format!("{code} {message}");
    let text = crate::text::one_line(text.trim());
    (!text.is_empty()).then_some(text)
}

/// The `ureq::Error` inside an `io::Error` from a body reader, if any.
fn io_to_ureq(e: std::io::Error) -> Result<ureq::Error, std::io::Error> {
    if e.get_ref().is_some_and(|i| i.is::<ureq::Error>()) {
        let inner = e.into_inner().expect("checked above");
        Ok(*inner.downcast::<ureq::Error>().expect("checked above"))
    } else {
        Err(e)
    }
}

fn is_eof(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// A failure while reading a body (after the status line).
fn body_error(registry: &str, what: &str, e: ureq::Error) -> RegistryError {
    match e {
        ureq::Error::Timeout(_) => {
            RegistryError::protocol(what, format!("no data for {} s", STALL_TIMEOUT.as_secs()))
        }
        e if is_eof(&e) => RegistryError::protocol(what, "truncated: the connection ended early"),
        e => match transport_error(registry, "", e) {
            RegistryError::Unreachable { detail, .. } => RegistryError::protocol(what, detail),
            other => other,
        },
    }
}

/// A transport failure: unreachable host (68) or a protocol error (76).
fn transport_error(registry: &str, url: &str, e: ureq::Error) -> RegistryError {
    let unreachable = |detail: String| RegistryError::Unreachable {
        host: registry.to_string(),
        detail,
    };
    let text = error_chain(&e);
    if is_tls_trust(&text) {
        return unreachable(format!(
            "TLS: certificate not trusted ({text}): give its CA with --ca-file or registry_ca_file"
        ));
    }
    match e {
        ureq::Error::HostNotFound => unreachable("unknown host".to_string()),
        ureq::Error::ConnectionFailed => unreachable("cannot connect".to_string()),
        ureq::Error::Timeout(t) => match t {
            ureq::Timeout::Connect | ureq::Timeout::Resolve => unreachable(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
            _ => RegistryError::protocol(
                format!("registry {registry}"),
                format!("no answer for {} s", STALL_TIMEOUT.as_secs()),
            ),
        },
        ureq::Error::Io(io) => {
            use std::io::ErrorKind::*;
            let why = match io.kind() {
                ConnectionRefused => "connection refused".to_string(),
                ConnectionReset => "connection reset".to_string(),
                ConnectionAborted => "connection aborted".to_string(),
                TimedOut => "timed out".to_string(),
                _ if text.contains("lookup address") => {
                    // getaddrinfo(3) failed: std words it "failed to lookup
                    // address information: <gai_strerror>".
                    let why = text.rsplit(": ").next().unwrap_or(&text);
                    format!("unknown host ({why})")
                }
                HostUnreachable => "host unreachable".to_string(),
                NetworkUnreachable => "network unreachable".to_string(),
                _ => text,
            };
            unreachable(why)
        }
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => {
            unreachable(format!("TLS: {text}"))
        }
        ureq::Error::ConnectProxyFailed(_) | ureq::Error::InvalidProxyUrl => {
            unreachable(format!("proxy: {text} (see HTTPS_PROXY, NO_PROXY)"))
        }
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => {
            RegistryError::protocol(format!("registry {registry}"), format!("{text} for {url}"))
        }
        _ => RegistryError::protocol(format!("registry {registry}"), text),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    // ureq words an io::Error "io: ...".
    if let Some(rest) = text.strip_prefix("io: ") {
        text = rest.to_string();
    }
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    crate::text::one_line(&text)
}

/// A certificate the roots do not vouch for (rustls's wording).
fn is_tls_trust(text: &str) -> bool {
    [
        "UnknownIssuer",
        "invalid peer certificate",
        "BadSignature",
        "NotValidForName",
        "Expired",
    ]
    .iter()
    .any(|w| text.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(
            with_query(
                "https://auth.example/token",
                &[
                    ("service", "Docker registry"),
                    ("scope", "repository:a/b:pull")
                ]
            ),
            "https://auth.example/token?service=Docker%20registry&scope=repository:a/b:pull"
        );
        assert_eq!(
            with_query("https://h/t?x=1", &[("a", "&=")]),
            "https://h/t?x=1&a=%26%3D"
        );
    }

    #[test]
    fn tokens() {
        assert_eq!(
            token_of(br#"{"token":"abc","expires_in":300}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(
            token_of(br#"{"access_token":"xyz"}"#).as_deref(),
            Some("xyz")
        );
        assert_eq!(
            token_of(br#"{"token":"","access_token":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(token_of(br#"{"token":""}"#), None);
        assert_eq!(token_of(b"not json"), None);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
        assert_eq!(content_range_start(""), None);
    }

    #[test]
    fn media_types() {
        let doc = br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#;
        assert_eq!(
            media_type_of(
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
                doc
            ),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            media_type_of(Some("application/json"), doc),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            media_type_of(None, doc),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(media_type_of(None, b"{}"), "");
    }

    #[test]
    fn registry_error_messages() {
        assert_eq!(
            registry_message(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#)
                .as_deref(),
            Some("MANIFEST_UNKNOWN manifest unknown")
        );
        assert_eq!(registry_message(b"<html>"), None);
        assert_eq!(registry_message(br#"{"errors":[]}"#), None);
    }

    #[test]
    fn realms() {
        assert!(check_realm("r", "https://auth/t", true).is_ok());
        assert!(check_realm("r", "http://127.0.0.1:5001/t", true).is_ok());
        assert!(check_realm("r", "http://auth.example/t", false).is_ok());
        let e = check_realm("r", "http://auth.example/t", true).unwrap_err();
        assert!(e.to_string().contains("plain HTTP"), "{e}");
        assert!(check_realm("r", "ftp://x", false).is_err());
    }

    #[test]
    fn digest_checks() {
        let d = Digest::parse(
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
        )
        .unwrap();
        assert!(check_digest("x", &d, b"foo").is_ok());
        let e = check_digest("x", &d, b"bar").unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::BadImage);
        assert!(e.to_string().contains(&d.to_string()), "{e}");
    }

    #[test]
    fn unreadable_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let e = root_certificates(Some(&missing)).err().unwrap();
        assert_eq!(e.exit_kind(), ExitKind::NoInput);
        assert!(e.to_string().contains("none.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = root_certificates(Some(&empty)).err().unwrap();
        assert_eq!(e.exit_kind(), ExitKind::Usage);
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
