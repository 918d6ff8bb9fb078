//! The documentation as tests: every ```console block of README.md and
//! docs/*.md is run as the unprivileged test user and its output compared;
//! the option tables, configuration keys and man pages of the docs are
//! checked against the program in both directions; every example job script
//! is run by a test.
//!
//! The conventions the docs follow (fresh home per block, what varies, the
//! markers) are in tests/transcripts/README.md.
//!
//! Why a runner of our own rather than trycmd/snapbox: a block is a shell
//! session (`cd`, pipes, a job started with `&` and killed by `kill %1` on
//! the next line), which trycmd cannot run; and the docs show realistic
//! values (`rfake[4242]:`, `11.0µs`, `/home/rfaketest`) that both sides are
//! normalised from, where snapbox's redactions need `[..]`-style
//! placeholders written into the docs and apply to the actual side only.

mod common;

#[path = "transcripts/markdown.rs"]
mod markdown;
#[path = "transcripts/matching.rs"]
mod matching;
#[path = "transcripts/session.rs"]
mod session;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a block on the test registry may run: a first pull of the
/// Debian image converts ~230 MB to a gzip SquashFS (about 40 s of CPU in a
/// debug build, more on a loaded machine).
const REGISTRY_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a block on the Slurm test cluster may run.
const SLURM_BLOCK_TIMEOUT: Duration = Duration::from_secs(150);

/// The directory holding README.md, docs/, tests/transcripts/ and
/// slurm/examples/: RFAKE_TEST_DOCS (tests/run.sh copies them to its stage,
/// as the checkout may not be readable by the test user), else the checkout.
fn docs_root() -> Option<PathBuf> {
    let dir = std::env::var_os("RFAKE_TEST_DOCS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if std::fs::read_to_string(dir.join("README.md")).is_ok() && dir.join("docs").is_dir() {
        Some(dir)
    } else {
        missing(&format!(
            "the documents (README.md, docs/) in {} (set RFAKE_TEST_DOCS)",
            dir.display()
        ));
        None
    }
}

/// README.md and docs/*.md, as (path shown in reports, text).
fn documents(root: &Path) -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    names.sort();
    names.insert(0, "README.md".to_string());
    names
        .into_iter()
        .map(|n| {
            let text =
                std::fs::read_to_string(root.join(&n)).unwrap_or_else(|e| panic!("read {n}: {e}"));
            (n, text)
        })
        .collect()
}

/// Every parsed document; a parse error fails the test that asked.
fn parsed(root: &Path) -> Vec<(String, markdown::Doc)> {
    documents(root)
        .into_iter()
        .map(|(name, text)| {
            let doc = markdown::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, doc)
        })
        .collect()
}

/// Images, archives, recipes and example job scripts a block may name.
fn assets(root: &Path) -> Vec<session::Asset> {
    let mut out = Vec::new();
    let mut add_dir = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep(&name) {
                out.push(session::Asset {
                    name,
                    source: e.path(),
                });
            }
        }
    };
    if let Some(images) = images_dir() {
        add_dir(&images, &|_| true);
    }
    if let Some(sif) = sif_dir() {
        add_dir(&sif, &|n| n.ends_with(".sif"));
    }
    if let Some(oci) = std::env::var_os("RFAKE_TEST_OCI") {
        add_dir(Path::new(&oci), &|_| true);
    }
    if let Some(mpi) = std::env::var_os("RFAKE_MPI_IMAGE") {
        out.push(session::Asset {
            name: "mpi.sqfs".into(),
            source: mpi.into(),
        });
    }
    let images_src = match std::env::var_os("RFAKE_TEST_RECIPES") {
        Some(r) => PathBuf::from(r).join(".."),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("images"),
    };
    if let Ok(src) = images_src.canonicalize() {
        out.push(session::Asset {
            name: "images".into(),
            source: src,
        });
    }
    out.push(session::Asset {
        name: "slurm".into(),
        source: root.join("slurm"),
    });
    out
}

fn world(root: &Path) -> session::World {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .expect("the test user's name");
    let slurm_conf = std::env::var_os("RFAKE_SLURM_CONF")
        .map(PathBuf::from)
        .filter(|c| c.is_file());
    session::World {
        bin: rfake_bin(),
        root: tempfile::Builder::new()
            .prefix("transcripts-")
            .tempdir_in(home())
            .expect("a directory under $HOME"),
        fixtures: root.join("tests/transcripts/home"),
        assets: assets(root),
        user,
        uid: uid.as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        slurm_conf,
        registry: std::env::var("RFAKE_TEST_REGISTRY")
            .ok()
            .filter(|r| !r.is_empty()),
    }
}

#[derive(Default)]
struct Tally {
    run: usize,
    passed: usize,
    failed: usize,
    not_runnable: BTreeMap<String, usize>,
    skipped: BTreeMap<String, usize>,
    report: String,
}

impl Tally {
    fn summary(&self) -> String {
        let nr: usize = self.not_runnable.values().sum();
        let list = |m: &BTreeMap<String, usize>| {
            let mut v: Vec<(&String, &usize)> = m.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "transcripts: {} run, {} passed, {} failed, {nr} not runnable",
            self.run, self.passed, self.failed
        );
        if nr > 0 {
            write!(s, " ({})", list(&self.not_runnable)).unwrap();
        }
        let skipped: usize = self.skipped.values().sum();
        if skipped > 0 {
            write!(s, ", {skipped} skipped ({})", list(&self.skipped)).unwrap();
        }
        s
    }

    fn fail(&mut self, at: &str, what: &str) {
        writeln!(self.report, "{at}: {}", what.trim_end()).unwrap();
    }

    /// A block (or document) that could not even be run: a failed one.
    fn error(&mut self, at: &str, what: &str) {
        self.run += 1;
        self.failed += 1;
        self.fail(at, what);
    }
}

fn shown(cmd: &str) -> String {
    format!("$ {}", cmd.replace('\n', "\n  "))
}

/// Run one console block and compare; the mismatches go to `tally.report`.
fn check_block(
    w: &session::World,
    tally: &mut Tally,
    file: &str,
    block: &markdown::Block,
    marks: &session::Marks,
    files: &[(String, String)],
    n: usize,
) {
    let at = format!("{file}:{}", block.line);
    let cmds = match session::commands(&block.lines) {
        Ok(c) => c,
        Err(e) => {
            tally.error(&at, &e);
            return;
        }
    };
    let said: String = cmds.iter().map(|c| format!("{}\n", c.text)).collect();
    let mut lacking = Vec::new();
    if marks.needs_slurm && w.slurm_conf.is_none() {
        lacking.push("no Slurm cluster: RFAKE_SLURM_CONF");
    }
    if marks.needs_registry && w.registry.is_none() {
        lacking.push("no test registry: RFAKE_TEST_REGISTRY");
    }
    if session::mentions(&said, "mpi.sqfs") && !w.assets.iter().any(|a| a.name == "mpi.sqfs") {
        lacking.push("no MPI image: RFAKE_MPI_IMAGE");
    }
    if !lacking.is_empty() {
        // Skipped locally, counted; under CI a failure like any other.
        if under_ci() {
            tally.error(
                &at,
                &format!("prerequisite missing under CI=true: {}", lacking.join(", ")),
            );
        } else {
            *tally.skipped.entry(lacking.join(", ")).or_default() += 1;
        }
        return;
    }
    tally.run += 1;
    let timeout = if marks.needs_slurm {
        SLURM_BLOCK_TIMEOUT
    } else if marks.needs_registry {
        REGISTRY_BLOCK_TIMEOUT
    } else {
        BLOCK_TIMEOUT
    };
    let name = format!("b{n:03}");
    let out = w.run(&name, &cmds, files, marks.needs_slurm, timeout);
    let mut ok = true;
    for (i, c) in cmds.iter().enumerate() {
        let cat = format!("{file}:{}", c.line);
        let Some(actual) = out.outputs.get(i) else {
            break;
        };
        let mut what = Vec::new();
        if !matching::matches(&c.expected, actual, marks.unordered) {
            what.push(format!(
                "  output (-expected +actual):\n{}",
                matching::diff(&c.expected, actual)
            ));
        }
        let status = out.statuses[i];
        if status != 0 && !cmds.get(i + 1).is_some_and(session::shows_status) {
            what.push(format!(
                "  exit status {status}, which the block does not show \
                 (a `$ echo $?` line after it would)\n"
            ));
        }
        if !what.is_empty() {
            ok = false;
            tally.fail(&cat, &format!("{}\n{}", shown(&c.text), what.concat()));
        }
    }
    if let Some(p) = &out.problem {
        ok = false;
        tally.fail(&at, p);
    }
    if ok {
        tally.passed += 1;
    } else {
        tally.failed += 1;
    }
}

/// Print a line past the test harness's capture: the summary is wanted in
/// tests/run.sh's output whether the test passes or fails.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn console_transcripts() {
    let Some(root) = docs_root() else { return };
    if nix::unistd::geteuid().is_root() {
        missing("an unprivileged user (tests/run.sh runs the transcripts as one)");
        return;
    }
    let start = Instant::now();
    let w = world(&root);
    let mut tally = Tally::default();
    let mut n = 0;
    for (file, text) in documents(&root) {
        let doc = match markdown::parse(&text) {
            Ok(d) => d,
            Err(e) => {
                tally.error(&file, &e);
                continue;
            }
        };
        let mut files: Vec<(String, String)> = Vec::new();
        let mut files_at = None;
        for block in &doc.blocks {
            let at = format!("{file}:{}", block.line);
            let marks = match session::parse_marks(block.marker.as_deref(), block.is_console()) {
                Ok(m) => m,
                Err(e) => {
                    tally.error(&at, &e);
                    continue;
                }
            };
            if !block.is_console() {
                if let Some(path) = marks.file {
                    files.push((path, block.text()));
                    files_at.get_or_insert(at);
                }
                continue;
            }
            let files_here = std::mem::take(&mut files);
            files_at = None;
            if let Some((kind, _)) = &marks.not_runnable {
                *tally.not_runnable.entry(kind.clone()).or_default() += 1;
                continue;
            }
            n += 1;
            check_block(&w, &mut tally, &file, block, &marks, &files_here, n);
        }
        if let Some(at) = files_at {
            tally.error(&at, "a `file` marker without a console block after it");
        }
    }
    let summary = tally.summary();
    say(&summary);
    say(&format!("transcripts: took {:.1?}", start.elapsed()));
    if !tally.report.is_empty() {
        say(&tally.report);
        panic!("{summary}: the documents disagree with the program (see above)");
    }
}

// --- Options, configuration keys, man pages ---------------------------------

/// The flags an option-table row documents: the first word of each
/// backquoted span of its first cell that starts with `-`.
fn row_flags(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| span.split_whitespace().next())
        .filter(|w| w.starts_with('-'))
        .map(|w| w.trim_end_matches([',', '=']).to_string())
        .collect()
}

/// The flags of a clap command's own arguments (not positionals, not the
/// ones clap adds: --help, --version).
fn clap_flags(cmd: &clap::Command) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in cmd.get_arguments() {
        if a.is_positional() || ["help", "version"].contains(&a.get_id().as_str()) {
            continue;
        }
        if let Some(s) = a.get_short() {
            out.insert(format!("-{s}"));
        }
        if let Some(l) = a.get_long() {
            out.insert(format!("--{l}"));
        }
    }
    out
}

/// The flags `rfake SUB --help` lists (its Options section).
fn help_flags(sub: &str) -> BTreeSet<String> {
    let mut args: Vec<&str> = sub.split_whitespace().collect();
    args.push("--help");
    let out = rfake("transcripts-help", &args);
    assert_status(&out, 0);
    let text = stdout(&out);
    let mut flags = BTreeSet::new();
    let mut in_options = false;
    for line in text.lines() {
        if line.starts_with("Options:") {
            in_options = true;
            continue;
        }
        if !line.is_empty() && !line.starts_with(' ') {
            in_options = false;
        }
        // An option starts at column 2 or 6; a description's continuation
        // lines (which may start with `-vv`) further right.
        let t = line.trim_start();
        if !in_options || !t.starts_with('-') || line.len() - t.len() > 6 {
            continue;
        }
        let head = t.split("  ").next().unwrap_or_default();
        for piece in head.split(", ") {
            let w = piece.split_whitespace().next().unwrap_or_default();
            // `--writable-tmpfs[=<SIZE>]`: an optional value.
            let w = w.split("[=").next().unwrap_or_default();
            flags.insert(w.trim_end_matches("...").to_string());
        }
    }
    flags
}

/// The flags a man page lists under OPTIONS.
fn man_flags(page: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\\fB(\\-\\-[a-z0-9\\-]+|\\-[A-Za-z])\\fR").unwrap();
    let mut flags = BTreeSet::new();
    let mut lines = page.lines().skip_while(|l| !l.starts_with(".SH OPTIONS"));
    while let Some(l) = lines.next() {
        if l.starts_with(".SH") && !l.starts_with(".SH OPTIONS") {
            break;
        }
        if l == ".TP" {
            if let Some(head) = lines.next() {
                for m in re.captures_iter(head) {
                    flags.insert(m[1].replace('\\', ""));
                }
            }
        }
    }
    flags
}

/// The options tables: subcommand → (flags, where documented).
fn option_tables(docs: &[(String, markdown::Doc)]) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (file, doc) in docs {
        for t in &doc.tables {
            let Some(subs) = t.marker.strip_prefix("options:") else {
                continue;
            };
            for (i, row) in t.rows.iter().enumerate() {
                let at = format!("{file}:{}", t.line + 2 + i);
                let flags = row_flags(&row[0]);
                assert!(
                    !flags.is_empty(),
                    "{at}: a row of an options table names no option"
                );
                for sub in subs.split_whitespace() {
                    for f in &flags {
                        out.entry(sub.to_string())
                            .or_default()
                            .push((f.clone(), at.clone()));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_flag_is_documented_and_every_documented_flag_exists() {
    let Some(root) = docs_root() else { return };
    let docs = parsed(&root);
    let tables = option_tables(&docs);
    let cli = rfake::command();
    let globals = clap_flags(&cli);
    let mut problems = Vec::new();
    let mut documented_globals = BTreeSet::new();
    let mut subs = BTreeSet::new();
    // Nested subcommands (`rfake cache list`) are named `cache-list`, as
    // their man pages are; a parent with subcommands has no table of its own.
    // (table name, the words that name it on the command line, command)
    let mut all: Vec<(String, String, &clap::Command)> = Vec::new();
    for sub in cli.get_subcommands() {
        if sub.has_subcommands() {
            for leaf in sub.get_subcommands() {
                all.push((
                    format!("{}-{}", sub.get_name(), leaf.get_name()),
                    format!("{} {}", sub.get_name(), leaf.get_name()),
                    leaf,
                ));
            }
            subs.insert(sub.get_name().to_string());
        } else {
            all.push((sub.get_name().to_string(), sub.get_name().to_string(), sub));
        }
    }
    for (name, words, sub) in all {
        subs.insert(name.clone());
        // Global options (-v) are copied into every subcommand; the top
        // level's table documents them.
        let own: BTreeSet<String> = clap_flags(sub).difference(&globals).cloned().collect();
        let documented = tables.get(&name).cloned().unwrap_or_default();
        let doc_set: BTreeSet<String> = documented.iter().map(|(f, _)| f.clone()).collect();
        if own.is_empty() && documented.is_empty() {
            continue;
        }
        if documented.is_empty() {
            problems.push(format!(
                "rfake {name} has options ({own:?}) but no table marked `<!-- options: {name} -->` documents them"
            ));
            continue;
        }
        for f in own.difference(&doc_set) {
            problems.push(format!(
                "rfake {name} {f}: not in the options table of `{name}`"
            ));
        }
        for (f, at) in &documented {
            if globals.contains(f) {
                documented_globals.insert(f.clone());
            } else if !own.contains(f) {
                problems.push(format!(
                    "{at}: documents {f} for `rfake {name}`, which has no such option"
                ));
            }
        }
        // What the program shows: --help, and the help text agrees.
        let mut want: BTreeSet<String> = own.union(&globals).cloned().collect();
        want.extend(["-h".to_string(), "--help".to_string()]);
        if !sub.is_hide_set() {
            let help = help_flags(&words);
            if help != want {
                problems.push(format!(
                    "rfake {name} --help lists {help:?}, the definition has {want:?}"
                ));
            }
        }
    }
    for sub in tables.keys() {
        if !subs.contains(sub) {
            problems.push(format!(
                "an options table names `{sub}`, which is no subcommand of rfake"
            ));
        }
    }
    for g in globals.difference(&documented_globals) {
        problems.push(format!("the global option {g} is in no options table"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn man_pages_match_the_docs() {
    let Some(root) = docs_root() else { return };
    let docs = parsed(&root);
    let tables = option_tables(&docs);
    let dir = tempfile::tempdir().unwrap();
    let out = rfake("transcripts-man", &["man", dir.path().to_str().unwrap()]);
    assert_status(&out, 0);
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut listed: Vec<String> = docs
        .iter()
        .flat_map(|(_, d)| d.tables.iter())
        .filter(|t| t.marker == "man-pages")
        .flat_map(|t| t.rows.iter().flat_map(|r| row_names(&r[0])))
        .collect();
    listed.sort();
    let mut problems = Vec::new();
    if listed != written {
        problems.push(format!(
            "`rfake man DIR` writes {written:?}; the table marked `<!-- man-pages -->` lists {listed:?}"
        ));
    }
    let globals = clap_flags(&rfake::command());
    for page in &written {
        let Some(sub) = page
            .strip_prefix("rfake-")
            .and_then(|p| p.strip_suffix(".1"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        let in_page = man_flags(&text);
        let mut documented: BTreeSet<String> = tables
            .get(sub)
            .map(|v| v.iter().map(|(f, _)| f.clone()).collect())
            .unwrap_or_default();
        documented.extend(globals.iter().cloned());
        documented.extend(["-h".to_string(), "--help".to_string()]);
        if in_page != documented {
            problems.push(format!(
                "{page} lists {in_page:?}; the docs' options tables (with -v, -h) give {documented:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The names in backquotes in a table cell.
fn row_names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    use rfake::ConfigKey as Key;
    let Some(root) = docs_root() else { return };
    let docs = parsed(&root);
    let keys: BTreeSet<String> = Key::ALL.iter().map(|k| k.name().to_string()).collect();
    let mut problems = Vec::new();

    // The admin guide's table of keys, with who may set each.
    let tables: Vec<(&String, &markdown::Table)> = docs
        .iter()
        .flat_map(|(f, d)| d.tables.iter().map(move |t| (f, t)))
        .filter(|(_, t)| t.marker == "config-keys")
        .collect();
    assert!(
        !tables.is_empty(),
        "no table is marked `<!-- config-keys -->`"
    );
    let mut in_tables = BTreeSet::new();
    for (file, t) in &tables {
        for (i, row) in t.rows.iter().enumerate() {
            let at = format!("{file}:{}", t.line + 2 + i);
            let name = row_names(&row[0]).into_iter().next().unwrap_or_default();
            match Key::from_name(&name) {
                None => problems.push(format!(
                    "{at}: documents key `{name}`, which rfake does not have"
                )),
                Some(k) => {
                    let who = if k.is_policy() { "site" } else { "both" };
                    if row.get(3).map(String::as_str) != Some(who) {
                        problems.push(format!(
                            "{at}: `{name}` may be set by {who}, the table says {:?}",
                            row.get(3)
                        ));
                    }
                }
            }
            in_tables.insert(name);
        }
    }
    for k in keys.difference(&in_tables) {
        problems.push(format!(
            "key `{k}`: not in the table marked `<!-- config-keys -->`"
        ));
    }

    // docs/rfake.toml.example: every key, commented out.
    let example = std::fs::read_to_string(root.join("docs/rfake.toml.example")).unwrap();
    let re = regex::Regex::new(r"(?m)^# ([a-z_]+) = ").unwrap();
    let in_example: BTreeSet<String> = re
        .captures_iter(&example)
        .map(|c| c[1].to_string())
        .collect();
    compare(
        &mut problems,
        "docs/rfake.toml.example (`# KEY = ` lines)",
        &in_example,
        &keys,
    );

    // `rfake config` prints every key.
    let out = rfake("transcripts-config", &["config"]);
    assert_status(&out, 0);
    let re = regex::Regex::new(r"(?m)^(?:# )?([a-z_]+)(?: =|: )").unwrap();
    let printed: BTreeSet<String> = re
        .captures_iter(&stdout(&out))
        .map(|c| c[1].to_string())
        .filter(|k| k != "policy")
        .collect();
    compare(&mut problems, "`rfake config`", &printed, &keys);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A problem for each key `what` lacks or has beyond `keys`.
fn compare(
    problems: &mut Vec<String>,
    what: &str,
    has: &BTreeSet<String>,
    keys: &BTreeSet<String>,
) {
    for k in keys.difference(has) {
        problems.push(format!("{what}: lacks key `{k}`"));
    }
    for k in has.difference(keys) {
        problems.push(format!("{what}: has `{k}`, which rfake does not have"));
    }
}

#[test]
fn every_example_job_script_is_run_by_a_test() {
    let Some(root) = docs_root() else { return };
    let tests = [include_str!("slurm.rs"), include_str!("mpi.rs")];
    let mut names: Vec<String> = std::fs::read_dir(root.join("slurm/examples"))
        .expect("slurm/examples")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sbatch"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    let untested: Vec<&String> = names
        .iter()
        .filter(|n| {
            let path = format!("slurm/examples/{n}");
            !tests.iter().any(|t| t.contains(&path))
        })
        .collect();
    assert!(
        untested.is_empty(),
        "example job scripts no test runs (tests/slurm.rs and tests/mpi.rs include_str! the ones they run): {untested:?}"
    );
}
