//! Prefetch profiles: which blocks launches of an image touched, in the
//! order first seen, kept in rfake's per-user cache by the image's
//! identity ([`super::cold::Identity`]). A cold mount replays its image's
//! profile in the background, so the payload finds the blocks decompressed.
//!
//! A profile is only a hint: whatever is wrong with it costs its reads and
//! nothing else (the blocks are loaded through the same checked path as a
//! payload's reads, and a bad one is skipped).
//!
//! The file is append-only, so that a server killed at any moment (image
//! servers are stopped with SIGKILL) leaves a usable profile:
//! - a header: [`MAGIC`] and the 32-byte image identity;
//! - records of 16 bytes: the block's key (inode reference or
//!   `u64::MAX` for a fragment block, block index), and a CRC-32 of the
//!   identity and the key. Reading stops at the first short or bad record
//!   (a torn append, a file of another format).
//!
//! Each server appends the blocks it sees that the profile does not hold
//! yet (one `write` per batch, `O_APPEND`), so a profile grows with the
//! commands run and the replay's own loads are never recorded again.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

/// The first bytes of a profile.
pub const MAGIC: &[u8; 16] = b"rfake-profile 1\n";
/// Bytes of the header: magic and identity.
pub const HEADER: usize = MAGIC.len() + 32;
/// Bytes of a record.
pub const RECORD: usize = 16;
/// The most records a profile holds (2 GiB of 128 KiB blocks); past this
/// nothing is appended.
pub const MAX_RECORDS: usize = 1 << 14;

/// A block's key, as the server's block cache has it.
pub type Key = (u64, u32);

fn check(identity: &[u8; 32], key: Key) -> u32 {
    let mut crc = libdeflater::Crc::new();
    crc.update(identity);
    crc.update(&key.0.to_le_bytes());
    crc.update(&key.1.to_le_bytes());
    crc.sum()
}

/// The header of a profile of the image `identity`.
pub fn header(identity: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(identity);
    out
}

/// The record of `key` in a profile of `identity`.
pub fn record(identity: &[u8; 32], key: Key) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    out[..8].copy_from_slice(&key.0.to_le_bytes());
    out[8..12].copy_from_slice(&key.1.to_le_bytes());
    out[12..].copy_from_slice(&check(identity, key).to_le_bytes());
    out
}

/// What a profile's bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a profile of this image (another format, another identity, a
    /// torn header): not used.
    Foreign,
    /// The keys, first seen first, without repeats.
    Keys(Vec<Key>),
}

/// Parse a profile of `identity`.
#[cfg(test)]
pub fn parse(bytes: &[u8], identity: &[u8; 32]) -> Parsed {
    parse_with_len(bytes, identity).0
}

/// [`parse`], and how many bytes are good (header and whole, good records).
fn parse_with_len(bytes: &[u8], identity: &[u8; 32]) -> (Parsed, usize) {
    if bytes.len() < HEADER
        || &bytes[..MAGIC.len()] != MAGIC
        || &bytes[MAGIC.len()..HEADER] != identity
    {
        return (Parsed::Foreign, 0);
    }
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    let mut good = HEADER;
    for rec in bytes[HEADER..].chunks_exact(RECORD).take(MAX_RECORDS) {
        let iref = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        let index = u32::from_le_bytes(rec[8..12].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rec[12..].try_into().expect("4 bytes"));
        if crc != check(identity, (iref, index)) {
            break;
        }
        if seen.insert((iref, index)) {
            keys.push((iref, index));
        }
        good += RECORD;
    }
    (Parsed::Keys(keys), good)
}

/// The profile at `path` for the image `identity`, opened for appending:
/// its keys (empty for a new one), and the file. A missing, foreign or
/// unreadable profile is started again (it was of no use). `None`: the
/// directory cannot hold one (a debug line says why).
pub fn open(path: &Path, identity: &[u8; 32]) -> Option<(Vec<Key>, File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => {
            log::debug!("prefetch profile {}: {e}; none used", path.display());
            return None;
        }
    };
    let mut bytes = Vec::new();
    let limit = (HEADER + MAX_RECORDS * RECORD) as u64;
    if let Err(e) = (&mut file).take(limit).read_to_end(&mut bytes) {
        log::debug!("prefetch profile {}: {e}; none used", path.display());
        return None;
    }
    match parse_with_len(&bytes, identity) {
        (Parsed::Keys(keys), good) => {
            // A torn or bad record: what follows it would never be read,
            // and appends would go after it: cut it off.
            if good < bytes.len()
                && let Err(e) = file.set_len(good as u64)
            {
                log::debug!("prefetch profile {}: {e}; none used", path.display());
                return None;
            }
            log::debug!("prefetch profile {}: {} blocks", path.display(), keys.len());
            Some((keys, file))
        }
        (Parsed::Foreign, _) => {
            if !bytes.is_empty() {
                log::debug!(
                    "prefetch profile {}: not this image's; started again",
                    path.display()
                );
            }
            // In append mode every write goes to the end: empty it first.
            let restarted = file
                .set_len(0)
                .and_then(|()| file.write_all(&header(identity)));
            match restarted {
                Ok(()) => Some((Vec::new(), file)),
                Err(e) => {
                    log::debug!("prefetch profile {}: {e}; none used", path.display());
                    None
                }
            }
        }
    }
}

/// The keys a server has seen, and which of them the profile lacks.
#[derive(Debug)]
pub struct Recorder {
    seen: HashSet<Key>,
    identity: [u8; 32],
}

impl Recorder {
    /// A recorder that knows `known` (the profile's keys) already.
    pub fn new(identity: [u8; 32], known: &[Key]) -> Self {
        Recorder {
            seen: known.iter().copied().collect(),
            identity,
        }
    }

    /// Note that `key` was used; its record if it is new to the profile
    /// (and the profile is not full).
    pub fn note(&mut self, key: Key) -> Option<[u8; RECORD]> {
        if self.seen.len() >= MAX_RECORDS || !self.seen.insert(key) {
            return None;
        }
        Some(record(&self.identity, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 32] = [7; 32];

    fn profile(keys: &[Key]) -> Vec<u8> {
        let mut out = header(&ID);
        for &k in keys {
            out.extend_from_slice(&record(&ID, k));
        }
        out
    }

    #[test]
    fn keys_come_back_in_first_seen_order_without_repeats() {
        let keys = [(40, 0), (u64::MAX, 3), (40, 1), (40, 0), (12, 9)];
        assert_eq!(
            parse(&profile(&keys), &ID),
            Parsed::Keys(vec![(40, 0), (u64::MAX, 3), (40, 1), (12, 9)])
        );
    }

    /// A profile of another image, garbage, a torn header: not used.
    #[test]
    fn a_profile_of_another_image_or_garbage_is_not_used() {
        let other = [8u8; 32];
        assert_eq!(parse(&profile(&[(1, 2)]), &other), Parsed::Foreign);
        assert_eq!(parse(b"garbage", &ID), Parsed::Foreign);
        assert_eq!(parse(&profile(&[])[..HEADER - 1], &ID), Parsed::Foreign);
        let mut junk = vec![0x5a; 4096];
        junk[..MAGIC.len()].copy_from_slice(MAGIC);
        assert_eq!(parse(&junk, &ID), Parsed::Foreign);
    }

    /// A torn or corrupt record ends the profile there.
    #[test]
    fn reading_stops_at_a_torn_or_corrupt_record() {
        let mut p = profile(&[(1, 0), (2, 0), (3, 0)]);
        p.truncate(p.len() - 3);
        assert_eq!(parse(&p, &ID), Parsed::Keys(vec![(1, 0), (2, 0)]));
        let mut p = profile(&[(1, 0), (2, 0), (3, 0)]);
        p[HEADER + RECORD + 2] ^= 1;
        assert_eq!(parse(&p, &ID), Parsed::Keys(vec![(1, 0)]));
    }

    #[test]
    fn the_recorder_appends_only_what_the_profile_lacks() {
        let mut r = Recorder::new(ID, &[(1, 0), (2, 0)]);
        assert_eq!(r.note((1, 0)), None);
        assert_eq!(r.note((3, 0)), Some(record(&ID, (3, 0))));
        assert_eq!(r.note((3, 0)), None);
    }

    /// Opening starts a missing or foreign profile with a header, and
    /// keeps a good one's keys; appends land after them.
    #[test]
    fn open_restarts_a_foreign_profile_and_keeps_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let (keys, mut f) = open(&path, &ID).unwrap();
        assert!(keys.is_empty());
        f.write_all(&record(&ID, (5, 1))).unwrap();
        drop(f);
        let (keys, mut f) = open(&path, &ID).unwrap();
        assert_eq!(keys, vec![(5, 1)]);
        f.write_all(&record(&ID, (6, 1))).unwrap();
        drop(f);
        assert_eq!(open(&path, &ID).unwrap().0, vec![(5, 1), (6, 1)]);
        std::fs::write(
            &path,
            b"not a profile at all, but long enough for a header....",
        )
        .unwrap();
        let (keys, _) = open(&path, &ID).unwrap();
        assert!(keys.is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), header(&ID));
        // A torn record is cut off, and appends follow the good ones.
        let mut torn = profile(&[(1, 1), (2, 2)]);
        torn.truncate(torn.len() - 5);
        std::fs::write(&path, &torn).unwrap();
        let (keys, mut f) = open(&path, &ID).unwrap();
        assert_eq!(keys, vec![(1, 1)]);
        f.write_all(&record(&ID, (3, 3))).unwrap();
        assert_eq!(open(&path, &ID).unwrap().0, vec![(1, 1), (3, 3)]);
        // Another image's profile in its place is started again too.
        std::fs::write(&path, profile(&[(1, 1)])).unwrap();
        assert!(open(&path, &[9; 32]).unwrap().0.is_empty());
    }
}
