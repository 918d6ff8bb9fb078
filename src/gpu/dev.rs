//! A private `/dev` made of the host's: a tmpfs with a bind of each host
//! entry (a directory as one recursive bind, so `/dev/shm`, `/dev/pts` and
//! `/dev/infiniband` stay the host's), its symlinks made again, except the
//! entries a device edit hides or replaces. Directories holding such an
//! entry (`/dev/dri` with another GPU's `card1`) are made of binds in turn.

use std::path::{Path, PathBuf};

use crate::container::binds::Mount;
use crate::container::rootfs::{Bind, BindKind, Symlink, Tmpfs};

const ORIGIN: &str = "--device: the host's /dev";

/// The mounts that make the private `/dev` at `container` from the host's
/// `host`, without the entries at the container paths `touched` (hidden,
/// or bound by the edits themselves).
pub fn replica(host: &Path, container: &Path, touched: &[PathBuf]) -> std::io::Result<Vec<Mount>> {
    let mut out = vec![Mount::Tmpfs(Tmpfs {
        dst: container.to_path_buf(),
        mode: 0o755,
        origin: "--device: private /dev".into(),
    })];
    entries(host, container, touched, &mut out)?;
    Ok(out)
}

fn entries(
    host: &Path,
    container: &Path,
    touched: &[PathBuf],
    out: &mut Vec<Mount>,
) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(host)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let (h, c) = (host.join(&name), container.join(&name));
        if touched.contains(&c) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&h) else {
            continue; // gone meanwhile
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let Ok(target) = std::fs::read_link(&h) else {
                continue;
            };
            out.push(Mount::Symlink(Symlink {
                link: c,
                target,
                origin: ORIGIN.into(),
            }));
        } else if ft.is_dir() && touched.iter().any(|t| t.starts_with(&c)) {
            entries(&h, &c, touched, out)?;
        } else {
            out.push(Mount::Bind(Bind {
                src: h,
                dst: c,
                kind: if ft.is_dir() {
                    BindKind::Dir
                } else {
                    BindKind::File
                },
                readonly: false,
                allow_devices: true,
                optional: false,
                create: true,
                origin: ORIGIN.into(),
            }));
        }
    }
    Ok(())
}
