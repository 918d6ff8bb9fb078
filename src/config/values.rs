//! Checking values: one function per kind of value, each error naming the
//! key and its line (or a list entry's own line).

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;
use toml::de::DeValue;

use super::expand::{self, ExpandError, expand};
use super::render::toml_string;
use super::size::{self, SizeError, parse_size};
use super::{ConfigError, Key, Origin, Role, one_line};

/// The key being checked, for messages and origins.
pub(super) struct At<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) role: Role,
    pub(super) key: &'a str,
    /// The key's line.
    pub(super) line: usize,
}

impl At<'_> {
    /// A problem with the key, reported at its line.
    pub(super) fn error(&self, problem: String) -> ConfigError {
        self.error_on(self.line, problem)
    }

    /// A problem with one list entry, reported at the entry's own line.
    pub(super) fn error_on(&self, line: usize, problem: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            key: one_line(self.key),
            problem,
        }
    }

    pub(super) fn origin(&self, line: usize) -> Origin {
        let path = self.path.to_path_buf();
        match self.role {
            Role::Site => Origin::Site { path, line },
            Role::User => Origin::User { path, line },
        }
    }

    pub(super) fn line_of(&self, offset: usize) -> usize {
        position(self.text, offset).0
    }
}

/// The 1-based line and column (in characters) of byte `offset`.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// "a string", "an integer", ...: the TOML type of `value`.
pub(crate) fn found(value: &DeValue) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

pub(super) fn boolean(value: &Spanned<DeValue>, at: &At) -> Result<bool, ConfigError> {
    match value.get_ref() {
        DeValue::Boolean(b) => Ok(*b),
        DeValue::String(s) if matches!(s.as_ref(), "true" | "false") => Err(at.error(format!(
            "expected a boolean, found a string (write {s} without quotes)"
        ))),
        other => Err(at.error(format!("expected a boolean, found {}", found(other)))),
    }
}

pub(super) fn string<'v>(
    value: &'v Spanned<DeValue>,
    at: &At,
    expected: &str,
) -> Result<&'v str, ConfigError> {
    match value.get_ref() {
        DeValue::String(s) => Ok(s.as_ref()),
        other => Err(at.error(format!(
            "expected a string ({expected}), found {}",
            found(other)
        ))),
    }
}

/// An array of strings, each with its line.
pub(super) fn strings<'v>(
    value: &'v Spanned<DeValue>,
    at: &At,
) -> Result<Vec<(&'v str, usize)>, ConfigError> {
    let items = match value.get_ref() {
        DeValue::Array(items) => items,
        DeValue::String(s) => {
            return Err(at.error(format!(
                "expected an array of strings, found a string (write {} = [{}])",
                at.key,
                toml_string(s)
            )));
        }
        other => {
            return Err(at.error(format!(
                "expected an array of strings, found {}",
                found(other)
            )));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let line = at.line_of(item.span().start);
            match item.get_ref() {
                DeValue::String(s) => Ok((s.as_ref(), line)),
                other => Err(at.error_on(
                    line,
                    format!(
                        "expected an array of strings, found {} (entry {})",
                        found(other),
                        i + 1
                    ),
                )),
            }
        })
        .collect()
}

pub(super) fn size(value: &Spanned<DeValue>, at: &At) -> Result<u64, ConfigError> {
    let checked = match value.get_ref() {
        DeValue::String(s) => parse_size(s),
        DeValue::Integer(n) => {
            let text = n.to_string();
            match i64::from_str_radix(n.as_str(), n.radix()) {
                Ok(n) if n <= 0 => Err(SizeError::Zero(text)),
                Ok(n) => size::check_bytes(n.unsigned_abs(), &text),
                Err(_) => Err(SizeError::TooLarge(text, size::MAX_SIZE)),
            }
        }
        other => {
            return Err(at.error(format!(
                "expected a size like \"64M\" or an integer number of bytes, found {}",
                found(other)
            )));
        }
    };
    checked.map_err(|e| at.error(e.to_string()))
}

/// A build size limit (`build_max_size`): a size like `"4T"` up to
/// [`size::MAX_BUILD_SIZE`], or 0 (written `0` or `"0"`) for none, which is
/// `u64::MAX`.
pub(super) fn build_size(value: &Spanned<DeValue>, at: &At) -> Result<u64, ConfigError> {
    let checked = match value.get_ref() {
        DeValue::String(s) => size::parse_build_size(s),
        DeValue::Integer(n) => {
            let text = n.to_string();
            match i64::from_str_radix(n.as_str(), n.radix()) {
                Ok(0) => Ok(u64::MAX),
                Ok(n) if n < 0 => Err(SizeError::Zero(text)),
                Ok(n) => size::check_bytes_within(n.unsigned_abs(), &text, size::MAX_BUILD_SIZE),
                Err(_) => Err(SizeError::TooLarge(text, size::MAX_BUILD_SIZE)),
            }
        }
        other => {
            return Err(at.error(format!(
                "expected a size like \"4T\", an integer number of bytes or 0 (no limit), found {}",
                found(other)
            )));
        }
    };
    checked.map_err(|e| at.error(e.to_string()))
}

/// A size as for [`size`], or 0 (written `0` or `"0"`).
pub(super) fn size_or_zero(value: &Spanned<DeValue>, at: &At) -> Result<u64, ConfigError> {
    match value.get_ref() {
        DeValue::Integer(n) if n.as_str() == "0" => Ok(0),
        DeValue::String(s) if s.trim() == "0" => Ok(0),
        _ => size(value, at),
    }
}

/// A duration in seconds (an integer or a float), 0 to `max`.
pub(super) fn seconds(
    value: &Spanned<DeValue>,
    at: &At,
    max: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    let (secs, text) = match value.get_ref() {
        DeValue::Integer(n) => (
            i64::from_str_radix(n.as_str(), n.radix())
                .ok()
                .map(|n| n as f64),
            n.as_str().to_string(),
        ),
        DeValue::Float(f) => (f.as_str().parse::<f64>().ok(), f.as_str().to_string()),
        other => {
            return Err(at.error(format!(
                "expected a number of seconds, found {}",
                found(other)
            )));
        }
    };
    match secs {
        Some(s) if (0.0..=max.as_secs_f64()).contains(&s) => {
            Ok(std::time::Duration::from_secs_f64(s))
        }
        _ => Err(at.error(format!(
            "expected a number of seconds from 0 to {}, found {text}",
            max.as_secs()
        ))),
    }
}

/// Check a `binds` entry and expand it; the error completes "binds: ".
pub(super) fn check_bind(written: &str, env: &[(OsString, OsString)]) -> Result<String, String> {
    let fields: Vec<&str> = written.split(':').collect();
    if fields.len() > 3 {
        return Err(format!(
            "{written:?}: expected SRC[:DST[:ro|rw]], found {} ':'-separated fields",
            fields.len()
        ));
    }
    if let Some(mode) = fields.get(2) {
        if !matches!(*mode, "ro" | "rw") {
            return Err(format!(
                "{written:?}: the mode must be ro or rw, found {mode:?}"
            ));
        }
    }
    let src = fields[0];
    if src.is_empty() {
        return Err(format!("{written:?}: SRC is empty"));
    }
    // `/data:` (DST left empty): as on the command line, refused rather
    // than read as `/data`; `/data::ro` gives a mode without a DST.
    if fields.len() == 2 && fields[1].is_empty() {
        return Err(format!(
            "{written:?}: DST after ':' is empty (write SRC alone to bind it at the same path)"
        ));
    }
    let paths = &fields[..fields.len().min(2)];
    for field in paths {
        expand::check_syntax(field).map_err(|e| format!("{written:?}: {e}"))?;
    }
    if !src.starts_with('$') && !Path::new(src).is_absolute() {
        return Err(format!("{written:?}: SRC {src:?} must be an absolute path"));
    }
    // Each field on its own, so a value holding ':' cannot shift the fields.
    let mut expanded = Vec::with_capacity(fields.len());
    for field in paths {
        let value = expand(field, env).map_err(|e| format!("{written:?}: {e}"))?;
        if value.contains(':') {
            return Err(format!(
                "{written:?}: {field:?} expands to {value:?}, and a bind path cannot contain ':'"
            ));
        }
        expanded.push(value);
    }
    if !Path::new(&expanded[0]).is_absolute() {
        return Err(format!(
            "{written:?}: SRC expands to {:?}, which is not an absolute path",
            expanded[0]
        ));
    }
    if let Some(dst) = expanded.get(1).filter(|d| !d.is_empty()) {
        if !Path::new(dst).is_absolute() {
            return Err(format!("{written:?}: DST {dst:?} must be an absolute path"));
        }
    }
    expanded.extend(fields.get(2).map(|mode| mode.to_string()));
    Ok(expanded.join(":"))
}

/// Check a `scratch` entry and expand it: `Ok(Err(_))` when a variable it
/// names is unset or empty (normal: `$SCRATCH` exists on some clusters or
/// nodes only), an error when it is malformed or not absolute.
pub(super) fn check_scratch(
    written: &str,
    env: &[(OsString, OsString)],
) -> Result<Result<PathBuf, ExpandError>, String> {
    expand::check_syntax(written).map_err(|e| format!("{written:?}: {e}"))?;
    if !written.starts_with('$') && !Path::new(written).is_absolute() {
        return Err(format!("{written:?} must be an absolute path"));
    }
    match expand(written, env) {
        Ok(path) if Path::new(&path).is_absolute() => Ok(Ok(path.into())),
        Ok(path) => Err(format!(
            "{written:?} expands to {path:?}, which is not an absolute path"
        )),
        Err(why) if why.is_missing() => Ok(Err(why)),
        Err(why) => Err(format!("{written:?}: {why}")),
    }
}

/// Check an `allowed_image_paths` entry and normalize it.
pub(super) fn check_image_dir(dir: &str) -> Result<PathBuf, String> {
    let path = Path::new(dir);
    if !path.is_absolute() {
        return Err(format!("{dir:?} must be an absolute directory"));
    }
    // Images are compared by canonical path, on components; a `..` here
    // would never match one.
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{dir:?} must not contain '..': write the directory's real path"
        ));
    }
    Ok(path.components().collect())
}

/// Check a `user_may_set` entry.
pub(super) fn user_key(name: &str) -> Result<Key, String> {
    match Key::from_name(name) {
        Some(key) if key.is_policy() => {
            Err(format!("{name:?} is a policy key: users can never set it"))
        }
        Some(key) => Ok(key),
        None => {
            let hint = Key::suggest(name)
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            Err(format!("{name:?} is not a key{hint}"))
        }
    }
}
