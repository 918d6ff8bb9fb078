//! Running one console block: its marker, its commands, the home directory
//! it runs in, and the shell session that runs it.
//!
//! See tests/transcripts/README.md for the conventions the docs follow.

use regex::Regex;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The home directory the docs show; each block's own home stands for it.
pub const DOC_HOME: &str = "/home/rfaketest";
/// The user name the docs show.
pub const DOC_USER: &str = "rfaketest";
/// The uid and gid the docs show.
pub const DOC_ID: u32 = 1001;
/// The registry the docs show; a `needs registry` block runs against the
/// test registry (`RFAKE_TEST_REGISTRY`) in its place.
pub const DOC_REGISTRY: &str = "localhost:5000";

/// What the `<!-- transcript: ... -->` marker of a block says.
#[derive(Debug, Default, PartialEq)]
pub struct Marks {
    /// `not-runnable KIND: REASON`: the block is not run here.
    pub not_runnable: Option<(String, String)>,
    /// `needs slurm`: run with SLURM_CONF naming the test cluster.
    pub needs_slurm: bool,
    /// `needs registry`: `localhost:5000` is the test registry.
    pub needs_registry: bool,
    /// `unordered`: each command's lines may come in any order.
    pub unordered: bool,
    /// `file PATH` (not on a console block): the block's text is written to
    /// PATH, in the home of the next console block of the document.
    pub file: Option<String>,
}

pub fn parse_marks(text: Option<&str>, console: bool) -> Result<Marks, String> {
    let mut m = Marks::default();
    let Some(text) = text else { return Ok(m) };
    if let Some(rest) = text.strip_prefix("not-runnable") {
        let (kind, reason) = rest
            .split_once(':')
            .ok_or("not-runnable KIND: REASON (the reason is missing)")?;
        let (kind, reason) = (kind.trim(), reason.trim());
        if kind.is_empty()
            || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            || reason.is_empty()
        {
            return Err(format!("not-runnable KIND: REASON, found `{text}`"));
        }
        m.not_runnable = Some((kind.to_string(), reason.to_string()));
    } else {
        for item in text.split(';').map(str::trim) {
            match item.split_once(' ') {
                _ if item == "needs slurm" => m.needs_slurm = true,
                _ if item == "needs registry" => m.needs_registry = true,
                _ if item == "unordered" => m.unordered = true,
                Some(("file", path)) => m.file = Some(path.trim().to_string()),
                _ => return Err(format!("unknown transcript marker `{item}`")),
            }
        }
    }
    if console && m.file.is_some() {
        return Err("`file` marks a block whose text is a file, not a console block".into());
    }
    if !console
        && m != (Marks {
            file: m.file.clone(),
            ..Marks::default()
        })
    {
        return Err("only `file PATH` marks a block that is not a console block".into());
    }
    Ok(m)
}

/// One `$ ` command of a block and the output the doc shows for it.
#[derive(Debug, PartialEq)]
pub struct Cmd {
    pub line: usize,
    pub text: String,
    pub expected: Vec<String>,
}

static HEREDOC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[^<])<<(-?)\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?"#).unwrap()
});

/// The commands of a console block: a line starting with `$ ` is a command,
/// continued on the next lines while it ends with `\` and through the body
/// of a here-document; the lines up to the next command are its output.
pub fn commands(lines: &[(usize, String)]) -> Result<Vec<Cmd>, String> {
    let mut out: Vec<Cmd> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (no, line) = &lines[i];
        let Some(first) = line.strip_prefix("$ ").or((line == "$").then_some("")) else {
            match out.last_mut() {
                Some(cmd) => cmd.expected.push(line.clone()),
                None if line.trim().is_empty() => {}
                None => return Err(format!("line {no}: output before the first `$ ` command")),
            }
            i += 1;
            continue;
        };
        let mut text = first.to_string();
        i += 1;
        while text.ends_with('\\') && i < lines.len() {
            text.push('\n');
            text.push_str(&lines[i].1);
            i += 1;
        }
        if let Some(c) = HEREDOC.captures(&text) {
            let (dash, word) = (!c[1].is_empty(), c[2].to_string());
            loop {
                let Some((_, l)) = lines.get(i) else {
                    return Err(format!("line {no}: here-document `{word}` never ends"));
                };
                text.push('\n');
                text.push_str(l);
                i += 1;
                let l = if dash { l.trim_start_matches('\t') } else { l };
                if l == word {
                    break;
                }
            }
        }
        out.push(Cmd {
            line: *no,
            text,
            expected: Vec::new(),
        });
    }
    if out.is_empty() {
        return Err("a console block without a `$ ` command".into());
    }
    Ok(out)
}

/// Whether `cmd` shows the status of the command before it.
pub fn shows_status(cmd: &Cmd) -> bool {
    cmd.text.trim_start().starts_with("echo $?")
}

/// A file a block may use, placed in its home when the block names it.
#[derive(Debug, Clone)]
pub struct Asset {
    pub name: String,
    pub source: PathBuf,
}

/// Files larger than this are linked into a block's home, not copied.
const COPY_LIMIT: u64 = 16 << 20;

/// What every block's session shares.
pub struct World {
    /// The rfake binary under test.
    pub bin: PathBuf,
    /// Where the blocks' homes are made (under the test user's home).
    pub root: tempfile::TempDir,
    /// tests/transcripts/home: copied into every block's home.
    pub fixtures: PathBuf,
    /// Images and sources a block may name.
    pub assets: Vec<Asset>,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub slurm_conf: Option<PathBuf>,
    /// The test registry's `HOST:PORT` (`RFAKE_TEST_REGISTRY`).
    pub registry: Option<String>,
}

/// What a block's commands printed (mapped to the docs' names) and their
/// statuses; `problem` when the session did not run to its end.
#[derive(Debug, Default)]
pub struct Outcome {
    pub outputs: Vec<Vec<String>>,
    pub statuses: Vec<i32>,
    pub problem: Option<String>,
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

/// Whether `text` names `name` as a whole word (a path component).
pub fn mentions(text: &str, name: &str) -> bool {
    let re = Regex::new(&format!(
        r#"(?m)(^|[\s/'"=:<>|(])({})($|[\s/'":;|&)<>])"#,
        regex::escape(name)
    ))
    .unwrap();
    re.is_match(text)
}

static RFAKE_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[\s;&|(])rfake(\s|$)").unwrap());

impl World {
    /// `text` as the docs write it, made runnable in `home`: the docs' home
    /// is the block's, and `rfake` as a command word is the binary under
    /// test (a line's own `PATH=...` may not contain it).
    pub fn command_text(&self, text: &str, home: &Path) -> String {
        let mut text = text.replace(DOC_HOME, &home.to_string_lossy());
        if let Some(registry) = &self.registry {
            text = text.replace(DOC_REGISTRY, registry);
        }
        let bin = self.bin.to_string_lossy().replace('$', "$$");
        RFAKE_WORD
            .replace_all(&text, format!("${{1}}{bin}${{2}}").as_str())
            .into_owned()
    }

    /// An output line in the docs' names: the block's home, the test user's
    /// name (and its first 8 characters, as `ls -l` shows it), uid and gid.
    pub fn doc_line(&self, line: &str, homes: &[String]) -> String {
        let mut s = line.to_string();
        for h in homes {
            s = s.replace(h.as_str(), DOC_HOME);
        }
        if let Some(registry) = &self.registry {
            s = s.replace(registry.as_str(), DOC_REGISTRY);
        }
        if self.user != DOC_USER {
            s = s.replace(&self.user, DOC_USER);
            if self.user.len() > 8 {
                let re = Regex::new(&format!(r"\b{} ", regex::escape(&self.user[..8]))).unwrap();
                s = re
                    .replace_all(&s, format!("{} ", &DOC_USER[..8]))
                    .into_owned();
            }
        }
        for id in [self.uid, self.gid] {
            if id != DOC_ID {
                let re = Regex::new(&format!(r"\b{id}\b")).unwrap();
                s = re.replace_all(&s, DOC_ID.to_string()).into_owned();
            }
        }
        s
    }

    /// Run `cmds` in one bash session, in a fresh home holding the fixtures,
    /// the assets the commands name and `files`.
    pub fn run(
        &self,
        name: &str,
        cmds: &[Cmd],
        files: &[(String, String)],
        slurm: bool,
        timeout: Duration,
    ) -> Outcome {
        let home = self.root.path().join(name);
        let mut outcome = Outcome::default();
        if let Err(e) = self.make_home(&home, cmds, files) {
            outcome.problem = Some(format!("setting up {}: {e}", home.display()));
            return outcome;
        }
        let canonical = home.canonicalize().unwrap_or_else(|_| home.clone());
        let mut homes = vec![canonical.to_string_lossy().into_owned()];
        homes.push(home.to_string_lossy().into_owned());

        let mut script = String::from("exec 2>&1\n__transcript_rc() { return \"$1\"; }\n");
        for (i, c) in cmds.iter().enumerate() {
            script.push_str(&self.command_text(&c.text, &home));
            script.push_str(&format!(
                "\n__transcript_s=$?; printf '\\036%d %d\\036\\n' {i} \"$__transcript_s\"; \
                 __transcript_rc \"$__transcript_s\"\n"
            ));
        }
        let tag = crate::common::tag(&format!("transcript-{name}"));
        let bin_dir = self.bin.parent().unwrap_or(Path::new("/"));
        if slurm {
            if let Some(conf) = &self.slurm_conf {
                self.wait_for_idle_cluster(conf);
            }
        }
        let mut command = std::process::Command::new("bash");
        command
            .args(["--noprofile", "--norc", "-c", &script])
            .current_dir(&home)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    bin_dir.display()
                ),
            )
            .env("HOME", &home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .env("LANG", "C.UTF-8")
            .env("RFAKE_TEST_TAG", &tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        if slurm {
            if let Some(conf) = &self.slurm_conf {
                command.env("SLURM_CONF", conf);
            }
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                outcome.problem = Some(format!("starting bash: {e}"));
                return outcome;
            }
        };
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        // Read until the last command's marker: a process the block left
        // (a warm mount's keeper) may hold the pipe open for seconds more.
        let last = format!("\x1e{} ", cmds.len() - 1);
        let deadline = Instant::now() + timeout;
        let mut bytes = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Some(at) = text.find(&last) {
                if text[at..].contains("\x1e\n") {
                    break;
                }
            }
            if Instant::now() > deadline {
                outcome.problem = Some(format!("still running after {timeout:?}: killed"));
                break;
            }
        }
        // Nothing of a block outlives it: its session's process group, and
        // whatever rfake detached (warm keepers), found by the tag.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        let gone = Instant::now() + Duration::from_secs(10);
        loop {
            let left = crate::common::processes_tagged(&tag);
            if left.is_empty() {
                break;
            }
            if Instant::now() > gone {
                outcome
                    .problem
                    .get_or_insert(format!("processes left: {left:?}"));
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }

        let text = String::from_utf8_lossy(&bytes).into_owned();
        let marker = Regex::new("\x1e(\\d+) (-?\\d+)\x1e\n").unwrap();
        let mut start = 0;
        for m in marker.captures_iter(&text) {
            let whole = m.get(0).unwrap();
            let seg = &text[start..whole.start()];
            start = whole.end();
            let mut lines: Vec<String> =
                seg.split('\n').map(|l| self.doc_line(l, &homes)).collect();
            if seg.ends_with('\n') || seg.is_empty() {
                lines.pop();
            }
            outcome.outputs.push(lines);
            outcome.statuses.push(m[2].parse().unwrap_or(-1));
        }
        if outcome.outputs.len() < cmds.len() && outcome.problem.is_none() {
            let rest: Vec<String> = text[start..]
                .lines()
                .map(|l| self.doc_line(l, &homes))
                .collect();
            outcome.problem = Some(format!(
                "the session ended after {} of {} commands; it printed then: {rest:?}",
                outcome.outputs.len(),
                cmds.len()
            ));
        }
        outcome
    }

    /// Wait (at most 60 s) until the user has no job on the Slurm test
    /// cluster, not even one completing: a job an earlier block (or test)
    /// left completing would make this block's `srun` wait for resources
    /// and say so (`srun: job N queued and waiting for resources`).
    fn wait_for_idle_cluster(&self, conf: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let out = std::process::Command::new("squeue")
                .args(["-h", "-u", &self.user])
                .env("SLURM_CONF", conf)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() && o.stdout.is_empty() => return,
                Ok(o) if o.status.success() => {}
                // No squeue, or no controller: the block will say so.
                _ => return,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn make_home(
        &self,
        home: &Path,
        cmds: &[Cmd],
        files: &[(String, String)],
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(home)?;
        if self.fixtures.is_dir() {
            copy_tree(&self.fixtures, home)?;
        }
        let said: String = cmds.iter().map(|c| format!("{}\n", c.text)).collect();
        for a in &self.assets {
            if !mentions(&said, &a.name) {
                continue;
            }
            let dest = home.join(&a.name);
            let meta = std::fs::metadata(&a.source)?;
            if meta.is_file() && meta.len() <= COPY_LIMIT {
                // A copy: a fresh file per block, so no block finds the warm
                // mount of another's (or another test's) image.
                std::fs::copy(&a.source, &dest)?;
            } else {
                std::os::unix::fs::symlink(&a.source, &dest)?;
            }
        }
        for (path, text) in files {
            let rel = path
                .strip_prefix("~/")
                .or_else(|| path.strip_prefix(&format!("{DOC_HOME}/")))
                .ok_or_else(|| {
                    std::io::Error::other(format!("file {path}: not under ~/ ({DOC_HOME})"))
                })?;
            let dest = home.join(rel);
            std::fs::create_dir_all(dest.parent().unwrap())?;
            std::fs::write(dest, text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<(usize, String)> {
        s.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.to_string()))
            .collect()
    }

    #[test]
    fn commands_outputs_continuations_and_heredocs() {
        let cmds = commands(&lines(
            "$ a \\\n    b\nout1\n\n$ cat > f <<'EOF'\n$ not a command\nEOF\n$ echo $?\n0\n$\n",
        ))
        .unwrap();
        assert_eq!(
            cmds,
            vec![
                Cmd {
                    line: 1,
                    text: "a \\\n    b".into(),
                    expected: vec!["out1".into(), "".into()]
                },
                Cmd {
                    line: 5,
                    text: "cat > f <<'EOF'\n$ not a command\nEOF".into(),
                    expected: vec![]
                },
                Cmd {
                    line: 8,
                    text: "echo $?".into(),
                    expected: vec!["0".into()]
                },
                Cmd {
                    line: 10,
                    text: "".into(),
                    expected: vec![]
                },
            ]
        );
        assert!(shows_status(&cmds[2]));
        assert!(commands(&lines("text\n$ a\n")).is_err());
        assert!(commands(&lines("$ cat <<EOF\nx\n")).is_err());
        assert!(commands(&lines("")).is_err());
        // A here-string is not a here-document.
        assert_eq!(
            commands(&lines("$ cat <<< x\nx\n")).unwrap()[0].expected,
            ["x"]
        );
    }

    #[test]
    fn marks() {
        let m = parse_marks(Some("not-runnable root: needs /dev/fuse closed"), true).unwrap();
        assert_eq!(
            m.not_runnable,
            Some(("root".into(), "needs /dev/fuse closed".into()))
        );
        let m = parse_marks(Some("needs slurm; unordered"), true).unwrap();
        assert!(m.needs_slurm && m.unordered);
        let m = parse_marks(Some("file ~/.config/rfake/rfake.toml"), false).unwrap();
        assert_eq!(m.file.as_deref(), Some("~/.config/rfake/rfake.toml"));
        assert!(parse_marks(Some("not-runnable root"), true).is_err());
        assert!(parse_marks(Some("not-runnable : why"), true).is_err());
        assert!(parse_marks(Some("unorderd"), true).is_err());
        assert!(parse_marks(Some("file x"), true).is_err());
        assert!(parse_marks(Some("unordered"), false).is_err());
    }

    #[test]
    fn mentions_whole_names() {
        assert!(mentions("rfake exec demo.sqfs id", "demo.sqfs"));
        assert!(mentions("x imgout/demo.sif", "demo.sif"));
        assert!(!mentions("x demo-arm64.sif", "demo.sif"));
        assert!(!mentions("images/recipes/demo.toml", "demo"));
        assert!(mentions("rfake build a images/recipes/demo.toml", "images"));
        assert!(mentions("-B x:/y demo.sqfs", "demo.sqfs"));
    }

    #[test]
    fn docs_names_are_mapped_both_ways() {
        let w = World {
            bin: "/stage/bin/rfake".into(),
            root: tempfile::tempdir().unwrap(),
            fixtures: "/nonexistent".into(),
            assets: vec![],
            user: "rfake-test".into(),
            uid: 1002,
            gid: 1001,
            slurm_conf: None,
            registry: None,
        };
        let home = Path::new("/home/rfake-test/t/b1");
        assert_eq!(
            w.command_text(
                "cd ~ && rfake -v exec -B /home/rfaketest/job.env:/x x | rfake shell x",
                home
            ),
            "cd ~ && /stage/bin/rfake -v exec -B /home/rfake-test/t/b1/job.env:/x x \
             | /stage/bin/rfake shell x"
        );
        assert_eq!(
            w.command_text("cat rfake-demo.txt", home),
            "cat rfake-demo.txt"
        );
        let homes = ["/home/rfake-test/t/b1".to_string()];
        assert_eq!(
            w.doc_line(
                "uid=1002(rfake-test) gid=1001(rfake-test) /home/rfake-test/t/b1/x",
                &homes
            ),
            "uid=1001(rfaketest) gid=1001(rfaketest) /home/rfaketest/x"
        );
        assert_eq!(
            w.doc_line("drwx------ 2 rfake-te rfake-te 0 /root", &homes),
            "drwx------ 2 rfaketes rfaketes 0 /root"
        );
    }
}
