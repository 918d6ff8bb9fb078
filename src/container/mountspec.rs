//! `--mount`: Docker's mount specification as Apptainer reads it, one CSV
//! record (`type=bind,src=/a,dst=/b,ro`). A field holding a `,` is quoted
//! as CSV quotes (`"src=/a,b"`, a `"` inside doubled); `:` needs nothing.

use std::path::Path;

use crate::container::binds::{self, BindSpec};
use crate::error::Error;

/// Parse one `--mount` value into a bind.
pub fn parse(text: &str) -> Result<BindSpec, Error> {
    let bad = |why: String| Error::Usage(format!("--mount {}: {why}", crate::text::one_line(text)));
    let fields = csv_fields(text).map_err(|why| bad(why.into()))?;
    let (mut kind, mut src, mut dst, mut readonly) = (None, None, None, false);
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        match (key, value) {
            ("type", Some(v)) => kind = Some(v.to_string()),
            ("source" | "src", Some(v)) => src = Some(v.to_string()),
            ("destination" | "dst" | "target", Some(v)) => dst = Some(v.to_string()),
            ("ro" | "readonly", None) => readonly = true,
            ("ro" | "readonly", Some(v)) => {
                readonly = match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad(format!("{key}={v}: expected true or false"))),
                }
            }
            ("bind-propagation", Some("rprivate" | "private")) => {}
            ("image-src" | "id", _) => {
                return Err(bad(format!(
                    "{key}: binds from inside an image are not supported"
                )));
            }
            _ => {
                return Err(bad(format!(
                    "unknown field '{}'",
                    crate::text::one_line(field)
                )));
            }
        }
    }
    match kind.as_deref() {
        Some("bind") => {}
        Some(other) => {
            return Err(bad(format!("type={other}: only type=bind is supported")));
        }
        None => return Err(bad("no type= (expected type=bind)".into())),
    }
    let src = src.ok_or_else(|| bad("no source= (src=)".into()))?;
    let dst = dst.ok_or_else(|| bad("no destination= (dst=, target=)".into()))?;
    for (what, path) in [("source", &src), ("destination", &dst)] {
        if !path.starts_with('/') {
            return Err(bad(format!("{what} '{path}' must be an absolute path")));
        }
    }
    Ok(BindSpec {
        src: binds::normalize(Path::new(&src)),
        dst: binds::normalize(Path::new(&dst)),
        readonly,
    })
}

/// The fields of one CSV record (RFC 4180, as Go's encoding/csv reads
/// it): a field starting with `"` runs to the next lone `"`, `""` inside
/// being one `"`.
fn csv_fields(text: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed"),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => {
                    return Err("text after a closing quote (a '\"' inside is written '\"\"')");
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err("a '\"' inside an unquoted field (quote the whole field)");
                    }
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table() {
        let ok = |t: &str, src: &str, dst: &str, ro: bool| {
            assert_eq!(
                parse(t).unwrap(),
                BindSpec {
                    src: src.into(),
                    dst: dst.into(),
                    readonly: ro
                },
                "{t}"
            )
        };
        ok(
            "type=bind,source=/opt,destination=/hostopt",
            "/opt",
            "/hostopt",
            false,
        );
        ok("type=bind,src=/a,dst=/b,ro", "/a", "/b", true);
        ok("type=bind,src=/a,target=/b,readonly=true", "/a", "/b", true);
        ok("type=bind,src=/a,dst=/b,readonly=false", "/a", "/b", false);
        ok("type=bind,src=/a:b,dst=/c:d", "/a:b", "/c:d", false);
        ok("type=bind,\"src=/a,b\",dst=/x", "/a,b", "/x", false);
        ok("type=bind,\"src=/a\"\"q\",dst=/x", "/a\"q", "/x", false);
        let err = |t: &str, want: &str| {
            let e = parse(t).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
            assert_eq!(
                parse(t).unwrap_err().exit_kind(),
                crate::exit::ExitKind::Usage
            );
        };
        err("type=volume,src=/a,dst=/b", "only type=bind");
        err("src=/a,dst=/b", "no type=");
        err("type=bind,dst=/b", "no source=");
        err("type=bind,src=/a", "no destination=");
        err(
            "type=bind,src=a,dst=/b",
            "source 'a' must be an absolute path",
        );
        err(
            "type=bind,src=/a,dst=/b,colour=red",
            "unknown field 'colour=red'",
        );
        err("type=bind,\"src=/a,dst=/b", "not closed");
        err("type=bind,src=/a\"b,dst=/b", "unquoted field");
        err("type=bind,image-src=/x,src=/a,dst=/b", "inside an image");
    }
}
