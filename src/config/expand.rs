//! `$NAME` and `${NAME}` references in `binds` and `scratch` entries.
//!
//! Deliberately small: no defaults (`${NAME:-x}`), no escapes, no `~`. A `$`
//! that does not start a reference is an error rather than a literal, so a
//! typo is reported instead of producing a strange path. A name is
//! `[A-Za-z_][A-Za-z0-9_]*`, as in the shell.

use std::ffi::OsString;

/// Why an entry could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The variable is not in the environment.
    #[error("${name} is not set")]
    Unset { name: String },
    /// The variable is set to the empty string. Treated like unset: expanding
    /// `${SCRATCH}/$USER` with an empty `SCRATCH` would give `/alice`, a path
    /// nobody meant.
    #[error("${name} is empty")]
    Empty { name: String },
    /// The variable's value is not UTF-8 (configuration values are TOML
    /// strings, which are).
    #[error("${name} is not valid UTF-8")]
    NotUnicode { name: String },
    /// A `$` that does not start `$NAME` or `${NAME}`.
    #[error(
        "'$' at character {at} does not start $NAME or ${{NAME}} (a literal '$' is not supported)"
    )]
    BadReference { at: usize },
}

impl ExpandError {
    /// True when the entry names a variable this environment lacks (unset or
    /// empty): a `scratch` entry is then skipped, not refused.
    pub fn is_missing(&self) -> bool {
        matches!(self, ExpandError::Unset { .. } | ExpandError::Empty { .. })
    }
}

/// A piece of an entry: literal text or a variable name.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Split `s` into literal text and variable references; syntax only, so a
/// malformed reference is reported whatever the environment holds.
fn pieces(s: &str) -> Result<Vec<Piece<'_>>, ExpandError> {
    let is_start = |c: char| c == '_' || c.is_ascii_alphabetic();
    let is_name = |c: char| c == '_' || c.is_ascii_alphanumeric();
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(dollar) = rest.find('$') {
        let at = s.len() - rest.len() + dollar;
        let bad = ExpandError::BadReference {
            at: s[..at].chars().count() + 1,
        };
        if dollar > 0 {
            out.push(Piece::Text(&rest[..dollar]));
        }
        let after = &rest[dollar + 1..];
        let (name, next) = if let Some(braced) = after.strip_prefix('{') {
            let close = braced.find('}').ok_or(bad.clone())?;
            (&braced[..close], &braced[close + 1..])
        } else {
            let end = after.find(|c| !is_name(c)).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if !name.starts_with(is_start) || !name.chars().all(is_name) {
            return Err(bad);
        }
        out.push(Piece::Var(name));
        rest = next;
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Check the syntax of the references in `s` without looking anything up.
pub fn check_syntax(s: &str) -> Result<(), ExpandError> {
    pieces(s).map(drop)
}

/// Replace every `$NAME` and `${NAME}` in `s` by its value in `env` (the
/// last entry wins, as in [`crate::env::get`]).
pub fn expand(s: &str, env: &[(OsString, OsString)]) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    for piece in pieces(s)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name) => {
                let value = crate::env::get(env, name).ok_or_else(|| ExpandError::Unset {
                    name: name.to_string(),
                })?;
                let value = value.to_str().ok_or_else(|| ExpandError::NotUnicode {
                    name: name.to_string(),
                })?;
                if value.is_empty() {
                    return Err(ExpandError::Empty {
                        name: name.to_string(),
                    });
                }
                out.push_str(value);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn env() -> Vec<(OsString, OsString)> {
        vec![
            ("USER".into(), "alice".into()),
            ("HOME".into(), "/home/alice".into()),
            ("SCRATCH".into(), "/lustre/scratch".into()),
            ("A_1".into(), "x".into()),
            ("EMPTY".into(), "".into()),
            ("RAW".into(), OsString::from_vec(vec![0xff])),
            ("USER".into(), "bob".into()),
        ]
    }

    #[test]
    fn expansion_table() {
        let unset = |n: &str| {
            Err(ExpandError::Unset {
                name: n.to_string(),
            })
        };
        let bad = |at| Err(ExpandError::BadReference { at });
        let cases: &[(&str, Result<String, ExpandError>)] = &[
            ("/plain/path", Ok("/plain/path".into())),
            ("", Ok("".into())),
            ("/scratch/$USER", Ok("/scratch/bob".into())),
            ("$HOME", Ok("/home/alice".into())),
            ("${SCRATCH}/${USER}/x", Ok("/lustre/scratch/bob/x".into())),
            ("$SCRATCH/$USER", Ok("/lustre/scratch/bob".into())),
            ("${USER}s", Ok("bobs".into())),
            ("$USERs", unset("USERs")),
            ("/a/$A_1.d", Ok("/a/x.d".into())),
            ("$HOME$USER", Ok("/home/alicebob".into())),
            ("/é/$USER/ü", Ok("/é/bob/ü".into())),
            ("$NOPE/x", unset("NOPE")),
            ("${NOPE}", unset("NOPE")),
            (
                "$EMPTY/x",
                Err(ExpandError::Empty {
                    name: "EMPTY".into(),
                }),
            ),
            ("$RAW", Err(ExpandError::NotUnicode { name: "RAW".into() })),
            ("/a$", bad(3)),
            ("/a$/b", bad(3)),
            ("$$", bad(1)),
            ("/é$1", bad(3)),
            ("${", bad(1)),
            ("${USER", bad(1)),
            ("${}", bad(1)),
            ("${US-ER}", bad(1)),
            ("${USER:-x}", bad(1)),
            ("$NOPE${", bad(6)),
        ];
        for (input, want) in cases {
            assert_eq!(&expand(input, &env()), want, "expand({input:?})");
        }
    }

    #[test]
    fn syntax_errors_win_over_missing_variables() {
        assert_eq!(
            check_syntax("$NOPE/$"),
            Err(ExpandError::BadReference { at: 7 })
        );
        assert!(check_syntax("$NOPE/${X}").is_ok());
        assert!(ExpandError::Unset { name: "X".into() }.is_missing());
        assert!(ExpandError::Empty { name: "X".into() }.is_missing());
        assert!(!ExpandError::BadReference { at: 1 }.is_missing());
    }
}
