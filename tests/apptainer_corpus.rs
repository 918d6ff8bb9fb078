//! The Apptainer corpus: real command lines from Apptainer's user
//! documentation and from public site guides, each run with `apptainer` (or
//! `singularity`) replaced by `rfake`, as the unprivileged user, against the
//! test images, and compared with what it should print and exit with.
//!
//! The lines and their expected results are data: tests/apptainer/corpus.txt
//! (what rfake does today) and tests/apptainer/corpus-f.txt (lines whose
//! flags come with issue 14's part F: `-C`, `--no-mount`, `--mount`, `-W`,
//! `--pid`...). The second list is read only once `rfake exec --help` shows
//! one of F's flags; from then on every line of it must pass, like the first
//! (a line whose flag is still missing fails, it is not skipped). The format
//! is described at the top of corpus.txt.
//!
//! Each line runs in a fresh directory under the test user's home (so the
//! current directory is inside the container, as in the docs), where the
//! images the docs name (`lolcow_latest.sif`, `my_container.sif`, ...) are
//! symbolic links to the test images; `docker://` names of the docs are
//! mapped to the test registry. Nothing else of the line is changed.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// How long one line may run (a first pull from the test registry included).
const LINE_TIMEOUT_SECS: u32 = 180;

/// The address the corpus writes for the test registry.
const DOC_REGISTRY: &str = "localhost:5000";

/// One command line of the corpus and what it should do.
#[derive(Debug, Default, Clone)]
struct Entry {
    /// `file:line` of its `$ ` line.
    at: String,
    /// Where the line was published (`@ URL`).
    source: String,
    /// The line as published.
    line: String,
    /// Shell commands run before it (`% ...`), as published or needed.
    setup: Vec<String>,
    /// Shell commands run after it, their output dropped (`after ...`):
    /// stopping what the line started.
    after: Vec<String>,
    /// Lines typed into it (`< `), e.g. into `shell`; else stdin is empty.
    stdin: Vec<String>,
    /// Substitutions for this entry only (`map FROM = TO`).
    maps: Vec<(String, String)>,
    /// `needs registry`, `needs gpu`.
    needs: Vec<String>,
    /// The whole standard output (`| ` lines), when given.
    stdout: Option<Vec<String>>,
    /// Lines standard output must contain (`~ `).
    contains: Vec<String>,
    /// Text standard error must contain (`! `); none given: stderr empty.
    stderr: Vec<String>,
    /// The exit status (`= N`, default 0).
    status: i32,
}

/// A corpus file: its global links and maps, and its entries.
#[derive(Debug, Default)]
struct Corpus {
    /// `link NAME = KIND:PATH`: NAME in the run directory is a symbolic link
    /// to PATH in the test images (`images`), the SIF files (`sif`) or the
    /// fake GPU tree (`gpu`).
    links: Vec<(String, String)>,
    /// `alias FROM = TO`: applied to every line (the docs' `docker://`
    /// names to the test registry).
    maps: Vec<(String, String)>,
    entries: Vec<Entry>,
}

fn split_assignment(rest: &str, at: &str) -> (String, String) {
    let (a, b) = rest
        .split_once(" = ")
        .unwrap_or_else(|| panic!("{at}: expected `NAME = VALUE`, got {rest:?}"));
    (a.trim().to_string(), b.trim().to_string())
}

/// Parse a corpus file (format: the top of tests/apptainer/corpus.txt).
fn parse(name: &str, text: &str) -> Corpus {
    let mut corpus = Corpus::default();
    let mut source = String::new();
    let mut cur: Option<Entry> = None;
    let mut pending = Entry::default();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let at = format!("{name}:{}", i + 1);
        let l = raw.trim_end();
        if l.is_empty() {
            if let Some(e) = cur.take() {
                corpus.entries.push(e);
            }
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        let (key, rest) = l.split_once(' ').unwrap_or((l, ""));
        match key {
            "@" => source = rest.to_string(),
            "link" => corpus.links.push(split_assignment(rest, &at)),
            "alias" => corpus.maps.push(split_assignment(rest, &at)),
            "map" => pending.maps.push(split_assignment(rest, &at)),
            "%" => pending.setup.push(rest.to_string()),
            "after" => match cur.as_mut() {
                Some(e) => e.after.push(rest.to_string()),
                None => pending.after.push(rest.to_string()),
            },
            "needs" => pending.needs.push(rest.to_string()),
            "$" => {
                if let Some(e) = cur.take() {
                    corpus.entries.push(e);
                }
                assert!(
                    !source.is_empty(),
                    "{at}: a line without a source (`@ URL`)"
                );
                let mut line = rest.to_string();
                while line.ends_with('\\') {
                    let (_, next) = lines
                        .next()
                        .unwrap_or_else(|| panic!("{at}: `\\` at the end of the file"));
                    line.push('\n');
                    line.push_str(next.trim_end());
                }
                let mut e = std::mem::take(&mut pending);
                e.at = at;
                e.source = source.clone();
                e.line = line;
                cur = Some(e);
            }
            "|" | "~" | "!" | "=" | "<" => {
                let e = cur
                    .as_mut()
                    .unwrap_or_else(|| panic!("{at}: `{key}` before a `$ ` line"));
                match key {
                    "|" => e.stdout.get_or_insert_with(Vec::new).push(rest.to_string()),
                    "~" => e.contains.push(rest.to_string()),
                    "!" => e.stderr.push(rest.to_string()),
                    "<" => e.stdin.push(rest.to_string()),
                    _ => {
                        e.status = rest
                            .parse()
                            .unwrap_or_else(|_| panic!("{at}: `= N` wants a number"))
                    }
                }
            }
            _ if l == "|" => {
                let e = cur
                    .as_mut()
                    .unwrap_or_else(|| panic!("{at}: `|` before a `$ ` line"));
                e.stdout.get_or_insert_with(Vec::new).push(String::new());
            }
            _ => panic!("{at}: unknown line {l:?}"),
        }
    }
    if let Some(e) = cur.take() {
        corpus.entries.push(e);
    }
    corpus
}

/// Does `line` match `pattern`, where `[..]` stands for any text?
/// Trailing spaces are ignored, as in the docs' transcripts.
fn matches(pattern: &str, line: &str) -> bool {
    let (pattern, line) = (pattern.trim_end(), line.trim_end());
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(p) => rest = &rest[p + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The command word `apptainer`/`singularity` replaced by `rfake`: at the
/// start of the line or after a space, `|`, `;`, `(` or `&`.
fn one_word_changed(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    'outer: while !rest.is_empty() {
        let at_word_start = out.is_empty()
            || out.ends_with([' ', '|', ';', '(', '&', '\n', '`'])
            || out.ends_with("$(");
        if at_word_start {
            for word in ["apptainer", "singularity"] {
                if let Some(after) = rest.strip_prefix(word) {
                    if after.is_empty() || after.starts_with([' ', '\n']) {
                        out.push_str("rfake");
                        rest = after;
                        continue 'outer;
                    }
                }
            }
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Where a `link` points to: `images:FILE`, `sif:FILE`, `gpu:PATH`.
struct Sources {
    images: PathBuf,
    sif: PathBuf,
    gpu: Option<PathBuf>,
}

impl Sources {
    fn resolve(&self, spec: &str) -> PathBuf {
        let (kind, path) = spec
            .split_once(':')
            .unwrap_or_else(|| panic!("link target {spec:?}: KIND:PATH"));
        match kind {
            "images" => self.images.join(path),
            "sif" => self.sif.join(path),
            "gpu" => self.gpu.as_ref().expect("checked by needs gpu").join(path),
            _ => panic!("link target {spec:?}: KIND is images, sif or gpu"),
        }
    }
}

/// The fake GPU driver tree (tests/gpu/make-fake-driver.sh), as tests/gpu.rs finds it.
fn gpu_tree() -> Option<PathBuf> {
    let dir = std::env::var_os("RFAKE_TEST_GPU")
        .map(PathBuf::from)
        .or_else(|| Some(rfake_bin().parent()?.parent()?.join("gpu")))?;
    dir.join("cdi/nvidia.yaml").is_file().then_some(dir)
}

/// Run one entry; `Err` holds what differed.
fn run_entry(
    corpus: &Corpus,
    e: &Entry,
    src: &Sources,
    registry: Option<&str>,
) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("corpus-")
        .tempdir_in(home())
        .expect("a run directory in the home");
    for (name, target) in &corpus.links {
        let t = src.resolve(target);
        if t.exists() {
            std::os::unix::fs::symlink(&t, dir.path().join(name)).expect("link an image");
        }
    }
    // `rfake` as a command word: the binary under test (RFAKE_BIN is
    // STAGE/bin/rfake, else target/debug/rfake; a link named rfake when
    // RFAKE_BIN has another name).
    let shim = tempfile::tempdir_in(home()).unwrap();
    let bin_dir = if rfake_bin().file_name() == Some("rfake".as_ref()) {
        rfake_bin().parent().unwrap().to_path_buf()
    } else {
        std::os::unix::fs::symlink(rfake_bin(), shim.path().join("rfake")).unwrap();
        shim.path().to_path_buf()
    };

    let apply = |s: &str| -> String {
        let mut s = one_word_changed(s);
        for (from, to) in e.maps.iter().chain(&corpus.maps) {
            s = s.replace(from, to);
        }
        if let Some(r) = registry {
            s = s.replace(DOC_REGISTRY, r);
        }
        s
    };
    let mut script = String::from("set -e\n");
    for s in &e.setup {
        script.push_str(&apply(s));
        script.push('\n');
    }
    script.push_str("set +e\n");
    script.push_str(&apply(&e.line));
    if !e.stdin.is_empty() {
        script.push_str(" <<'CORPUS_STDIN'\n");
        for l in &e.stdin {
            script.push_str(l);
            script.push('\n');
        }
        script.push_str("CORPUS_STDIN");
    }
    script.push_str("\nst=$?\n");
    for s in &e.after {
        script.push_str(&apply(s));
        script.push_str(" >/dev/null 2>&1\n");
    }
    script.push_str("exit $st\n");

    let t = tag("corpus");
    let mut cmd = scrubbed("timeout", &t);
    cmd.arg(LINE_TIMEOUT_SECS.to_string())
        .args(["bash", "--noprofile", "--norc", "-c", &script])
        .current_dir(dir.path())
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                bin_dir.display()
            ),
        )
        .stdin(Stdio::null());
    let site;
    if e.needs.iter().any(|n| n == "gpu") {
        let gpu = src.gpu.as_ref().expect("checked by the caller");
        site = tempfile::NamedTempFile::new_in(home()).unwrap();
        std::fs::write(
            site.path(),
            format!(
                "warm_linger = {TEST_LINGER}\ncdi_spec_dirs = [{:?}]\n",
                gpu.join("cdi").display().to_string()
            ),
        )
        .unwrap();
        cmd.env("RFAKE_CONFIG", site.path());
    }
    let out = cmd.output().expect("run bash");
    let (so, se) = (stdout(&out), stderr(&out));
    let mut wrong = Vec::new();
    let status = out.status.code().unwrap_or(-1);
    if status != e.status {
        wrong.push(format!("exit status {status}, expected {}", e.status));
    }
    if let Some(want) = &e.stdout {
        let got: Vec<&str> = so.lines().collect();
        let same = got.len() == want.len() && want.iter().zip(&got).all(|(w, g)| matches(w, g));
        if !same {
            wrong.push(format!(
                "stdout differs; expected:\n  {}",
                want.join("\n  ")
            ));
        }
    }
    for c in &e.contains {
        if !so.lines().any(|l| matches(c, l)) {
            wrong.push(format!("stdout lacks a line {c:?}"));
        }
    }
    if e.stderr.is_empty() {
        if !se.is_empty() {
            wrong.push("stderr not empty".to_string());
        }
    } else {
        for c in &e.stderr {
            if !se.contains(c.as_str()) {
                wrong.push(format!("stderr lacks {c:?}"));
            }
        }
    }
    // What the line started has gone by the time it returns (`instance
    // stop` returns once the instance has gone); a short grace for the
    // kernel to reap what was killed.
    let mut leftovers = processes_tagged(&t);
    for _ in 0..20 {
        if leftovers.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        leftovers = processes_tagged(&t);
    }
    if !leftovers.is_empty() {
        wrong.push(format!("processes left behind: {leftovers:?}"));
    }
    // Nothing left behind: the run directory goes (opened up first, as the
    // kernel leaves an overlay's work/work with mode 0).
    let path = dir.keep();
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwX"])
        .arg(&path)
        .status();
    if let Err(err) = std::fs::remove_dir_all(&path) {
        wrong.push(format!("cannot remove {}: {err}", path.display()));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} ({})\n$ {}\n{}\n--- stdout:\n{so}--- stderr:\n{se}",
            e.at,
            e.source,
            e.line,
            wrong.join("\n")
        ))
    }
}

/// Run every entry of a corpus file; panic listing each one that failed.
fn run_corpus(file: &str) {
    let Some(env) = setup() else { return };
    let Some(sif) = sif_dir() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apptainer")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let corpus = parse(file, &text);
    let registry = std::env::var("RFAKE_TEST_REGISTRY").ok();
    let src = Sources {
        images: env.images.clone(),
        sif,
        gpu: gpu_tree(),
    };
    let mut failures = Vec::new();
    let mut ran = 0;
    for e in &corpus.entries {
        if e.needs.iter().any(|n| n == "registry") && registry.is_none() {
            missing(&format!(
                "{}: the test registry (RFAKE_TEST_REGISTRY)",
                e.at
            ));
            continue;
        }
        if e.needs.iter().any(|n| n == "gpu") && src.gpu.is_none() {
            missing(&format!(
                "{}: the fake GPU tree (tests/gpu/make-fake-driver.sh STAGE/gpu)",
                e.at
            ));
            continue;
        }
        ran += 1;
        if let Err(f) = run_entry(&corpus, e, &src, registry.as_deref()) {
            failures.push(f);
        }
    }
    eprintln!(
        "{file}: {ran} of {} lines run, {} failed",
        corpus.entries.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn the_corpus_parses_and_is_big_enough() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apptainer");
    let mut total = 0;
    for file in ["corpus.txt", "corpus-f.txt"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let c = parse(file, &text);
        for e in &c.entries {
            assert!(
                e.source.starts_with("https://"),
                "{}: the source is a URL",
                e.at
            );
            assert!(
                e.line.starts_with("apptainer ")
                    || e.line.starts_with("singularity ")
                    || e.line.contains("| apptainer ")
                    || e.line.contains("| singularity "),
                "{}: a corpus line runs apptainer or singularity",
                e.at
            );
        }
        total += c.entries.len();
    }
    assert!(total >= 40, "{total} lines; the corpus holds at least 40");
}

#[test]
fn one_word_changed_replaces_only_the_command_word() {
    assert_eq!(
        one_word_changed("apptainer exec docker://ghcr.io/apptainer/lolcow cowsay"),
        "rfake exec docker://ghcr.io/apptainer/lolcow cowsay"
    );
    assert_eq!(
        one_word_changed("cat f | singularity exec a.sif x apptainer"),
        "cat f | rfake exec a.sif x rfake"
    );
    assert_eq!(one_word_changed("apptainers x"), "apptainers x");
    assert!(matches("a[..]c", "abbc"));
    assert!(!matches("a[..]c", "abbd"));
    assert!(matches("[..]", ""));
}

#[test]
fn apptainer_lines_run_with_one_word_changed() {
    run_corpus("corpus.txt");
}

/// The flags of part F (issue 14): their lines are read once `rfake exec
/// --help` shows any of these, and must then all pass.
const F_FLAGS: &[&str] = &[
    "--containall",
    "--no-mount",
    "--mount",
    "--workdir",
    "--pid",
];

#[test]
fn apptainer_lines_with_part_f_flags_run_once_f_has_landed() {
    if setup().is_none() {
        return;
    }
    let help = rfake(&tag("corpus-help"), &["exec", "--help"]);
    let help = stdout(&help);
    let landed: Vec<&&str> = F_FLAGS
        .iter()
        .filter(|f| help.contains(&format!("{f} ")) || help.contains(&format!("{f}\n")))
        .collect();
    if landed.is_empty() {
        // Not a skip: these lines wait for a feature that is not merged yet,
        // and the test says so. Once F lands this runs them all.
        eprintln!("corpus-f.txt: part F's flags are not in `rfake exec --help` yet: not read");
        return;
    }
    run_corpus("corpus-f.txt");
}
