//! `rfake config`: the effective configuration as TOML, each value with
//! where it came from.

use super::{Config, Key, Origin, ScratchEntry, Setting, format_size, one_line, shown};

impl Config {
    /// The effective configuration as TOML (it parses back to the same
    /// values), each value followed by where it came from: `# default` or
    /// `# FILE:LINE`. For `rfake config`.
    pub fn render(&self) -> String {
        let mut out = Rendered::default();
        for (role, file) in [("site", &self.site_file), ("user", &self.user_file)] {
            out.comment(match file {
                Some(f) if f.found => format!("# {role} file: {}", shown(&f.path)),
                Some(f) => format!("# {role} file: {} (not found)", shown(&f.path)),
                None => format!("# {role} file: none"),
            });
        }
        let list = |out: &mut Rendered, key: Key, entries: Vec<(&str, String, &Origin)>| {
            if entries.is_empty() {
                out.line(format!("{key} = []"), "no entries".into());
                return;
            }
            out.comment(format!("{key} = ["));
            for (written, note, origin) in entries {
                out.line(
                    format!("    {},", toml_string(written)),
                    format!("{origin}{note}"),
                );
            }
            out.comment("]".into());
        };
        let binds = self
            .binds
            .iter()
            .map(|b| {
                let note = if b.value.spec == b.value.written {
                    String::new()
                } else {
                    format!(" -> {}", one_line(&b.value.spec))
                };
                (b.value.written.as_str(), note, &b.origin)
            })
            .collect();
        list(&mut out, Key::Binds, binds);
        let scratch = self
            .scratch
            .iter()
            .map(|s| {
                let note = match &s.value.path {
                    Ok(path) if path.as_os_str() == s.value.written.as_str() => String::new(),
                    Ok(path) => format!(" -> {}", shown(path)),
                    Err(why) => format!(", skipped: {why}"),
                };
                (s.value.written.as_str(), note, &s.origin)
            })
            .collect();
        list(&mut out, Key::Scratch, scratch);
        out.setting(Key::MountHome, &self.mount_home, |v| v.to_string());
        out.setting(Key::MountTmp, &self.mount_tmp, |v| v.to_string());
        out.setting(Key::MountCwd, &self.mount_cwd, |v| v.to_string());
        out.setting(Key::ImageServer, &self.image_server, |v| {
            toml_string(v.name())
        });
        match &self.squashfuse.value {
            Some(program) => out.line(
                format!(
                    "squashfuse = {}",
                    toml_string(&program.display().to_string())
                ),
                self.squashfuse.origin.to_string(),
            ),
            None => out.line(
                "# squashfuse: squashfuse_ll, else squashfuse, from PATH".into(),
                self.squashfuse.origin.to_string(),
            ),
        }
        out.setting(Key::ImageCacheSize, &self.image_cache_size, |v| match v {
            0 => "0".into(),
            v => toml_string(&format_size(*v)),
        });
        out.setting(Key::WarmLinger, &self.warm_linger, |v| {
            let secs = v.as_secs_f64();
            if secs.fract() == 0.0 {
                format!("{secs:.0}")
            } else {
                secs.to_string()
            }
        });
        out.setting(Key::WritableTmpfsSize, &self.writable_tmpfs_size, |v| {
            toml_string(&format_size(*v))
        });
        out.setting(Key::BuildMaxSize, &self.build_max_size, |v| match *v {
            u64::MAX => "0".into(),
            v => toml_string(&format_size(v)),
        });
        out.setting(Key::PrefetchProfiles, &self.prefetch_profiles, |v| {
            v.to_string()
        });
        out.dir_setting(
            Key::NodeCacheDir,
            &self.node_cache_dir,
            "# node_cache_dir: none (no node cache)",
        );
        out.setting(Key::NodeCacheSize, &self.node_cache_size, |v| {
            toml_string(&format_size(*v))
        });
        out.dir_setting(
            Key::CacheDir,
            &self.cache_dir,
            "# cache_dir: $RFAKE_CACHEDIR, else $XDG_CACHE_HOME/rfake, else ~/.cache/rfake",
        );
        out.setting(Key::CacheMaxSize, &self.cache_max_size, |v| match v {
            0 => "0".into(),
            v => toml_string(&format_size(*v)),
        });
        out.setting(Key::Offline, &self.offline, |v| v.to_string());
        match &self.registry_ca_file.value {
            Some(file) => out.line(
                format!(
                    "registry_ca_file = {}",
                    toml_string(&file.display().to_string())
                ),
                self.registry_ca_file.origin.to_string(),
            ),
            None => out.line(
                "# registry_ca_file: the system's certificate authorities only".into(),
                self.registry_ca_file.origin.to_string(),
            ),
        }
        out.setting(Key::CdiSpecDirs, &self.cdi_spec_dirs, |v| {
            toml_list(v.iter().map(|p| p.display().to_string()))
        });
        out.setting(Key::NvidiaLibs, &self.nvidia_libs, |v| {
            toml_list(v.iter().cloned())
        });
        out.setting(Key::RocmLibs, &self.rocm_libs, |v| {
            toml_list(v.iter().cloned())
        });
        out.setting(Key::LdCache, &self.ld_cache, |v| {
            toml_string(&v.display().to_string())
        });
        out.setting(Key::GpuDevDir, &self.gpu_dev_dir, |v| {
            toml_string(&v.display().to_string())
        });
        out.setting(Key::GpuMissingDriver, &self.gpu_missing_driver, |v| {
            toml_string(v.name())
        });
        out.comment("# policy: the site file only".into());
        out.setting(Key::AllowUserBinds, &self.allow_user_binds, |v| {
            v.to_string()
        });
        out.setting(Key::AllowFakeroot, &self.allow_fakeroot, |v| v.to_string());
        out.setting(Key::AllowedImagePaths, &self.allowed_image_paths, |v| {
            toml_list(v.iter().map(|p| p.display().to_string()))
        });
        out.setting(Key::CacheReadOnly, &self.cache_read_only, |v| v.to_string());
        out.setting(Key::UserMaySet, &self.user_may_set, |v| {
            toml_list(v.iter().map(|k| k.name().to_string()))
        });
        // Tables last: TOML puts every key after a table header in it.
        if self.profiles.is_empty() {
            out.comment("# profiles: none ([profiles.NAME] tables; --profile NAME)".into());
        }
        for p in &self.profiles {
            let v = &p.value;
            out.comment(String::new());
            out.line(format!("[profiles.{}]", v.name), p.origin.to_string());
            if !v.description.is_empty() {
                out.comment(format!("description = {}", toml_string(&v.description)));
            }
            let dirs = |d: &[std::path::PathBuf]| toml_list(d.iter().map(|p| shown(p)));
            for (key, value, empty) in [
                (
                    "binds",
                    toml_list(v.binds.iter().cloned()),
                    v.binds.is_empty(),
                ),
                (
                    "library_path",
                    dirs(&v.library_path),
                    v.library_path.is_empty(),
                ),
                ("path", dirs(&v.path), v.path.is_empty()),
            ] {
                if !empty {
                    out.comment(format!("{key} = {value}"));
                }
            }
            if !v.env.is_empty() {
                let env: Vec<String> = v
                    .env
                    .iter()
                    .map(|(k, val)| format!("{k} = {}", toml_string(val)))
                    .collect();
                out.comment(format!("env = {{ {} }}", env.join(", ")));
            }
        }
        out.finish()
    }
}

/// `s` as a TOML basic string.
pub(super) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|s| toml_string(&s)).collect();
    format!("[{}]", items.join(", "))
}

/// `render`'s output: lines of TOML, most with a `# origin` comment, the
/// comments aligned.
#[derive(Default)]
struct Rendered {
    lines: Vec<(String, Option<String>)>,
}

impl Rendered {
    fn comment(&mut self, text: String) {
        self.lines.push((text, None));
    }

    fn line(&mut self, text: String, note: String) {
        self.lines.push((text, Some(note)));
    }

    fn setting<T>(&mut self, key: Key, s: &Setting<T>, value: impl Fn(&T) -> String) {
        self.line(format!("{key} = {}", value(&s.value)), s.origin.to_string());
    }

    /// A directory key written as given, with where `$VAR`s expanded to
    /// (or why it is not used); `unset` is the commented line for none.
    fn dir_setting(&mut self, key: Key, s: &Setting<Option<ScratchEntry>>, unset: &str) {
        match &s.value {
            Some(entry) => {
                let note = match &entry.path {
                    Ok(path) if path.as_os_str() == entry.written.as_str() => String::new(),
                    Ok(path) => format!(" -> {}", shown(path)),
                    Err(why) => format!(", not used: {why}"),
                };
                self.line(
                    format!("{key} = {}", toml_string(&entry.written)),
                    format!("{}{note}", s.origin),
                );
            }
            None => self.line(unset.into(), s.origin.to_string()),
        }
    }

    /// Lines longer than this are left out of the alignment.
    const ALIGN_MAX: usize = 56;

    fn finish(self) -> String {
        let width = self
            .lines
            .iter()
            .filter(|(_, note)| note.is_some())
            .map(|(text, _)| text.chars().count())
            .filter(|&len| len <= Self::ALIGN_MAX)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (text, note) in self.lines {
            match note {
                Some(note) => {
                    let pad = width.saturating_sub(text.chars().count());
                    out.push_str(&format!("{text}{:pad$}  # {note}\n", ""));
                }
                None => out.push_str(&format!("{text}\n")),
            }
        }
        out
    }
}
