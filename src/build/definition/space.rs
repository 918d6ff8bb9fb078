//! The free-space check on the work area, before anything is written.
//!
//! A build writes each stage's root out in full. On a login node the
//! default place for that could be small (a quota'd home, a RAM-backed
//! `/tmp`), so the build first estimates what it needs and refuses at once,
//! naming the directory, rather than failing with ENOSPC minutes later (and
//! rfake never picks `/tmp` on its own: the work area is beside OUT unless
//! `--tmpdir`/`RFAKE_TMPDIR` says otherwise).
//!
//! The estimate, per stage, of its base written out (files rounded up to
//! 4 KiB blocks, 4 KiB per directory): a directory or SquashFS/SIF base is
//! measured (its entries walked); an OCI or docker archive counts three
//! times its size (gzip'd layers); `debootstrap` counts 512 MiB; a
//! `docker`/`oras` base is not known before it is pulled and counts 0. The
//! stages alive at the same time are added up (an earlier stage is kept
//! until the last stage that copies from it), then a quarter more and
//! 256 MiB for what `%files` and `%post` add.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::build::deffile::{Bootstrap, Definition, Stage};
use crate::error::Error;
use crate::exit::ExitKind;
use crate::text::{human_size, io_text, shown};

/// Room for `%files` and `%post`, on top of the bases.
const MARGIN: u64 = 256 << 20;
/// A block: what a file's size is rounded up to, and a directory counts.
const BLOCK: u64 = 4096;
/// A compressed archive's content counts this many times its size.
const ARCHIVE_RATIO: u64 = 3;
/// A Debian-like root from debootstrap (minbase is about 200 MiB, plus the
/// packages' `.deb` files while they are installed).
const DEBOOTSTRAP: u64 = 512 << 20;

/// Refuse the build when the file system of `base` has less free space
/// (for an unprivileged user: `f_bavail`) than the estimate for `def`.
/// `last_use[i]`: the last stage that copies from stage `i`, if any.
pub fn check(def: &Definition, last_use: &[Option<usize>], base: &Path) -> Result<(), Error> {
    let bases: Vec<u64> = def.stages.iter().map(base_size).collect();
    let need = needed(&bases, last_use);
    let free = free_bytes(base).map_err(|e| Error::Failed {
        kind: ExitKind::CannotCreate,
        message: format!("{}: the build's work area: {}", shown(base), io_text(&e)),
    })?;
    log::info!(
        "work area {}: {} free, about {} needed",
        shown(base),
        human_size(free),
        human_size(need)
    );
    if free >= need {
        return Ok(());
    }
    Err(Error::Failed {
        kind: ExitKind::CannotCreate,
        message: format!(
            "{}: not enough free space for the build's work area: about {} needed, {} free \
             (put it elsewhere with --tmpdir DIR or RFAKE_TMPDIR=DIR)",
            shown(base),
            human_size(need),
            human_size(free)
        ),
    })
}

/// The most the stages' roots take at once, with the margin: while stage
/// `j` is built, its root and those of the earlier stages a later one
/// still copies from exist.
fn needed(bases: &[u64], last_use: &[Option<usize>]) -> u64 {
    let peak = (0..bases.len())
        .map(|j| {
            bases[j]
                + (0..j)
                    .filter(|&i| last_use[i].is_some_and(|last| last >= j))
                    .map(|i| bases[i])
                    .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    peak.saturating_add(peak / 4).saturating_add(MARGIN)
}

fn free_bytes(base: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(base)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What a stage's base takes written out (0 when not known before the
/// build: a registry base, or one that cannot be read, which the bootstrap
/// then reports).
fn base_size(stage: &Stage) -> u64 {
    let archive =
        |path: &Path| fs::metadata(path).map_or(0, |m| m.len().saturating_mul(ARCHIVE_RATIO));
    match &stage.header.bootstrap {
        Bootstrap::Scratch | Bootstrap::Docker(_) | Bootstrap::Oras(_) => 0,
        Bootstrap::Debootstrap { .. } => DEBOOTSTRAP,
        Bootstrap::OciArchive(path) | Bootstrap::DockerArchive(path) => archive(path),
        Bootstrap::LocalImage(path) if path.is_dir() => dir_size(path),
        Bootstrap::LocalImage(path) => image_size(path),
    }
}

fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// A directory's files (rounded up to blocks) and directories, not
/// following links; what cannot be read counts 0.
fn dir_size(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        total = total.saturating_add(BLOCK);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => todo.push(entry.path()),
                Ok(m) if m.is_file() => total = total.saturating_add(blocks(m.size())),
                _ => {}
            }
        }
    }
    total
}

/// A SquashFS or SIF image's files and directories, from its directory
/// table (no file data is read).
fn image_size(path: &Path) -> u64 {
    let Ok(reader) = crate::inspect::squashfs_reader(path) else {
        return 0;
    };
    let mut total = BLOCK;
    let walked = reader.walk("/", &mut |_, info| {
        total = total.saturating_add(match info.kind {
            crate::squashfs::EntryKind::File => blocks(info.size),
            crate::squashfs::EntryKind::Dir => BLOCK,
            _ => 0,
        });
    });
    walked.map_or(0, |()| total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stages alive together add up; a stage nobody copies from is gone
    /// before the next one starts.
    #[test]
    fn stages_alive_together_add_up() {
        let mib = 1 << 20;
        assert_eq!(needed(&[], &[]), MARGIN);
        assert_eq!(needed(&[400 * mib], &[None]), 500 * mib + MARGIN);
        // 0 is copied from by 2: alive during 1 and 2.
        assert_eq!(
            needed(&[400 * mib, 100 * mib, 400 * mib], &[Some(2), None, None]),
            1000 * mib + MARGIN
        );
        // Nobody copies from 0: stages never overlap.
        assert_eq!(
            needed(&[400 * mib, 100 * mib, 400 * mib], &[None, None, None]),
            500 * mib + MARGIN
        );
    }

    #[test]
    fn a_directory_measured() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/a"), vec![0u8; 5000]).unwrap();
        fs::write(d.path().join("b"), "x").unwrap();
        std::os::unix::fs::symlink("/usr", d.path().join("link")).unwrap();
        assert_eq!(dir_size(d.path()), 2 * BLOCK + 2 * BLOCK + BLOCK);
    }
}
