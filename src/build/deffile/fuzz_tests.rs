//! `fuzz_deffile`: definition files ([`super::parse::definition`]).
//!
//! Inputs, structure-aware: files of one to three stages built from the
//! real grammar: `Bootstrap:` lines in column 1 or indented, in any case,
//! with the agents rfake reads, those it refuses and unknown ones; header
//! keys Apptainer knows and others, with values empty, commented, continued
//! by `\`, holding `docker://` or `{{ ARG }}`; section lines with every
//! section name (read, refused, SCIF, unknown, `%%`, a bare `%`) in several
//! cases and with arguments (`-c SHELL`, `from STAGE`, comments, junk); and
//! bodies of script, `%files` and `%labels` lines with quotes, comments,
//! tabs, CRs, NULs, control characters, a `%` or `bootstrap:` starting a
//! line. And byte mutations of a two-stage seed, aimed at the colons,
//! percent signs and quotes.
//!
//! Checked, besides "no panic": an error is one line that starts with the
//! file's name, is exit 65, and points at a line of the file; a definition
//! that parses keeps the text, has at least one stage, unique stage names,
//! `%files from` naming an earlier stage, no blank script, no empty path,
//! and [`super::looks_like_definition`] says yes to it.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::select;

use super::parse;
use super::*;
use crate::fuzz;

const FILE: &str = "fuzz/app.def";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A `Bootstrap:` line and the header lines its agent needs (mostly all
/// of them), or an odd agent.
fn bootstrap_lines() -> impl Strategy<Value = Vec<String>> {
    let key = prop_oneof![
        6 => Just("Bootstrap:".to_string()),
        1 => select(strings(&[
            "bootstrap:", "BOOTSTRAP:", "  Bootstrap:", "Bootstrap :", "Bootstrap",
        ])),
    ];
    let agent: BoxedStrategy<(String, Vec<String>)> = prop_oneof![
        8 => select(vec![
            ("docker", vec!["From: alpine:3.19"]),
            ("docker", vec!["From: debian:12", "Registry: quay.io", "Namespace: team"]),
            ("localimage", vec!["From: ../base.sif"]),
            ("oci-archive", vec!["From: /tmp/img.tar"]),
            ("docker-archive", vec!["From: saved.tar"]),
            ("oras", vec!["From: ghcr.io/a/b:1"]),
            ("scratch", vec![]),
            ("debootstrap", vec!["OSVersion: bookworm", "MirrorURL: http://deb.debian.org/debian", "Include: a,b c"]),
        ])
        .prop_map(|(a, h)| (a.to_string(), strings(&h))),
        1 => select(strings(&[
            "Docker", "yum", "library", "oci", "", "frob", "docker # comment", "docker\\",
        ]))
        .prop_map(|a| (a, strings(&["From: x"]))),
    ]
    .boxed();
    (
        key,
        agent,
        proptest::bool::weighted(0.85),
        proptest::sample::select(vec![None, Some("one"), Some("two"), Some("one")]),
    )
        .prop_map(|(key, (agent, mut headers), keep, stage)| {
            if !keep && !headers.is_empty() {
                headers.pop();
            }
            let mut lines = vec![format!("{key} {agent}")];
            lines.extend(headers);
            lines.extend(stage.map(|s| format!("Stage: {s}")));
            lines
        })
}

fn header_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        6 => select(strings(&[
            "From", "from", "FROM", "Stage", "OSVersion", "MirrorURL", "Include", "Registry",
            "Namespace", "IncludeCmd", "Fingerprints", "OtherURL1", "otherurl", "Target",
        ])),
        1 => select(strings(&["Colour", "", " ", "Fr om", "é", "a\u{1b}b"])),
    ];
    let value = prop_oneof![
        6 => select(strings(&[
            "alpine:3.19", "debian:12", "one", "two", "/tmp/base.sif", "../img.tar",
            "http://deb.debian.org/debian", "bookworm", "a,b c", "yes",
        ])),
        2 => select(strings(&[
            "", "# only a comment", "docker://alpine", "oras://x", "{{ VERSION }}", "a\\",
            "a\\n\\", "\\", "x # y", "a:b:c", "\u{0}", "\r", "ünï",
        ])),
        1 => "[ -~]{0,12}",
    ];
    prop_oneof![
        3 => select(strings(&["", "# comment", "  ", "IncludeCmd: no", "\t#x"])),
        4 => (key, value).prop_map(|(k, v)| format!("{k}: {v}")),
        1 => select(strings(&["just words", ":"])),
    ]
}

/// Lines that are odd in any section.
fn odd_line() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(strings(&[
            "a b c", "\"unclosed", "'single' q", "\"a\"b", "a\"b", "\"\" x", "%s x", "% ",
            "bootstrap: docker", "Bootstrap: scratch", "echo {{ X }}", "# {{ X }}",
            "{{ .Id }}", "x\u{0}y", "tab\there", "\u{1b}[31m", "é ü", "a # b", "\r",
        ])),
        2 => "[ -~\t]{0,20}",
        1 => any::<String>().prop_map(|s| s.chars().take(16).collect()),
    ]
    .boxed()
}

/// A body for the section `name`: mostly lines that fit it.
fn body(name: &str) -> BoxedStrategy<Vec<String>> {
    let fitting: Vec<&str> = match name.to_lowercase().as_str() {
        "files" => vec![
            "src /dst",
            "\"a b\" \"c d\"",
            "file1",
            "\tx.txt /opt/x.txt  # why",
            "# comment",
            "",
        ],
        "labels" => vec![
            "Author Alice",
            "Version\tv1",
            "Empty",
            "Author Bob",
            "# c",
            "",
        ],
        _ => vec![
            "    apt-get update && apt-get install -y dbus",
            "echo hi",
            "  export A=1",
            "#!/bin/bash",
            "exit 0",
            "",
            "# comment",
            "docker inspect -f '{{ .Id }}' x",
        ],
    };
    let line = prop_oneof![12 => select(strings(&fitting)), 1 => odd_line()];
    proptest::collection::vec(line, 0..4).boxed()
}

fn section() -> impl Strategy<Value = Vec<String>> {
    let name = prop_oneof![
        10 => select(strings(&[
            "post", "files", "environment", "runscript", "startscript", "test", "labels",
            "help",
        ])),
        1 => select(strings(&[
            "POST", "Files", "setup", "pre", "arguments", "appinstall", "apprun", "unknown",
            "", "%post", "post-", "fi\u{7}les",
        ])),
    ];
    let args = prop_oneof![
        12 => Just(String::new()),
        2 => select(strings(&["-c /bin/bash", "from one", "# comment", "from one # c"])),
        1 => select(strings(&["-c", "-x", "from two", "from", "from a b", "x"])),
        1 => "[ -~]{0,10}",
    ];
    let lead = prop_oneof![8 => Just("%".to_string()), 1 => select(strings(&["  %", "%%"]))];
    (lead, name, args).prop_flat_map(|(l, n, a)| {
        let line = if a.is_empty() {
            format!("{l}{n}")
        } else {
            format!("{l}{n} {a}")
        };
        body(&n).prop_map(move |body| {
            let mut lines = vec![line.clone()];
            lines.extend(body);
            lines
        })
    })
}

/// One stage: an optional comment, the Bootstrap lines (mostly), now and
/// then another header line, then sections with bodies.
fn stage_text() -> impl Strategy<Value = Vec<String>> {
    (
        proptest::option::weighted(0.95, bootstrap_lines()),
        proptest::collection::vec(header_line(), 0..2),
        proptest::collection::vec(section(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(bootstrap, headers, sections, comment)| {
            let mut lines = Vec::new();
            if comment {
                lines.push("# a stage".to_string());
            }
            lines.extend(bootstrap.unwrap_or_default());
            lines.extend(headers);
            lines.extend(sections.concat());
            lines
        })
}

fn document() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(stage_text(), 1..=3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(stages, crlf, final_newline)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = stages.concat().join(nl);
            if final_newline {
                text.push_str(nl);
            }
            text.into_bytes()
        })
}

const SEED: &str = "\
Bootstrap: docker
From: golang:1.22
Stage: one

%files
    \"hello world.go\" /src/hello.go
    go.mod

%post -c /bin/bash
    cd /src && go build

Bootstrap: localimage
From: ../base.sif
Stage: two

%files from one
    /src/hello /bin/hello

%environment
    export A=1
%runscript
    exec hello \"$@\"
%labels
    Author Alice
%help
    Says hello.
%test
    hello
";

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let hot = SEED
        .match_indices([':', '%', '"', '\n'])
        .flat_map(|(i, _)| [i, i + 1])
        .collect();
    fuzz::mutations(SEED.as_bytes().to_vec(), hot, 6)
}

fn check(bytes: &[u8]) {
    let looks = looks_like_definition(bytes);
    let definition = match parse::definition(Path::new(FILE), bytes) {
        Ok(d) => d,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains(['\n', '\r']), "not one line: {message:?}");
            assert!(
                message.starts_with(&format!("{FILE}:")),
                "does not name the file: {message}"
            );
            assert_eq!(e.exit_kind(), ExitKind::BadImage, "{message}");
            let DefError::Syntax { line, section, .. } = &e else {
                panic!("not a syntax error: {message}");
            };
            let lines = bytes.split(|&b| b == b'\n').count();
            assert!(
                (1..=lines).contains(line),
                "line {line} of {lines}: {message}"
            );
            assert!(section == "Header" || section.starts_with('%'), "{message}");
            return;
        }
    };
    assert_eq!(definition.text.as_bytes(), bytes);
    assert!(!definition.stages.is_empty());
    assert!(looks, "parsed, yet not recognised: {:?}", definition.text);
    let mut names: Vec<&str> = Vec::new();
    for stage in &definition.stages {
        for block in &stage.files {
            if let Some(from) = &block.from {
                assert!(names.contains(&from.as_str()), "from {from}: {names:?}");
            }
            for f in &block.files {
                assert!(!f.src.is_empty() && f.dst.as_deref() != Some(""));
            }
        }
        for script in [
            &stage.post,
            &stage.environment,
            &stage.runscript,
            &stage.startscript,
            &stage.test,
        ]
        .into_iter()
        .flatten()
        {
            assert!(!script.text.trim().is_empty());
            assert!(!script.text.contains('\0'));
        }
        if let Some(name) = &stage.name {
            assert!(!names.contains(&name.as_str()), "stage {name} twice");
            names.push(name);
        }
        let keys: Vec<&str> = stage.labels.iter().map(|(k, _)| k.as_str()).collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(!k.is_empty() && !keys[..i].contains(k), "labels {keys:?}");
        }
    }
}

#[test]
fn fuzz_deffile() {
    fuzz::run(
        "deffile",
        prop_oneof![4 => document(), 1 => mutated()],
        |bytes| bytes.clone(),
        |bytes| check(bytes),
    );
}

#[test]
fn the_seed_parses() {
    let d = parse::definition(Path::new(FILE), SEED.as_bytes()).unwrap();
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[1].files[0].from.as_deref(), Some("one"));
}
