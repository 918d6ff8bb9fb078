//! Tests of the cache. Some run children: this test binary again, one
//! ignored test selected by `--exact`, told what to do by environment
//! variables (real processes, so the locks and SIGKILL are real).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use super::lock::Lock;
use super::manage::Kind;
use super::*;
use crate::digest::Digest;
use crate::exit::ExitKind;

#[derive(Debug, thiserror::Error)]
#[error("test fetch failed: {1}")]
struct TestErr(ExitKind, &'static str);

impl Failure for TestErr {
    fn exit_kind(&self) -> ExitKind {
        self.0
    }
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn sha(bytes: &[u8]) -> Digest {
    let mut h = Digest::parse(&format!("sha256:{}", "0".repeat(64)))
        .unwrap()
        .hasher();
    h.update(bytes);
    Digest::parse(&format!("sha256:{}", h.hex())).unwrap()
}

fn open(root: &Path) -> Cache {
    Cache::open(root.to_path_buf(), false, 0).unwrap()
}

/// A fetch that serves `bytes` from the offset asked, honouring ranges.
fn serve(bytes: &[u8]) -> impl FnMut(u64, &mut dyn Write) -> Result<u64, TestErr> + '_ {
    move |offset, sink| {
        sink.write_all(&bytes[offset as usize..])
            .map_err(|_| TestErr(ExitKind::OsError, "sink"))?;
        Ok(offset)
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn partial_of(cache: &Cache, d: &Digest) -> PathBuf {
    cache
        .tmp()
        .join(format!("{}@{}.partial", d.hex, cache.host))
}

fn set_mtime(path: &Path, age: Duration) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

fn age(path: &Path) -> Duration {
    fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap_or_default()
}

#[test]
fn a_missing_root_is_created_private_with_its_tag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/rfake");
    Cache::open(root.clone(), false, 0).unwrap();
    let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let tag = fs::read_to_string(root.join("CACHEDIR.TAG")).unwrap();
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
    for d in ["blobs/sha256", "images/sha256", "refs", "tmp", "locks"] {
        assert!(root.join(d).is_dir(), "{d}");
    }
    assert_eq!(names(&root.join("tmp")), Vec::<String>::new());
    // An existing root keeps its mode (a site's group-shared cache).
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o2770)).unwrap();
    Cache::open(shared.clone(), false, 0).unwrap();
    assert_eq!(
        fs::metadata(&shared).unwrap().permissions().mode() & 0o7777,
        0o2770
    );
    // Read-only: nothing created.
    let ro = dir.path().join("ro");
    Cache::open(ro.clone(), true, 0).unwrap();
    assert!(!ro.exists());
}

#[test]
fn a_blob_is_fetched_once_checked_and_published_0644() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let bytes = data(10_000);
    let d = sha(&bytes);
    let calls = AtomicUsize::new(0);
    let mut fetch = |offset, sink: &mut dyn Write| {
        calls.fetch_add(1, Ordering::SeqCst);
        serve(&bytes)(offset, sink)
    };
    let path = cache
        .blob::<TestErr>(&d, bytes.len() as u64, &mut fetch)
        .unwrap();
    assert_eq!(path, dir.path().join("blobs/sha256").join(&d.hex));
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let again = cache
        .blob::<TestErr>(&d, bytes.len() as u64, &mut fetch)
        .unwrap();
    assert_eq!(again, path);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.has_blob(&d), Some(path));
    assert_eq!(names(&cache.tmp()), Vec::<String>::new());
}

#[test]
fn a_wrong_digest_is_refused_naming_both_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let bytes = data(5000);
    let claimed = sha(b"something else entirely");
    let e = cache
        .blob::<TestErr>(&claimed, bytes.len() as u64, &mut serve(&bytes))
        .unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::BadImage);
    let text = e.to_string();
    assert!(text.contains(&claimed.to_string()), "{text}");
    assert!(text.contains(&sha(&bytes).to_string()), "{text}");
    assert_eq!(names(&cache.tmp()), Vec::<String>::new());
    assert!(cache.has_blob(&claimed).is_none());
}

#[test]
fn a_failed_fetch_keeps_its_partial_and_the_next_resumes_at_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let bytes = data(8192);
    let d = sha(&bytes);
    let e = cache
        .blob::<TestErr>(&d, 8192, &mut |offset, sink: &mut dyn Write| {
            assert_eq!(offset, 0);
            sink.write_all(&bytes[..3000]).unwrap();
            Err(TestErr(ExitKind::NoInput, "connection reset"))
        })
        .unwrap_err();
    // The fetcher's error, with its exit code, and no final entry.
    assert_eq!(e.exit_kind(), ExitKind::NoInput);
    assert_eq!(e.to_string(), "test fetch failed: connection reset");
    assert!(cache.has_blob(&d).is_none());
    assert_eq!(fs::metadata(partial_of(&cache, &d)).unwrap().len(), 3000);
    let mut offsets = Vec::new();
    let path = cache
        .blob::<TestErr>(&d, 8192, &mut |offset, sink: &mut dyn Write| {
            offsets.push(offset);
            serve(&bytes)(offset, sink)
        })
        .unwrap();
    assert_eq!(offsets, [3000]);
    assert_eq!(fs::read(path).unwrap(), bytes);
    assert_eq!(names(&cache.tmp()), Vec::<String>::new());
}

#[test]
fn a_server_ignoring_the_range_restarts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let bytes = data(7000);
    let d = sha(&bytes);
    fs::write(partial_of(&cache, &d), &bytes[..2500]).unwrap();
    let mut offsets = Vec::new();
    let path = cache
        .blob::<TestErr>(&d, 7000, &mut |offset, sink: &mut dyn Write| {
            offsets.push(offset);
            sink.write_all(&bytes).unwrap(); // the whole blob: a 200
            Ok(0)
        })
        .unwrap();
    assert_eq!(offsets, [2500]);
    assert_eq!(fs::read(path).unwrap(), bytes);
    assert_eq!(names(&cache.tmp()), Vec::<String>::new());
}

#[test]
fn a_corrupt_partial_is_discarded_and_fetched_once_more_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let bytes = data(6000);
    let d = sha(&bytes);
    // What a crash can leave: zeros where data was never written back.
    fs::write(partial_of(&cache, &d), vec![0u8; 2000]).unwrap();
    let mut offsets = Vec::new();
    cache
        .blob::<TestErr>(&d, 6000, &mut |offset, sink: &mut dyn Write| {
            offsets.push(offset);
            serve(&bytes)(offset, sink)
        })
        .unwrap();
    assert_eq!(offsets, [2000, 0]);
    // A blob that is wrong from byte 0 on is refused after that one retry.
    let wrong = sha(b"x");
    fs::write(partial_of(&cache, &wrong), vec![0u8; 10]).unwrap();
    let mut offsets = Vec::new();
    let e = cache
        .blob::<TestErr>(&wrong, 6000, &mut |offset, sink: &mut dyn Write| {
            offsets.push(offset);
            serve(&bytes)(offset, sink)
        })
        .unwrap_err();
    assert!(matches!(e, CacheError::Mismatch { .. }), "{e}");
    assert_eq!(offsets, [10, 0]);
    assert_eq!(names(&cache.tmp()), Vec::<String>::new());
}

#[test]
fn more_bytes_than_the_descriptor_says_are_refused_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let bytes = data(4000);
    let d = sha(&bytes[..3000]);
    let e = cache
        .blob::<TestErr>(&d, 3000, &mut |_, sink: &mut dyn Write| {
            sink.write_all(&bytes)
                .map_err(|_| TestErr(ExitKind::OsError, "sink refused"))?;
            Ok(0)
        })
        .unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::BadImage);
    assert!(e.to_string().contains("larger than the 3000 bytes"), "{e}");
    assert_eq!(names(&cache.tmp()), Vec::<String>::new());
}

#[test]
fn a_short_download_is_an_error_and_kept_for_resuming() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let bytes = data(4000);
    let d = sha(&bytes);
    let e = cache
        .blob::<TestErr>(&d, 4000, &mut |_, sink: &mut dyn Write| {
            sink.write_all(&bytes[..1000]).unwrap();
            Ok(0)
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("stopped at byte 1000 of 4000"),
        "{e}"
    );
    assert!(cache.has_blob(&d).is_none());
    assert_eq!(fs::metadata(partial_of(&cache, &d)).unwrap().len(), 1000);
}

#[test]
fn threads_asking_for_one_blob_fetch_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(100_000);
    let d = sha(&bytes);
    let calls = AtomicUsize::new(0);
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    // Each thread its own Cache: its own lock descriptions.
                    let cache = open(dir.path());
                    cache
                        .blob::<TestErr>(
                            &d,
                            bytes.len() as u64,
                            &mut |offset, sink: &mut dyn Write| {
                                calls.fetch_add(1, Ordering::SeqCst);
                                for chunk in bytes[offset as usize..].chunks(10_000) {
                                    sink.write_all(chunk).unwrap();
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                                Ok(offset)
                            },
                        )
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn without_locks_concurrent_fetches_are_duplicated_but_never_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(100_000);
    let d = sha(&bytes);
    let calls = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let cache = open(dir.path()).without_locks();
                cache
                    .blob::<TestErr>(
                        &d,
                        bytes.len() as u64,
                        &mut |offset, sink: &mut dyn Write| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            for chunk in bytes[offset as usize..].chunks(10_000) {
                                sink.write_all(chunk).unwrap();
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            Ok(offset)
                        },
                    )
                    .unwrap();
            });
        }
    });
    assert!(calls.load(Ordering::SeqCst) > 1, "the threads overlapped");
    assert_eq!(fs::read(dir.path().join(d.blob_path())).unwrap(), bytes);
    assert_eq!(names(&dir.path().join("tmp")), Vec::<String>::new());
}

// ---- children: this binary again ------------------------------------------

const CHILD_DIR: &str = "RFAKE_CACHE_TEST_DIR";

fn child(test: &str, dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        &format!("cache::tests::{test}"),
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// The blob the children fetch: 256 KiB, written in 16 slow chunks.
fn child_blob() -> (Vec<u8>, Digest) {
    let bytes = data(256 << 10);
    let d = sha(&bytes);
    (bytes, d)
}

#[test]
#[ignore = "run by processes_asking_for_one_blob_fetch_it_once"]
fn child_fetch() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let (bytes, d) = child_blob();
    let cache = open(&dir.join("cache"));
    let path = cache
        .blob::<TestErr>(
            &d,
            bytes.len() as u64,
            &mut |offset, sink: &mut dyn Write| {
                let mut log = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(dir.join("fetches"))
                    .unwrap();
                writeln!(log, "{} {offset}", std::process::id()).unwrap();
                for chunk in bytes[offset as usize..].chunks(16 << 10) {
                    sink.write_all(chunk).unwrap();
                    if std::env::var_os("RFAKE_CACHE_TEST_HANG").is_some() && offset == 0 {
                        // Half written: say so, then wait to be killed.
                        fs::write(dir.join("ready"), "").unwrap();
                        std::thread::sleep(Duration::from_secs(60));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(offset)
            },
        )
        .unwrap();
    // libtest has printed "test ... " without a newline.
    println!("\nPATH={}", path.display());
}

#[test]
fn processes_asking_for_one_blob_fetch_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..6)
        .map(|_| child("child_fetch", dir.path()).spawn().unwrap())
        .collect();
    let mut paths = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = stdout
            .lines()
            .find_map(|l| l.split_once("PATH=").map(|(_, p)| p))
            .expect("the child printed its path")
            .to_string();
        paths.push(path);
    }
    let fetches = fs::read_to_string(dir.path().join("fetches")).unwrap();
    assert_eq!(fetches.lines().count(), 1, "{fetches}");
    assert!(paths.windows(2).all(|w| w[0] == w[1]), "{paths:?}");
    let (bytes, d) = child_blob();
    assert_eq!(fs::read(&paths[0]).unwrap(), bytes);
    assert!(paths[0].ends_with(&d.hex));
}

#[test]
fn a_fetch_killed_mid_write_is_resumed_from_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = child("child_fetch", dir.path())
        .env("RFAKE_CACHE_TEST_HANG", "1")
        .spawn()
        .unwrap();
    let ready = dir.path().join("ready");
    let t = std::time::Instant::now();
    while !ready.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the child never got going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    let (bytes, d) = child_blob();
    let cache = open(&dir.path().join("cache"));
    let partial = partial_of(&cache, &d);
    assert_eq!(fs::metadata(&partial).unwrap().len(), 16 << 10);
    assert!(cache.has_blob(&d).is_none(), "nothing final after a kill");
    // The kill released the lock: the next pull does not wait for it.
    let mut offsets = Vec::new();
    let path = cache
        .blob::<TestErr>(
            &d,
            bytes.len() as u64,
            &mut |offset, sink: &mut dyn Write| {
                offsets.push(offset);
                serve(&bytes)(offset, sink)
            },
        )
        .unwrap();
    assert_eq!(offsets, [16 << 10]);
    assert_eq!(fs::read(path).unwrap(), bytes);
}

#[test]
#[ignore = "run by a_full_disk_is_71_naming_the_path_and_leaves_nothing"]
fn child_full_disk() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let cache = open(&dir);
    // The file size limit stands in for a full disk: writes past it fail
    // with EFBIG (SIGXFSZ ignored), as they would with ENOSPC.
    // SAFETY: setting a signal's disposition to SIG_IGN runs no handler.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let limit = libc::rlimit {
        rlim_cur: 20_000,
        rlim_max: 20_000,
    };
    // SAFETY: a valid rlimit for this process only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
    let bytes = data(100_000);
    let e = cache
        .blob::<TestErr>(
            &sha(&bytes),
            100_000,
            &mut |offset, sink: &mut dyn Write| {
                sink.write_all(&bytes)
                    .map_err(|_| TestErr(ExitKind::Usage, "as the client reports it"))?;
                Ok(offset)
            },
        )
        .unwrap_err();
    println!("\nKIND={}", e.exit_kind().code());
    println!("MESSAGE={e}");
}

#[test]
fn a_full_disk_is_71_naming_the_path_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = child("child_full_disk", dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("KIND=71"), "{stdout}");
    let message = stdout.lines().find(|l| l.starts_with("MESSAGE=")).unwrap();
    assert!(message.contains("/tmp/"), "{message}");
    assert!(message.contains(".partial"), "{message}");
    assert!(message.contains("(EFBIG)"), "{message}");
    assert_eq!(names(&dir.path().join("tmp")), Vec::<String>::new());
    assert_eq!(
        names(&dir.path().join("blobs/sha256")),
        Vec::<String>::new()
    );
}

// ---- images, references, read-only ----------------------------------------

#[test]
fn an_image_is_made_once_and_a_failed_make_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let m = sha(b"manifest");
    let e = cache
        .image(&m, "sqfs", &mut |temp: &Path| {
            assert!(temp.starts_with(dir.path().join("tmp")));
            fs::write(temp, b"half").unwrap();
            Err(TestErr(ExitKind::BadImage, "layer 2 is not a tar"))
        })
        .unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::BadImage);
    assert_eq!(names(&cache.tmp()), Vec::<String>::new());
    assert!(cache.lookup_image(&m, "sqfs").is_none());
    let mut made = 0;
    for _ in 0..2 {
        let path = cache
            .image(&m, "sqfs", &mut |temp: &Path| {
                made += 1;
                fs::write(temp, b"squashfs").map_err(|_| TestErr(ExitKind::OsError, "w"))
            })
            .unwrap();
        assert_eq!(
            path,
            dir.path().join(format!("images/sha256/{}.sqfs", m.hex))
        );
    }
    assert_eq!(made, 1);
    assert!(cache.lookup_image(&m, "sif").is_none());
    assert!(
        cache
            .image(&m, "../x", &mut |_: &Path| Ok::<(), TestErr>(()))
            .is_err()
    );
}

#[test]
fn references_round_trip_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let m = sha(b"manifest");
    let i = sha(b"index");
    let tag = RefKey {
        registry: "127.0.0.1:5000",
        repository: "library/debian",
        reference: "12",
    };
    cache.record_ref(&tag, "amd64", &m, Some(&i)).unwrap();
    assert!(
        dir.path()
            .join("refs/127.0.0.1:5000/library/debian/12@amd64.json")
            .is_file()
    );
    let r = cache.lookup_ref(&tag, "amd64").unwrap();
    assert_eq!(r.manifest, m);
    assert_eq!(r.index, Some(i));
    assert_eq!(r.reference, "127.0.0.1:5000/library/debian:12");
    assert!(cache.lookup_ref(&tag, "arm64").is_none());
    let by_digest = m.to_string();
    let pinned = RefKey {
        reference: &by_digest,
        ..tag
    };
    cache.record_ref(&pinned, "arm/v7", &m, None).unwrap();
    let name = format!(
        "refs/127.0.0.1:5000/library/debian/sha256-{}@arm-v7.json",
        m.hex
    );
    assert!(dir.path().join(name).is_file());
    assert_eq!(
        cache.lookup_ref(&pinned, "arm/v7").unwrap().reference,
        format!("127.0.0.1:5000/library/debian@{m}")
    );
    for (registry, repository, reference) in [
        ("..", "a", "1"),
        ("h", "a/../../x", "1"),
        ("h", "a", ".."),
        ("h", "", "1"),
        ("h/x", "a", "1"),
        ("h", "a", "x/y"),
    ] {
        let key = RefKey {
            registry,
            repository,
            reference,
        };
        let e = cache.record_ref(&key, "amd64", &m, None).unwrap_err();
        assert!(
            matches!(e, CacheError::BadName(_)),
            "{registry} {repository} {reference}"
        );
    }
    assert_eq!(names(&cache.tmp()), Vec::<String>::new());
}

#[test]
fn a_read_only_cache_serves_what_it_has_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(3000);
    let d = sha(&bytes);
    let m = sha(b"manifest");
    {
        let rw = open(dir.path());
        rw.blob::<TestErr>(&d, 3000, &mut serve(&bytes)).unwrap();
        rw.image(&m, "sqfs", &mut |t: &Path| {
            fs::write(t, b"img").map_err(|_| TestErr(ExitKind::OsError, "w"))
        })
        .unwrap();
    }
    let blob = dir.path().join(d.blob_path());
    set_mtime(&blob, Duration::from_secs(86400));
    fs::remove_dir_all(dir.path().join("locks")).unwrap();
    let snapshot = |p: &Path| {
        let mut v = Vec::new();
        for e in walk(p) {
            let m = fs::symlink_metadata(&e).unwrap();
            v.push((e, m.len(), m.modified().unwrap()));
        }
        v
    };
    let before = snapshot(dir.path());
    let ro = Cache::open(dir.path().to_path_buf(), true, 1).unwrap();
    assert_eq!(
        ro.blob::<TestErr>(&d, 3000, &mut serve(&bytes)).unwrap(),
        blob
    );
    assert!(ro.has_blob(&d).is_some());
    assert!(ro.lookup_image(&m, "sqfs").is_some());
    let missing = sha(b"absent");
    let e = ro
        .blob::<TestErr>(&missing, 3, &mut |_,
                                            _: &mut dyn Write|
         -> Result<u64, TestErr> {
            panic!("a read-only cache never fetches")
        })
        .unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Refused);
    assert_eq!(
        e.to_string(),
        format!(
            "the cache {} is read-only (cache_read_only) and has no blob {missing}",
            dir.path().display()
        )
    );
    let e = ro
        .image(&missing, "sqfs", &mut |_: &Path| -> Result<(), TestErr> {
            panic!("never made")
        })
        .unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Refused);
    let key = RefKey {
        registry: "h",
        repository: "r",
        reference: "t",
    };
    assert_eq!(
        ro.record_ref(&key, "amd64", &m, None)
            .unwrap_err()
            .exit_kind(),
        ExitKind::Refused
    );
    assert_eq!(
        ro.clean(Clean::All).unwrap_err().exit_kind(),
        ExitKind::Refused
    );
    assert!(ro.evict().unwrap().removed.is_empty());
    assert_eq!(ro.list().unwrap().len(), 2);
    assert_eq!(
        snapshot(dir.path()),
        before,
        "the read-only cache was written"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let mut children: Vec<_> = fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

// ---- list, evict, clean ----------------------------------------------------

#[test]
fn use_bumps_the_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let bytes = data(100);
    let d = sha(&bytes);
    let path = cache.blob::<TestErr>(&d, 100, &mut serve(&bytes)).unwrap();
    set_mtime(&path, Duration::from_secs(86400));
    cache.blob::<TestErr>(&d, 100, &mut serve(&bytes)).unwrap();
    assert!(age(&path) < Duration::from_secs(60));
    set_mtime(&path, Duration::from_secs(86400));
    cache.has_blob(&d).unwrap();
    assert!(age(&path) < Duration::from_secs(60));
}

/// Three 1000-byte blobs used 3, 2 and 1 days ago.
fn three_blobs(cache: &Cache) -> Vec<(Digest, PathBuf)> {
    (0..3u8)
        .map(|i| {
            let bytes = vec![i; 1000];
            let d = sha(&bytes);
            let p = cache.blob::<TestErr>(&d, 1000, &mut serve(&bytes)).unwrap();
            set_mtime(&p, Duration::from_secs(86400 * (3 - u64::from(i))));
            (d, p)
        })
        .collect()
}

#[test]
fn eviction_removes_the_least_recently_used_but_never_a_locked_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().to_path_buf(), false, 2000).unwrap();
    let blobs = three_blobs(&cache);
    // The oldest is in use by another process (its lock held).
    let held = Lock::exclusive(&cache.lock_path(&blobs[0].0.hex))
        .unwrap()
        .unwrap();
    let report = cache.evict().unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].path, blobs[1].1);
    assert_eq!(report.busy.len(), 1);
    assert_eq!(report.freed, 1000);
    assert_eq!(report.total, 2000);
    assert!(blobs[0].1.exists() && !blobs[1].1.exists() && blobs[2].1.exists());
    drop(held);
    // Under the limit: nothing to do; no limit: never.
    assert!(cache.evict().unwrap().removed.is_empty());
    let unlimited = open(dir.path());
    assert!(unlimited.evict().unwrap().removed.is_empty());
    let tight = Cache::open(dir.path().to_path_buf(), false, 1000).unwrap();
    let report = tight.evict().unwrap();
    assert_eq!(report.removed[0].path, blobs[0].1);
    assert!(blobs[2].1.exists());
}

/// An image with its manifest, config and two layers cached, a reference
/// to it, and a partial download.
struct Pulled {
    image: PathBuf,
    manifest: Digest,
    config: Digest,
    layers: [Digest; 2],
    partial: PathBuf,
}

fn pulled(cache: &Cache) -> Pulled {
    let put = |b: &[u8]| {
        let d = sha(b);
        cache.put_blob(&d, b).unwrap();
        d
    };
    let config = put(b"{\"config\":{\"Env\":[]}}");
    let layers = [put(&data(3000)), put(&data(4000))];
    let manifest_json = serde_json::json!({
        "schemaVersion": 2,
        "config": {"digest": config.to_string(), "size": 21},
        "layers": layers.iter().map(|l| serde_json::json!({"digest": l.to_string()})).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest = put(manifest_json.as_bytes());
    let image = cache
        .image(&manifest, "sqfs", &mut |t: &Path| {
            fs::write(t, data(5000)).map_err(|_| TestErr(ExitKind::OsError, "w"))
        })
        .unwrap();
    let key = RefKey {
        registry: "127.0.0.1:5000",
        repository: "demo",
        reference: "1.0",
    };
    cache.record_ref(&key, "amd64", &manifest, None).unwrap();
    let unfinished = sha(b"unfinished");
    let partial = partial_of(cache, &unfinished);
    fs::write(&partial, b"half").unwrap();
    Pulled {
        image,
        manifest,
        config,
        layers,
        partial,
    }
}

#[test]
fn list_names_kinds_and_the_references_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let p = pulled(&cache);
    let entries = cache.list().unwrap();
    let find = |d: &Digest, k: Kind| {
        entries
            .iter()
            .find(|e| e.kind == k && e.digest.as_ref() == Some(d))
            .unwrap_or_else(|| panic!("{k:?} {d} in {entries:#?}"))
    };
    let want = vec!["127.0.0.1:5000/demo:1.0 (amd64)".to_string()];
    assert_eq!(find(&p.manifest, Kind::Image).references, want);
    assert_eq!(find(&p.manifest, Kind::Image).size, 5000);
    assert_eq!(find(&p.layers[1], Kind::Blob).references, want);
    assert_eq!(find(&p.config, Kind::Blob).references, want);
    let partial = entries.iter().find(|e| e.kind == Kind::Partial).unwrap();
    assert_eq!(partial.path, p.partial);
    assert_eq!(partial.digest, Some(sha(b"unfinished")));
    assert!(!partial.busy);
    // image + manifest + config + 2 layers + partial
    assert_eq!(entries.len(), 6);
    let held = Lock::exclusive(&cache.lock_path(&sha(b"unfinished").hex))
        .unwrap()
        .unwrap();
    let listed = cache.list().unwrap();
    assert!(
        listed
            .iter()
            .find(|e| e.kind == Kind::Partial)
            .unwrap()
            .busy
    );
    drop(held);
}

#[test]
fn clean_by_default_removes_partials_and_the_layers_of_converted_images() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let p = pulled(&cache);
    let report = cache.clean(Clean::Unneeded).unwrap();
    let mut gone: Vec<_> = report.removed.iter().map(|e| e.path.clone()).collect();
    gone.sort();
    let mut want = vec![
        p.partial.clone(),
        dir.path().join(p.layers[0].blob_path()),
        dir.path().join(p.layers[1].blob_path()),
    ];
    want.sort();
    assert_eq!(gone, want);
    assert_eq!(report.freed, 4 + 3000 + 4000);
    assert!(p.image.exists());
    assert!(cache.has_blob(&p.manifest).is_some() && cache.has_blob(&p.config).is_some());
    assert_eq!(report.refs_removed, 0);
}

#[test]
fn clean_keeps_a_partial_a_live_pull_holds() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let p = pulled(&cache);
    let held = Lock::exclusive(&cache.lock_path(&sha(b"unfinished").hex))
        .unwrap()
        .unwrap();
    // The image server's prefetch profiles go with --all (only then).
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("ab12.profile"), b"p").unwrap();
    let none = Clean::OlderThan(std::time::Duration::from_secs(1 << 40));
    assert_eq!(cache.clean(none).unwrap().profiles_removed, 0);
    assert!(profiles.join("ab12.profile").exists());
    let report = cache.clean(Clean::All).unwrap();
    assert_eq!(report.profiles_removed, 1);
    assert!(!profiles.join("ab12.profile").exists());
    assert_eq!(report.busy.len(), 1);
    assert!(p.partial.exists());
    assert!(!p.image.exists());
    assert_eq!(report.removed.len(), 5);
    assert_eq!(report.refs_removed, 1);
    assert_eq!(report.total, 4);
    drop(held);
}

#[test]
fn clean_older_than_removes_only_what_was_not_used_since() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let blobs = three_blobs(&cache);
    let report = cache
        .clean(Clean::OlderThan(Duration::from_secs(86400 * 2 - 60)))
        .unwrap();
    let gone: Vec<_> = report.removed.iter().map(|e| e.path.clone()).collect();
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert!(!blobs[0].1.exists() && !blobs[1].1.exists() && blobs[2].1.exists());
}

#[test]
fn references_to_nothing_left_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let p = pulled(&cache);
    fs::remove_file(&p.image).unwrap();
    // The manifest blob still lets an offline pull rebuild: kept.
    assert_eq!(cache.clean(Clean::Unneeded).unwrap().refs_removed, 0);
    fs::remove_file(dir.path().join(p.manifest.blob_path())).unwrap();
    assert_eq!(cache.clean(Clean::Unneeded).unwrap().refs_removed, 1);
}

#[test]
fn durations_take_s_m_h_d_only() {
    assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
    assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43200)));
    assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
    for bad in [
        "",
        "d",
        "30",
        "3w",
        "1.5d",
        "-1d",
        "30 d",
        "30D",
        "99999999999999999999d",
    ] {
        let e = parse_duration(bad).unwrap_err();
        assert!(e.contains("s, m, h or d"), "{bad}: {e}");
    }
}

#[test]
fn the_root_comes_from_rfake_cachedir_config_xdg_then_home() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    };
    let all = env(&[
        ("RFAKE_CACHEDIR", "/c"),
        ("XDG_CACHE_HOME", "/x"),
        ("HOME", "/h"),
    ]);
    let conf = Some(Path::new("/conf"));
    assert_eq!(root_from(&all, conf).unwrap(), Path::new("/c"));
    let no_env = env(&[
        ("RFAKE_CACHEDIR", ""),
        ("XDG_CACHE_HOME", "/x"),
        ("HOME", "/h"),
    ]);
    assert_eq!(root_from(&no_env, conf).unwrap(), Path::new("/conf"));
    assert_eq!(default_root(&no_env).unwrap(), Path::new("/x/rfake"));
    let relative_xdg = env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")]);
    assert_eq!(
        default_root(&relative_xdg).unwrap(),
        Path::new("/h/.cache/rfake")
    );
    assert!(matches!(default_root(&env(&[])), Err(CacheError::NoRoot)));
}

#[test]
fn messages_name_the_errno() {
    let e = CacheError::io(
        "write",
        Path::new("/c/tmp/x.partial"),
        std::io::Error::from_raw_os_error(libc::ENOSPC),
    );
    assert_eq!(
        e.to_string(),
        "image cache: cannot write /c/tmp/x.partial: No space left on device (ENOSPC)"
    );
    assert_eq!(e.exit_kind(), ExitKind::OsError);
}

/// `cache_read_only` applies to the configured `cache_dir` only: a user who
/// names their own cache with RFAKE_CACHEDIR writes to it.
#[test]
fn read_only_applies_to_the_configured_cache_only() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    };
    let site = "cache_dir = \"/apps/cache\"\ncache_read_only = true\ncache_max_size = \"1G\"\n";
    let config = crate::config::Config::from_strs(
        Some((Path::new("/etc/rfake/rfake.toml"), site)),
        None,
        &[],
    )
    .unwrap();
    let home = env(&[("HOME", "/home/a")]);
    let s = Settings::new(&config, &home).unwrap();
    assert_eq!(
        (s.root.as_path(), s.read_only, s.max_size),
        (Path::new("/apps/cache"), true, 1 << 30)
    );
    let own = env(&[("HOME", "/home/a"), ("RFAKE_CACHEDIR", "/scratch/a/c")]);
    let s = Settings::new(&config, &own).unwrap();
    assert_eq!(
        (s.root.as_path(), s.read_only),
        (Path::new("/scratch/a/c"), false)
    );
    // Without cache_dir the flag has nothing to apply to.
    let config = crate::config::Config::from_strs(
        Some((
            Path::new("/etc/rfake/rfake.toml"),
            "cache_read_only = true\n",
        )),
        None,
        &[],
    )
    .unwrap();
    let s = Settings::new(&config, &home).unwrap();
    assert_eq!(
        (s.root.as_path(), s.read_only),
        (Path::new("/home/a/.cache/rfake"), false)
    );
    let relative = env(&[("RFAKE_CACHEDIR", "cache")]);
    assert_eq!(
        Settings::new(&config, &relative).unwrap_err().exit_kind(),
        ExitKind::Usage
    );
}

/// Looking an image up records its use without touching the image file: a
/// warm mount is keyed by the image's times, which must stay as they were.
#[test]
fn using_an_image_leaves_its_times_alone() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("c"), false, 0).unwrap();
    let manifest = Digest::sha256_of(b"manifest");
    let path = cache
        .image(&manifest, "sqfs", &mut |temp: &Path| {
            fs::write(temp, b"image").map_err(|e| crate::error::Error::Internal(e.to_string()))
        })
        .unwrap();
    let before = fs::metadata(&path).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let listed = |cache: &Cache| {
        cache
            .list()
            .unwrap()
            .into_iter()
            .find(|e| e.path == path)
            .unwrap()
            .last_used
    };
    let first = listed(&cache);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(cache.lookup_image(&manifest, "sqfs").unwrap(), path);
    let after = fs::metadata(&path).unwrap();
    assert_eq!(
        (
            before.mtime_nsec(),
            before.ctime_nsec(),
            before.mtime(),
            before.ctime()
        ),
        (
            after.mtime_nsec(),
            after.ctime_nsec(),
            after.mtime(),
            after.ctime()
        )
    );
    assert!(listed(&cache) > first, "the use was not recorded");
}
