//! A loopback HTTP/1.1 proxy in front of a test registry, for the tests that
//! need to see or spoil what rfake downloads (std only, a thread a
//! connection). It listens on 127.0.0.1 at a free port and forwards each
//! request to the upstream registry (plain http), one request a connection
//! (`Connection: close` both ways). For rfake it is a plain http registry on
//! loopback: `docker://<proxy.addr()>/<repository>:<tag>`.
//!
//! It records every request (method, path, Range header, status, the body
//! bytes forwarded so far) and has modes for blob bodies (GET of a path with
//! `/blobs/sha256:`): passed as they are, throttled (so a test can kill rfake
//! in the middle of a layer), or with one byte changed (same length).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to blob bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward unchanged.
    Pass,
    /// At most this many bytes a second (and in small writes).
    Throttle(u64),
    /// Change the middle byte of the body of blobs whose path contains this
    /// string (e.g. a digest), keeping the length.
    Corrupt(String),
    /// End blob bodies after this many bytes (the connection is closed
    /// with the length the headers promised unmet).
    Truncate(u64),
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target, e.g. `/v2/demo/blobs/sha256:...`.
    pub path: String,
    /// The Range header's value, if any (`bytes=N-`).
    pub range: Option<String>,
    /// The upstream's status (0 until its answer came).
    pub status: u16,
    /// Response body bytes written to the client so far.
    pub body_bytes: u64,
    /// Whether the whole response was forwarded.
    pub complete: bool,
}

impl Request {
    /// Whether this is a GET of the blob `digest` ("sha256:hex").
    pub fn is_blob_get(&self, digest: &str) -> bool {
        self.method == "GET" && self.path.ends_with(&format!("/blobs/{digest}"))
    }

    /// The start offset of a `bytes=N-` range.
    pub fn range_start(&self) -> Option<u64> {
        let r = self.range.as_deref()?.trim().strip_prefix("bytes=")?;
        r.split('-').next()?.trim().parse().ok()
    }
}

struct Shared {
    upstream: String,
    addr: SocketAddr,
    mode: Mutex<Mode>,
    log: Mutex<Vec<Request>>,
    /// How many requests `clear` dropped: a connection still running
    /// from before it updates nothing (its index is below this).
    cleared: std::sync::atomic::AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    /// Update the request numbered `index` (counted since the start), if
    /// it was not cleared.
    fn update(&self, index: usize, f: impl FnOnce(&mut Request)) {
        let mut log = self.log.lock().unwrap();
        let cleared = self.cleared.load(Ordering::SeqCst);
        if let Some(q) = index.checked_sub(cleared).and_then(|i| log.get_mut(i)) {
            f(q);
        }
    }
}

pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Start a proxy to `upstream` ("127.0.0.1:15000").
    pub fn start(upstream: &str, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test proxy");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            addr: listener.local_addr().unwrap(),
            mode: Mutex::new(mode),
            log: Mutex::new(Vec::new()),
            cleared: std::sync::atomic::AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    // A client that went away (a killed rfake) is normal.
                    let _ = serve(&s, conn);
                });
            }
        });
        Proxy { shared }
    }

    /// "127.0.0.1:PORT": the registry part of a reference through the proxy.
    pub fn addr(&self) -> String {
        self.shared.addr.to_string()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Every request so far, in the order they came.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The GETs of blob `digest` so far.
    pub fn blob_gets(&self, digest: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_blob_get(digest))
            .collect()
    }

    /// Forget the requests recorded so far.
    pub fn clear(&self) {
        let mut log = self.shared.log.lock().unwrap();
        self.shared.cleared.fetch_add(log.len(), Ordering::SeqCst);
        log.clear();
    }

    /// A blob GET that has had at least `bytes` of its body forwarded, if any.
    pub fn blob_with_bytes(&self, bytes: u64) -> Option<Request> {
        self.requests()
            .into_iter()
            .find(|r| r.method == "GET" && r.path.contains("/blobs/") && r.body_bytes >= bytes)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.shared.addr);
    }
}

/// Read an HTTP head (request or status line, then headers) up to the blank line.
fn read_head(r: &mut impl BufRead) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no head",
        ));
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((first.trim_end().to_string(), headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Hop-by-hop headers the proxy sets itself.
fn hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection", "host"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

fn serve(s: &Shared, client: TcpStream) -> std::io::Result<()> {
    let mut client_r = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let (line, headers) = read_head(&mut client_r)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut body = Vec::new();
    if let Some(n) = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        client_r.read_exact(&mut body)?;
    }
    let index = {
        let mut log = s.log.lock().unwrap();
        log.push(Request {
            method: method.clone(),
            path: path.clone(),
            range: header(&headers, "range").map(str::to_string),
            status: 0,
            body_bytes: 0,
            complete: false,
        });
        log.len() - 1 + s.cleared.load(Ordering::SeqCst)
    };

    let upstream = TcpStream::connect(&s.upstream)?;
    let mut up_w = upstream.try_clone()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", s.upstream);
    for (k, v) in headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    up_w.write_all(head.as_bytes())?;
    up_w.write_all(&body)?;
    up_w.flush()?;

    let mut up_r = BufReader::new(upstream);
    let (status_line, rheaders) = read_head(&mut up_r)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    s.update(index, |q| q.status = status);
    let mut head = format!("{status_line}\r\n");
    let upstream_url = format!("http://{}", s.upstream);
    let proxy_url = format!("http://{}", s.addr);
    for (k, v) in rheaders.iter().filter(|(k, _)| !hop_by_hop(k)) {
        // Absolute redirects (upload locations) point back at the proxy.
        let v = if k.eq_ignore_ascii_case("location") {
            v.replace(&upstream_url, &proxy_url)
        } else {
            v.clone()
        };
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    client_w.write_all(head.as_bytes())?;

    let no_body = method == "HEAD" || status == 204 || status == 304 || status < 200;
    if !no_body {
        let blob =
            method == "GET" && path.contains("/blobs/sha256:") && (status == 200 || status == 206);
        let length = header(&rheaders, "content-length").and_then(|v| v.parse::<u64>().ok());
        let mode = if blob {
            s.mode.lock().unwrap().clone()
        } else {
            Mode::Pass
        };
        let (rate, corrupt_at) = match &mode {
            Mode::Pass | Mode::Truncate(_) => (None, None),
            Mode::Throttle(rate) => (Some((*rate).max(1)), None),
            Mode::Corrupt(part) if path.contains(part.as_str()) => (None, length.map(|n| n / 2)),
            Mode::Corrupt(_) => (None, None),
        };
        let cut = match mode {
            Mode::Truncate(n) => Some(n),
            _ => None,
        };
        let chunk = rate.map_or(64 * 1024, |r| (r / 20).clamp(1, 64 * 1024) as usize);
        let mut buf = vec![0u8; chunk];
        let mut sent: u64 = 0;
        let start = Instant::now();
        loop {
            // Upstream closes after the response (Connection: close); a
            // Content-Length bounds it anyway.
            let end = match (length, cut) {
                (Some(n), Some(c)) => Some(n.min(c)),
                (n, c) => n.or(c),
            };
            let want = match end {
                Some(n) if sent >= n => break,
                Some(n) => buf.len().min((n - sent) as usize),
                None => buf.len(),
            };
            let got = up_r.read(&mut buf[..want])?;
            if got == 0 {
                break;
            }
            if let Some(at) = corrupt_at {
                if at >= sent && at < sent + got as u64 {
                    buf[(at - sent) as usize] ^= 0x5a;
                }
            }
            if let Some(rate) = rate {
                // Not ahead of `rate` bytes a second since the body began.
                let due = Duration::from_secs_f64((sent + got as u64) as f64 / rate as f64);
                let elapsed = start.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
            client_w.write_all(&buf[..got])?;
            sent += got as u64;
            s.update(index, |q| q.body_bytes = sent);
        }
    }
    client_w.flush()?;
    s.update(index, |q| q.complete = true);
    Ok(())
}
