use super::render::toml_string;
use super::*;

const SITE: &str = "/etc/rfake/rfake.toml";
const USER: &str = "/home/alice/.config/rfake/rfake.toml";

fn env() -> Vec<(OsString, OsString)> {
    vec![
        ("USER".into(), "alice".into()),
        ("HOME".into(), "/home/alice".into()),
        ("WORK".into(), "/gpfs/work/alice".into()),
        ("RELATIVE".into(), "scratch".into()),
        ("COLON".into(), "/a:b".into()),
    ]
}

fn site(text: &str) -> Result<Config, ConfigError> {
    Config::from_strs(Some((Path::new(SITE), text)), None, &env())
}

fn both(site: &str, user: &str) -> Result<Config, ConfigError> {
    Config::from_strs(
        Some((Path::new(SITE), site)),
        Some((Path::new(USER), user)),
        &env(),
    )
}

fn site_origin(line: usize) -> Origin {
    Origin::Site {
        path: SITE.into(),
        line,
    }
}

fn user_origin(line: usize) -> Origin {
    Origin::User {
        path: USER.into(),
        line,
    }
}

/// The error message for a site file `text`.
fn site_error(text: &str) -> String {
    let err = site(text).expect_err(text);
    assert_eq!(err.exit_kind(), crate::exit::ExitKind::Config);
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn defaults_with_no_files() {
    let c = Config::from_strs(None, None, &env()).unwrap();
    assert_eq!(c, Config::default());
    assert!(c.binds.is_empty() && c.scratch.is_empty());
    assert_eq!(c.mount_home, Setting::default(true));
    assert_eq!(c.mount_tmp, Setting::default(true));
    assert_eq!(c.squashfuse, Setting::default(None));
    assert_eq!(c.writable_tmpfs_size.value, 64 << 20);
    assert!(c.allow_user_binds.value && c.allow_fakeroot.value);
    assert!(c.allowed_image_paths.value.is_empty());
    assert_eq!(
        c.user_may_set.value,
        [
            Key::Binds,
            Key::Scratch,
            Key::MountHome,
            Key::MountTmp,
            Key::MountCwd,
            Key::ImageServer,
            Key::Squashfuse,
            Key::ImageCacheSize,
            Key::WarmLinger,
            Key::WritableTmpfsSize,
            Key::BuildMaxSize,
            Key::PrefetchProfiles,
            Key::NodeCacheDir,
            Key::NodeCacheSize,
            Key::CacheDir,
            Key::CacheMaxSize,
            Key::Offline,
            Key::RegistryCaFile,
            Key::CdiSpecDirs,
            Key::NvidiaLibs,
            Key::RocmLibs,
            Key::LdCache,
            Key::GpuDevDir,
            Key::GpuMissingDriver,
            Key::Profiles,
        ]
    );
    // An empty file or one with only comments is the defaults too.
    let empty = site("# nothing\n\n").unwrap();
    assert_eq!(empty.mount_home, c.mount_home);
    assert_eq!(
        empty.site_file,
        Some(FileStatus {
            path: SITE.into(),
            found: true
        })
    );
}

#[test]
fn every_key_parsed_with_its_line() {
    let c = site(
        "# site\n\
         binds = [\"/opt/apps:/opt/apps:ro\",\n  \"/data\"]\n\
         scratch = [\"/scratch/$USER\"]\n\
         mount_home = false\n\
         mount_tmp = false\n\
         squashfuse = \"/opt/bin/squashfuse_ll\"\n\
         writable_tmpfs_size = \"1G\"\n\
         allow_user_binds = false\n\
         allow_fakeroot = false\n\
         allowed_image_paths = [\"/data/images/\", \"//apps//containers\"]\n\
         user_may_set = [\"mount_home\", \"scratch\"]\n",
    )
    .unwrap();
    let bind = |written: &str, line| Setting {
        value: BindEntry {
            written: written.into(),
            spec: written.into(),
        },
        origin: site_origin(line),
    };
    assert_eq!(
        c.binds,
        [bind("/opt/apps:/opt/apps:ro", 2), bind("/data", 3)]
    );
    assert_eq!(
        c.scratch,
        [Setting {
            value: ScratchEntry {
                written: "/scratch/$USER".into(),
                path: Ok("/scratch/alice".into()),
            },
            origin: site_origin(4),
        }]
    );
    assert_eq!(c.mount_home, setting(false, site_origin(5)));
    assert_eq!(c.mount_tmp, setting(false, site_origin(6)));
    assert_eq!(
        c.squashfuse,
        setting(Some("/opt/bin/squashfuse_ll".into()), site_origin(7))
    );
    assert_eq!(c.writable_tmpfs_size, setting(1 << 30, site_origin(8)));
    assert_eq!(c.allow_user_binds, setting(false, site_origin(9)));
    assert_eq!(c.allow_fakeroot, setting(false, site_origin(10)));
    assert_eq!(
        c.allowed_image_paths,
        setting(
            vec!["/data/images".into(), "/apps/containers".into()],
            site_origin(11)
        )
    );
    assert_eq!(
        c.user_may_set,
        setting(vec![Key::MountHome, Key::Scratch], site_origin(12))
    );
}

#[test]
fn cold_start_keys() {
    let c = site(
        "prefetch_profiles = false\nnode_cache_dir = \"/dev/shm\"\nnode_cache_size = \"256M\"\n",
    )
    .unwrap();
    assert!(!c.prefetch_profiles.value);
    assert_eq!(
        c.node_cache_dir.value.unwrap().path.unwrap(),
        PathBuf::from("/dev/shm")
    );
    assert_eq!(c.node_cache_size.value, 256 << 20);
    let d = Config::default();
    assert!(d.prefetch_profiles.value && d.node_cache_dir.value.is_none());
}

#[test]
fn image_server_keys() {
    let c =
        site("image_server = \"squashfuse\"\nimage_cache_size = 0\nwarm_linger = 0.5\n").unwrap();
    assert_eq!(c.image_server.value, ImageServer::Squashfuse);
    assert_eq!(c.image_cache_size.value, 0);
    assert_eq!(c.warm_linger.value, std::time::Duration::from_millis(500));
    let c = site("image_cache_size = \"16M\"\nwarm_linger = 0\n").unwrap();
    assert_eq!(c.image_cache_size.value, 16 << 20);
    assert_eq!(c.warm_linger.value, std::time::Duration::ZERO);
    let d = Config::default();
    assert_eq!(d.image_server.value, ImageServer::Builtin);
    assert_eq!(d.warm_linger.value, DEFAULT_WARM_LINGER);
}

#[test]
fn value_forms() {
    let c = site("squashfuse = \"squashfuse\"\nwritable_tmpfs_size = 1048576\n").unwrap();
    assert_eq!(c.squashfuse.value, Some("squashfuse".into()));
    assert_eq!(c.writable_tmpfs_size.value, 1 << 20);
    let c = site("writable_tmpfs_size = 0x1000\n").unwrap();
    assert_eq!(c.writable_tmpfs_size.value, 4096);
    let c = site("writable_tmpfs_size = \"512K\"\n").unwrap();
    assert_eq!(c.writable_tmpfs_size.value, 512 << 10);
    // Quoted keys are keys.
    let c = site("\"mount_home\" = false\n").unwrap();
    assert!(!c.mount_home.value);
    let c = site("binds = []\nallowed_image_paths = []\n").unwrap();
    assert!(c.binds.is_empty() && c.allowed_image_paths.value.is_empty());
}

#[test]
fn type_and_value_errors_name_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "\n\nmount_home = \"yes\"\n",
            "/etc/rfake/rfake.toml:3: mount_home: expected a boolean, found a string",
        ),
        (
            "mount_tmp = \"false\"\n",
            "/etc/rfake/rfake.toml:1: mount_tmp: expected a boolean, found a string (write false without quotes)",
        ),
        (
            "x = 1\n\n\n\n\n\nallow_fakeroot = \"no\"\n",
            "/etc/rfake/rfake.toml:1: x: unknown key",
        ),
        (
            "allow_user_binds = 1\n",
            "/etc/rfake/rfake.toml:1: allow_user_binds: expected a boolean, found an integer",
        ),
        (
            "binds = \"/a:/b\"\n",
            "/etc/rfake/rfake.toml:1: binds: expected an array of strings, found a string (write binds = [\"/a:/b\"])",
        ),
        (
            "binds = [\n  \"/a\",\n  2,\n]\n",
            "/etc/rfake/rfake.toml:3: binds: expected an array of strings, found an integer (entry 2)",
        ),
        (
            "[scratch]\npath = \"/x\"\n",
            "/etc/rfake/rfake.toml:1: scratch: expected an array of strings, found a table",
        ),
        (
            "image_server = \"kernel\"\n",
            "/etc/rfake/rfake.toml:1: image_server: expected \"builtin\" or \"squashfuse\", found \"kernel\"",
        ),
        (
            "warm_linger = -1\n",
            "/etc/rfake/rfake.toml:1: warm_linger: expected a number of seconds from 0 to 3600, found -1",
        ),
        (
            "warm_linger = \"5s\"\n",
            "/etc/rfake/rfake.toml:1: warm_linger: expected a number of seconds, found a string",
        ),
        (
            "image_cache_size = -5\n",
            "/etc/rfake/rfake.toml:1: image_cache_size: \"-5\" must be larger than 0",
        ),
        (
            "squashfuse = true\n",
            "/etc/rfake/rfake.toml:1: squashfuse: expected a string (a program name or an absolute path), found a boolean",
        ),
        (
            "squashfuse = \"bin/squashfuse\"\n",
            "/etc/rfake/rfake.toml:1: squashfuse: expected a program name (looked up in PATH) or an absolute path, found \"bin/squashfuse\"",
        ),
        (
            "squashfuse = \"\"\n",
            "/etc/rfake/rfake.toml:1: squashfuse: expected a program name (looked up in PATH) or an absolute path, found \"\"",
        ),
        (
            "writable_tmpfs_size = 1.5\n",
            "/etc/rfake/rfake.toml:1: writable_tmpfs_size: expected a size like \"64M\" or an integer number of bytes, found a float",
        ),
        (
            "writable_tmpfs_size = \"12Q\"\n",
            "/etc/rfake/rfake.toml:1: writable_tmpfs_size: \"12Q\" is not a size: write a whole number with an optional K, M, G or T suffix, like \"64M\"",
        ),
        (
            "writable_tmpfs_size = 0\n",
            "/etc/rfake/rfake.toml:1: writable_tmpfs_size: \"0\" must be larger than 0",
        ),
        (
            "writable_tmpfs_size = -5\n",
            "/etc/rfake/rfake.toml:1: writable_tmpfs_size: \"-5\" must be larger than 0",
        ),
        (
            "writable_tmpfs_size = \"2T\"\n",
            "/etc/rfake/rfake.toml:1: writable_tmpfs_size: \"2T\" is larger than the limit of 1T",
        ),
        (
            "writable_tmpfs_size = 1099511627777\n",
            "/etc/rfake/rfake.toml:1: writable_tmpfs_size: \"1099511627777\" is larger than the limit of 1T",
        ),
        (
            "writable_tmpfs_size = 1979-05-27\n",
            "/etc/rfake/rfake.toml:1: writable_tmpfs_size: expected a size like \"64M\" or an integer number of bytes, found a date-time",
        ),
        (
            "allowed_image_paths = [\"images\"]\n",
            "/etc/rfake/rfake.toml:1: allowed_image_paths: \"images\" must be an absolute directory",
        ),
        (
            "allowed_image_paths = [\"/data/../images\"]\n",
            "/etc/rfake/rfake.toml:1: allowed_image_paths: \"/data/../images\" must not contain '..': write the directory's real path",
        ),
        (
            "allowed_image_paths = \"/data\"\n",
            "/etc/rfake/rfake.toml:1: allowed_image_paths: expected an array of strings, found a string (write allowed_image_paths = [\"/data\"])",
        ),
        (
            "user_may_set = [\"binds\", \"mount_hom\"]\n",
            "/etc/rfake/rfake.toml:1: user_may_set: \"mount_hom\" is not a key (did you mean mount_home?)",
        ),
        (
            "user_may_set = [\"allow_fakeroot\"]\n",
            "/etc/rfake/rfake.toml:1: user_may_set: \"allow_fakeroot\" is a policy key: users can never set it",
        ),
        (
            "user_may_set = [[\"binds\"]]\n",
            "/etc/rfake/rfake.toml:1: user_may_set: expected an array of strings, found an array (entry 1)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&site_error(text), want, "{text:?}");
    }
}

#[test]
fn bind_entries_checked() {
    let bind_error = |entry: &str| site_error(&format!("binds = [{}]\n", toml_string(entry)));
    let cases: &[(&str, &str)] = &[
        (
            "/a:/b:rx",
            "binds: \"/a:/b:rx\": the mode must be ro or rw, found \"rx\"",
        ),
        (
            "/a:/b:ro:x",
            "binds: \"/a:/b:ro:x\": expected SRC[:DST[:ro|rw]], found 4 ':'-separated fields",
        ),
        ("", "binds: \"\": SRC is empty"),
        (":/b", "binds: \":/b\": SRC is empty"),
        (":", "binds: \":\": SRC is empty"),
        ("::ro", "binds: \"::ro\": SRC is empty"),
        (
            "/a:",
            "binds: \"/a:\": DST after ':' is empty (write SRC alone to bind it at the same path)",
        ),
        (
            "/a::",
            "binds: \"/a::\": the mode must be ro or rw, found \"\"",
        ),
        (
            "/a:/b:",
            "binds: \"/a:/b:\": the mode must be ro or rw, found \"\"",
        ),
        (
            "data:/data",
            "binds: \"data:/data\": SRC \"data\" must be an absolute path",
        ),
        (
            "$RELATIVE:/s",
            "binds: \"$RELATIVE:/s\": SRC expands to \"scratch\", which is not an absolute path",
        ),
        ("$NOPE:/n", "binds: \"$NOPE:/n\": $NOPE is not set"),
        ("/a:$NOPE", "binds: \"/a:$NOPE\": $NOPE is not set"),
        (
            "$COLON/x:/x",
            "binds: \"$COLON/x:/x\": \"$COLON/x\" expands to \"/a:b/x\", and a bind path cannot contain ':'",
        ),
        (
            "/a$:/b",
            "binds: \"/a$:/b\": '$' at character 3 does not start $NAME or ${NAME} (a literal '$' is not supported)",
        ),
    ];
    for (entry, want) in cases {
        assert_eq!(
            bind_error(entry),
            format!("/etc/rfake/rfake.toml:1: {want}"),
            "{entry:?}"
        );
    }
    let c = site(
        "binds = [\"$HOME/data:/data:ro\", \"${WORK}\", \"/a::rw\", \"/b:$HOME/b\", \"/c:/c:rw\"]\n",
    )
    .unwrap();
    let specs: Vec<&str> = c.binds.iter().map(|b| b.value.spec.as_str()).collect();
    assert_eq!(
        specs,
        [
            "/home/alice/data:/data:ro",
            "/gpfs/work/alice",
            "/a::rw",
            "/b:/home/alice/b",
            "/c:/c:rw"
        ]
    );
    assert_eq!(c.binds[0].value.written, "$HOME/data:/data:ro");
}

#[test]
fn scratch_expansion_with_set_and_unset_variables() {
    let c = site(
        "scratch = [\n\
           \"/scratch/$USER\",\n\
           \"$SCRATCH\",\n\
           \"${WORK}/tmp\",\n\
           \"$LOCAL_SCRATCH/$USER\",\n\
         ]\n",
    )
    .unwrap();
    let paths: Vec<_> = c.scratch.iter().map(|s| s.value.path.clone()).collect();
    assert_eq!(
        paths,
        [
            Ok("/scratch/alice".into()),
            Err(ExpandError::Unset {
                name: "SCRATCH".into()
            }),
            Ok("/gpfs/work/alice/tmp".into()),
            Err(ExpandError::Unset {
                name: "LOCAL_SCRATCH".into()
            }),
        ]
    );
    assert_eq!(
        c.scratch_dirs(),
        [
            (Path::new("/scratch/alice"), &site_origin(2)),
            (Path::new("/gpfs/work/alice/tmp"), &site_origin(4)),
        ]
    );
    // An empty variable is skipped like an unset one: `${EMPTY}/$USER`
    // must not become `/alice`.
    let mut with_empty = env();
    with_empty.push(("EMPTY".into(), "".into()));
    let c = Config::from_strs(
        Some((Path::new(SITE), "scratch = [\"${EMPTY}/$USER\"]")),
        None,
        &with_empty,
    )
    .unwrap();
    assert!(c.scratch_dirs().is_empty());

    let cases: &[(&str, &str)] = &[
        ("scratch", "scratch: \"scratch\" must be an absolute path"),
        (
            "$RELATIVE/x",
            "scratch: \"$RELATIVE/x\" expands to \"scratch/x\", which is not an absolute path",
        ),
        (
            "$NOPE/${",
            "scratch: \"$NOPE/${\": '$' at character 7 does not start $NAME or ${NAME} (a literal '$' is not supported)",
        ),
        ("", "scratch: \"\" must be an absolute path"),
    ];
    for (entry, want) in cases {
        assert_eq!(
            site_error(&format!("\n\nscratch = [{}]\n", toml_string(entry))),
            format!("/etc/rfake/rfake.toml:3: {want}"),
            "{entry:?}"
        );
    }
}

#[test]
fn syntax_errors_give_line_and_column() {
    let msg = site_error("mount_home = true\nmount_tmp = \n");
    assert!(
        msg.starts_with("/etc/rfake/rfake.toml:2:13: invalid TOML: "),
        "{msg}"
    );
    let msg = site_error("mount_home = true\nmount_home = false\n");
    assert!(
        msg.starts_with("/etc/rfake/rfake.toml:2:1: invalid TOML: "),
        "{msg}"
    );
    let msg = site_error("binds = [\"/a\"\n");
    assert!(msg.starts_with("/etc/rfake/rfake.toml:1:"), "{msg}");
    assert!(msg.contains("invalid TOML"), "{msg}");
}

#[test]
fn unknown_keys_suggest_near_misses() {
    let cases: &[(&str, &str)] = &[
        (
            "mount-home = true",
            "mount-home: unknown key (did you mean mount_home?)",
        ),
        ("bind = []", "bind: unknown key (did you mean binds?)"),
        (
            "MOUNT_TMP = true",
            "MOUNT_TMP: unknown key (did you mean mount_tmp?)",
        ),
        ("allow_fakerot = true", "(did you mean allow_fakeroot?)"),
        (
            "tmpfs_size = \"1G\"",
            "tmpfs_size: unknown key (did you mean writable_tmpfs_size?)",
        ),
        (
            "home = true",
            "home: unknown key (did you mean mount_home?)",
        ),
        ("colour = true", "colour: unknown key"),
        ("mount.home = true", "mount: unknown key"),
    ];
    for (text, want) in cases {
        let msg = site_error(text);
        assert!(msg.starts_with("/etc/rfake/rfake.toml:1: "), "{msg}");
        assert!(msg.ends_with(want), "{text}: {msg}");
    }
    assert!(site_error("colour = true").ends_with("colour: unknown key"));
}

#[test]
fn user_overrides_scalars_and_appends_to_lists() {
    let c = both(
        "binds = [\"/opt/site\"]\nscratch = [\"/scratch/$USER\"]\nmount_home = false\nwritable_tmpfs_size = \"1G\"\n",
        "mount_home = true\nbinds = [\"$HOME/data:/data\"]\nscratch = [\"/local/$USER\"]\n",
    )
    .unwrap();
    assert_eq!(c.mount_home, setting(true, user_origin(1)));
    assert_eq!(c.writable_tmpfs_size, setting(1 << 30, site_origin(4)));
    assert_eq!(c.mount_tmp, Setting::default(true));
    let binds: Vec<(&str, &Origin)> = c
        .binds
        .iter()
        .map(|b| (b.value.spec.as_str(), &b.origin))
        .collect();
    assert_eq!(
        binds,
        [
            ("/opt/site", &site_origin(1)),
            ("/home/alice/data:/data", &user_origin(2))
        ]
    );
    assert_eq!(
        c.scratch_dirs(),
        [
            (Path::new("/scratch/alice"), &site_origin(2)),
            (Path::new("/local/alice"), &user_origin(3)),
        ]
    );
    // A user file alone applies over the defaults.
    let c = Config::from_strs(None, Some((Path::new(USER), "mount_tmp = false")), &env()).unwrap();
    assert_eq!(c.mount_tmp, setting(false, user_origin(1)));
    assert!(c.site_file.is_none());
}

#[test]
fn user_file_may_not_set_policy_keys() {
    for key in [
        "allow_user_binds",
        "allow_fakeroot",
        "allowed_image_paths",
        "user_may_set",
    ] {
        let value = if key.starts_with("allow_") && key != "allowed_image_paths" {
            "true"
        } else {
            "[]"
        };
        let err = both("", &format!("# mine\n{key} = {value}\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{USER}:2: {key}: a policy key: only the site configuration ({SITE}) may set it"
            )
        );
        assert_eq!(err.exit_kind(), ExitKind::Config);
    }
    // Even a wrong type is reported as a policy problem first.
    let err = both("", "allow_fakeroot = \"x\"").unwrap_err();
    assert!(err.to_string().contains("policy key"), "{err}");
}

#[test]
fn user_may_set_restricts_the_user_file() {
    let site_text = "# site\nuser_may_set = [\"scratch\", \"mount_home\"]\n";
    let c = both(site_text, "scratch = [\"/x\"]\nmount_home = false\n").unwrap();
    assert!(!c.mount_home.value);
    let err = both(
        site_text,
        "mount_home = false\n\nsquashfuse = \"squashfuse\"\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{USER}:3: squashfuse: the site configuration {SITE}:2 does not allow users to set it (user_may_set)"
        )
    );
    // An empty list lets users set nothing.
    let err = both("user_may_set = []", "mount_tmp = true").unwrap_err();
    assert!(err.to_string().contains("does not allow users"), "{err}");
    // The site file itself is not restricted by user_may_set.
    let c = site("user_may_set = []\nmount_tmp = false").unwrap();
    assert!(!c.mount_tmp.value);
}

#[test]
fn allow_user_binds_refuses_user_binds() {
    let err = both("allow_user_binds = false\n", "binds = [\"/x\"]").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{USER}:1: binds: the site configuration {SITE}:1 does not allow user binds (allow_user_binds = false)"
        )
    );
    let c = both(
        "allow_user_binds = false\nbinds = [\"/site\"]\n",
        "scratch = []",
    )
    .unwrap();
    assert_eq!(c.binds.len(), 1);
}

#[test]
fn user_file_errors_name_the_user_file() {
    let err = both("mount_home = true", "\nwritable_tmpfs_size = \"0\"").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{USER}:2: writable_tmpfs_size: \"0\" must be larger than 0")
    );
    let err = both("mount_home = true", "mount_hme = false").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{USER}:1: mount_hme: unknown key (did you mean mount_home?)")
    );
    // A broken site file is reported before the user file is looked at.
    let err = both("mount_home = 1", "mount_hme = false").unwrap_err();
    assert!(err.to_string().starts_with(SITE), "{err}");
}

#[test]
fn image_allowed_compares_components() {
    let c = site("allowed_image_paths = [\"/data/images/\", \"//apps//sif\"]\n").unwrap();
    let cases: &[(&str, bool)] = &[
        ("/data/images/a.sif", true),
        ("/data/images/sub/dir/a.sqfs", true),
        ("/data/images", true),
        ("/data/images/", true),
        ("//data//images//a.sif", true),
        ("/data/images/./a.sif", true),
        ("/apps/sif/x.sif", true),
        ("/data/imagesX/a.sif", false),
        ("/data/images.sif", false),
        ("/data/image", false),
        ("/data", false),
        ("/apps/sifs/x.sif", false),
        ("/home/alice/a.sif", false),
        // Not canonical: refused rather than trusted.
        ("/data/images/../secret/a.sif", false),
        ("/data/images/..", false),
        ("data/images/a.sif", false),
        ("", false),
    ];
    let settings = crate::launch::settings::Settings::from_config(&c);
    for (image, want) in cases {
        assert_eq!(settings.image_allowed(Path::new(image)), *want, "{image:?}");
    }
    // No list: every image.
    let any = crate::launch::settings::Settings::from_config(&Config::default());
    for image in ["/data/imagesX/a.sif", "/home/alice/a.sif", "relative.sif"] {
        assert!(any.image_allowed(Path::new(image)), "{image}");
    }
}

#[test]
fn sources_from_env() {
    let e = |pairs: &[(&str, &str)]| -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    };
    let path = |p: &str, required| {
        Some(ConfigPath {
            path: p.into(),
            required,
        })
    };
    type Vars<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Vars, Option<ConfigPath>, Option<ConfigPath>)] = &[
        (&[], path(SITE, false), None),
        (
            &[("HOME", "/home/alice")],
            path(SITE, false),
            path("/home/alice/.config/rfake/rfake.toml", false),
        ),
        (
            &[("HOME", "/home/alice"), ("XDG_CONFIG_HOME", "/xdg")],
            path(SITE, false),
            path("/xdg/rfake/rfake.toml", false),
        ),
        (
            &[("HOME", "/home/alice"), ("XDG_CONFIG_HOME", "relative")],
            path(SITE, false),
            path("/home/alice/.config/rfake/rfake.toml", false),
        ),
        (&[("HOME", "")], path(SITE, false), None),
        (
            &[
                ("RFAKE_CONFIG", "/tmp/site.toml"),
                ("RFAKE_USER_CONFIG", "/tmp/user.toml"),
                ("HOME", "/home/alice"),
            ],
            path("/tmp/site.toml", true),
            path("/tmp/user.toml", true),
        ),
        (
            &[
                ("RFAKE_CONFIG", ""),
                ("RFAKE_USER_CONFIG", ""),
                ("HOME", "/home/alice"),
            ],
            path(SITE, false),
            None,
        ),
    ];
    for (vars, site, user) in cases {
        let s = ConfigSources::from_env(&e(vars));
        assert_eq!(Some(&s.site), site.as_ref(), "{vars:?}");
        assert_eq!(&s.user, user, "{vars:?}");
    }
}

#[test]
fn load_reads_files_and_tolerates_missing_ones() {
    let d = tempfile::tempdir().unwrap();
    let site_path = d.path().join("site.toml");
    let user_path = d.path().join("user.toml");
    std::fs::write(&site_path, "mount_home = false\n").unwrap();
    let sources = |site: &Path, site_required, user: &Path, user_required| ConfigSources {
        site: ConfigPath {
            path: site.into(),
            required: site_required,
        },
        user: Some(ConfigPath {
            path: user.into(),
            required: user_required,
        }),
    };

    // Site present, user missing.
    let c = Config::load(&sources(&site_path, true, &user_path, false), &env()).unwrap();
    assert!(!c.mount_home.value);
    assert_eq!(c.site_file.as_ref().map(|f| f.found), Some(true));
    assert_eq!(c.user_file.as_ref().map(|f| f.found), Some(false));

    // Neither present, neither required: defaults.
    let missing = d.path().join("missing.toml");
    let c = Config::load(&sources(&missing, false, &user_path, false), &env()).unwrap();
    assert!(c.mount_home.value);
    assert_eq!(c.site_file.as_ref().map(|f| f.found), Some(false));

    // Named explicitly but missing: an error naming the file.
    let err = Config::load(&sources(&missing, true, &user_path, false), &env()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{msg}"
    );
    assert_eq!(err.exit_kind(), crate::exit::ExitKind::Config);

    // A directory is not a configuration file.
    let err = Config::load(&sources(&site_path, true, d.path(), false), &env()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: a directory, not a regular file", d.path().display())
    );

    // The user file applies over the site file.
    std::fs::write(&user_path, "mount_home = true\n").unwrap();
    let c = Config::load(&sources(&site_path, true, &user_path, false), &env()).unwrap();
    assert_eq!(
        c.mount_home.origin,
        Origin::User {
            path: user_path.clone(),
            line: 1
        }
    );
}

#[test]
fn render_shows_values_and_origins() {
    let c = both(
        "binds = [\"/opt/apps:/opt/apps:ro\"]\n\
         scratch = [\"/scratch/$USER\", \"$SCRATCH\"]\n\
         mount_tmp = false\n\
         allowed_image_paths = [\"/data/images\"]\n",
        "binds = [\"$HOME/data:/data\"]\nwritable_tmpfs_size = 1073741824\n",
    )
    .unwrap();
    let text = c.render();
    let expected = r#"# site file: /etc/rfake/rfake.toml
# user file: /home/alice/.config/rfake/rfake.toml
binds = [
    "/opt/apps:/opt/apps:ro",                            # /etc/rfake/rfake.toml:1
    "$HOME/data:/data",                                  # /home/alice/.config/rfake/rfake.toml:1 -> /home/alice/data:/data
]
scratch = [
    "/scratch/$USER",                                    # /etc/rfake/rfake.toml:2 -> /scratch/alice
    "$SCRATCH",                                          # /etc/rfake/rfake.toml:2, skipped: $SCRATCH is not set
]
mount_home = true                                        # default
mount_tmp = false                                        # /etc/rfake/rfake.toml:3
mount_cwd = true                                         # default
image_server = "builtin"                                 # default
# squashfuse: squashfuse_ll, else squashfuse, from PATH  # default
image_cache_size = "64M"                                 # default
warm_linger = 5                                          # default
writable_tmpfs_size = "1G"                               # /home/alice/.config/rfake/rfake.toml:2
build_max_size = "4T"                                    # default
prefetch_profiles = true                                 # default
# node_cache_dir: none (no node cache)                   # default
node_cache_size = "1G"                                   # default
# cache_dir: $RFAKE_CACHEDIR, else $XDG_CACHE_HOME/rfake, else ~/.cache/rfake  # default
cache_max_size = "20G"                                   # default
offline = false                                          # default
# registry_ca_file: the system's certificate authorities only  # default
cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]             # default
nvidia_libs = []                                         # default
rocm_libs = []                                           # default
ld_cache = "/etc/ld.so.cache"                            # default
gpu_dev_dir = "/dev"                                     # default
gpu_missing_driver = "error"                             # default
# policy: the site file only
allow_user_binds = true                                  # default
allow_fakeroot = true                                    # default
allowed_image_paths = ["/data/images"]                   # /etc/rfake/rfake.toml:4
cache_read_only = false                                  # default
user_may_set = ["binds", "scratch", "mount_home", "mount_tmp", "mount_cwd", "image_server", "squashfuse", "image_cache_size", "warm_linger", "writable_tmpfs_size", "build_max_size", "prefetch_profiles", "node_cache_dir", "node_cache_size", "cache_dir", "cache_max_size", "offline", "registry_ca_file", "cdi_spec_dirs", "nvidia_libs", "rocm_libs", "ld_cache", "gpu_dev_dir", "gpu_missing_driver", "profiles"]  # default
# profiles: none ([profiles.NAME] tables; --profile NAME)
"#;
    assert_eq!(text, expected, "\n{text}");
}

/// `build_max_size`: a size up to 1024T, or 0 for no limit (`u64::MAX`,
/// rendered back as 0).
#[test]
fn build_max_size_values() {
    for (text, want) in [
        ("\"1M\"", 1 << 20),
        ("\"4T\"", 4 << 40),
        ("\"1024T\"", 1 << 50),
        ("4096", 4096),
        ("0", u64::MAX),
        ("\"0\"", u64::MAX),
    ] {
        let c = site(&format!("build_max_size = {text}\n")).unwrap();
        assert_eq!(c.build_max_size.value, want, "{text}");
        let again = site(&c.render()).unwrap();
        assert_eq!(again.build_max_size.value, want, "{text} rendered");
    }
    for (text, problem) in [
        ("\"1025T\"", "\"1025T\" is larger than the limit of 1024T"),
        ("-1", "\"-1\" must be larger than 0"),
        ("\"1.5T\"", "is not a size"),
        (
            "true",
            "expected a size like \"4T\", an integer number of bytes or 0 (no limit), found a boolean",
        ),
    ] {
        let msg = site_error(&format!("build_max_size = {text}\n"));
        assert!(msg.contains(problem), "{text}: {msg}");
        assert!(msg.contains(":1: build_max_size: "), "{msg}");
    }
}

#[test]
fn render_parses_back_to_the_same_values() {
    let c = both(
        "binds = [\"/opt/a\\\"b:/opt/ab:ro\"]\nsquashfuse = \"squashfuse\"\nallow_fakeroot = false\nuser_may_set = [\"binds\"]\n",
        "binds = [\"$HOME/x\"]\n",
    )
    .unwrap();
    let again = site(&c.render()).unwrap();
    let values = |c: &Config| {
        (
            c.binds.iter().map(|b| b.value.clone()).collect::<Vec<_>>(),
            c.scratch
                .iter()
                .map(|s| s.value.clone())
                .collect::<Vec<_>>(),
            c.mount_home.value,
            c.squashfuse.value.clone(),
            c.writable_tmpfs_size.value,
            c.allow_fakeroot.value,
            c.allowed_image_paths.value.clone(),
            c.user_may_set.value.clone(),
        )
    };
    assert_eq!(values(&again), values(&c));
    let defaults = Config::default().render();
    assert_eq!(
        values(&site(&defaults).unwrap()),
        values(&Config::default())
    );
    assert!(defaults.contains("# site file: none\n"), "{defaults}");
    assert!(defaults.contains("binds = []"), "{defaults}");
}

#[test]
fn example_file_is_valid_and_complete() {
    let text = include_str!("../../docs/rfake.toml.example");
    let c = site(text).unwrap();
    // The example sets nothing: every key is shown commented out with its
    // default, so installing it as is changes nothing.
    let defaults = Config {
        site_file: c.site_file.clone(),
        ..Config::default()
    };
    assert_eq!(c, defaults);
    // Uncommenting every `# key = value` line gives a valid file too.
    let uncommented: String = text
        .lines()
        .map(|l| {
            let key = l.trim_start_matches("# ").split(' ').next().unwrap_or("");
            if Key::from_name(key).is_some() && l.starts_with("# ") && l.contains(" = ") {
                l.trim_start_matches("# ").to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    site(&uncommented).unwrap();
    for key in Key::ALL {
        assert!(
            uncommented
                .lines()
                .any(|l| l.starts_with(&format!("{key} = "))),
            "{key} is not in docs/rfake.toml.example"
        );
    }
}

#[test]
fn key_names_round_trip() {
    for key in Key::ALL {
        assert_eq!(Key::from_name(key.name()), Some(key));
    }
    assert_eq!(Key::from_name("Binds"), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn messages_and_render_stay_on_one_line() {
    assert_eq!(
        site_error("\"a\\nb\" = 1"),
        "/etc/rfake/rfake.toml:1: a\\nb: unknown key"
    );
    assert_eq!(
        site_error("binds = [\"rel\\u001b[2J\"]"),
        "/etc/rfake/rfake.toml:1: binds: \"rel\\u{1b}[2J\": SRC \"rel\\u{1b}[2J\" must be an absolute path"
    );
    let mut e = env();
    e.push(("NL".into(), "/x\ny".into()));
    let text = "binds = [\"$NL:/y\"]\nscratch = [\"/s\\n\", \"$NL\"]\n";
    let c = Config::from_strs(Some((Path::new(SITE), text)), None, &e).unwrap();
    assert_eq!(c.binds[0].value.spec, "/x\ny:/y");
    let rendered = c.render();
    let has_line = |start: &str, end: &str| {
        rendered
            .lines()
            .any(|l| l.starts_with(start) && l.ends_with(end))
    };
    assert!(
        has_line("    \"$NL:/y\",", "# /etc/rfake/rfake.toml:1 -> /x\\ny:/y"),
        "{rendered}"
    );
    assert!(
        has_line("    \"/s\\n\",", "# /etc/rfake/rfake.toml:2"),
        "{rendered}"
    );
    assert!(
        has_line("    \"$NL\",", "# /etc/rfake/rfake.toml:2 -> /x\\ny"),
        "{rendered}"
    );
    let again = Config::from_strs(Some((Path::new(SITE), &rendered)), None, &e).unwrap();
    assert_eq!(again.binds[0].value, c.binds[0].value);
    assert_eq!(again.scratch_dirs().len(), 2);
}

/// Whatever a configuration path names, loading ends at once with one line
/// naming it and the cause (exit 78): a FIFO (whose open would wait for a
/// writer), `/dev/zero` (endless), a directory, a file over the limit
/// (issue 19, defect 6). A file of exactly the limit is read.
#[test]
fn only_regular_files_up_to_the_limit_are_read() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = d.path().join("big.toml");
    let mut text = "# padding\n".repeat((MAX_FILE_SIZE as usize) / 10);
    text.push_str(&" ".repeat(MAX_FILE_SIZE as usize - text.len()));
    std::fs::write(&big, &text).unwrap();
    let ok = Config::load(
        &ConfigSources {
            site: ConfigPath {
                path: big.clone(),
                required: true,
            },
            user: None,
        },
        &env(),
    );
    assert!(ok.is_ok(), "a file of exactly the limit: {ok:?}");
    text.push('\n');
    std::fs::write(&big, &text).unwrap();
    let cases = [
        (fifo.clone(), "a FIFO, not a regular file"),
        ("/dev/zero".into(), "a character device, not a regular file"),
        (d.path().to_path_buf(), "a directory, not a regular file"),
        (big, "larger than 1 MiB, too large for a configuration file"),
    ];
    for (path, cause) in cases {
        for (site, user) in [(true, false), (false, true)] {
            let named = ConfigPath {
                path: path.clone(),
                required: true,
            };
            let absent = ConfigPath {
                path: d.path().join("absent.toml"),
                required: false,
            };
            let sources = ConfigSources {
                site: if site { named.clone() } else { absent.clone() },
                user: Some(if user { named } else { absent }),
            };
            let start = std::time::Instant::now();
            let err = Config::load(&sources, &env()).unwrap_err();
            assert!(start.elapsed() < std::time::Duration::from_secs(5));
            assert_eq!(err.to_string(), format!("{}: {cause}", path.display()));
            assert_eq!(err.exit_kind(), ExitKind::Config);
        }
    }
}
