//! `fuzz_config`: the configuration files, parsed, checked and merged
//! ([`Config::from_strs`]), then rendered ([`Config::render`]).
//!
//! Inputs, structure-aware: documents built from the real key set, each key
//! given a value of its own kind (valid, invalid or at a boundary: sizes
//! around 1 TiB and `u64`/`i64` limits, seconds around 3600, bind entries
//! assembled from empty, relative, absolute and `$VAR` fields) or of another
//! kind, with unknown and misspelled keys, tables and duplicates thrown in;
//! a site and a user document each. And byte mutations of
//! `docs/rfake.toml.example` with every key uncommented, aimed at the values.
//!
//! Checked, besides "no panic": an error is one line that starts with the
//! file's path and is exit 78; a configuration that loads renders to TOML
//! that loads back (as a site file) to the same values, as `render`
//! promises.

use std::ffi::OsString;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::fuzz;

const SITE: &str = "/etc/rfake/rfake.toml";
const USER: &str = "/home/alice/.config/rfake/rfake.toml";

fn env() -> Vec<(OsString, OsString)> {
    use std::os::unix::ffi::OsStringExt;
    vec![
        ("USER".into(), "alice".into()),
        ("HOME".into(), "/home/alice".into()),
        ("SCRATCH".into(), "/scratch".into()),
        ("EMPTY".into(), "".into()),
        ("REL".into(), "rel/dir".into()),
        ("COLON".into(), "/a:b".into()),
        ("NONUTF8".into(), OsString::from_vec(vec![b'/', 0xff])),
    ]
}

/// Text that is a TOML basic string holding `s`.
fn quoted(s: &str) -> String {
    render::toml_string(s)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// One field of a bind or scratch entry.
fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(strings(&[
            "/a", "/data", "/a/b/", "//x//y", "/a/./b", "$HOME", "${HOME}", "$HOME/x",
            "${SCRATCH}/$USER", "/é", "/opt/apps",
        ])),
        4 => select(strings(&[
            "", "/", "/a", "/data", "/a/b/", "//x//y", "/a/../b", "/a/./b", "..", "rel",
            "$HOME", "${HOME}", "$HOME/x", "${SCRATCH}/$USER", "$UNSET", "${UNSET}/x", "$EMPTY",
            "${EMPTY}", "$REL", "$COLON", "$NONUTF8", "$", "${", "${}", "${HOME", "$1", "$-",
            "/a$", "/x$$", "/é", "/a b", "/tab\t", "/nl\n", "/nul\0", "~", "~/x",
        ])),
        1 => "/[a-z$_{}]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn mode_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(strings(&["ro", "rw"])),
        1 => select(strings(&["", "rx", "RO", "ro ", "r", "rwx"])),
    ]
}

/// A `binds` entry: one to four `:`-separated fields.
fn bind_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        path_piece(),
        (path_piece(), path_piece()).prop_map(|(a, b)| format!("{a}:{b}")),
        (path_piece(), path_piece(), mode_piece()).prop_map(|(a, b, m)| format!("{a}:{b}:{m}")),
        (path_piece(), path_piece(), mode_piece(), path_piece())
            .prop_map(|(a, b, m, x)| format!("{a}:{b}:{m}:{x}")),
    ]
}

/// A TOML array of the entries `entry` makes, one line or several.
fn array(entry: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (
        proptest::collection::vec(entry, 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(items, multiline, trailing_comma)| {
            let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
            let sep = if multiline { ",\n  # note\n  " } else { ", " };
            let end = if trailing_comma && !items.is_empty() {
                ","
            } else {
                ""
            };
            format!("[{}{end}]", items.join(sep))
        })
        .boxed()
}

fn boolean() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(strings(&["true", "false"])),
        1 => select(strings(&["\"true\"", "\"false\"", "True", "1", "0", "yes"])),
    ]
    .boxed()
}

fn size_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (1u64..=1024, select(strings(&["K", "M", "G"])))
            .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
        4 => select(strings(&[
            "\"64M\"", "\"0\"", "0", "\"1\"", "1", "\"1T\"", "\"2T\"", "\"1024G\"", "\"1025G\"",
            "1099511627776", "1099511627777", "-1", "\"-1M\"", "9223372036854775807",
            "-9223372036854775808", "0x10", "0o777", "0b1", "1_000", "\"1.5G\"", "\"\"",
            "\" 64M \"", "\"64MiB\"", "\"64 M\"", "\"18446744073709551615\"",
            "\"18446744073709551616\"", "\"99999999999999999999T\"", "\"17179869184G\"",
            "\"16777216T\"", "1e3", "inf", "nan", "\"K\"", "\"0K\"", "\"00001M\"", "\"1m\"",
            "\"1t\"", "\"1P\"", "\"٣M\"",
        ])),
        1 => (any::<u64>(), select(strings(&["", "K", "M", "G", "T", "k"])))
            .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

fn seconds_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0u32..=3600).prop_map(|n| n.to_string()),
        2 => (0.0f64..=3600.0).prop_map(|f| format!("{f:?}")),
        4 => select(strings(&[
            "0", "5", "3600", "3601", "3600.0", "3600.0000001", "-0.0", "-1", "1e-9", "1e-10",
            "1e308", "inf", "nan", "-inf", "+inf", "0.5", "\"5\"", "5_0", "0x10",
            "9223372036854775807", "-9223372036854775808", "4.9e-324",
        ])),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => (0u32..4000).prop_map(|n| n.to_string()),
    ]
    .boxed()
}

fn key_names() -> Vec<String> {
    Key::ALL.iter().map(|k| k.name().to_string()).collect()
}

/// A value for `key` (TOML text): mostly of its own kind.
fn value_for(key: &str) -> BoxedStrategy<String> {
    let own: BoxedStrategy<String> = match Key::from_name(key) {
        Some(Key::Binds) => array(bind_entry().boxed()),
        Some(Key::Scratch) => array(path_piece().boxed()),
        Some(Key::AllowedImagePaths | Key::CdiSpecDirs) => array(path_piece().boxed()),
        Some(Key::NvidiaLibs | Key::RocmLibs) => array(
            select(strings(&[
                "\"libfoo.so\"",
                "\"nvidia-smi\"",
                "\"\"",
                "\"a/b\"",
            ]))
            .boxed(),
        ),
        Some(Key::LdCache | Key::GpuDevDir) => path_piece().prop_map(|s| quoted(&s)).boxed(),
        Some(Key::GpuMissingDriver) => {
            select(strings(&["\"error\"", "\"warn\"", "\"Warn\"", "\"\""])).boxed()
        }
        Some(Key::UserMaySet) => array(
            prop_oneof![
                4 => select(key_names()),
                1 => select(strings(&["", "mount-home", "bind", "Binds", "nope"])),
            ]
            .boxed(),
        ),
        Some(
            Key::MountHome
            | Key::MountTmp
            | Key::MountCwd
            | Key::AllowUserBinds
            | Key::AllowFakeroot
            | Key::Offline
            | Key::PrefetchProfiles
            | Key::CacheReadOnly,
        ) => boolean(),
        Some(Key::CacheDir | Key::NodeCacheDir | Key::RegistryCaFile) => {
            path_piece().prop_map(|s| quoted(&s)).boxed()
        }
        Some(Key::ImageServer) => prop_oneof![
            6 => select(strings(&["\"builtin\"", "\"squashfuse\""])),
            1 => select(strings(&["\"BUILTIN\"", "\"\"", "\"builtin \""])),
        ]
        .boxed(),
        Some(Key::Squashfuse) => prop_oneof![
            3 => select(strings(&["\"squashfuse\"", "\"/opt/sf/bin/squashfuse_ll\""])),
            1 => select(strings(&[
                "\"squashfuse\"", "\"squashfuse_ll\"", "\"/usr/bin/squashfuse_ll\"",
                "\"rel/squashfuse\"", "\"\"", "\"/\"", "\"a\\u0000b\"", "\"a\\nb\"",
            ])),
            1 => path_piece().prop_map(|s| quoted(&s)),
        ]
        .boxed(),
        Some(
            Key::ImageCacheSize
            | Key::WritableTmpfsSize
            | Key::BuildMaxSize
            | Key::CacheMaxSize
            | Key::NodeCacheSize,
        ) => size_value(),
        Some(Key::WarmLinger) => seconds_value(),
        // An inline table of profiles, each with binds and a variable.
        Some(Key::Profiles) => (path_piece(), bind_entry(), path_piece())
            .prop_map(|(name, bind, dir)| {
                format!(
                    "{{ {} = {{ binds = [{}], path = [{}], env = {{ X = \"1\" }} }} }}",
                    quoted(&name),
                    quoted(&bind),
                    quoted(&dir)
                )
            })
            .boxed(),
        None => any_value(),
    };
    prop_oneof![12 => own, 1 => any_value()].boxed()
}

/// A value of any kind, some not TOML at all.
fn any_value() -> BoxedStrategy<String> {
    prop_oneof![
        boolean(),
        size_value(),
        seconds_value(),
        array(bind_entry().boxed()),
        select(strings(&[
            "{}",
            "{ a = 1 }",
            "[[1]]",
            "[1, \"a\"]",
            "1979-05-27T07:32:00Z",
            "'literal'",
            "'''multi\nline'''",
            "\"\"\"a\nb\"\"\"",
            "\"unterminated",
            "[",
            "",
            "\"\\x\"",
            "\"\\u00e9\"",
            "\"\\U0010FFFF\"",
            "\"\\uD800\"",
        ])),
    ]
    .boxed()
}

/// A key as written: mostly a real one, else unknown, misspelled, quoted or
/// dotted.
fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(key_names()),
        1 => select(strings(&[
            "mount-home", "bind", "home", "Mount_Home", "\"\"", "\"mount_home\"", "a.b",
            "binds.x", "mount", "\"é\"", "'binds'", "scratch.0", "\"a\\nb\"", "image_cache",
            "allow", "warm", "\"\\u0000\"",
        ])),
        1 => "[a-z_]{1,20}",
    ]
}

/// One `key = value` line for the key written `key`.
fn assignment(key: String) -> BoxedStrategy<String> {
    let name = key.trim_matches('"').to_string();
    value_for(&name)
        .prop_map(move |value| format!("{key} = {value}"))
        .boxed()
}

/// A line that is not a plain assignment of a known key.
fn odd_line() -> BoxedStrategy<String> {
    prop_oneof![
        3 => key_text().prop_flat_map(assignment),
        1 => select(strings(&[
            "# a comment", "", "[table]", "[image]", "[[binds]]", "[binds]", "= 1", "x",
            "\u{feff}", "mount_home = true # trailing", "\t mount_tmp=false",
        ])),
    ]
    .boxed()
}

/// A document: some of `keys`, each once and in any order, each with a
/// value mostly of its kind; now and then an odd line (an unknown key, a
/// duplicate, a table, not TOML).
fn document(keys: Vec<String>) -> impl Strategy<Value = String> {
    let max = keys.len();
    (
        proptest::sample::subsequence(keys, 0..=max).prop_shuffle(),
        proptest::collection::vec(odd_line(), 0..2),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(keys, odd, use_odd, crlf)| {
            let lines: Vec<BoxedStrategy<String>> = keys.into_iter().map(assignment).collect();
            (
                lines,
                Just(if use_odd { odd } else { Vec::new() }),
                Just(crlf),
            )
        })
        .prop_map(|(mut lines, odd, crlf)| {
            for (i, line) in odd.into_iter().enumerate() {
                let at = (i * 7) % (lines.len() + 1);
                lines.insert(at, line);
            }
            let nl = if crlf { "\r\n" } else { "\n" };
            lines.join(nl) + nl
        })
}

fn site_document() -> impl Strategy<Value = String> {
    document(key_names())
}

/// The keys a user file may set by default: no policy key (those are
/// refused before anything else in it is looked at).
fn user_document() -> impl Strategy<Value = String> {
    document(
        Key::user_keys()
            .iter()
            .map(|k| k.name().to_string())
            .collect(),
    )
}

/// `docs/rfake.toml.example` with every key line uncommented, and where
/// its values start.
fn example_seed() -> (Vec<u8>, Vec<usize>) {
    let text = include_str!("../../docs/rfake.toml.example");
    let mut out = String::new();
    for line in text.lines() {
        let uncommented = line.strip_prefix("# ").filter(|rest| {
            rest.split_once(" = ")
                .is_some_and(|(k, _)| Key::from_name(k).is_some())
        });
        out.push_str(uncommented.unwrap_or(line));
        out.push('\n');
    }
    let hot = out
        .match_indices(" = ")
        .flat_map(|(i, _)| [i + 3, i + 4, i + 5])
        .chain(out.match_indices('"').map(|(i, _)| i))
        .chain(out.match_indices(':').map(|(i, _)| i))
        .collect();
    (out.into_bytes(), hot)
}

/// The site and user documents of one case.
#[derive(Debug, Clone)]
struct Case {
    site: Option<String>,
    user: Option<String>,
}

fn cases() -> impl Strategy<Value = Case> {
    let (seed, hot) = example_seed();
    let mutated = fuzz::mutations(seed, hot, 6)
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let site = prop_oneof![3 => site_document().prop_map(Some), 1 => Just(None)];
    let user = prop_oneof![3 => user_document().prop_map(Some), 1 => Just(None)];
    prop_oneof![
        3 => (site, user.clone()).prop_map(|(site, user)| Case { site, user }),
        1 => (mutated, user).prop_map(|(site, user)| Case { site: Some(site), user }),
    ]
}

/// The values of `c`, without their origins.
fn values(c: &Config) -> impl PartialEq + std::fmt::Debug {
    (
        c.binds
            .iter()
            .map(|b| b.value.spec.clone())
            .collect::<Vec<_>>(),
        c.scratch
            .iter()
            .map(|s| s.value.path.clone())
            .collect::<Vec<_>>(),
        (c.mount_home.value, c.mount_tmp.value, c.image_server.value),
        (c.squashfuse.value.clone(), c.image_cache_size.value),
        c.writable_tmpfs_size.value,
        (c.allow_user_binds.value, c.allow_fakeroot.value),
        c.allowed_image_paths.value.clone(),
        c.user_may_set.value.clone(),
    )
}

fn check(case: &Case) {
    let env = env();
    let site = case.site.as_deref().map(|t| (Path::new(SITE), t));
    let user = case.user.as_deref().map(|t| (Path::new(USER), t));
    let config = match Config::from_strs(site, user, &env) {
        Ok(config) => config,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "not one line: {message:?}");
            assert!(!message.contains('\r'), "not one line: {message:?}");
            assert!(
                message.starts_with(SITE) || message.starts_with(USER),
                "does not name the file: {message}"
            );
            assert_eq!(e.exit_kind(), ExitKind::Config);
            return;
        }
    };
    let rendered = config.render();
    let back = Config::from_strs(Some((Path::new(SITE), &rendered)), None, &env)
        .unwrap_or_else(|e| panic!("the rendering does not load: {e}\n{rendered}"));
    assert_eq!(values(&back), values(&config), "rendered:\n{rendered}");
    let linger = |c: &Config| c.warm_linger.value.as_secs_f64();
    assert!(
        (linger(&back) - linger(&config)).abs() < 1e-6,
        "warm_linger: {:?} rendered back as {:?}",
        config.warm_linger.value,
        back.warm_linger.value
    );
}

#[test]
fn fuzz_config() {
    fuzz::run(
        "config",
        cases(),
        |case| {
            let mut bytes = case.site.clone().unwrap_or_default().into_bytes();
            bytes.extend_from_slice(b"\n#--- user file ---\n");
            bytes.extend(case.user.clone().unwrap_or_default().into_bytes());
            bytes
        },
        check,
    );
}

#[test]
fn the_example_seed_sets_every_key() {
    let (seed, _) = example_seed();
    let text = String::from_utf8(seed).unwrap();
    let config = Config::from_strs(Some((Path::new(SITE), &text)), None, &env()).unwrap();
    assert_eq!(config.binds.len(), 2, "{text}");
    assert_eq!(config.allowed_image_paths.value.len(), 2);
}
