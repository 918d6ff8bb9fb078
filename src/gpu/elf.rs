//! The soname of a shared object (`DT_SONAME`), read as `ldconfig` does to
//! name the link it makes. 64-bit little-endian ELF only (the hosts rfake
//! runs on); anything else, or a file that is not ELF, has none. Every
//! offset and size read is checked against the bytes actually read.
//!
//! `build.rs` includes this file too (std only), to find the SONAME of the
//! libsquashfs and libfuse3 it builds bindings for.

use std::io::Read;
use std::path::Path;

/// Headers and the dynamic section of a driver library are within its
/// first few MiB; a soname further in is not looked for.
const READ_LIMIT: u64 = 64 << 20;

pub fn soname(path: &Path) -> Option<std::ffi::OsString> {
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(READ_LIMIT).read_to_end(&mut bytes).ok()?;
    parse(&bytes).map(|s| std::os::unix::ffi::OsStringExt::from_vec(s.to_vec()))
}

fn u16_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?) as u64)
}
fn u32_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?) as u64)
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

const PT_LOAD: u64 = 1;
const PT_DYNAMIC: u64 = 2;
const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;

/// `DT_SONAME` of an ELF64 LE image in `b`.
fn parse(b: &[u8]) -> Option<&[u8]> {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if b.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(b, 0x20)?).ok()?;
    let phentsize = usize::try_from(u16_at(b, 0x36)?).ok()?;
    let phnum = usize::try_from(u16_at(b, 0x38)?).ok()?;
    if phentsize < 56 {
        return None;
    }
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let kind = u32_at(b, ph)?;
        let offset = u64_at(b, ph + 8)?;
        let vaddr = u64_at(b, ph + 16)?;
        let filesz = u64_at(b, ph + 32)?;
        match kind {
            PT_LOAD => loads.push((vaddr, offset, filesz)),
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let (dyn_off, dyn_size) = dynamic?;
    let (mut strtab, mut soname) = (None, None);
    let mut at = usize::try_from(dyn_off).ok()?;
    let end = at.checked_add(usize::try_from(dyn_size).ok()?)?;
    while at.checked_add(16)? <= end {
        let tag = u64_at(b, at)?;
        let val = u64_at(b, at + 8)?;
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val),
            DT_SONAME => soname = Some(val),
            _ => {}
        }
        at += 16;
    }
    // DT_STRTAB is an address: the file offset is found through the
    // loadable segment that contains it.
    let strtab = strtab?;
    let (vaddr, offset, _) = loads
        .iter()
        .find(|(v, _, size)| strtab >= *v && strtab - v < *size)?;
    let start = offset.checked_add(strtab - vaddr)?.checked_add(soname?)?;
    let rest = b.get(usize::try_from(start).ok()?..)?;
    let len = rest.iter().position(|&c| c == 0)?;
    Some(&rest[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_libc_has_its_soname_and_garbage_has_none() {
        // Debian's libc: /lib/x86_64-linux-gnu/libc.so.6 (soname libc.so.6).
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("a libc.so.6 on the host");
        assert_eq!(
            soname(libc).as_deref(),
            Some(std::ffi::OsStr::new("libc.so.6"))
        );
        assert_eq!(soname(Path::new("/etc/hostname")), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"\x7fELF\x02\x01"), None);
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        b[0x36] = 56;
        b[0x38] = 0xff;
        assert_eq!(parse(&b), None);
    }
}
