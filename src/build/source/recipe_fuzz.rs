//! `fuzz_recipe`: build recipes ([`super::load`]), loaded the way `rfake
//! build` loads them (detect, then load with a spool), against a fixed set of
//! host files: a tar base (plain and gzip), an OCI layout, recipes built on
//! one another, a directory tree, a symbolic link, a dangling one and a FIFO.
//!
//! Inputs, structure-aware: recipes generated from the real sections and
//! keys (`[image] base/runscript/entrypoint/cmd/workdir`, `[dirs]`,
//! `[files]`, `[inline]`, `[symlinks]`, `[[run]] script/shell`, `[modes]`,
//! `[env]`, `[labels]`),
//! with image paths, modes and host paths valid, invalid and at the
//! boundaries (the root, `..`, NUL, deep and long paths, modes over 7777,
//! decimal modes, base cycles); and byte mutations of
//! `images/recipes/demo.toml`, aimed at the values.
//!
//! Checked, besides "no panic, no hang": an error is one line with a build
//! exit code (65 or 66).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::select;

use super::super::super::ImageMeta;
use super::super::super::spool::Spool;
use super::super::super::tree::Tree;
use super::super::testutil::{OciMaker, TarMaker, compress, load_source};
use super::super::{Compression, Options, SourceKind, load};
use crate::exit::ExitKind;
use crate::fuzz;

/// The host files recipes name; the recipe itself is `recipes/r.toml`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("fuzz-recipe-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let write = |path: &str, data: &[u8]| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        };
        // What images/recipes/demo.toml copies ("../demo/rootfs").
        for (path, text) in [
            ("demo/rootfs/etc/rfake-demo.txt", "hello\n"),
            ("demo/rootfs/.singularity.d/runscript", "#!/bin/sh\n"),
            (
                "demo/rootfs/.singularity.d/env/90-environment.sh",
                "export RFAKE_DEMO=1\n",
            ),
            ("demo/rootfs/bin/not-executable", "#!/bin/sh\n"),
        ] {
            write(path, text.as_bytes());
        }
        write("recipes/files/hello.sh", b"#!/bin/sh\necho hello\n");
        write("recipes/files/tree/a.txt", b"a\n");
        write("recipes/files/tree/sub/b.txt", b"b\n");
        let files = root.join("recipes/files");
        std::os::unix::fs::symlink("hello.sh", files.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", files.join("dangling")).unwrap();
        nix::unistd::mkfifo(
            &files.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let base = TarMaker::default()
            .dir("etc", 0o755)
            .file("etc/os-release", b"NAME=base\n", 0o644)
            .file("bin/app", b"app", 0o755)
            .symlink("bin/sh", "app")
            .finish();
        write("recipes/base.tar", &base);
        write("recipes/base.tar.gz", &compress(&base, Compression::Gzip));
        write(
            "recipes/base.toml",
            b"[image]\nbase = \"base.tar\"\n[env]\nA = \"1\"\n",
        );
        write(
            "recipes/sub/nested.toml",
            b"[image]\nbase = \"../base.toml\"\ncmd = [\"app\"]\n",
        );
        let oci = OciMaker::new(&root.join("recipes/layout"));
        let layer = TarMaker::default()
            .file("bin/tool", b"tool", 0o755)
            .finish();
        let config = serde_json::json!({"config": {"Env": ["PATH=/bin"], "Cmd": ["tool"]}});
        let manifest = oci.image(&config, &[layer]);
        oci.index(&[manifest]);
        Fixture { dir }
    }

    fn recipe(&self) -> PathBuf {
        self.dir.path().join("recipes/r.toml")
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `s` as a TOML basic string (a JSON string is one, but for DEL, which
/// TOML wants escaped: a rare invalid recipe, which is fine here too).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// An image path, as a (quoted) key.
fn image_path() -> BoxedStrategy<String> {
    prop_oneof![
        8 => select(strings(&[
            "/", "/a", "/a/b", "/etc", "/etc/motd", "/etc/os-release", "/bin/app", "/bin/sh",
            "/f", "/f/g", "/srv", "/tmp", "/opt/tree", "/usr/local/bin/hello", "/x",
        ])),
        2 => select(strings(&[
            "a", "", "/a/../b", "/a/./b", "//a", "/a/", "/.", "/..", "/../x", "/a\0b", "/é",
            "/a b", "/\n", "/etc/os-release/x", "/bin/sh/x",
        ])),
        1 => (1usize..120).prop_map(|n| "/d".repeat(n)),
        1 => (200usize..400).prop_map(|n| format!("/{}", "n".repeat(n))),
        1 => "/[a-z/.]{0,12}",
    ]
    .prop_map(|p| quoted(&p))
    .boxed()
}

fn mode() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(strings(&["\"0755\"", "\"1777\"", "\"0600\"", "\"0700\"", "0o755", "0o644"])),
        2 => select(strings(&[
            "\"7777\"", "\"10000\"", "\"0o755\"", "\"0o17777\"", "\"\"", "\"0799\"", "\"755\"",
            "0o7777", "0o10000", "1777", "-1", "\"0x1ff\"", "0o0", "true", "\"٠٧٥٥\"",
            "0o77777777777777777777777", "\"77777777777777777777777\"", "0x1ff", "0b111",
            "1.5", "[\"0755\"]",
        ])),
        1 => any::<u32>().prop_map(|n| format!("\"{n:o}\"")),
    ]
    .boxed()
}

/// A host path, relative to the recipe's directory (never the host root
/// or anything large: a copy walks it).
fn host_path() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(strings(&[
            "files/hello.sh", "files/tree", "files/tree/sub", "files/link", "files/dangling",
            "files/fifo", "missing", "", "../demo/rootfs", "/dev/null", "/dev/zero", "files",
            "files/tree/../hello.sh", "./files/hello.sh", "base.tar", "files/hello.sh/x",
        ])),
        1 => "files/[a-z/.]{0,10}",
    ]
    .prop_map(|p| quoted(&p))
    .boxed()
}

fn base() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(strings(&[
            "base.tar", "base.tar.gz", "base.toml", "sub/nested.toml", "layout", "r.toml",
            "missing", "files/fifo", "files/dangling", "files/tree", "", "../demo/rootfs",
            "files/hello.sh", "/dev/null",
        ]))
        .prop_map(|p| quoted(&p)),
        1 => select(strings(&["1", "[]", "[\"base.tar\"]", "{}"])),
    ]
    .boxed()
}

fn text_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(strings(&["x", "", "hello world", "#!/bin/sh\nexec app\n", "a\0b", "é"])),
        1 => any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ]
    .prop_map(|s| quoted(&s))
    .boxed()
}

fn any_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => text_value(),
        1 => select(strings(&[
            "1", "true", "[]", "[1]", "[\"a\", \"b\"]", "{}", "{ a = 1 }", "1979-05-27",
            "\"unterminated", "",
        ])),
    ]
    .boxed()
}

fn string_list() -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::collection::vec(text_value(), 0..4)
            .prop_map(|items| format!("[{}]", items.join(", "))),
        1 => any_value(),
    ]
    .boxed()
}

/// A section's `key = value` lines; mostly each key once (a duplicate is
/// a TOML error, found before anything a recipe means is looked at).
fn entries(key: BoxedStrategy<String>, value: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (proptest::collection::vec((key, value), 0..6), 0..8u8)
        .prop_map(|(pairs, dedupe)| {
            let mut seen = std::collections::HashSet::new();
            pairs
                .into_iter()
                .filter(|(k, _)| dedupe == 0 || seen.insert(k.clone()))
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect()
        })
        .boxed()
}

fn image_section() -> BoxedStrategy<String> {
    let line = prop_oneof![
        4 => base().prop_map(|v| format!("base = {v}\n")),
        2 => text_value().prop_map(|v| format!("runscript = {v}\n")),
        2 => string_list().prop_map(|v| format!("entrypoint = {v}\n")),
        2 => string_list().prop_map(|v| format!("cmd = {v}\n")),
        2 => prop_oneof![
            select(strings(&["\"/srv\"", "\"srv\"", "\"\"", "1", "\"/\""])),
            text_value(),
        ]
        .prop_map(|v| format!("workdir = {v}\n")),
        1 => any_value().prop_map(|v| format!("bsae = {v}\n")),
    ];
    proptest::collection::vec(line, 0..4)
        .prop_map(|lines| {
            let mut seen = std::collections::HashSet::new();
            let lines: Vec<String> = lines
                .into_iter()
                .filter(|l| seen.insert(l.split(" = ").next().map(str::to_string)))
                .collect();
            format!("[image]\n{}", lines.concat())
        })
        .boxed()
}

fn env_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(strings(&["PATH", "A", "B", "_x", "HOME"])),
        1 => select(strings(&["1A", "\"\"", "\"a-b\"", "\"é\"", "\"A B\"", "\"A=B\""])),
    ]
    .boxed()
}

/// `[[run]]` steps (one to three): `script`, `shell`, a misspelt key.
/// Loaded without a step runner, as here, a valid step is refused too.
fn run_steps() -> BoxedStrategy<String> {
    let key = prop_oneof![
        4 => Just("script".to_string()),
        2 => Just("shell".to_string()),
        1 => Just("sript".to_string()),
    ];
    let value = prop_oneof![
        3 => text_value(),
        2 => select(strings(&["\"/bin/sh\"", "\"bash\"", "\"\"", "\"/bin/\\u0000\""])),
        1 => any_value(),
    ];
    proptest::collection::vec(entries(key.boxed(), value.boxed()), 1..4)
        .prop_map(|steps| steps.iter().map(|e| format!("[[run]]\n{e}")).collect())
        .boxed()
}

fn section() -> BoxedStrategy<String> {
    prop_oneof![
        2 => run_steps(),
        2 => entries(image_path(), mode()).prop_map(|e| format!("[dirs]\n{e}")),
        3 => entries(image_path(), host_path()).prop_map(|e| format!("[files]\n{e}")),
        2 => entries(image_path(), any_value()).prop_map(|e| format!("[inline]\n{e}")),
        2 => entries(
            image_path(),
            prop_oneof![
                3 => select(strings(&["\"x\"", "\"\"", "\"../..\"", "\"/etc\"", "\"a\\u0000b\""])),
                1 => any_value(),
            ]
            .boxed()
        )
        .prop_map(|e| format!("[symlinks]\n{e}")),
        2 => entries(image_path(), mode()).prop_map(|e| format!("[modes]\n{e}")),
        2 => entries(env_name(), any_value()).prop_map(|e| format!("[env]\n{e}")),
        1 => entries(
            prop_oneof![
                select(strings(&["\"org.opencontainers.image.title\"", "a", "\"\""])),
                env_name(),
            ]
            .boxed(),
            any_value(),
        )
        .prop_map(|e| format!("[labels]\n{e}")),
        1 => select(strings(&[
            "[file]\n", "[image.sub]\nx = 1\n", "dirs = 1\n", "[[dirs]]\n", "[env]\n[env]\n",
            "image = \"x\"\n", "x\n", "[run]\nscript = \"x\"\n", "run = \"x\"\n", "run = [1]\n",
            "run = [{ script = \"x\" }]\n", "[[run]]\n[run]\n",
        ])),
    ]
    .boxed()
}

/// A generated recipe: `[image]` (usually) and other sections in any order.
fn generated() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![6 => image_section().prop_map(Some), 1 => Just(None)],
        proptest::collection::vec(section(), 0..6),
        0usize..7,
    )
        .prop_map(|(image, sections, at)| {
            // Each section once (mostly: `[dirs]` twice is a TOML error).
            let mut seen = std::collections::HashSet::new();
            let mut sections: Vec<String> = sections
                .into_iter()
                .filter(|s| at == 6 || seen.insert(s.lines().next().map(str::to_string)))
                .collect();
            if let Some(image) = image {
                sections.insert(at.min(sections.len()), image);
            }
            sections.join("\n").into_bytes()
        })
}

/// `images/recipes/demo.toml` and where its values start.
fn demo_seed() -> Option<(Vec<u8>, Vec<usize>)> {
    let text = fuzz::seed_file("RFAKE_TEST_RECIPES", "images/recipes", "demo.toml")?;
    let hot = text
        .windows(3)
        .enumerate()
        .filter(|(_, w)| w == b" = ")
        .flat_map(|(i, _)| [i + 3, i + 4, i + 5])
        .chain(
            text.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'[' || **b == b'"')
                .map(|(i, _)| i),
        )
        .collect();
    Some((text, hot))
}

fn check(fixture: &Fixture, recipe: &[u8], skip_special: bool) {
    let path = fixture.recipe();
    std::fs::write(&path, recipe).unwrap();
    let options = Options {
        skip_special,
        ..Options::default()
    };
    // As a recipe, whatever `detect` would say of it: what does not look
    // like one would never reach the parser otherwise.
    let mut spool = Spool::new(tempfile::tempfile().unwrap());
    let mut tree = Tree::default();
    let mut meta = ImageMeta::default();
    let loaded = load(
        &path,
        SourceKind::Recipe,
        &options,
        &mut spool,
        &mut tree,
        &mut meta,
    );
    let Err(e) = loaded else {
        return;
    };
    let message = e.to_string();
    assert!(!message.contains('\n'), "not one line: {message:?}");
    assert!(!message.contains('\r'), "not one line: {message:?}");
    assert!(
        matches!(e.exit_kind(), ExitKind::BadImage | ExitKind::NoInput),
        "exit {:?}: {message}",
        e.exit_kind()
    );
}

#[test]
fn fuzz_recipe() {
    let fixture = Fixture::new();
    let inputs = match demo_seed() {
        Some((seed, hot)) => prop_oneof![
            3 => generated(),
            // Mostly kept UTF-8, so that the parser sees them.
            1 => (fuzz::mutations(seed, hot, 6), 0..4u8).prop_map(|(bytes, raw)| match raw {
                0 => bytes,
                _ => String::from_utf8_lossy(&bytes).into_owned().into_bytes(),
            }),
        ]
        .boxed(),
        None => generated().boxed(),
    };
    fuzz::run(
        "recipe",
        (inputs, any::<bool>()),
        |(recipe, _)| recipe.clone(),
        |(recipe, skip_special)| check(&fixture, recipe, *skip_special),
    );
}

/// The fixture's recipes load, and the demo seed loads over it: the
/// harness starts from inputs that get past the first error.
#[test]
fn the_fixture_and_the_demo_seed_load() {
    let fixture = Fixture::new();
    let recipes = fixture.dir.path().join("recipes");
    let nested = load_source(&recipes.join("sub/nested.toml"), &Options::default()).unwrap();
    assert_eq!(nested.text("bin/app"), "app");
    assert_eq!(nested.meta.cmd, ["app"]);
    if Path::new("/bin/busybox").exists() {
        if let Some((seed, _)) = demo_seed() {
            std::fs::write(fixture.recipe(), seed).unwrap();
            let demo = load_source(&fixture.recipe(), &Options::default()).unwrap();
            assert_eq!(demo.text("etc/rfake-demo.txt"), "hello\n");
        }
    }
}
