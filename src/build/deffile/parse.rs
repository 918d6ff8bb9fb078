//! From the file's bytes to [`Definition`]: lines, stages, sections.

use std::collections::HashMap;
use std::path::Path;

use super::header;
use super::{DefError, Definition, FileLine, FilesBlock, Script, Stage};
use crate::text::one_line;

/// One line of the file: its number (from 1) and its text, without the
/// `\n` and a `\r` before it (Go's `bufio.ScanLines`, as Apptainer).
#[derive(Debug, Clone, Copy)]
pub(super) struct Line<'t> {
    pub no: usize,
    pub text: &'t str,
}

/// An error before the file's path is put in front of it.
#[derive(Debug)]
pub(super) struct Problem {
    line: usize,
    section: String,
    problem: String,
}

impl Problem {
    pub(super) fn header(line: usize, problem: impl Into<String>) -> Problem {
        Problem {
            line,
            section: "Header".to_string(),
            problem: problem.into(),
        }
    }

    fn section(line: usize, section: &str, problem: impl Into<String>) -> Problem {
        Problem {
            line,
            section: format!("%{}", one_line(section)),
            problem: problem.into(),
        }
    }

    fn at(self, path: &Path) -> DefError {
        DefError::Syntax {
            path: path.to_path_buf(),
            line: self.line,
            section: self.section,
            problem: self.problem,
        }
    }
}

/// The sections rfake reads.
const SECTIONS: [&str; 8] = [
    "files",
    "post",
    "environment",
    "runscript",
    "startscript",
    "test",
    "labels",
    "help",
];

/// SCIF app sections (Apptainer's `%appinstall NAME`...).
const APP_SECTIONS: [&str; 8] = [
    "appinstall",
    "applabels",
    "appfiles",
    "appenv",
    "apptest",
    "apphelp",
    "apprun",
    "appstart",
];

/// The definition in `bytes`, read from `path`.
pub(super) fn definition(path: &Path, bytes: &[u8]) -> Result<Definition, DefError> {
    let text = utf8(bytes).map_err(|p| p.at(path))?;
    let lines = lines(text);
    check_lines(&lines).map_err(|p| p.at(path))?;
    let mut stages: Vec<Stage> = Vec::new();
    let mut names = Names::default();
    for chunk in stage_chunks(&lines) {
        let stage = stage(chunk, &names).map_err(|p| p.at(path))?;
        if let Some(name) = &stage.name {
            names.by_name.insert(name.clone(), stage.header.line);
            names.in_order.push(name.clone());
        }
        stages.push(stage);
    }
    if stages.is_empty() {
        return Err(Problem::header(
            1,
            "empty definition file: no Bootstrap: header and no section",
        )
        .at(path));
    }
    Ok(Definition {
        path: path.to_path_buf(),
        text: text.to_string(),
        stages,
    })
}

/// `bytes` as text, or the line (and the section it is in) where it stops
/// being UTF-8.
fn utf8(bytes: &[u8]) -> Result<&str, Problem> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("");
        let lines = lines(good);
        let no = good.matches('\n').count() + 1;
        let problem = "not UTF-8 text (a definition file is text)";
        match lines.iter().rev().find_map(|l| section_word(l.text)) {
            Some(name) => Problem::section(no, &name.to_lowercase(), problem),
            None => Problem::header(no, problem),
        }
    })
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out: Vec<Line> = text
        .split('\n')
        .enumerate()
        .map(|(i, t)| Line {
            no: i + 1,
            text: t.strip_suffix('\r').unwrap_or(t),
        })
        .collect();
    if text.is_empty() || text.ends_with('\n') {
        out.pop();
    }
    out
}

/// The section name a line begins, without its `%`s (as written), if its
/// first word starts with `%`.
fn section_word(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('%')?;
    let rest = rest.trim_start_matches('%');
    Some(rest.split(char::is_whitespace).next().unwrap_or(""))
}

/// What every line must be, in whatever section: no NUL (it cannot reach a
/// shell), no build-argument template (Apptainer fails on an undefined one,
/// and rfake has no `--build-arg` yet).
fn check_lines(lines: &[Line]) -> Result<(), Problem> {
    let mut section: Option<String> = None;
    for line in lines {
        if let Some(name) = section_word(line.text) {
            section = Some(name.to_lowercase());
        }
        let problem = |what: String| match &section {
            Some(s) => Problem::section(line.no, s, what),
            None => Problem::header(line.no, what),
        };
        if line.text.contains('\0') {
            return Err(problem(
                "a NUL byte (a definition file is text)".to_string(),
            ));
        }
        if let Some(name) = build_argument(line.text) {
            return Err(problem(format!(
                "`{{{{ {name} }}}}` is a build argument; build arguments (--build-arg, \
                 %arguments) are not supported yet"
            )));
        }
    }
    Ok(())
}

/// The first `{{ NAME }}` (NAME of ASCII letters, digits, `_`) in `text`
/// that Apptainer would replace: not after a `#` that is followed by
/// something other than `!` (its test for a comment).
fn build_argument(text: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(at) = text[from..].find("{{").map(|i| i + from) {
        from = at + 2;
        let inner = text[from..].trim_start();
        let name_len = inner
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if name_len == 0 || !inner[name_len..].trim_start().starts_with("}}") {
            continue;
        }
        let before = &text.as_bytes()[..at];
        let commented = before
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'#' && before.get(i + 1).is_some_and(|&n| n != b'!'));
        if commented {
            return None;
        }
        return Some(&inner[..name_len]);
    }
    None
}

/// The lines of each stage: a new one starts at each line beginning (in
/// column 1, any case) with `bootstrap:`, as Apptainer splits them. Lines
/// before the first are a stage too unless only blanks and comments.
fn stage_chunks<'l, 't>(lines: &'l [Line<'t>]) -> Vec<&'l [Line<'t>]> {
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.text
                .as_bytes()
                .get(..10)
                .is_some_and(|b| b.eq_ignore_ascii_case(b"bootstrap:"))
        })
        .map(|(i, _)| i)
        .collect();
    let mut bounds = vec![0];
    bounds.extend(starts.iter().copied().filter(|&s| s > 0));
    bounds.push(lines.len());
    let mut chunks = Vec::new();
    for pair in bounds.windows(2) {
        let chunk = &lines[pair[0]..pair[1]];
        let empty = chunk.iter().all(|l| {
            let t = l.text.trim();
            t.is_empty() || t.starts_with('#')
        });
        if !empty {
            chunks.push(chunk);
        }
    }
    chunks
}

/// The names of the stages read so far, and their `Bootstrap:` lines.
#[derive(Default)]
struct Names {
    by_name: HashMap<String, usize>,
    in_order: Vec<String>,
}

/// A stage being read: the labels' places, so a repeated key is found at
/// once.
struct Reading<'n> {
    earlier: &'n Names,
    label_at: HashMap<String, usize>,
}

/// A section being read.
struct Open<'l, 't> {
    /// Lower case, without `%`.
    name: String,
    /// After the name, up to a `#`, trimmed.
    args: String,
    line: usize,
    body: &'l [Line<'t>],
}

/// One stage from its lines; `earlier` names the stages before it.
fn stage(lines: &[Line], earlier: &Names) -> Result<Stage, Problem> {
    let first_section = lines
        .iter()
        .position(|l| section_word(l.text).is_some())
        .unwrap_or(lines.len());
    let keys = header::keys(&lines[..first_section])?;
    let first = lines.first().map_or(1, |l| l.no);
    let header = match header::header(keys, first) {
        Err(p) if !lines[..first_section].iter().any(|l| !blank(l.text)) => {
            // Sections without a header at all: say so at the section.
            let name = section_word(lines[first_section].text).unwrap_or("");
            return Err(Problem::section(
                lines[first_section].no,
                &name.to_lowercase(),
                format!("{} before it", p.problem),
            ));
        }
        other => other?,
    };
    let name = header.get("stage").map(|k| k.value.clone());
    if let Some(name) = &name {
        if let Some(at) = earlier.by_name.get(name) {
            let line = header.get("stage").map_or(header.line, |k| k.line);
            return Err(Problem::header(
                line,
                format!("Stage: `{}` is also the stage at line {at}", one_line(name)),
            ));
        }
    }
    let mut stage = Stage {
        name,
        header,
        files: Vec::new(),
        post: None,
        environment: None,
        runscript: None,
        startscript: None,
        test: None,
        help: None,
        labels: Vec::new(),
    };
    let mut reading = Reading {
        earlier,
        label_at: HashMap::new(),
    };
    let mut i = first_section;
    while i < lines.len() {
        let line = lines[i];
        let word = section_word(line.text).unwrap_or("");
        let after = line.text.trim_start().trim_start_matches('%');
        let args = after[word.len()..].split('#').next().unwrap_or("").trim();
        let end = lines[i + 1..]
            .iter()
            .position(|l| section_word(l.text).is_some())
            .map_or(lines.len(), |p| i + 1 + p);
        let open = Open {
            name: word.to_lowercase(),
            args: args.to_string(),
            line: line.no,
            body: &lines[i + 1..end],
        };
        section(&mut stage, open, &mut reading)?;
        i = end;
    }
    Ok(stage)
}

fn blank(text: &str) -> bool {
    let t = text.trim();
    t.is_empty() || t.starts_with('#')
}

/// Add one section to `stage`.
fn section(stage: &mut Stage, open: Open, reading: &mut Reading) -> Result<(), Problem> {
    let name = open.name.as_str();
    let refuse = |why: &str| Err(Problem::section(open.line, name, why));
    match name {
        "files" => return files(stage, &open, reading.earlier),
        "labels" => {
            no_arguments(&open)?;
            labels(&mut stage.labels, &mut reading.label_at, open.body);
            return Ok(());
        }
        "help" => {
            no_arguments(&open)?;
            let text = body_text(open.body);
            if !text.trim().is_empty() {
                stage.help.get_or_insert_with(String::new).push_str(&text);
            }
            return Ok(());
        }
        "post" | "environment" | "runscript" | "startscript" | "test" => {}
        "setup" => {
            return refuse(
                "not supported: Apptainer runs it on the host as root, outside the image; \
                 copy host files with %files and do the rest in %post",
            );
        }
        "pre" => {
            return refuse(
                "not supported: Apptainer runs it on the host before the base is fetched; \
                 do the work in %post",
            );
        }
        "arguments" => return refuse("build arguments are not supported yet"),
        "" => {
            return refuse(
                "a line whose first word starts with % begins a section, and this one has no \
                 name (inside a script, do not start a line with %)",
            );
        }
        _ if APP_SECTIONS.contains(&name) => {
            return refuse("SCIF apps (%appinstall, %apprun...) are not supported yet");
        }
        _ => {
            return refuse(&format!(
                "unknown section; rfake reads %{} (a line whose first word starts with % \
                 begins a section, even inside a script)",
                SECTIONS.join(", %")
            ));
        }
    }
    let shell = if name == "post" {
        post_shell(&open)?
    } else {
        if !open.args.is_empty() {
            let hint = if name == "environment" {
                ""
            } else {
                "; to choose the interpreter, start the script with a #! line"
            };
            return refuse(&format!(
                "arguments (`{}`) are not supported{hint}",
                one_line(&open.args)
            ));
        }
        None
    };
    let text = body_text(open.body);
    let slot = match name {
        "post" => &mut stage.post,
        "environment" => &mut stage.environment,
        "runscript" => &mut stage.runscript,
        "startscript" => &mut stage.startscript,
        _ => &mut stage.test,
    };
    match slot {
        Some(script) => {
            // Apptainer joins the texts and keeps the last arguments; two
            // different shells for one script cannot both hold.
            if script.shell != shell {
                return refuse(&format!(
                    "given again (first at line {}) with other arguments",
                    script.line
                ));
            }
            script.text.push_str(&text);
        }
        None if text.trim().is_empty() => {}
        None => {
            *slot = Some(Script {
                text,
                shell,
                line: open.line,
            });
        }
    }
    Ok(())
}

/// `%post -c SHELL [ARGS]`: the words after `-c`. Apptainer passes any
/// other word to `/bin/sh`; rfake reads only `-c`.
fn post_shell(open: &Open) -> Result<Option<String>, Problem> {
    let words: Vec<&str> = open.args.split_whitespace().collect();
    match words.split_first() {
        None => Ok(None),
        Some((&"-c", [])) => Err(Problem::section(
            open.line,
            "post",
            "`-c` needs a shell (as in `%post -c /bin/bash`)",
        )),
        Some((&"-c", shell)) => Ok(Some(shell.join(" "))),
        Some(_) => Err(Problem::section(
            open.line,
            "post",
            format!(
                "arguments `{}` are not supported (only `-c SHELL`)",
                one_line(&open.args)
            ),
        )),
    }
}

fn no_arguments(open: &Open) -> Result<(), Problem> {
    if open.args.is_empty() {
        return Ok(());
    }
    Err(Problem::section(
        open.line,
        &open.name,
        format!("takes no arguments (`{}`)", one_line(&open.args)),
    ))
}

/// Each line and a `\n`, as Apptainer keeps a section's text.
fn body_text(body: &[Line]) -> String {
    let mut text = String::new();
    for line in body {
        text.push_str(line.text);
        text.push('\n');
    }
    text
}

/// `%labels`: `KEY VALUE` lines (the value may be empty or hold spaces);
/// blank lines and lines starting with `#` skipped.
fn labels(labels: &mut Vec<(String, String)>, at: &mut HashMap<String, usize>, body: &[Line]) {
    for line in body {
        let t = line.text.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (key, value) = match t.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => (t, ""),
        };
        match at.get(key) {
            Some(&i) => labels[i].1 = value.to_string(),
            None => {
                at.insert(key.to_string(), labels.len());
                labels.push((key.to_string(), value.to_string()));
            }
        }
    }
}

/// `%files [from STAGE]`: `SRC [DST]` lines.
fn files(stage: &mut Stage, open: &Open, earlier: &Names) -> Result<(), Problem> {
    let words: Vec<&str> = open.args.split_whitespace().collect();
    let from = match words.as_slice() {
        [] => None,
        [from, name] if from.eq_ignore_ascii_case("from") => {
            if !earlier.by_name.contains_key(*name) {
                let known = if earlier.in_order.is_empty() {
                    "no earlier stage has a Stage: name".to_string()
                } else {
                    format!("the earlier stages are {}", list(&earlier.in_order))
                };
                return Err(Problem::section(
                    open.line,
                    "files",
                    format!("from `{}`: no such stage ({known})", one_line(name)),
                ));
            }
            Some(name.to_string())
        }
        _ => {
            return Err(Problem::section(
                open.line,
                "files",
                format!(
                    "arguments `{}`: only `from STAGE` is read",
                    one_line(&open.args)
                ),
            ));
        }
    };
    let mut block = FilesBlock {
        from,
        line: open.line,
        files: Vec::new(),
    };
    for line in open.body {
        let t = line.text.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let words =
            file_words(t).map_err(|why| Problem::section(line.no, "files", why.to_string()))?;
        let (src, dst) = match words.as_slice() {
            [src] => (src.clone(), None),
            [src, dst] => (src.clone(), Some(dst.clone())),
            _ => {
                return Err(Problem::section(
                    line.no,
                    "files",
                    "more than SRC and DST on the line (quote a path that holds spaces: \"a b\")",
                ));
            }
        };
        if src.is_empty() || dst.as_deref() == Some("") {
            return Err(Problem::section(line.no, "files", "an empty path"));
        }
        block.files.push(FileLine {
            src,
            dst,
            line: line.no,
        });
    }
    stage.files.push(block);
    Ok(())
}

/// The words of a `%files` line: separated by blanks, a word in double
/// quotes may hold blanks (no escapes inside, as in Apptainer); a word
/// starting with `#` begins a comment. Single quotes are refused: Apptainer
/// does not read them as quotes, so a file using them means different
/// things to the two.
fn file_words(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('#') {
            break;
        }
        let (word, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or("a double quote is not closed")?;
            let after = &quoted[end + 1..];
            if after.chars().next().is_some_and(|c| !c.is_whitespace()) {
                return Err("text right after a closing quote (put a blank between the paths)");
            }
            (&quoted[..end], after)
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if rest[..end].contains('"') {
                return Err("a double quote inside a path (quote the whole path: \"a b\")");
            }
            (&rest[..end], &rest[end..])
        };
        if word.contains('\'') {
            return Err(
                "a single quote: quote paths with double quotes (\"a b\"), as Apptainer reads them",
            );
        }
        words.push(word.to_string());
        rest = after.trim_start();
    }
    Ok(words)
}

/// `a, b, c`, or the first few and how many more, for a message.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text: Vec<String> = names.iter().take(SHOWN).map(|n| one_line(n)).collect();
    if names.len() > SHOWN {
        text.push(format!("and {} more", names.len() - SHOWN));
    }
    text.join(", ")
}
