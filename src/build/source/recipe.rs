//! Recipes: a TOML file that says what goes into an image, documented in
//! `images/recipes/README.md`.
//!
//! Sections are applied in a fixed order, whatever their order in the file:
//! `[image] base`, `[dirs]`, `[files]`, `[inline]`, `[symlinks]`, the
//! `[[run]]` steps, `[modes]`, then `[env]`, `[labels]` and the rest of
//! `[image]`; the entries of a section in the order written, a later one
//! replacing an earlier one at the same image path. Host paths are relative
//! to the recipe's directory. Every error names the recipe, the line and
//! the key.
//!
//! `[[run]]` steps: the tree so far is written out as a directory in the
//! build's work area, the steps run in it in order (as fakeroot, through a
//! [`StepRunner`]: `rfake build` gives
//! `crate::build::definition::RecipeSteps`), and the directory is read back
//! as the tree, modes the steps did not change restored. The recipe's
//! metadata (environment, labels, runscript...) is kept as it is.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::super::ImageMeta;
use super::super::materialize::tree_to_dir;
use super::super::tree::{self, Content, Meta, Node, Tree};
use super::detect::{MAX_RECIPE, detect, followed_metadata, input_error};
use super::dir::{Modes, copy};
use super::{Cx, SourceError, SourceKind, one_line, set_env, shown};
use crate::config::toml_text::{found, position};
use crate::exit::ExitKind;

/// The sections a recipe may have, in the order they are applied.
const SECTIONS: [&str; 8] = [
    "image", "dirs", "files", "inline", "symlinks", "modes", "env", "labels",
];
const IMAGE_KEYS: [&str; 5] = ["base", "runscript", "entrypoint", "cmd", "workdir"];
/// The keys of a `[[run]]` step.
const RUN_KEYS: [&str; 2] = ["script", "shell"];
/// Every section, as written, in the order applied (for messages).
const ALL_SECTIONS: &str =
    "[image], [dirs], [files], [inline], [symlinks], [[run]], [modes], [env], [labels]";
/// Recipes whose base is a recipe, at most this deep.
const MAX_DEPTH: usize = 8;

type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// One `[[run]]` step of a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// The line of its `script` key.
    pub line: usize,
    /// An absolute path in the image; `None`: `/bin/sh`.
    pub shell: Option<String>,
    pub script: String,
}

/// What runs a recipe's `[[run]]` steps: the build's work area and its
/// fakeroot runner (`crate::build::definition::RecipeSteps`); the tests'
/// own elsewhere.
pub trait StepRunner {
    /// A new empty directory in the work area, for the tree to be written
    /// into.
    fn new_root(&mut self) -> Result<PathBuf, crate::error::Error>;
    /// Run `step` of `recipe` in `root`; an error names the recipe and the
    /// step's line.
    fn run(
        &mut self,
        recipe: &Path,
        step: &RunStep,
        root: &Path,
    ) -> Result<(), crate::error::Error>;
    /// The tree has been read back from `root`: no other root is read now.
    fn only(&mut self, root: &Path);
}

/// Load the recipe at `path`.
pub(super) fn load(
    cx: &mut Cx,
    path: &Path,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<(), SourceError> {
    let canonical = fs::canonicalize(path).map_err(|e| SourceError::unreadable(path, e))?;
    let bytes =
        crate::input::read_regular(&canonical, MAX_RECIPE).map_err(|e| input_error(path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| SourceError::invalid(shown(path), "a recipe must be UTF-8 text"))?;
    let doc = DeTable::parse(&text).map_err(|e| {
        let (line, column) = position(&text, e.span().map_or(0, |s| s.start));
        SourceError::RecipeSyntax {
            path: path.to_path_buf(),
            line,
            column,
            message: one_line(e.message().lines().next().unwrap_or("")),
        }
    })?;
    let recipe = Recipe {
        path,
        dir: canonical.parent().unwrap_or(Path::new("/")),
        text: &text,
    };
    let (sections, steps) = recipe.sections(doc.get_ref())?;
    cx.recipes.push(canonical.clone());
    let result = recipe.apply(cx, &sections, &steps, tree, meta);
    cx.recipes.pop();
    result?;
    meta.definition = Some(text.clone());
    Ok(())
}

/// The recipe being loaded, for paths and messages.
struct Recipe<'r> {
    /// As given (for messages).
    path: &'r Path,
    /// The directory host paths are relative to.
    dir: &'r Path,
    text: &'r str,
}

/// The recipe's sections, by name (`None` when absent).
type Sections<'a, 'i> = BTreeMap<&'static str, (&'a Key<'i>, &'a DeTable<'i>)>;

impl<'r> Recipe<'r> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        position(self.text, span.start).0
    }

    fn error(&self, line: usize, key: String, problem: impl Into<String>) -> SourceError {
        SourceError::Recipe {
            path: self.path.to_path_buf(),
            line,
            key,
            problem: problem.into(),
        }
    }

    /// Check the top level: known sections, each a table, `[image]`
    /// present; the `[[run]]` steps read whole (before anything runs).
    fn sections<'a, 'i>(
        &self,
        doc: &'a DeTable<'i>,
    ) -> Result<(Sections<'a, 'i>, Vec<RunStep>), SourceError> {
        let mut out = BTreeMap::new();
        let mut steps = Vec::new();
        for (key, value) in in_file_order(doc) {
            let name = key.get_ref().as_ref();
            let line = self.line(key.span());
            if name == "run" {
                steps = self.steps(line, value)?;
                continue;
            }
            let Some(section) = SECTIONS.iter().find(|s| **s == name) else {
                return Err(self.error(
                    line,
                    format!("[{}]", one_line(name)),
                    format!("unknown section (a recipe has {ALL_SECTIONS})"),
                ));
            };
            let DeValue::Table(table) = value.get_ref() else {
                return Err(self.error(
                    line,
                    one_line(name),
                    format!(
                        "expected a table [{name}], found {}",
                        found(value.get_ref())
                    ),
                ));
            };
            out.insert(*section, (key, table));
        }
        if !out.contains_key("image") {
            return Err(self.error(
                1,
                "[image]".into(),
                "missing: every recipe has an [image] table (it may be empty)",
            ));
        }
        Ok((out, steps))
    }

    /// `[[run]]`: an array of tables, each a `script` and an optional
    /// `shell`. `line`: where the first is.
    fn steps(&self, line: usize, value: &Value) -> Result<Vec<RunStep>, SourceError> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.error(
                line,
                "[run]".into(),
                format!(
                    "write each step as a [[run]] table (an array of tables) with \
                     script = \"...\"; found {}",
                    found(value.get_ref())
                ),
            ));
        };
        let mut steps = Vec::new();
        for item in items.iter() {
            let line = self.line(item.span());
            let DeValue::Table(table) = item.get_ref() else {
                return Err(self.error(
                    line,
                    "[[run]]".into(),
                    format!("expected a table, found {}", found(item.get_ref())),
                ));
            };
            let (mut script, mut shell) = (None, None);
            for (key, value) in in_file_order(table) {
                let at = self.at("[run]", key);
                match key.get_ref().as_ref() {
                    "script" => script = Some((at.line, self.string(&at, value)?.to_string())),
                    "shell" => {
                        let path = self.string(&at, value)?;
                        if !path.starts_with('/') || path.contains('\0') {
                            return Err(self.error(
                                at.line,
                                at.key,
                                "must be an absolute path in the image, like /bin/bash",
                            ));
                        }
                        shell = Some(path.to_string());
                    }
                    _ => {
                        return Err(self.error(
                            at.line,
                            at.key,
                            format!("unknown key (known: {})", list(&RUN_KEYS)),
                        ));
                    }
                }
            }
            let Some((line, script)) = script else {
                return Err(self.error(
                    line,
                    "[[run]]".into(),
                    "missing: a step needs its script = \"...\"",
                ));
            };
            steps.push(RunStep {
                line,
                shell,
                script,
            });
        }
        Ok(steps)
    }

    fn apply(
        &self,
        cx: &mut Cx,
        sections: &Sections,
        steps: &[RunStep],
        tree: &mut Tree,
        meta: &mut ImageMeta,
    ) -> Result<(), SourceError> {
        let image = sections["image"].1;
        for (key, _) in in_file_order(image) {
            if !IMAGE_KEYS.contains(&key.get_ref().as_ref()) {
                return Err(self.error(
                    self.line(key.span()),
                    format!("[image] {}", one_line(key.get_ref())),
                    format!("unknown key (known: {})", list(&IMAGE_KEYS)),
                ));
            }
        }
        if let Some((key, value)) = image.get_key_value("base") {
            self.base(cx, key, value, tree, meta)?;
        }
        let entries = |name: &str| {
            sections
                .get(name)
                .map(|(_, table)| in_file_order(table))
                .unwrap_or_default()
        };
        for (key, value) in entries("dirs") {
            let at = self.at("dirs", key);
            let path = self.image_path(&at, key, true)?;
            let mode = self.mode(&at, value)?;
            insert(tree, &path, Node::dir(mode.into()), &at, self)?;
        }
        for (key, value) in entries("files") {
            let at = self.at("files", key);
            let path = self.image_path(&at, key, true)?;
            let host = self.host_path(&at, self.string(&at, value)?)?;
            if path.as_os_str().is_empty() && !host.is_dir() {
                return Err(self.error(at.line, at.key, "only a directory can be copied to /"));
            }
            copy(cx, &host, &path, Modes::Normalize, tree)?;
        }
        for (key, value) in entries("inline") {
            let at = self.at("inline", key);
            let path = self.image_path(&at, key, false)?;
            let bytes = self.string(&at, value)?.as_bytes().to_vec();
            let node = Node::File {
                meta: Meta::with_mode(0o644),
                size: bytes.len() as u64,
                content: Content::Bytes(Arc::new(bytes)),
            };
            insert(tree, &path, node, &at, self)?;
        }
        for (key, value) in entries("symlinks") {
            let at = self.at("symlinks", key);
            let path = self.image_path(&at, key, false)?;
            let target = self.string(&at, value)?;
            if target.is_empty() || target.contains('\0') {
                return Err(self.error(at.line, at.key, "the target must be a non-empty path"));
            }
            let node = Node::Symlink {
                meta: Meta::with_mode(0o777),
                target: PathBuf::from(target),
            };
            insert(tree, &path, node, &at, self)?;
        }
        if !steps.is_empty() {
            self.run_steps(cx, steps, tree)?;
        }
        for (key, value) in entries("modes") {
            let at = self.at("modes", key);
            let path = self.image_path(&at, key, true)?;
            let mode = self.mode(&at, value)?;
            self.set_mode(tree, &path, mode, &at)?;
        }
        for (key, value) in entries("env") {
            let at = self.at("env", key);
            let name = key.get_ref().as_ref();
            if !is_shell_name(name) {
                return Err(self.error(
                    at.line,
                    at.key,
                    "not a variable name (letters, digits and _, not starting with a digit)",
                ));
            }
            set_env(&mut meta.env, name, self.string(&at, value)?);
        }
        for (key, value) in entries("labels") {
            let at = self.at("labels", key);
            if key.get_ref().is_empty() {
                return Err(self.error(at.line, at.key, "a label needs a name"));
            }
            let value = self.string(&at, value)?;
            meta.labels
                .insert(key.get_ref().to_string(), value.to_string());
        }
        for (key, value) in in_file_order(image) {
            let at = self.at("image", key);
            match key.get_ref().as_ref() {
                "runscript" => meta.runscript = Some(self.string(&at, value)?.to_string()),
                "entrypoint" => meta.entrypoint = self.strings(&at, value)?,
                "cmd" => meta.cmd = self.strings(&at, value)?,
                "workdir" => {
                    let dir = self.string(&at, value)?;
                    if !dir.starts_with('/') {
                        return Err(self.error(at.line, at.key, "must be an absolute path"));
                    }
                    meta.workdir = Some(dir.to_string());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The `[[run]]` steps, in a directory written from `tree`, which is
    /// then read back from it.
    fn run_steps(
        &self,
        cx: &mut Cx,
        steps: &[RunStep],
        tree: &mut Tree,
    ) -> Result<(), SourceError> {
        let Some(runner) = cx.steps.take() else {
            return Err(self.error(
                steps[0].line,
                "[[run]]".into(),
                "run steps run only in rfake build of the recipe (or of one built on it)",
            ));
        };
        let result = self.run_steps_with(cx, &mut *runner, steps, tree);
        cx.steps = Some(runner);
        result
    }

    fn run_steps_with(
        &self,
        cx: &mut Cx,
        runner: &mut dyn StepRunner,
        steps: &[RunStep],
        tree: &mut Tree,
    ) -> Result<(), SourceError> {
        let failed = |e: crate::error::Error| SourceError::Step(Box::new(e));
        let root = runner.new_root().map_err(failed)?;
        // The tree's file data so far is in the spool (tar members) and
        // the base's layers: that spool is handed over for reading, and a
        // new one takes what comes after. Once the tree is read back from
        // the root, none of it refers to the old one.
        let spool_err = |error| SourceError::Spool {
            place: shown(self.path),
            error,
        };
        let file = tempfile::tempfile_in(root.parent().unwrap_or(&root)).map_err(spool_err)?;
        let spooled = std::mem::replace(&mut *cx.spool, super::super::spool::Spool::new(file))
            .finish()
            .map_err(spool_err)?;
        tree_to_dir(tree, Some(&spooled), &root).map_err(|e| {
            failed(crate::error::Error::Failed {
                kind: ExitKind::OsError,
                message: format!(
                    "{}: writing the image out for its [[run]] steps: {e}",
                    shown(self.path)
                ),
            })
        })?;
        drop(spooled);
        for step in steps {
            runner.run(self.path, step, &root).map_err(failed)?;
        }
        let before = std::mem::take(tree);
        // What is read back is the whole image now: it is counted against
        // the size limit afresh.
        cx.total_size = 0;
        super::dir::load(cx, &root, tree)?;
        keep_modes(&before, tree);
        runner.only(&root);
        Ok(())
    }

    /// `[image] base`: load another source first.
    fn base(
        &self,
        cx: &mut Cx,
        key: &Key,
        value: &Value,
        tree: &mut Tree,
        meta: &mut ImageMeta,
    ) -> Result<(), SourceError> {
        let at = self.at("image", key);
        let base = self.host_path(&at, self.string(&at, value)?)?;
        // Name the key too: "recipe:2: [image] base: rootfs.bin: not a build source...".
        let kind = detect(&base).map_err(|e| {
            let (path, line, key, problem) = (
                self.path.to_path_buf(),
                at.line,
                at.key.clone(),
                e.to_string(),
            );
            match e.exit_kind() {
                ExitKind::NoInput => SourceError::RecipeInput {
                    path,
                    line,
                    key,
                    problem,
                },
                _ => SourceError::Recipe {
                    path,
                    line,
                    key,
                    problem,
                },
            }
        })?;
        if kind == SourceKind::Recipe {
            let canonical = fs::canonicalize(&base).unwrap_or_else(|_| base.clone());
            if cx.recipes.contains(&canonical) {
                return Err(self.error(
                    at.line,
                    at.key,
                    format!(
                        "{} is a recipe this one is built on (a cycle)",
                        shown(&base)
                    ),
                ));
            }
            if cx.recipes.len() >= MAX_DEPTH {
                return Err(self.error(
                    at.line,
                    at.key,
                    format!("more than {MAX_DEPTH} recipes built on one another"),
                ));
            }
        }
        cx.load(&base, kind, tree, meta)
    }

    fn at(&self, section: &str, key: &Key) -> At {
        At {
            line: self.line(key.span()),
            key: format!("[{section}] {}", quoted_key(key.get_ref())),
        }
    }

    /// A host path from the recipe: relative to the recipe's directory; it
    /// must exist (a symbolic link is followed). Returns it canonical.
    fn host_path(&self, at: &At, written: &str) -> Result<PathBuf, SourceError> {
        if written.is_empty() {
            return Err(self.error(at.line, at.key.clone(), "the host path is empty"));
        }
        let path = self.dir.join(written);
        let missing = |e: SourceError| SourceError::RecipeInput {
            path: self.path.to_path_buf(),
            line: at.line,
            key: at.key.clone(),
            problem: e.to_string(),
        };
        followed_metadata(&path).map_err(missing)?;
        fs::canonicalize(&path).map_err(|e| missing(SourceError::unreadable(&path, e)))
    }

    /// An image path key: absolute, no `..`; relative to the root in the
    /// tree. The root itself only where `root_ok`.
    fn image_path(&self, at: &At, key: &Key, root_ok: bool) -> Result<PathBuf, SourceError> {
        let written = key.get_ref().as_ref();
        if !written.starts_with('/') {
            return Err(self.error(
                at.line,
                at.key.clone(),
                "an image path must be absolute (start with /)",
            ));
        }
        let names = tree::names(Path::new(written))
            .map_err(|_| self.error(at.line, at.key.clone(), "an image path cannot contain .."))?;
        if names.is_empty() && !root_ok {
            return Err(self.error(at.line, at.key.clone(), "cannot be the image root"));
        }
        Ok(names.iter().collect::<PathBuf>())
    }

    fn string<'v>(&self, at: &At, value: &'v Value) -> Result<&'v str, SourceError> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s.as_ref()),
            other => Err(self.error(
                self.line(value.span()),
                at.key.clone(),
                format!("expected a string, found {}", found(other)),
            )),
        }
    }

    fn strings(&self, at: &At, value: &Value) -> Result<Vec<String>, SourceError> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.error(
                at.line,
                at.key.clone(),
                format!(
                    "expected an array of strings, found {}",
                    found(value.get_ref())
                ),
            ));
        };
        items
            .iter()
            .map(|item| self.string(at, item).map(str::to_string))
            .collect()
    }

    /// A mode: a string of octal digits ("0755", "1777") or an octal
    /// integer (0o755); at most 0o7777.
    fn mode(&self, at: &At, value: &Value) -> Result<u16, SourceError> {
        let bad = |problem: String| self.error(self.line(value.span()), at.key.clone(), problem);
        let parsed = match value.get_ref() {
            DeValue::String(s) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return Err(bad(format!("{s:?} is not an octal mode like \"0755\"")));
                }
                u32::from_str_radix(digits, 8).ok()
            }
            DeValue::Integer(n) if n.radix() == 8 => u32::from_str_radix(n.as_str(), 8).ok(),
            DeValue::Integer(n) => {
                return Err(bad(format!(
                    "write the mode in octal, as \"0{0}\" or 0o{0}, not as the decimal {0}",
                    n.as_str()
                )));
            }
            other => {
                return Err(bad(format!(
                    "expected a mode like \"0755\", found {}",
                    found(other)
                )));
            }
        };
        match parsed {
            Some(mode) if mode <= 0o7777 => Ok(mode as u16),
            _ => Err(bad("a mode is at most 7777 (octal)".into())),
        }
    }

    fn set_mode(
        &self,
        tree: &mut Tree,
        path: &Path,
        mode: u16,
        at: &At,
    ) -> Result<(), SourceError> {
        let node = node_mut(tree, path).ok_or_else(|| {
            self.error(
                at.line,
                at.key.clone(),
                "no such path in the image (add it with [files], [inline], [dirs] or the base)",
            )
        })?;
        match node {
            Node::Dir { meta, .. } | Node::File { meta, .. } | Node::Symlink { meta, .. } => {
                meta.mode = mode;
                Ok(())
            }
            Node::HardLink { target } => Err(self.error(
                at.line,
                at.key.clone(),
                format!("a hard link: set the mode of /{} instead", shown(target)),
            )),
        }
    }
}

/// Where an entry is, for its messages.
struct At {
    line: usize,
    /// `[files] "/usr/bin/x"`.
    key: String,
}

fn insert(
    tree: &mut Tree,
    path: &Path,
    node: Node,
    at: &At,
    r: &Recipe,
) -> Result<(), SourceError> {
    tree.insert(path, node).map_err(|e| {
        let problem = match e {
            tree::TreeError::ParentNotDir { parent, .. } => {
                format!("/{} is not a directory in the image", shown(&parent))
            }
            other => other.to_string(),
        };
        r.error(at.line, at.key.clone(), problem)
    })
}

/// Give back the modes the steps did not change: the tree was written out
/// with every directory owner-rwx and every file owner-writable (the steps
/// run as its owner, [`tree_to_dir`]), so a 0555 directory or a 0440 file
/// would otherwise come back as 0755 or 0640. An entry whose mode is its
/// old one with just those bits added was not changed.
fn keep_modes(before: &Tree, after: &mut Tree) {
    before.visit(&mut |path, old| {
        // Which name of a hard-linked file is the file, and which the
        // link, depends on the order each tree was read in.
        let old = match old {
            Node::HardLink { target } => match before.get(target) {
                Some(file) => file,
                None => return,
            },
            other => other,
        };
        let (mode, written) = match old {
            Node::Dir { meta, .. } => (meta.mode, meta.mode | 0o700),
            Node::File { meta, .. } => (meta.mode, meta.mode | 0o200),
            _ => return,
        };
        if mode == written {
            return;
        }
        match node_mut(after, path) {
            Some(Node::Dir { meta, .. }) if old.is_dir() && meta.mode == written => {
                meta.mode = mode
            }
            Some(Node::File { meta, .. }) if !old.is_dir() && meta.mode == written => {
                meta.mode = mode
            }
            _ => {}
        }
    });
}

fn node_mut<'t>(tree: &'t mut Tree, path: &Path) -> Option<&'t mut Node> {
    let mut node = &mut tree.root;
    for name in path.iter() {
        node = match node {
            Node::Dir { children, .. } => children.get_mut(name)?,
            _ => return None,
        };
    }
    Some(node)
}

/// A table's entries in the order they are written (the table itself is
/// sorted by name).
fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<(&'a Key<'i>, &'a Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// A key as written in TOML: bare when it can be, else quoted.
fn quoted_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        one_line(&format!("{key:?}"))
    }
}

fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn list(items: &[&str]) -> String {
    items.join(", ")
}

#[cfg(test)]
#[path = "recipe_fuzz.rs"]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Compression, Options, detect};
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn recipe_with_every_section() {
        let d = tempfile::tempdir().unwrap();
        let base = TarMaker::default()
            .at(1_000_000_001)
            .dir("etc", 0o755)
            .file("etc/os-release", b"NAME=base\n", 0o644)
            .file("etc/motd", b"base motd\n", 0o644)
            .finish();
        fs::write(
            d.path().join("rootfs.tar.gz"),
            compress(&base, Compression::Gzip),
        )
        .unwrap();
        write(&d.path().join("files/hello.sh"), "#!/bin/sh\necho hello\n");
        fs::set_permissions(
            d.path().join("files/hello.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        write(&d.path().join("files/tree/a.txt"), "a\n");
        write(&d.path().join("files/tree/sub/b.txt"), "b\n");
        set_mtime(&d.path().join("files/hello.sh"), 1_000_000_002);
        set_mtime(&d.path().join("files/tree/a.txt"), 1_000_000_003);
        set_mtime(&d.path().join("files/tree/sub"), 1_000_000_004);
        set_mtime(&d.path().join("files/tree"), 1_000_000_005);
        let text = r##"# A test recipe.
[image]
base = "rootfs.tar.gz"
runscript = """#!/bin/sh
exec /usr/local/bin/hello "$@"
"""
workdir = "/srv"

[files]
"/usr/local/bin/hello" = "files/hello.sh"
"/opt/tree" = "files/tree"

[inline]
"/etc/motd" = "welcome\n"
"/etc/secret" = "s"

[symlinks]
"/usr/bin/hi" = "../local/bin/hello"

[dirs]
"/tmp" = "1777"
"/srv" = 0o750

[modes]
"/etc/secret" = "0600"
"/opt/tree/sub" = "0700"

[env]
PATH = "/usr/local/bin:/usr/bin:/bin"
GREETING = "hello world"

[labels]
"org.opencontainers.image.title" = "test"
"##;
        let recipe = d.path().join("test.toml");
        write(&recipe, text);
        assert_eq!(detect(&recipe).unwrap(), SourceKind::Recipe);
        let l = load_source(&recipe, &Options::default()).unwrap();
        assert_eq!(
            paths(&l.tree),
            [
                "",
                "etc",
                "etc/motd",
                "etc/os-release",
                "etc/secret",
                "opt",
                "opt/tree",
                "opt/tree/a.txt",
                "opt/tree/sub",
                "opt/tree/sub/b.txt",
                "srv",
                "tmp",
                "usr",
                "usr/bin",
                "usr/bin/hi",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/hello"
            ]
        );
        assert_eq!(l.text("etc/os-release"), "NAME=base\n");
        assert_eq!(l.text("etc/motd"), "welcome\n");
        assert_eq!(l.text("usr/local/bin/hello"), "#!/bin/sh\necho hello\n");
        assert_eq!(l.text("opt/tree/sub/b.txt"), "b\n");
        let t = &l.tree;
        assert_eq!(mode_of(t, "usr/local/bin/hello"), 0o755);
        assert_eq!(mode_of(t, "opt/tree/a.txt"), 0o644);
        assert_eq!(mode_of(t, "opt/tree/sub"), 0o700);
        assert_eq!(mode_of(t, "etc/motd"), 0o644);
        assert_eq!(mode_of(t, "etc/secret"), 0o600);
        assert_eq!(mode_of(t, "tmp"), 0o1777);
        assert_eq!(mode_of(t, "srv"), 0o750);
        assert_eq!(link_of(t, "usr/bin/hi"), "../local/bin/hello");
        // What the base and [files] bring keeps its time ([modes] too);
        // what the recipe makes, and the parents it implies, have none.
        for (path, mtime) in [
            ("etc", Some(1_000_000_001)),
            ("etc/os-release", Some(1_000_000_001)),
            ("usr/local/bin/hello", Some(1_000_000_002)),
            ("opt/tree/a.txt", Some(1_000_000_003)),
            ("opt/tree/sub", Some(1_000_000_004)),
            ("opt/tree", Some(1_000_000_005)),
            ("etc/motd", None),
            ("etc/secret", None),
            ("usr/bin/hi", None),
            ("tmp", None),
            ("usr/local", None),
            ("opt", None),
            ("", None),
        ] {
            assert_eq!(mtime_of(t, path), mtime, "{path}");
        }
        let m = &l.meta;
        assert_eq!(
            m.env,
            [
                ("PATH", "/usr/local/bin:/usr/bin:/bin"),
                ("GREETING", "hello world")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(m.labels["org.opencontainers.image.title"], "test");
        assert_eq!(
            m.runscript.as_deref(),
            Some("#!/bin/sh\nexec /usr/local/bin/hello \"$@\"\n")
        );
        assert_eq!(m.workdir.as_deref(), Some("/srv"));
        assert_eq!(m.definition.as_deref(), Some(text));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn env_after_an_oci_base_and_nested_recipes() {
        let d = tempfile::tempdir().unwrap();
        let oci = OciMaker::new(&d.path().join("layout"));
        let layer = TarMaker::default().file("bin/app", b"app", 0o755).finish();
        let config = serde_json::json!({"config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["app"]}});
        let manifest = oci.image(&config, &[layer]);
        oci.index(&[manifest]);
        write(
            &d.path().join("base.toml"),
            "[image]\nbase = \"layout\"\n[env]\nA = \"2\"\nB = \"3\"\n",
        );
        write(
            &d.path().join("sub/top.toml"),
            "[image]\nbase = \"../base.toml\"\ncmd = [\"app\", \"--top\"]\n[env]\nB = \"4\"\n",
        );
        let l = load_source(&d.path().join("sub/top.toml"), &Options::default()).unwrap();
        assert_eq!(
            l.meta.env,
            [("PATH", "/bin"), ("A", "2"), ("B", "4")].map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(l.meta.cmd, ["app", "--top"]);
        assert!(l.meta.definition.as_deref().unwrap().contains("--top"));
        assert_eq!(l.text("bin/app"), "app");

        // A cycle is refused at the base key that closes it.
        write(&d.path().join("a.toml"), "[image]\nbase = \"b.toml\"\n");
        write(&d.path().join("b.toml"), "\n[image]\nbase = \"a.toml\"\n");
        let e = load_source(&d.path().join("a.toml"), &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{0}/b.toml:3: [image] base: {1}/a.toml is a recipe this one is built on (a cycle)",
                d.path().display(),
                fs::canonicalize(d.path()).unwrap().display()
            )
        );
    }

    /// Each bad recipe, and the message it must give.
    #[test]
    fn errors_name_the_file_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("r.toml");
        fs::write(d.path().join("notes.bin"), [0xffu8, 0, 1, 2]).unwrap();
        let cases: &[(&str, &str, ExitKind)] = &[
            ("[image]\nbase = \n", "r.toml:2:8: ", ExitKind::BadImage),
            (
                "[image]\n[file]\n",
                "r.toml:2: [file]: unknown section (a recipe has [image], [dirs], [files], \
                 [inline], [symlinks], [[run]], [modes], [env], [labels])",
                ExitKind::BadImage,
            ),
            (
                "[env]\nA = \"1\"\n",
                "r.toml:1: [image]: missing: every recipe has an [image] table (it may be empty)",
                ExitKind::BadImage,
            ),
            (
                "[image]\nbsae = \"x\"\n",
                "r.toml:2: [image] bsae: unknown key (known: base, runscript, entrypoint, cmd, \
                 workdir)",
                ExitKind::BadImage,
            ),
            (
                "[image]\n\n[dirs]\n\"/tmp\" = 1777\n",
                "r.toml:4: [dirs] \"/tmp\": write the mode in octal, as \"01777\" or 0o1777, \
                 not as the decimal 1777",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[modes]\n\"/x\" = \"0799\"\n",
                "r.toml:3: [modes] \"/x\": \"0799\" is not an octal mode like \"0755\"",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[modes]\n\"/nowhere\" = \"0755\"\n",
                "r.toml:3: [modes] \"/nowhere\": no such path in the image (add it with \
                 [files], [inline], [dirs] or the base)",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[inline]\n\"etc/x\" = \"\"\n",
                "r.toml:3: [inline] \"etc/x\": an image path must be absolute (start with /)",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[symlinks]\n\"/a/../../b\" = \"x\"\n",
                "r.toml:3: [symlinks] \"/a/../../b\": an image path cannot contain ..",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[inline]\n\"/\" = \"x\"\n",
                "r.toml:3: [inline] \"/\": cannot be the image root",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[env]\n\"1A\" = \"x\"\n",
                "r.toml:3: [env] 1A: not a variable name (letters, digits and _, \
                 not starting with a digit)",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[labels]\nx = 1\n",
                "r.toml:3: [labels] x: expected a string, found an integer",
                ExitKind::BadImage,
            ),
            (
                "[image]\ncmd = \"sh\"\n",
                "r.toml:2: [image] cmd: expected an array of strings, found a string",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[inline]\n\"/f\" = \"x\"\n\"/f/g\" = \"y\"\n",
                "r.toml:4: [inline] \"/f/g\": /f is not a directory in the image",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[files]\n\"/x\" = \"missing.sh\"\n",
                "r.toml:3: [files] \"/x\": ",
                ExitKind::NoInput,
            ),
            (
                "[image]\nbase = \"missing.tar\"\n",
                "missing.tar: No such file or directory (ENOENT)",
                ExitKind::NoInput,
            ),
            (
                "[image]\nbase = \"r.toml\"\n",
                "is a recipe this one is built on (a cycle)",
                ExitKind::BadImage,
            ),
            (
                "[image]\nbase = \"notes.bin\"\n",
                "r.toml:2: [image] base: ",
                ExitKind::BadImage,
            ),
        ];
        for (text, expected, kind) in cases {
            write(&r, text);
            let e = load_source(&r, &Options::default()).unwrap_err();
            let message = e.to_string();
            let shown = message.replace(&format!("{}/", d.path().display()), "");
            assert!(
                shown.starts_with(expected) || shown.ends_with(expected),
                "{text:?}:\n  got      {shown}\n  expected {expected}"
            );
            assert_eq!(e.exit_kind(), *kind, "{text:?}: {message}");
        }
    }

    #[test]
    fn missing_host_file_names_recipe_line_and_path() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("r.toml");
        write(&r, "[image]\n[files]\n\"/x\" = \"missing.sh\"\n");
        let e = load_source(&r, &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{0}/r.toml:3: [files] \"/x\": {1}/missing.sh: No such file or directory (ENOENT)",
                d.path().display(),
                fs::canonicalize(d.path()).unwrap().display()
            )
        );
    }

    /// A [`StepRunner`] without namespaces: each step runs with the host's
    /// `/bin/sh -ec` in the root (its working directory), so scripts use
    /// relative paths. Enough to see what a recipe gives its steps and
    /// takes back from them.
    struct HostSteps {
        work: tempfile::TempDir,
        roots: usize,
        /// (recipe file name, line) of each step run.
        ran: Vec<(String, usize)>,
        /// The roots [`StepRunner::only`] was told of.
        only: Vec<PathBuf>,
    }

    impl HostSteps {
        fn new() -> HostSteps {
            HostSteps {
                work: tempfile::tempdir().unwrap(),
                roots: 0,
                ran: Vec::new(),
                only: Vec::new(),
            }
        }
    }

    impl StepRunner for HostSteps {
        fn new_root(&mut self) -> Result<PathBuf, crate::error::Error> {
            self.roots += 1;
            let root = self.work.path().join(format!("root-{}", self.roots));
            fs::create_dir(&root).unwrap();
            Ok(root)
        }

        fn run(
            &mut self,
            recipe: &Path,
            step: &RunStep,
            root: &Path,
        ) -> Result<(), crate::error::Error> {
            let name = recipe.file_name().unwrap().to_string_lossy().into_owned();
            self.ran.push((name.clone(), step.line));
            let status = std::process::Command::new("/bin/sh")
                .arg("-ec")
                .arg(&step.script)
                .current_dir(root)
                .status()
                .unwrap();
            if status.success() {
                return Ok(());
            }
            Err(crate::error::Error::Failed {
                kind: ExitKind::BadImage,
                message: format!("{name}:{}: [[run]] failed ({status})", step.line),
            })
        }

        fn only(&mut self, root: &Path) {
            self.only.push(root.to_path_buf());
        }
    }

    /// Steps run after `[files]`, `[inline]`, `[symlinks]` and see them;
    /// in order; `[modes]` applies to what they made; what they did not
    /// touch keeps its mode (a 0555 directory, a 0440 file); the recipe's
    /// metadata stays.
    #[test]
    fn run_steps_see_the_tree_and_give_it_back() {
        let d = tempfile::tempdir().unwrap();
        let base = TarMaker::default()
            .dir("etc", 0o755)
            .file("etc/sudoers", b"root ALL=(ALL) ALL\n", 0o440)
            .dir("ro", 0o555)
            .file("ro/inside", b"x", 0o444)
            .file("bin/tool", b"#!/bin/sh\n", 0o4555)
            .hard_link("bin/again", "bin/tool")
            .finish();
        fs::write(d.path().join("base.tar"), &base).unwrap();
        write(&d.path().join("files/app.conf"), "conf\n");
        let text = r##"[image]
base = "base.tar"
runscript = "#!/bin/sh\nexec /opt/made\n"

[[run]]
script = """
cat etc/motd etc/app.conf > made-1
test -L link
"""

[modes]
"/opt/made" = "0700"

[[run]]
shell = "/bin/bash"
script = "mkdir opt && cp made-1 opt/made && chmod 0644 etc/sudoers"

[files]
"/etc/app.conf" = "files/app.conf"

[inline]
"/etc/motd" = "motd\n"

[symlinks]
"/link" = "etc/motd"

[env]
A = "1"
"##;
        let recipe = d.path().join("r.toml");
        write(&recipe, text);
        let mut steps = HostSteps::new();
        let l = load_source_with_steps(&recipe, &Options::default(), &mut steps).unwrap();
        assert_eq!(steps.ran, [("r.toml".into(), 6), ("r.toml".into(), 16)]);
        assert_eq!(steps.only, [steps.work.path().join("root-1")]);
        assert_eq!(l.text("made-1"), "motd\nconf\n");
        assert_eq!(l.text("opt/made"), "motd\nconf\n");
        let t = &l.tree;
        for (path, mode) in [
            ("opt/made", 0o700),
            ("etc/sudoers", 0o644),
            ("ro", 0o555),
            ("ro/inside", 0o444),
            ("bin/tool", 0o4555),
            ("bin/again", 0o4555),
            ("etc", 0o755),
        ] {
            // A hard link's mode is its file's.
            let path = match t.get(Path::new(path)) {
                Some(Node::HardLink { target }) => target.to_str().unwrap(),
                _ => path,
            };
            assert_eq!(mode_of(t, path), mode, "/{path}");
        }
        assert_eq!(link_of(t, "link"), "etc/motd");
        assert!(
            [t.get(Path::new("bin/again")), t.get(Path::new("bin/tool"))]
                .iter()
                .any(|n| matches!(n, Some(Node::HardLink { .. })))
        );
        assert_eq!(l.meta.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(
            l.meta.runscript.as_deref(),
            Some("#!/bin/sh\nexec /opt/made\n")
        );
        assert_eq!(l.meta.definition.as_deref(), Some(text));
    }

    /// A recipe built on a recipe with steps: the base's steps run on the
    /// base alone, before the top's sections; the top's on the whole.
    #[test]
    fn steps_of_a_base_recipe_run_first() {
        let d = tempfile::tempdir().unwrap();
        write(
            &d.path().join("base.toml"),
            "[image]\n[inline]\n\"/a\" = \"a\"\n[[run]]\nscript = \"test ! -e b; echo base >> log\"\n",
        );
        write(
            &d.path().join("top.toml"),
            "[image]\nbase = \"base.toml\"\n[inline]\n\"/b\" = \"b\"\n\
             [[run]]\nscript = \"test -e a; test -e b; echo top >> log\"\n",
        );
        let mut steps = HostSteps::new();
        let l = load_source_with_steps(&d.path().join("top.toml"), &Options::default(), &mut steps)
            .unwrap();
        assert_eq!(steps.ran, [("base.toml".into(), 5), ("top.toml".into(), 6)]);
        assert_eq!(l.text("log"), "base\ntop\n");
        assert_eq!(
            steps.only,
            [
                steps.work.path().join("root-1"),
                steps.work.path().join("root-2")
            ]
        );
    }

    /// Bad steps are refused before anything runs; a failing one stops the
    /// load with the runner's error and exit code.
    #[test]
    fn run_step_errors() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("r.toml");
        let cases: &[(&str, &str, ExitKind)] = &[
            (
                "[image]\n[[run]]\nshell = \"/bin/sh\"\n",
                "r.toml:2: [[run]]: missing: a step needs its script = \"...\"",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[[run]]\nscript = \"true\"\nsript = \"x\"\n",
                "r.toml:4: [[run]] sript: unknown key (known: script, shell)",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[[run]]\nscript = \"true\"\nshell = \"bash\"\n",
                "r.toml:4: [[run]] shell: must be an absolute path in the image, like /bin/bash",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[[run]]\nscript = [\"true\"]\n",
                "r.toml:3: [[run]] script: expected a string, found an array",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[run]\nscript = \"true\"\n",
                "r.toml:2: [run]: write each step as a [[run]] table (an array of tables) with \
                 script = \"...\"; found a table",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[runs]\n",
                "r.toml:2: [runs]: unknown section (a recipe has [image], [dirs], [files], \
                 [inline], [symlinks], [[run]], [modes], [env], [labels])",
                ExitKind::BadImage,
            ),
            // A bad step after a good one: the good one does not run.
            (
                "[image]\n[[run]]\nscript = \"touch ran\"\n[[run]]\nscript = 1\n",
                "r.toml:5: [[run]] script: expected a string, found an integer",
                ExitKind::BadImage,
            ),
            (
                "[image]\n[[run]]\nscript = \"exit 3\"\n",
                "r.toml:3: [[run]] failed (exit status: 3)",
                ExitKind::BadImage,
            ),
        ];
        for (text, expected, kind) in cases {
            write(&r, text);
            let mut steps = HostSteps::new();
            let e = load_source_with_steps(&r, &Options::default(), &mut steps).unwrap_err();
            let message = e.to_string();
            let shown = message.replace(&format!("{}/", d.path().display()), "");
            assert_eq!(&shown, expected, "{text:?}");
            assert_eq!(e.exit_kind(), *kind, "{text:?}: {message}");
            if !text.contains("exit 3") {
                assert!(steps.ran.is_empty(), "{text:?}: {:?}", steps.ran);
            }
        }
        // Without a runner (a recipe read as a definition's base, say).
        write(&r, "[image]\n\n[[run]]\nscript = \"true\"\n");
        let e = load_source(&r, &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}/r.toml:4: [[run]]: run steps run only in rfake build of the recipe \
                 (or of one built on it)",
                d.path().display()
            )
        );
    }

    /// `images/recipes/demo.toml` (compiled in: the tests may run where
    /// the checkout is not readable) over a stand-in for `images/demo/rootfs`.
    #[test]
    fn demo_recipe() {
        let busybox = Path::new("/bin/busybox");
        if !crate::testing::have(busybox, "busybox-static") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let recipe = d.path().join("recipes/demo.toml");
        write(&recipe, include_str!("../../../images/recipes/demo.toml"));
        let rootfs = d.path().join("demo/rootfs");
        for (path, text) in [
            ("etc/rfake-demo.txt", "hello from the demo image\n"),
            (".singularity.d/runscript", "#!/bin/sh\n"),
            (
                ".singularity.d/env/90-environment.sh",
                "export RFAKE_DEMO=1\n",
            ),
            ("bin/not-executable", "#!/bin/sh\n"),
        ] {
            write(&rootfs.join(path), text);
        }
        let l = load_source(&recipe, &Options::default()).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let t = &l.tree;
        assert_eq!(l.text("etc/rfake-demo.txt"), "hello from the demo image\n");
        for (path, mode) in [
            ("", 0o755),
            ("bin/busybox", 0o755),
            (".singularity.d/runscript", 0o755),
            (".singularity.d/env/90-environment.sh", 0o644),
            ("bin/not-executable", 0o644),
            ("tmp", 0o1777),
            ("var/tmp", 0o1777),
            ("dev/shm", 0o1777),
            ("root", 0o700),
            ("proc", 0o755),
            ("scratch", 0o755),
        ] {
            assert_eq!(mode_of(t, path), mode, "/{path}");
        }
        for (path, target) in [
            ("bin/sh", "busybox"),
            ("usr/bin/env", "../../bin/busybox"),
            ("sbin/init", "../bin/busybox"),
            ("opt/up", "../../../.."),
            ("opt/etc-link", "/etc"),
        ] {
            assert_eq!(link_of(t, path), target, "/{path}");
        }
        assert_eq!(
            l.meta.labels["org.opencontainers.image.title"],
            "rfake demo"
        );
    }
}
