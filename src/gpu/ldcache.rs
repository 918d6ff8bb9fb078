//! The host's dynamic linker cache (`/etc/ld.so.cache`), read directly
//! rather than through `ldconfig -p`: no program to find (`/sbin` is often
//! not on a user's `PATH`), no output format that changes with glibc's
//! translations, the architecture flags read exactly, and every offset
//! checked against the file's size.
//!
//! The format (glibc `sysdeps/generic/dl-cache.h`): the header
//! `glibc-ld.so.cache1.1`, `nlibs` (u32), `len_strings` (u32), flags and
//! padding up to 48 bytes, then `nlibs` entries of 24 bytes (`flags` i32,
//! `key` u32, `value` u32, `osversion` u32, `hwcap` u64); `key` (the
//! soname) and `value` (the path) are offsets of NUL-terminated strings
//! from the header's start. Hosts with glibc older than 2.32 write the old
//! `ld.so-1.7.0` table first (12-byte entries) and the new one after it,
//! aligned to 8 bytes; only the new table is read.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_HEADER: usize = 16;
const OLD_ENTRY: usize = 12;
/// A host cache is well under 1 MiB; a larger file is not read.
pub const SIZE_LIMIT: u64 = 16 << 20;

/// `FLAG_ELF_LIBC6` with this machine's 64-bit library flag (glibc's
/// `FLAG_X8664_LIB64` 0x0300, `FLAG_AARCH64_LIB64` 0x0a00).
#[cfg(target_arch = "x86_64")]
const NATIVE: i32 = 0x0303;
#[cfg(target_arch = "aarch64")]
const NATIVE: i32 = 0x0a03;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE: i32 = -1;

/// One cache entry for this machine's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The soname (`libcuda.so.1`) or link name (`libcuda.so`).
    pub name: OsString,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", crate::text::shown(path))]
pub struct CacheError {
    pub path: PathBuf,
    pub why: String,
}

/// Read the cache at `path`: its entries for this architecture, in file
/// order (the order the dynamic linker searches them).
pub fn read(path: &Path) -> Result<Vec<Entry>, CacheError> {
    let err = |why: String| CacheError {
        path: path.to_path_buf(),
        why,
    };
    let bytes = crate::input::read_regular(path, SIZE_LIMIT).map_err(|e| err(e.to_string()))?;
    parse(&bytes).map_err(|w| err(format!("not a linker cache rfake reads: {w}")))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn string_at(b: &[u8], off: usize) -> Option<&[u8]> {
    let rest = b.get(off..)?;
    Some(&rest[..rest.iter().position(|&c| c == 0)?])
}

/// The entries of a cache image in `b`.
pub fn parse(b: &[u8]) -> Result<Vec<Entry>, &'static str> {
    let start = if b.starts_with(NEW_MAGIC) {
        0
    } else if b.starts_with(OLD_MAGIC) {
        let n = u32_at(b, 12).ok_or("truncated header")? as usize;
        let end = n
            .checked_mul(OLD_ENTRY)
            .and_then(|s| s.checked_add(OLD_HEADER))
            .filter(|e| *e <= b.len())
            .ok_or("old table larger than the file")?;
        let aligned = end.div_ceil(8) * 8;
        if !b.get(aligned..).is_some_and(|r| r.starts_with(NEW_MAGIC)) {
            return Err("an old-format cache without the glibc 2.x table");
        }
        aligned
    } else {
        return Err("unknown magic");
    };
    let new = &b[start..];
    let n = u32_at(new, 20).ok_or("truncated header")? as usize;
    n.checked_mul(NEW_ENTRY)
        .and_then(|s| s.checked_add(NEW_HEADER))
        .filter(|e| *e <= new.len())
        .ok_or("more entries than the file holds")?;
    let mut out = Vec::new();
    for i in 0..n {
        let at = NEW_HEADER + i * NEW_ENTRY;
        let flags = u32_at(new, at).ok_or("truncated entry")? as i32;
        if flags != NATIVE {
            continue;
        }
        let key = u32_at(new, at + 4).ok_or("truncated entry")? as usize;
        let value = u32_at(new, at + 8).ok_or("truncated entry")? as usize;
        let name = string_at(new, key).ok_or("a name outside the file")?;
        let path = string_at(new, value).ok_or("a path outside the file")?;
        out.push(Entry {
            name: OsString::from_vec(name.to_vec()),
            path: PathBuf::from(OsString::from_vec(path.to_vec())),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache image with `libs` (name, path, flags), new format.
    fn image(libs: &[(&str, &str, i32)]) -> Vec<u8> {
        let mut strings = Vec::new();
        let base = NEW_HEADER + libs.len() * NEW_ENTRY;
        let mut entries = Vec::new();
        for (name, path, flags) in libs {
            let k = base + strings.len();
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            let v = base + strings.len();
            strings.extend_from_slice(path.as_bytes());
            strings.push(0);
            entries.extend_from_slice(&flags.to_le_bytes());
            entries.extend_from_slice(&(k as u32).to_le_bytes());
            entries.extend_from_slice(&(v as u32).to_le_bytes());
            entries.extend_from_slice(&[0; 12]);
        }
        let mut b = NEW_MAGIC.to_vec();
        b.extend_from_slice(&(libs.len() as u32).to_le_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        b.resize(NEW_HEADER, 0);
        b.extend(entries);
        b.extend(strings);
        b
    }

    #[test]
    fn entries_of_this_architecture_in_order() {
        let b = image(&[
            ("libcuda.so.1", "/usr/lib64/libcuda.so.1", NATIVE),
            ("libcuda.so.1", "/usr/lib/libcuda.so.1", 0x0003), // 32-bit
            ("libnvidia-ml.so.1", "/usr/lib64/libnvidia-ml.so.1", NATIVE),
        ]);
        let e = parse(&b).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "libcuda.so.1");
        assert_eq!(e[0].path, Path::new("/usr/lib64/libcuda.so.1"));
        assert_eq!(e[1].name, "libnvidia-ml.so.1");
    }

    #[test]
    fn the_old_table_first_is_skipped() {
        let new = image(&[("libz.so.1", "/lib64/libz.so.1", NATIVE)]);
        let mut b = OLD_MAGIC.to_vec();
        b.push(0);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0; OLD_ENTRY]);
        b.resize(32, 0); // 16 + 12 = 28, aligned to 32
        b.extend(new);
        assert_eq!(parse(&b).unwrap()[0].name, "libz.so.1");
    }

    #[test]
    fn lies_about_sizes_and_offsets_are_refused() {
        assert!(parse(b"").is_err());
        assert!(parse(b"not a cache at all").is_err());
        let mut b = image(&[("a", "/a", NATIVE)]);
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
        let mut b = image(&[("a", "/a", NATIVE)]);
        b[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
        let mut b = image(&[("a", "/a", NATIVE)]);
        let n = b.len();
        b[n - 1] = b'x'; // the last string is not terminated
        assert!(parse(&b).is_err());
        let mut b = OLD_MAGIC.to_vec();
        b.push(0);
        b.extend_from_slice(&1000u32.to_le_bytes());
        assert!(parse(&b).is_err());
    }

    #[test]
    fn the_hosts_cache_has_libc() {
        let Ok(e) = read(Path::new("/etc/ld.so.cache")) else {
            return; // a host without a cache (musl)
        };
        assert!(e.iter().any(|e| e.name == "libc.so.6"), "{e:?}");
    }
}
