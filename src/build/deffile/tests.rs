use std::path::{Path, PathBuf};

use super::*;

const FILE: &str = "dir/app.def";

fn ok(text: &str) -> Definition {
    parse::definition(Path::new(FILE), text.as_bytes())
        .unwrap_or_else(|e| panic!("{e}\n--- for ---\n{text}"))
}

fn one(text: &str) -> Stage {
    let mut d = ok(text);
    assert_eq!(d.stages.len(), 1, "{text}");
    d.stages.remove(0)
}

/// The error for `bytes`: one line, exit 65.
fn err_bytes(bytes: &[u8]) -> String {
    let e = parse::definition(Path::new(FILE), bytes)
        .map(|d| panic!("parsed: {d:?}"))
        .unwrap_err();
    let message = e.to_string();
    assert!(!message.contains(['\n', '\r']), "not one line: {message:?}");
    assert_eq!(e.exit_kind(), ExitKind::BadImage, "{message}");
    assert_eq!(e.exit_kind().code(), 65);
    message
}

fn err(text: &str) -> String {
    err_bytes(text.as_bytes())
}

/// The error is `FILE:LINE: SECTION: ...` and holds `needle`.
fn assert_err(text: &str, line: usize, section: &str, needle: &str) {
    let message = err(text);
    let start = format!("{FILE}:{line}: {section}: ");
    assert!(message.starts_with(&start), "{message:?} vs {start:?}");
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// The example of Apptainer's documentation ("Definition Files"), cut to
/// what rfake reads.
const DOCS_EXAMPLE: &str = "\
Bootstrap: docker
From: ubuntu:22.04
Stage: build

%files
    /file1
    /file1 /opt

%environment
    export LISTEN_PORT=12345
    export LC_ALL=C

%post
    apt-get update && apt-get install -y netcat
    NOW=`date`
    echo \"export NOW=\\\"${NOW}\\\"\" >> $APPTAINER_ENVIRONMENT

%runscript
    echo \"Container was created $NOW\"
    echo \"Arguments received: $*\"
    exec echo \"$@\"

%startscript
    nc -lp $LISTEN_PORT

%test
    grep -q NAME=\\\"Ubuntu\\\" /etc/os-release
    if [ $? -eq 0 ]; then
        echo \"Container base is Ubuntu as expected.\"
    else
        echo \"Container base is not Ubuntu.\"
        exit 1
    fi

%labels
    Author Alice
    Version v0.0.1

%help
    This is a demo container used to illustrate a def file that uses all
    supported sections.
";

#[test]
fn the_documentation_example_reads_whole() {
    let d = ok(DOCS_EXAMPLE);
    assert_eq!(d.path, PathBuf::from(FILE));
    assert_eq!(d.text, DOCS_EXAMPLE);
    let s = &d.stages[0];
    assert_eq!(s.name.as_deref(), Some("build"));
    assert_eq!(s.header.bootstrap, Bootstrap::Docker("ubuntu:22.04".into()));
    assert_eq!(s.header.line, 1);
    assert_eq!(s.header.get("from").unwrap().line, 2);
    assert_eq!(
        s.files,
        vec![FilesBlock {
            from: None,
            line: 5,
            files: vec![
                FileLine {
                    src: "/file1".into(),
                    dst: None,
                    line: 6
                },
                FileLine {
                    src: "/file1".into(),
                    dst: Some("/opt".into()),
                    line: 7
                },
            ],
        }]
    );
    let env = s.environment.as_ref().unwrap();
    assert_eq!(
        env.text,
        "    export LISTEN_PORT=12345\n    export LC_ALL=C\n\n"
    );
    assert_eq!((env.line, env.shell.as_deref()), (9, None));
    let post = s.post.as_ref().unwrap();
    assert_eq!(post.line, 13);
    assert!(
        post.text
            .starts_with("    apt-get update && apt-get install -y netcat\n")
    );
    assert!(
        s.runscript
            .as_ref()
            .unwrap()
            .text
            .contains("exec echo \"$@\"\n")
    );
    assert_eq!(
        s.startscript.as_ref().unwrap().text,
        "    nc -lp $LISTEN_PORT\n\n"
    );
    assert!(s.test.as_ref().unwrap().text.contains("exit 1\n    fi\n"));
    assert_eq!(
        s.labels,
        vec![
            ("Author".into(), "Alice".into()),
            ("Version".into(), "v0.0.1".into())
        ]
    );
    assert!(s.help.as_ref().unwrap().starts_with("    This is a demo"));
}

#[test]
fn header_keys_in_any_case_with_comments_and_continuations() {
    let s = one("# a comment first\n\
         \n\
         BOOTSTRAP : docker\n\
         \x20  from:\talpine:3.19   # the base\n\
         RegIstry: quay.io\n\
         Namespace: team/\\\n\
         \x20 sub\n");
    assert_eq!(
        s.header.bootstrap,
        Bootstrap::Docker("quay.io/team/sub/alpine:3.19".into())
    );
    assert_eq!(s.header.line, 3);
    let keys: Vec<(&str, &str, usize)> = s
        .header
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.value.as_str(), k.line))
        .collect();
    assert_eq!(
        keys,
        [
            ("bootstrap", "docker", 3),
            ("from", "alpine:3.19", 4),
            ("registry", "quay.io", 5),
            ("namespace", "team/sub", 6),
        ]
    );
    // No section at all is fine: the base as it is.
    assert_eq!(s.post, None);
}

#[test]
fn a_continuation_keeps_a_written_newline() {
    let s = one(
        "Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: http://m/\nInclude: a\\n\\\nb\n",
    );
    assert_eq!(s.header.get("include").unwrap().value, "a\nb");
    match s.header.bootstrap {
        Bootstrap::Debootstrap { include, .. } => assert_eq!(include, ["a", "b"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_bootstrap_agent_rfake_reads() {
    let cases: [(&str, Bootstrap); 7] = [
        (
            "Bootstrap: localimage\nFrom: ../busybox_amd64.sif\n",
            Bootstrap::LocalImage("../busybox_amd64.sif".into()),
        ),
        (
            "Bootstrap: oci-archive\nFrom: /tmp/img.tar\n",
            Bootstrap::OciArchive("/tmp/img.tar".into()),
        ),
        (
            "Bootstrap: docker-archive\nFrom: saved.tar\n",
            Bootstrap::DockerArchive("saved.tar".into()),
        ),
        (
            "Bootstrap: docker\nFrom: debian:12\n",
            Bootstrap::Docker("debian:12".into()),
        ),
        (
            "Bootstrap: oras\nFrom: ghcr.io/a/b:1\n",
            Bootstrap::Oras("ghcr.io/a/b:1".into()),
        ),
        ("Bootstrap: scratch\n", Bootstrap::Scratch),
        (
            "Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: http://deb.debian.org/debian\n\
             Include: openssh-server,dbus  less\n",
            Bootstrap::Debootstrap {
                os_version: "bookworm".into(),
                mirror: "http://deb.debian.org/debian".into(),
                include: vec!["openssh-server".into(), "dbus".into(), "less".into()],
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(one(text).header.bootstrap, want, "{text}");
    }
    // IncludeCmd is accepted and has no effect, as in Apptainer.
    assert_eq!(
        one("Bootstrap: docker\nFrom: a\nIncludeCmd: yes\n")
            .header
            .bootstrap,
        Bootstrap::Docker("a".into())
    );
}

#[test]
fn header_errors_name_the_line_and_the_key() {
    let cases: [(&str, usize, &str); 16] = [
        (
            "Bootstrap: yum\nFrom: x\n",
            1,
            "Bootstrap: yum: yum bootstraps are not supported yet",
        ),
        (
            "Bootstrap: library\nFrom: x\n",
            1,
            "library is not supported",
        ),
        (
            "Bootstrap: Docker\nFrom: x\n",
            1,
            "unknown bootstrap agent `Docker`",
        ),
        (
            "Bootstrap: frob\n",
            1,
            "unknown bootstrap agent `frob` (rfake reads localimage,",
        ),
        ("Bootstrap:\nFrom: x\n", 1, "Bootstrap: is empty"),
        (
            "Bootstrap: docker\n",
            1,
            "Bootstrap: docker needs a From: line",
        ),
        (
            "Bootstrap: docker\nFrom:   # nothing\n",
            2,
            "From: is empty",
        ),
        (
            "Bootstrap: docker\nFrom: docker://alpine\n",
            2,
            "without `docker://`",
        ),
        (
            "Bootstrap: debootstrap\nMirrorURL: http://m\n",
            1,
            "needs a OSVersion: line",
        ),
        (
            "Bootstrap: docker\nFrom: a\nOSVersion: 12\n",
            3,
            "OSVersion: is not used by Bootstrap: docker",
        ),
        (
            "Bootstrap: scratch\nFrom: a\n",
            2,
            "From: is not used by Bootstrap: scratch",
        ),
        (
            "Bootstrap: localimage\nFrom: a.sif\nFingerprints: 12AB\n",
            3,
            "does not verify SIF signatures",
        ),
        (
            "Bootstrap: docker\nFrom: a\nColour: blue\n",
            3,
            "unknown header keyword `Colour`",
        ),
        (
            "Bootstrap: docker\nFrom: a\njust words\n",
            3,
            "`just words` is not a `Key: value` line",
        ),
        (
            "Bootstrap: docker\nFrom: a\nfrom: b\n",
            3,
            "From: given again (first at line 2)",
        ),
        ("Bootstrap: docker\nFrom: a\nStage:\n", 3, "Stage: is empty"),
    ];
    for (text, line, needle) in cases {
        assert_err(text, line, "Header", needle);
    }
    assert_err(
        "From: alpine\n%post\n  true\n",
        1,
        "Header",
        "no Bootstrap: in this stage's header",
    );
}

#[test]
fn section_names_in_any_case_comments_after_them_and_joined_repeats() {
    let s = one("Bootstrap: scratch\n\
         %POST   # install\n\
         a\n\
         %Runscript\n\
         r\n\
         %post\n\
         b\n");
    let post = s.post.unwrap();
    assert_eq!((post.text.as_str(), post.line), ("a\nb\n", 2));
    assert_eq!(s.runscript.unwrap().text, "r\n");
}

#[test]
fn a_blank_section_is_absent_and_crlf_is_read() {
    let s = one("Bootstrap: scratch\r\n%post\r\n\r\n   \r\n%runscript\r\necho hi\r\n%help\r\n\r\n");
    assert_eq!(s.post, None);
    assert_eq!(s.help, None);
    let r = s.runscript.unwrap();
    assert_eq!((r.text.as_str(), r.line), ("echo hi\n", 5));
}

#[test]
fn post_takes_a_shell() {
    let s = one("Bootstrap: scratch\n%post -c /bin/bash -l # login shell\necho $0\n");
    assert_eq!(s.post.unwrap().shell.as_deref(), Some("/bin/bash -l"));
    assert_err(
        "Bootstrap: scratch\n%post -c\ntrue\n",
        2,
        "%post",
        "`-c` needs a shell",
    );
    assert_err(
        "Bootstrap: scratch\n%post -x\ntrue\n",
        2,
        "%post",
        "arguments `-x` are not supported (only `-c SHELL`)",
    );
    assert_err(
        "Bootstrap: scratch\n%post\na\n%post -c /bin/bash\nb\n",
        4,
        "%post",
        "given again (first at line 2) with other arguments",
    );
}

#[test]
fn other_sections_take_no_arguments() {
    assert_err(
        "Bootstrap: scratch\n%runscript -c /bin/bash\ntrue\n",
        2,
        "%runscript",
        "start the script with a #! line",
    );
    assert_err(
        "Bootstrap: scratch\n%environment x\nA=1\n",
        2,
        "%environment",
        "arguments (`x`) are not supported",
    );
    assert_err(
        "Bootstrap: scratch\n%labels x\nA 1\n",
        2,
        "%labels",
        "takes no arguments (`x`)",
    );
    assert_err(
        "Bootstrap: scratch\n%help me\nhi\n",
        2,
        "%help",
        "takes no arguments",
    );
}

#[test]
fn refused_sections_say_why() {
    let cases: [(&str, &str, &str); 8] = [
        ("%setup\ntouch x\n", "%setup", "runs it on the host as root"),
        (
            "%pre\ntrue\n",
            "%pre",
            "on the host before the base is fetched",
        ),
        (
            "%arguments\nV=1\n",
            "%arguments",
            "build arguments are not supported yet",
        ),
        ("%appinstall foo\nmake\n", "%appinstall", "SCIF apps"),
        ("%apprun foo\nexec foo\n", "%apprun", "SCIF apps"),
        (
            "%postt\ntrue\n",
            "%postt",
            "unknown section; rfake reads %files, %post,",
        ),
        ("% post\ntrue\n", "%", "has no name"),
        ("%files\na\n%%weird\n", "%weird", "unknown section"),
    ];
    for (body, section, needle) in cases {
        let text = format!("Bootstrap: scratch\n{body}");
        let line = if body.starts_with("%files") { 4 } else { 2 };
        assert_err(&text, line, section, needle);
    }
    // Inside a script, a line whose first word starts with % begins a
    // section, as in Apptainer: named at its line.
    assert_err(
        "Bootstrap: scratch\n%post\n  printf \\\n  %s x\n",
        4,
        "%s",
        "even inside a script",
    );
}

#[test]
fn files_lines_quotes_and_comments() {
    let s = one("Bootstrap: scratch\n%files\n\
         # a comment\n\
         \x20   \"file 1\"\n\
         \x20   \"file 1\" \"with space 1\"\n\
         \tfile2 \"nospace2\"   # why\n\
         file3 /opt/file3\n\
         \n\
         %files\n\
         again\n");
    let got: Vec<(&str, Option<&str>, usize)> = s.files[0]
        .files
        .iter()
        .map(|f| (f.src.as_str(), f.dst.as_deref(), f.line))
        .collect();
    assert_eq!(
        got,
        [
            ("file 1", None, 4),
            ("file 1", Some("with space 1"), 5),
            ("file2", Some("nospace2"), 6),
            ("file3", Some("/opt/file3"), 7),
        ]
    );
    assert_eq!(s.files.len(), 2);
    assert_eq!((s.files[1].line, s.files[1].files[0].line), (9, 10));
}

#[test]
fn files_errors() {
    let cases: [(&str, &str); 7] = [
        ("a b c", "more than SRC and DST"),
        ("\"a b", "a double quote is not closed"),
        ("'a b' c", "a single quote"),
        ("it's x", "a single quote"),
        ("\"a\"b c", "text right after a closing quote"),
        ("a\"b\" c", "a double quote inside a path"),
        ("\"\" x", "an empty path"),
    ];
    for (line, needle) in cases {
        assert_err(
            &format!("Bootstrap: scratch\n%files\n  ok ok\n  {line}\n"),
            4,
            "%files",
            needle,
        );
    }
    assert_err(
        "Bootstrap: scratch\n%files to somewhere\na\n",
        2,
        "%files",
        "arguments `to somewhere`: only `from STAGE` is read",
    );
    assert_err(
        "Bootstrap: scratch\n%files from\na\n",
        2,
        "%files",
        "only `from STAGE`",
    );
}

#[test]
fn labels_are_key_and_rest_of_line_last_value_wins_in_place() {
    let s = one("Bootstrap: scratch\n%labels\n\
         \x20 Author  Alice Smith <a@b>\n\
         # not a label\n\
         \tVersion\tv1\n\
         Empty\n\
         Author Bob\n\
         %labels\n\
         Extra 1 # kept\n");
    assert_eq!(
        s.labels,
        vec![
            ("Author".into(), "Bob".into()),
            ("Version".into(), "v1".into()),
            ("Empty".into(), String::new()),
            ("Extra".into(), "1 # kept".into()),
        ]
    );
}

/// Apptainer's `testdata_good/multistage` example, reduced.
#[test]
fn stages_and_files_from_an_earlier_stage() {
    let d = ok("# two stages\n\
         Bootstrap: docker\nFrom: golang:1.22\nStage: one\n\n\
         %files\n\thello.go /src/hello.go\n\n\
         %post\n\tcd /src && go build\n\n\
         bootstrap: docker\nFrom: alpine:latest\nStage: two\n\n\
         %files from one\n\t/src/hello /bin/hello\n\n\
         %runscript\n\thello\n");
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[0].name.as_deref(), Some("one"));
    assert_eq!(d.stages[0].header.line, 2);
    let two = &d.stages[1];
    assert_eq!((two.name.as_deref(), two.header.line), (Some("two"), 12));
    assert_eq!(two.files[0].from.as_deref(), Some("one"));
    assert_eq!(two.files[0].files[0].dst.as_deref(), Some("/bin/hello"));
    // The first stage's text ends where the second begins.
    assert_eq!(
        d.stages[0].post.as_ref().unwrap().text,
        "\tcd /src && go build\n\n"
    );
}

#[test]
fn stage_errors() {
    assert_err(
        "Bootstrap: scratch\nStage: a\nBootstrap: scratch\nStage: a\n",
        4,
        "Header",
        "Stage: `a` is also the stage at line 1",
    );
    assert_err(
        "Bootstrap: scratch\nStage: a\nBootstrap: scratch\nStage: c\n%files from b\nx\n",
        5,
        "%files",
        "from `b`: no such stage (the earlier stages are a)",
    );
    // Only earlier stages: they are built in order.
    assert_err(
        "Bootstrap: scratch\nStage: a\n%files from b\nx\nBootstrap: scratch\nStage: b\n",
        3,
        "%files",
        "no such stage",
    );
    assert_err(
        "Bootstrap: scratch\n%files from a\nx\n",
        2,
        "%files",
        "no earlier stage has a Stage: name",
    );
    // Sections before any Bootstrap: form a stage without a header.
    assert_err(
        "\n%post\ntrue\nBootstrap: scratch\n",
        2,
        "%post",
        "no Bootstrap: in this stage's header",
    );
}

#[test]
fn stages_split_only_at_bootstrap_in_column_one() {
    // Indented, it is an ordinary header line (one stage), as in Apptainer.
    let s = one("   Bootstrap: scratch\n%post\n  true\n");
    assert_eq!(s.header.line, 1);
    // In column 1 inside a script, it begins a stage, as in Apptainer.
    let d = ok("Bootstrap: scratch\n%post\ncat <<EOF\nBootstrap: scratch\n");
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[0].post.as_ref().unwrap().text, "cat <<EOF\n");
    // Comments before the first Bootstrap: are not a stage.
    assert_eq!(ok("# c\n\n#d\nBootstrap: scratch\n").stages.len(), 1);
}

#[test]
fn build_argument_templates_are_refused_unless_commented() {
    assert_err(
        "Bootstrap: docker\nFrom: debian:{{ VERSION }}\n",
        2,
        "Header",
        "`{{ VERSION }}` is a build argument",
    );
    assert_err(
        "Bootstrap: scratch\n%post\n  echo {{x_1}}\n",
        3,
        "%post",
        "build arguments (--build-arg, %arguments) are not supported yet",
    );
    let s = one(
        "Bootstrap: scratch\n%post\n  docker inspect -f '{{ .Id }}' x\n  # {{ NOTE }}\n  echo {{}}\n",
    );
    assert!(s.post.unwrap().text.contains("{{ .Id }}"));
}

#[test]
fn text_that_is_not_text() {
    let m = err_bytes(b"Bootstrap: scratch\n%post\necho \xff\n");
    assert_eq!(
        m,
        format!("{FILE}:3: %post: not UTF-8 text (a definition file is text)")
    );
    let m = err_bytes(b"Bootstrap: scra\xc3");
    assert!(
        m.starts_with(&format!("{FILE}:1: Header: not UTF-8")),
        "{m}"
    );
    assert_err(
        "Bootstrap: scratch\n%runscript\necho a\0b\n",
        3,
        "%runscript",
        "a NUL byte",
    );
}

#[test]
fn empty_files_are_refused() {
    for text in ["", "\n\n", "# only\n  # comments\n"] {
        assert_err(text, 1, "Header", "empty definition file");
    }
}

#[test]
fn control_characters_in_messages_are_escaped() {
    let m = err("Bootstrap: docker\nFrom: a\nCol\x1bour: x\n");
    assert!(m.contains("Col\\u{1b}our"), "{m}");
    let m = err("Bootstrap: scratch\n%fi\x07les\n");
    assert!(m.contains("%fi\\u{7}les"), "{m}");
}

#[test]
fn parse_reads_a_file_and_names_it_when_it_cannot() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("app.def");
    std::fs::write(&path, DOCS_EXAMPLE).unwrap();
    let def = parse(&path).unwrap();
    assert_eq!(
        (def.path.as_path(), def.text.as_str()),
        (path.as_path(), DOCS_EXAMPLE)
    );

    let missing = d.path().join("missing.def");
    let e = parse(&missing).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::NoInput);
    assert_eq!(e.exit_kind().code(), 66);
    assert_eq!(
        e.to_string(),
        format!("{}: No such file or directory (ENOENT)", missing.display())
    );
    assert_eq!(e.line(), None);

    let e = parse(d.path()).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::BadImage);
    assert_eq!(
        e.to_string(),
        format!("{}: a directory, not a regular file", d.path().display())
    );

    let big = d.path().join("big.def");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(MAX_DEFINITION + 1).unwrap();
    let e = parse(&big).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::BadImage);
    assert!(e.to_string().ends_with(": larger than 4 MiB"), "{e}");

    let bad = d.path().join("bad.def");
    std::fs::write(&bad, "Bootstrap: docker\nFrom: a\n%setup\ntouch x\n").unwrap();
    let e = parse(&bad).unwrap_err();
    assert_eq!(e.line(), Some(3));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:3: %setup: not supported", bad.display())),
        "{e}"
    );
}

#[test]
fn what_looks_like_a_definition() {
    let yes: [&[u8]; 5] = [
        DOCS_EXAMPLE.as_bytes(),
        b"# build me\n\nbootstrap: scratch\n",
        b"From: alpine\nBOOTSTRAP : docker\n",
        b"  Bootstrap:docker\r\nFrom: a\r\n",
        b"Bootstrap: not-an-agent\n",
    ];
    for bytes in yes {
        assert!(
            looks_like_definition(bytes),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let no: [&[u8]; 8] = [
        b"",
        b"[image]\nbase = \"x.tar\"\n",
        b"%post\ntrue\nBootstrap: scratch\n",
        b"From: alpine\n",
        b"hello world\nBootstrap: docker\n",
        b"Colour: blue\nBootstrap: docker\n",
        b"Bootstrap: docker\0\n",
        b"\xff\xfeBootstrap: docker\n",
    ];
    for bytes in no {
        assert!(
            !looks_like_definition(bytes),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // A tar header (an archive whose first member is named like a header).
    let mut tar = vec![0u8; 1024];
    tar[..10].copy_from_slice(b"Bootstrap:");
    assert!(!looks_like_definition(&tar));
}

/// Files near the size cap whose lines each add a label, a stage or a
/// header key: read in about linear time (about 2 s each in a debug build
/// here; the quadratic checks they replaced took more than 10 minutes).
#[test]
fn large_files_are_read_in_linear_time() {
    let fill = |unit: &dyn Fn(usize) -> String, head: &str| {
        let mut text = head.to_string();
        let mut i = 0;
        while text.len() < (MAX_DEFINITION as usize) - 64 {
            text.push_str(&unit(i));
            i += 1;
        }
        text
    };
    let cases = [
        fill(&|i| format!("L{i} v\n"), "Bootstrap: scratch\n%labels\n"),
        fill(&|i| format!("%labels\nL{i} v\n"), "Bootstrap: scratch\n"),
        fill(&|i| format!("Bootstrap: scratch\nStage: s{i}\n"), ""),
        fill(&|i| format!("OtherURL{i}: x\n"), "Bootstrap: scratch\n"),
        fill(
            &|_| "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{".to_string(),
            "Bootstrap: scratch\n%post\n",
        ),
    ];
    for text in cases {
        let start = std::time::Instant::now();
        let _ = parse::definition(Path::new(FILE), text.as_bytes());
        let took = start.elapsed();
        assert!(took.as_secs() < 30, "{took:?} for {:?}...", &text[..60]);
    }
}
