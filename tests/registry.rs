//! Images from real registries: `docker://` and `oras://` references, `rfake
//! pull`, credentials, TLS, the cache, offline use, and the failures users
//! meet, against the two registries tests/registry/setup.sh starts (plain
//! http on loopback, TLS with htpasswd auth) and a proxy (tests/common/proxy.rs)
//! that throttles or spoils blobs. The repositories and what they hold:
//! tests/registry/repos; a test that counts blob fetches has its own.
//!
//! Every test has its own cache (RFAKE_CACHEDIR) and credential file
//! (REGISTRY_AUTH_FILE) in a temporary directory.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use common::*;
use proxy::{Mode, Proxy};
use rfake::exit::ExitKind;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The test registries, from the variables tests/registry/setup.sh writes.
struct Registry {
    /// host:port of the plain http registry (anonymous).
    plain: String,
    /// host:port of the TLS registry (htpasswd auth).
    tls: String,
    ca: PathBuf,
    user: String,
    password: String,
    /// The plain registry's access log (combined format).
    log: PathBuf,
    images: PathBuf,
}

fn registry() -> Option<Registry> {
    let env = setup()?;
    let get = |name: &str| std::env::var(name).ok();
    match (
        get("RFAKE_TEST_REGISTRY"),
        get("RFAKE_TEST_REGISTRY_TLS"),
        get("RFAKE_TEST_REGISTRY_CA"),
        get("RFAKE_TEST_REGISTRY_USER"),
        get("RFAKE_TEST_REGISTRY_PASSWORD"),
        get("RFAKE_TEST_REGISTRY_LOG"),
    ) {
        (Some(plain), Some(tls), Some(ca), Some(user), Some(password), Some(log)) => {
            Some(Registry {
                plain,
                tls,
                ca: ca.into(),
                user,
                password,
                log: log.into(),
                images: env.images,
            })
        }
        _ => {
            missing(
                "the test registries: RFAKE_TEST_REGISTRY* (tests/registry/setup.sh start STAGE \
                 writes them into STAGE/registry/env; tests/run.sh passes them)",
            );
            None
        }
    }
}

/// A variable setup.sh writes (a digest, a list of them).
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: tests/registry/setup.sh writes it into STAGE/registry/env")
    })
}

/// The layers of an image as setup.sh lists them: (digest, size).
fn layers(image: &str) -> Vec<(String, u64)> {
    let digests = var(&format!("RFAKE_TEST_REGISTRY_LAYERS_{image}"));
    let sizes = var(&format!("RFAKE_TEST_REGISTRY_SIZES_{image}"));
    digests
        .split(',')
        .map(str::to_string)
        .zip(sizes.split(',').map(|s| s.parse().unwrap()))
        .collect()
}

/// The config and the layers of an image: every blob a pull fetches.
fn blobs(image: &str) -> Vec<String> {
    let mut all = vec![var(&format!("RFAKE_TEST_REGISTRY_CONFIG_{image}"))];
    all.extend(layers(image).into_iter().map(|(d, _)| d));
    all
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// One test's temporary directory, cache and credential file.
struct Case {
    tag: String,
    dir: tempfile::TempDir,
}

impl Case {
    fn new(name: &str) -> Case {
        let dir = tempfile::Builder::new()
            .prefix("registry-test-")
            .tempdir_in(home())
            .unwrap();
        Case {
            tag: tag(name),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    /// rfake `args` with this case's cache and credential file, in its directory.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = command(&self.tag);
        c.env("RFAKE_CACHEDIR", self.cache())
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run rfake")
    }

    /// Write the credential file with `user:password` for `host`.
    fn auth(&self, host: &str, user: &str, password: &str) {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let json = serde_json::json!({ "auths": { host: { "auth": auth } } });
        std::fs::write(self.path("auth.json"), json.to_string()).unwrap();
    }
}

/// Assert success and the exact standard output.
#[track_caller]
fn assert_ok(out: &Output, want: &str) {
    assert_status(out, 0);
    assert_eq!(stdout(out), want, "stderr: {}", stderr(out));
}

#[track_caller]
fn assert_stderr_names(out: &Output, what: &[&str]) {
    let err = stderr(out);
    for w in what {
        assert!(err.contains(w), "stderr does not name {w:?}: {err}");
    }
}

/// GETs of blobs of `repo` answered 200 or 206 in an access log, by digest.
fn blob_gets(log: &Path, repo: &str) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(log).expect("read the registry's access log");
    let needle = format!("\"GET /v2/{repo}/blobs/");
    let mut counts = HashMap::new();
    for line in text.lines() {
        let Some(at) = line.find(&needle) else {
            continue;
        };
        let rest = &line[at + needle.len()..];
        let digest = rest.split_whitespace().next().unwrap_or("");
        // `... HTTP/1.1" 200 1088820 ...`
        let status = rest
            .split('"')
            .nth(1)
            .and_then(|s| s.split_whitespace().next());
        if matches!(status, Some("200") | Some("206")) {
            *counts.entry(digest.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Requests of any kind for `repo` in an access log.
fn requests_for(log: &Path, repo: &str) -> usize {
    let text = std::fs::read_to_string(log).expect("read the registry's access log");
    let needle = format!(" /v2/{repo}/");
    text.lines().filter(|l| l.contains(&needle)).count()
}

/// The registry writes a request's log line as the response ends: give the
/// last one a moment before counting.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

fn delta(after: &HashMap<String, usize>, before: &HashMap<String, usize>, digest: &str) -> usize {
    after.get(digest).copied().unwrap_or(0) - before.get(digest).copied().unwrap_or(0)
}

fn image_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("images/sha256"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn blob_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("blobs/sha256"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn inspect_json(case: &Case, image: &Path) -> serde_json::Value {
    let o = case.run(&["inspect", "--json", image.to_str().unwrap()]);
    assert_status(&o, 0);
    serde_json::from_str(&stdout(&o)).expect("inspect --json prints JSON")
}

// ---------------------------------------------------------------------------

/// The issue's "done when": a new user's first command against the registry.
#[test]
fn exec_debian_from_the_registry() {
    let Some(reg) = registry() else { return };
    let case = Case::new("debian");
    let r = format!("docker://{}/debian:12", reg.plain);
    let o = case.run(&["exec", &r, "cat", "/etc/os-release"]);
    assert_status(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("VERSION_ID=\"12\""), "{text}");
    assert!(text.contains("Debian GNU/Linux"), "{text}");
    // By digest: the same image, from the cache.
    let by_digest = format!(
        "docker://{}/debian@{}",
        reg.plain,
        var("RFAKE_TEST_REGISTRY_DIGEST_DEBIAN_12")
    );
    let o = case.run(&["exec", &by_digest, "cat", "/etc/debian_version"]);
    assert_status(&o, 0);
    assert!(stdout(&o).starts_with("12."), "{}", stdout(&o));
    assert_eq!(image_files(&case.cache()).len(), 1, "one converted image");
    assert_nothing_left(&case.tag);
}

/// Each blob is fetched once; a second run starts from the cache without
/// fetching any.
#[test]
fn second_run_is_served_from_the_cache() {
    let Some(reg) = registry() else { return };
    let case = Case::new("cached");
    let r = format!("docker://{}/cached/debian:12", reg.plain);
    let before = blob_gets(&reg.log, "cached/debian");
    let o = case.run(&["exec", "-q", &r, "cat", "/etc/debian_version"]);
    assert_status(&o, 0);
    assert_eq!(stderr(&o), "", "--quiet: nothing on stderr");
    settle();
    let first = blob_gets(&reg.log, "cached/debian");
    for digest in blobs("DEBIAN") {
        assert_eq!(delta(&first, &before, &digest), 1, "{digest} fetched once");
    }
    let o = case.run(&["exec", &r, "cat", "/etc/debian_version"]);
    assert_status(&o, 0);
    settle();
    let second = blob_gets(&reg.log, "cached/debian");
    assert_eq!(second, first, "the second run fetched blobs");
    assert_nothing_left(&case.tag);
}

#[test]
fn offline_runs_from_the_cache_only() {
    let Some(reg) = registry() else { return };
    let case = Case::new("offline");
    let r = format!("docker://{}/offline/demo:1", reg.plain);
    let seen = requests_for(&reg.log, "offline/demo");
    let o = case.run(&["exec", "--offline", &r, "cat", "/opt/new.txt"]);
    assert_exit(&o, ExitKind::NoInput);
    assert_stderr_names(&o, &["offline/demo:1"]);
    settle();
    assert_eq!(
        requests_for(&reg.log, "offline/demo"),
        seen,
        "--offline asked the registry"
    );
    assert_ok(
        &case.run(&["exec", &r, "cat", "/opt/new.txt"]),
        "layer-two\n",
    );
    settle();
    let seen = requests_for(&reg.log, "offline/demo");
    assert_ok(
        &case.run(&["exec", "--offline", &r, "cat", "/opt/new.txt"]),
        "layer-two\n",
    );
    settle();
    assert_eq!(
        requests_for(&reg.log, "offline/demo"),
        seen,
        "--offline asked the registry"
    );
    assert_nothing_left(&case.tag);
}

#[test]
fn missing_name_tag_or_digest_is_no_input() {
    let Some(reg) = registry() else { return };
    let case = Case::new("404");
    let zero = format!("sha256:{}", "0".repeat(64));
    for (r, names) in [
        (
            format!("docker://{}/nosuch/image:1", reg.plain),
            "nosuch/image",
        ),
        (
            format!("docker://{}/demo:nosuchtag", reg.plain),
            "nosuchtag",
        ),
        (format!("docker://{}/demo@{zero}", reg.plain), zero.as_str()),
        (format!("oras://{}/nosuch/sif:1", reg.plain), "nosuch/sif"),
    ] {
        let o = case.run(&["exec", &r, "true"]);
        assert_exit(&o, ExitKind::NoInput);
        assert_stderr_names(&o, &[names]);
        assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    }
    assert!(image_files(&case.cache()).is_empty());
    assert_nothing_left(&case.tag);
}

#[test]
fn unreachable_registry() {
    let Some(_reg) = registry() else { return };
    let case = Case::new("unreachable");
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("127.0.0.1:{port}");
    for host in [refused.as_str(), "no-such-host.invalid:5000"] {
        let o = case.run(&["exec", &format!("docker://{host}/demo:1"), "true"]);
        assert_exit(&o, ExitKind::RegistryUnreachable);
        assert_stderr_names(&o, &[host.split(':').next().unwrap()]);
    }
    assert_nothing_left(&case.tag);
}

/// The TLS registry's certificate comes from a CA rfake is told about;
/// its credentials from REGISTRY_AUTH_FILE.
#[test]
fn tls_registry_needs_its_ca_and_credentials() {
    let Some(reg) = registry() else { return };
    let case = Case::new("tls");
    let r = format!("docker://{}/demo:1", reg.tls);
    let ca = reg.ca.to_str().unwrap();
    case.auth(&reg.tls, &reg.user, &reg.password);
    // Not trusted without the CA: never turned off by default.
    let o = case.run(&["exec", &r, "true"]);
    assert_exit(&o, ExitKind::RegistryUnreachable);
    assert_stderr_names(&o, &["--ca-file", reg.tls.split(':').next().unwrap()]);
    assert_ok(
        &case.run(&["exec", "--ca-file", ca, &r, "cat", "/opt/new.txt"]),
        "layer-two\n",
    );
    // The config key, in a fresh cache so the registry is asked again.
    let site = case.path("site.toml");
    std::fs::write(
        &site,
        format!("warm_linger = {TEST_LINGER}\nregistry_ca_file = \"{ca}\"\n"),
    )
    .unwrap();
    let o = case
        .cmd(&["exec", &r, "cat", "/opt/new.txt"])
        .env("RFAKE_CONFIG", &site)
        .env("RFAKE_CACHEDIR", case.path("cache2"))
        .output()
        .unwrap();
    assert_ok(&o, "layer-two\n");
    assert_nothing_left(&case.tag);
}

#[test]
fn unauthorized_names_the_credential_file() {
    let Some(reg) = registry() else { return };
    let case = Case::new("401");
    let r = format!("docker://{}/demo:1", reg.tls);
    let ca = reg.ca.to_str().unwrap();
    let auth = case.path("auth.json");
    // An entry for another registry only.
    case.auth("registry.example.org", &reg.user, &reg.password);
    let o = case.run(&["exec", "--ca-file", ca, &r, "true"]);
    assert_exit(&o, ExitKind::Refused);
    assert_stderr_names(&o, &[auth.to_str().unwrap()]);
    // A wrong password.
    case.auth(&reg.tls, &reg.user, "not-the-password");
    let o = case.run(&["exec", "--ca-file", ca, &r, "true"]);
    assert_exit(&o, ExitKind::Refused);
    assert_stderr_names(&o, &[auth.to_str().unwrap()]);
    assert!(image_files(&case.cache()).is_empty());
    assert_nothing_left(&case.tag);
}

#[test]
fn login_pull_logout() {
    let Some(reg) = registry() else { return };
    let case = Case::new("login");
    let auth = case.path("auth.json");
    let site = case.path("site.toml");
    std::fs::write(
        &site,
        format!(
            "warm_linger = {TEST_LINGER}\nregistry_ca_file = \"{}\"\n",
            reg.ca.display()
        ),
    )
    .unwrap();
    let login = |password: &str| {
        let mut child = case
            .cmd(&[
                "registry",
                "login",
                "-u",
                &reg.user,
                "--password-stdin",
                &reg.tls,
            ])
            .env("RFAKE_CONFIG", &site)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    // Verified against the registry before anything is written.
    let o = login("not-the-password");
    assert_exit(&o, ExitKind::Refused);
    assert!(!auth.exists(), "a refused login wrote {}", auth.display());

    let o = login(&reg.password);
    assert_status(&o, 0);
    let mode = std::fs::metadata(&auth).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&auth).unwrap()).unwrap();
    assert!(v["auths"][reg.tls.as_str()]["auth"].is_string(), "{v}");

    let r = format!("docker://{}/demo:1", reg.tls);
    let o = case
        .cmd(&["exec", &r, "cat", "/opt/new.txt"])
        .env("RFAKE_CONFIG", &site)
        .output()
        .unwrap();
    assert_ok(&o, "layer-two\n");

    let o = case
        .cmd(&["registry", "logout", &reg.tls])
        .env("RFAKE_CONFIG", &site)
        .output()
        .unwrap();
    assert_status(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&auth).unwrap()).unwrap();
    assert!(v["auths"].get(reg.tls.as_str()).is_none(), "{v}");
    let o = case
        .cmd(&["exec", &r, "true"])
        .env("RFAKE_CONFIG", &site)
        .env("RFAKE_CACHEDIR", case.path("cache2"))
        .output()
        .unwrap();
    assert_exit(&o, ExitKind::Refused);
    assert_nothing_left(&case.tag);
}

/// An index: the host's architecture (amd64) by default, `--arch` for another.
#[test]
fn multi_arch_index() {
    let Some(reg) = registry() else { return };
    let case = Case::new("multi");
    let r = format!("docker://{}/multi:1", reg.plain);
    assert_ok(
        &case.run(&["exec", &r, "cat", "/opt/new.txt"]),
        "layer-two\n",
    );
    for (arch, manifest) in [
        ("amd64", var("RFAKE_TEST_REGISTRY_DIGEST_MULTI_AMD64")),
        ("arm64", var("RFAKE_TEST_REGISTRY_DIGEST_MULTI_ARM64")),
    ] {
        let out = case.path(&format!("{arch}.sif"));
        let o = case.run(&["pull", "-q", "--arch", arch, out.to_str().unwrap(), &r]);
        assert_status(&o, 0);
        let v = inspect_json(&case, &out);
        assert_eq!(v["sif"]["arch"], arch, "{v}");
        let label = &v["labels"]["org.example.arch"];
        if arch == "arm64" {
            assert_eq!(label, "arm64", "the arm64 config's label: {v}");
        } else {
            assert!(label.is_null(), "the amd64 config has no arch label: {v}");
        }
        // The cache's record of the reference names the manifest picked.
        let record = case
            .cache()
            .join(format!("refs/{}/multi/1@{arch}.json", reg.plain));
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(rec["manifest"], manifest.as_str(), "{}", record.display());
        assert_eq!(
            rec["index"],
            var("RFAKE_TEST_REGISTRY_DIGEST_MULTI_1").as_str()
        );
    }
    assert_nothing_left(&case.tag);
}

#[test]
fn an_index_without_the_hosts_architecture() {
    let Some(reg) = registry() else { return };
    let case = Case::new("foreign");
    let o = case.run(&["exec", &format!("docker://{}/foreign:1", reg.plain), "true"]);
    assert_exit(&o, ExitKind::BadImage);
    assert_stderr_names(&o, &["foreign:1", "amd64", "arm64"]);
    assert!(image_files(&case.cache()).is_empty());
    assert_nothing_left(&case.tag);
}

/// A reference to one image (no index) for another architecture: refused
/// as a SIF for another architecture is, unless --arch asks for it.
#[test]
fn a_single_manifest_for_another_architecture() {
    let Some(reg) = registry() else { return };
    let case = Case::new("foreign-single");
    let r = format!("docker://{}/foreign:single", reg.plain);
    let o = case.run(&["exec", "-q", &r, "true"]);
    assert_exit(&o, ExitKind::BadImage);
    assert_stderr_names(&o, &["foreign:single", "arm64", "amd64", "--arch arm64"]);
    assert!(image_files(&case.cache()).is_empty());
    let out = case.path("arm.sif");
    let o = case.run(&["pull", "-q", "--arch", "arm64", out.to_str().unwrap(), &r]);
    assert_status(&o, 0);
    assert_eq!(inspect_json(&case, &out)["sif"]["arch"], "arm64");
    assert_nothing_left(&case.tag);
}

/// A tag resolved long ago is asked again; when the registry cannot be
/// reached then, the cached image runs, with a warning naming why.
#[test]
fn a_registry_that_is_down_falls_back_to_the_cached_tag() {
    let Some(reg) = registry() else { return };
    let case = Case::new("down");
    let proxy = Proxy::start(&reg.plain, Mode::Pass);
    let r = format!("docker://{}/offline/demo:1", proxy.addr());
    let run = |case: &Case| case.run(&["exec", "-q", &r, "cat", "/opt/new.txt"]);
    assert_ok(&run(&case), "layer-two\n");
    // Make the record old: the next launch asks the registry again.
    let record = std::fs::read_dir(
        case.cache()
            .join(format!("refs/{}/offline/demo", proxy.addr())),
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
    .path();
    let age = |path: &Path| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        v["pulled"] = 0.into();
        std::fs::write(path, v.to_string()).unwrap();
    };
    age(&record);
    proxy.clear();
    assert_ok(&run(&case), "layer-two\n");
    let asked = proxy.requests();
    assert!(
        asked.iter().any(|q| q.path.contains("/manifests/1")),
        "an old tag was not asked again: {asked:?}"
    );
    assert!(
        !asked.iter().any(|q| q.path.contains("/blobs/")),
        "blobs fetched again: {asked:?}"
    );
    // The registry goes away.
    age(&record);
    let addr = proxy.addr().to_string();
    drop(proxy);
    let o = case.run(&[
        "exec",
        "-q",
        &format!("docker://{addr}/offline/demo:1"),
        "cat",
        "/opt/new.txt",
    ]);
    assert_ok(&o, "layer-two\n");
    assert_stderr_names(&o, &["connection refused", "running the cached"]);
    assert_nothing_left(&case.tag);
}

/// A site-curated cache (cache_dir with cache_read_only in the site file):
/// what it holds runs, with nothing written to it; what it lacks is refused.
#[test]
fn a_read_only_site_cache() {
    let Some(reg) = registry() else { return };
    let case = Case::new("curated");
    let r = format!("docker://{}/demo:1", reg.plain);
    // The site fills it (here: the same user, with a writable cache).
    assert_ok(
        &case.run(&["exec", "-q", &r, "cat", "/opt/new.txt"]),
        "layer-two\n",
    );
    let site = case.path("site.toml");
    std::fs::write(
        &site,
        format!(
            "cache_dir = \"{}\"\ncache_read_only = true\n",
            case.cache().display()
        ),
    )
    .unwrap();
    let snapshot = |dir: &Path| {
        let out = Command::new("find")
            .arg(dir)
            .args(["-printf", "%p %s %T@\\n"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let before = snapshot(&case.cache());
    let curated = |args: &[&str]| {
        let mut c = case.cmd(args);
        c.env_remove("RFAKE_CACHEDIR").env("RFAKE_CONFIG", &site);
        c.output().unwrap()
    };
    assert_ok(
        &curated(&["exec", "-q", &r, "cat", "/opt/new.txt"]),
        "layer-two\n",
    );
    let o = curated(&[
        "exec",
        "-q",
        &format!("docker://{}/zstd:1", reg.plain),
        "true",
    ]);
    assert_exit(&o, ExitKind::Refused);
    assert_stderr_names(&o, &["zstd:1", "read-only cache", "cache_read_only"]);
    assert_eq!(
        snapshot(&case.cache()),
        before,
        "the read-only cache changed"
    );
    assert_nothing_left(&case.tag);
}

/// A full disk: the cache on a 600 KiB tmpfs (mounted in a user and mount
/// namespace of the test's own) cannot take the 1 MiB layer. The pull
/// fails with 71 naming the cache path and ENOSPC, and leaves no blob, no
/// image and no partial download behind.
#[test]
fn a_full_disk_leaves_nothing_in_the_cache() {
    let Some(reg) = registry() else { return };
    let case = Case::new("full");
    let r = format!("docker://{}/demo:1", reg.plain);
    let cache = case.cache();
    std::fs::create_dir(&cache).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=600k tmpfs {cache} && \
         {rfake} pull -q {out} {r}; echo status=$?; \
         find {cache} -type f ! -name '*.lock' ! -name CACHEDIR.TAG -printf '%P\\n'",
        cache = cache.display(),
        rfake = rfake_bin().display(),
        out = case.path("demo.sqfs").display(),
    );
    let o = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env("RFAKE_CACHEDIR", &cache)
        .env("RFAKE_TEST_TAG", &case.tag)
        .current_dir(case.dir.path())
        .output()
        .unwrap();
    let out = stdout(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("status=71"), "{out}\n{err}");
    assert!(err.contains("ENOSPC"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let left: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("status=") && !l.starts_with("blobs/sha256/"))
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}\n{err}");
    // Blobs that fit (the manifest, the config) are whole, checked ones.
    for blob in out.lines().filter(|l| l.starts_with("blobs/sha256/")) {
        let hex = blob.rsplit('/').next().unwrap();
        assert!(
            blobs("DEMO").iter().any(|d| d.ends_with(hex))
                || var("RFAKE_TEST_REGISTRY_DIGEST_DEMO_1").ends_with(hex),
            "{blob}"
        );
        assert!(
            !layers("DEMO")[0].0.ends_with(hex),
            "the layer that did not fit is in the cache"
        );
    }
    assert!(!case.path("demo.sqfs").exists());
    assert_nothing_left(&case.tag);
}

/// A download cut short: exit 76 naming the blob and how far it got; what
/// arrived is kept, and the next pull asks only for the rest.
#[test]
fn a_truncated_download_is_a_protocol_error_and_resumes() {
    let Some(reg) = registry() else { return };
    let case = Case::new("truncated");
    let proxy = Proxy::start(&reg.plain, Mode::Truncate(300_000));
    let r = format!("docker://{}/corrupt/demo:1", proxy.addr());
    let out = case.path("demo.sqfs");
    let o = case.run(&["pull", "-q", out.to_str().unwrap(), &r]);
    assert_exit(&o, ExitKind::RegistryProtocol);
    let (layer, size) = layers("DEMO")[0].clone();
    assert_stderr_names(&o, &["truncated", "300000"]);
    assert!(!out.exists());
    assert!(image_files(&case.cache()).is_empty());
    proxy.clear();
    proxy.set_mode(Mode::Pass);
    let o = case.run(&["pull", "-q", out.to_str().unwrap(), &r]);
    assert_status(&o, 0);
    let again = proxy.blob_gets(&layer);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].range_start(), Some(300_000), "{again:?}");
    assert_eq!(again[0].body_bytes, size - 300_000);
    assert_nothing_left(&case.tag);
}

#[test]
fn zstd_layers() {
    let Some(reg) = registry() else { return };
    let case = Case::new("zstd");
    let o = case.run(&[
        "exec",
        &format!("docker://{}/zstd:1", reg.plain),
        "sh",
        "-c",
        "cat /opt/new.txt; test -e /etc/rfake-demo.txt || echo deleted; echo $LAYER",
    ]);
    assert_ok(&o, "layer-two\ndeleted\ntwo\n");
    assert_nothing_left(&case.tag);
}

/// A SIF pushed as an ORAS artifact (as `apptainer push` does) runs, and
/// pulls as the very file that was pushed.
#[test]
fn oras_sif() {
    let Some(reg) = registry() else { return };
    let case = Case::new("oras");
    let r = format!("oras://{}/sif:1", reg.plain);
    assert_ok(
        &case.run(&["exec", &r, "cat", "/etc/rfake-demo.txt"]),
        "hello from the demo image\n",
    );
    let out = case.path("pulled.sif");
    assert_status(&case.run(&["pull", "-q", out.to_str().unwrap(), &r]), 0);
    assert_eq!(sha256(&out), sha256(&reg.images.join("demo.sif")));
    assert_nothing_left(&case.tag);
}

/// `rfake pull OUT.sif` keeps the image config, as `rfake build` does.
#[test]
fn pull_to_sif_keeps_the_config() {
    let Some(reg) = registry() else { return };
    let case = Case::new("pull");
    let r = format!("docker://{}/pull/demo:1", reg.plain);
    let out = case.path("demo.sif");
    let o = case.run(&["pull", out.to_str().unwrap(), &r]);
    assert_status(&o, 0);
    let s = out.to_str().unwrap();
    assert_ok(&case.run(&["run", s]), "from-cmd\n");
    assert_ok(&case.run(&["run", s, "pwd"]), "/etc\n");
    assert_ok(
        &case.run(&["exec", s, "sh", "-c", "echo $GREETING $LAYER"]),
        "hello-from-oci two\n",
    );
    let v = inspect_json(&case, &out);
    assert_eq!(v["labels"]["org.example.fixture"], "layered", "{v}");
    // SquashFS when OUT does not end in .sif.
    let sqfs = case.path("demo.sqfs");
    assert_status(&case.run(&["pull", "-q", sqfs.to_str().unwrap(), &r]), 0);
    let v = inspect_json(&case, &sqfs);
    assert_eq!(v["format"], "SquashFS", "{v}");
    // Without OUT: NAME_TAG.sif in the current directory, as Apptainer names it.
    assert_status(&case.run(&["pull", "-q", &r]), 0);
    assert!(case.path("demo_1.sif").is_file());
    assert_nothing_left(&case.tag);
}

#[test]
fn pull_refuses_an_existing_file_without_force() {
    let Some(reg) = registry() else { return };
    let case = Case::new("exists");
    let r = format!("docker://{}/pull/demo:1", reg.plain);
    let out = case.path("demo.sif");
    std::fs::write(&out, "mine").unwrap();
    let o = case.run(&["pull", "-q", out.to_str().unwrap(), &r]);
    assert_exit(&o, ExitKind::CannotCreate);
    assert_stderr_names(&o, &[out.to_str().unwrap(), "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    let o = case.run(&["pull", "-q", "--force", out.to_str().unwrap(), &r]);
    assert_status(&o, 0);
    assert_ok(&case.run(&["run", out.to_str().unwrap()]), "from-cmd\n");
    assert_nothing_left(&case.tag);
}

/// 20 launches of an image not yet cached, at once, with one cache: all
/// run, each blob is downloaded once, one image is made.
#[test]
fn concurrent_execs_fetch_each_blob_once() {
    let Some(reg) = registry() else { return };
    let case = Case::new("concurrent");
    let r = format!("docker://{}/concurrent/demo:1", reg.plain);
    let before = blob_gets(&reg.log, "concurrent/demo");
    let children: Vec<_> = (0..20)
        .map(|_| {
            case.cmd(&["exec", "-q", &r, "cat", "/opt/new.txt"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rfake")
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert_ok(&o, "layer-two\n");
    }
    settle();
    let after = blob_gets(&reg.log, "concurrent/demo");
    for digest in blobs("DEMO") {
        assert_eq!(delta(&after, &before, &digest), 1, "{digest}: fetched once");
    }
    assert_eq!(image_files(&case.cache()).len(), 1, "one image made");
    assert_nothing_left(&case.tag);
}

/// A pull killed in the middle of a layer, then run again, fetches only the
/// rest of it (a Range request) and nothing it already had.
#[test]
fn killed_pull_resumes() {
    let Some(reg) = registry() else { return };
    let case = Case::new("resume");
    let proxy = Proxy::start(&reg.plain, Mode::Throttle(2_000_000));
    let r = format!("docker://{}/resume/debian:12", proxy.addr());
    let out = case.path("debian.sqfs");
    let mut child = case
        .cmd(&["pull", "-q", out.to_str().unwrap(), &r])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(case.path("killed.err")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    // Killed 3 MB into a layer (at 2 MB/s: the layers are 13 to 43 MB).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let inflight = loop {
        if let Some(q) = proxy.blob_with_bytes(3_000_000) {
            break Some(q);
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let status = child.wait().unwrap();
    let inflight = inflight.unwrap_or_else(|| {
        panic!(
            "no layer 3 MB into its download (rfake: {status}: {}; requests: {:?})",
            std::fs::read_to_string(case.path("killed.err")).unwrap_or_default(),
            proxy.requests()
        )
    });
    assert!(!out.exists(), "a killed pull left {}", out.display());
    let sizes: HashMap<String, u64> = layers("DEBIAN").into_iter().collect();
    let first = proxy.requests();
    // What the first run got of each blob (complete or not).
    let got = |digest: &str| -> (u64, bool) {
        first
            .iter()
            .filter(|q| q.is_blob_get(digest))
            .fold((0, false), |(n, done), q| {
                (
                    n + q.body_bytes,
                    done || (q.complete && q.body_bytes == sizes[digest]),
                )
            })
    };

    proxy.clear();
    proxy.set_mode(Mode::Pass);
    let o = case.run(&["pull", "-q", out.to_str().unwrap(), &r]);
    assert_status(&o, 0);
    assert!(out.is_file());
    let killed = inflight.path.rsplit('/').next().unwrap().to_string();
    let mut resumed = false;
    for (digest, size) in &sizes {
        let (had, done) = got(digest);
        let again = proxy.blob_gets(digest);
        if done {
            assert!(
                again.is_empty(),
                "{digest} was complete, fetched again: {again:?}"
            );
            continue;
        }
        assert_eq!(again.len(), 1, "{digest}: {again:?}");
        let start = again[0].range_start().unwrap_or(0);
        assert!(
            start <= had,
            "{digest}: resumed at {start}, only {had} sent"
        );
        assert_eq!(again[0].body_bytes, size - start, "{digest}: only the rest");
        if *digest == killed {
            assert!(start > 0, "{digest} was not resumed: {again:?}");
            assert_eq!(again[0].status, 206);
            resumed = true;
        }
    }
    assert!(resumed, "the layer killed mid-way ({killed}) is a layer");
    assert_nothing_left(&case.tag);
}

/// A blob whose bytes do not match its digest is refused, naming it, and
/// not kept: the next pull fetches it again, whole.
#[test]
fn corrupted_blob_is_refused_and_not_cached() {
    let Some(reg) = registry() else { return };
    let case = Case::new("corrupt");
    let (layer, _) = layers("DEMO").remove(0);
    let proxy = Proxy::start(&reg.plain, Mode::Corrupt(layer.clone()));
    let r = format!("docker://{}/corrupt/demo:1", proxy.addr());
    let out = case.path("demo.sqfs");
    let o = case.run(&["pull", "-q", out.to_str().unwrap(), &r]);
    assert_exit(&o, ExitKind::BadImage);
    assert_stderr_names(&o, &[&layer]);
    assert!(!out.exists());
    assert!(!case.cache().join("blobs/sha256").join(hex(&layer)).exists());
    let tmp: Vec<_> = std::fs::read_dir(case.cache().join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        !tmp.iter()
            .any(|p| p.to_string_lossy().contains(hex(&layer))),
        "partial kept: {tmp:?}"
    );
    assert!(image_files(&case.cache()).is_empty());

    proxy.clear();
    proxy.set_mode(Mode::Pass);
    assert_status(&case.run(&["pull", "-q", out.to_str().unwrap(), &r]), 0);
    let again = proxy.blob_gets(&layer);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].range_start().unwrap_or(0), 0, "nothing of it kept");
    assert_nothing_left(&case.tag);
}

#[test]
fn cache_list_and_clean() {
    let Some(reg) = registry() else { return };
    let case = Case::new("cache");
    let r = format!("docker://{}/demo:1", reg.plain);
    let manifest = var("RFAKE_TEST_REGISTRY_DIGEST_DEMO_1");
    assert_ok(
        &case.run(&["exec", &r, "cat", "/opt/new.txt"]),
        "layer-two\n",
    );
    assert_eq!(
        blob_files(&case.cache()).len(),
        4,
        "manifest, config and 2 layers"
    );
    let o = case.run(&["cache", "list"]);
    assert_status(&o, 0);
    assert!(stdout(&o).contains(&hex(&manifest)[..12]), "{}", stdout(&o));
    let o = case.run(&["cache", "list", "--json"]);
    assert_status(&o, 0);
    let text = stdout(&o);
    serde_json::from_str::<serde_json::Value>(&text).expect("cache list --json prints JSON");
    for want in ["\"image\"", "\"blob\"", hex(&manifest)] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // The default: the layers of converted images go; the image, its
    // manifest and configuration stay.
    assert_status(&case.run(&["cache", "clean"]), 0);
    assert_eq!(blob_files(&case.cache()).len(), 2, "manifest and config");
    assert_eq!(image_files(&case.cache()).len(), 1);
    assert_ok(
        &case.run(&["exec", "--offline", &r, "cat", "/opt/new.txt"]),
        "layer-two\n",
    );
    // --all: everything.
    assert_status(&case.run(&["cache", "clean", "--all"]), 0);
    assert!(image_files(&case.cache()).is_empty());
    let o = case.run(&["exec", "--offline", &r, "true"]);
    assert_exit(&o, ExitKind::NoInput);
    assert_nothing_left(&case.tag);
}

/// The test proxy itself (tests/common/proxy.rs), with curl: it forwards a
/// blob whole and by range, and spoils one byte of it when told.
#[test]
fn the_test_proxy_forwards_and_spoils_blobs() {
    let Some(reg) = registry() else { return };
    let case = Case::new("proxy");
    let (layer, size) = layers("DEMO").remove(0);
    let proxy = Proxy::start(&reg.plain, Mode::Pass);
    let url = format!("http://{}/v2/demo/blobs/{layer}", proxy.addr());
    let file = case.path("blob");
    let curl = |extra: &[&str]| {
        let mut args = vec!["-s", "-o", file.to_str().unwrap(), "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        host("curl", &args)
    };
    assert_eq!(curl(&[]), "200");
    assert_eq!(format!("sha256:{}", sha256(&file)), layer);
    assert_eq!(curl(&["-r", "1000-"]), "206");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), size - 1000);
    proxy.set_mode(Mode::Corrupt(layer.clone()));
    assert_eq!(curl(&[]), "200");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), size);
    assert_ne!(format!("sha256:{}", sha256(&file)), layer);
    proxy.set_mode(Mode::Throttle(2_000_000));
    let start = std::time::Instant::now();
    assert_eq!(curl(&[]), "200");
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    // The proxy marks a request complete after the client already has the
    // last byte: wait for it a little.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let gets = loop {
        let gets = proxy.blob_gets(&layer);
        if gets.iter().all(|g| g.complete) || std::time::Instant::now() > deadline {
            break gets;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(gets.len(), 4);
    assert_eq!(gets[1].range_start(), Some(1000));
    assert!(gets.iter().all(|g| g.complete), "{gets:?}");
    assert_eq!(gets[0].body_bytes, size);
}
