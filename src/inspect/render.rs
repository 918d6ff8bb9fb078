//! The text form of `rfake inspect` (the JSON form is the same data).

use std::fmt::Write;

use super::{Entry, Report};

/// `ls -l`-like lines: mode, owner, size, path, link target.
pub fn listing(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        let _ = write!(
            s,
            "{} {:>5} {:>5} {:>10} {}",
            e.mode, e.uid, e.gid, e.size, e.path
        );
        if let Some(t) = &e.target {
            let _ = write!(s, " -> {t}");
        }
        s.push('\n');
    }
    s
}

fn block(s: &mut String, title: &str, text: &str) {
    let _ = writeln!(s, "{title}:");
    for line in text.lines() {
        let _ = writeln!(s, "  | {line}");
    }
}

/// The whole report.
pub fn report(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "image:        {}", r.path.display());
    let _ = writeln!(s, "format:       {} ({} bytes)", r.format, r.size);
    if let Some(sif) = &r.sif {
        let _ = writeln!(s, "architecture: {}", sif.arch);
        let _ = writeln!(
            s,
            "SIF:          version {}, uuid {}, created {}, modified {}",
            sif.version, sif.uuid, sif.created, sif.modified
        );
        let _ = writeln!(s, "objects:      {}", sif.objects.len());
        let _ = writeln!(
            s,
            "  {:>3} {:>5} {:>5}  {:<16} {:<24} {:>10} {:>10}  partition",
            "id", "group", "link", "type", "name", "offset", "size"
        );
        for o in &sif.objects {
            let link = o.link.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
            let part = o
                .partition
                .as_ref()
                .map(|p| format!("{} {} {}", p.fstype, p.parttype, p.arch))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:>3} {:>5} {:>5}  {:<16} {:<24} {:>10} {:>10}  {}",
                o.id, o.group, link, o.data_type, o.name, o.offset, o.size, part
            );
        }
    }
    if let Some(q) = &r.squashfs {
        let _ = writeln!(
            s,
            "root:         SquashFS at offset {}, {} compression, {} KiB blocks, {} inodes, {} bytes, mtime {}",
            q.offset,
            q.compression,
            q.block_size / 1024,
            q.inodes,
            q.bytes_used,
            q.mtime
        );
    }
    if let Some(p) = &r.root_problem {
        let _ = writeln!(s, "root:         none: {p}");
    }
    if r.labels.is_empty() {
        let _ = writeln!(s, "labels:       none");
    } else {
        let _ = writeln!(s, "labels:");
        for (k, v) in &r.labels {
            let _ = writeln!(s, "  {k} = {v}");
        }
    }
    if r.environment.is_empty() {
        let _ = writeln!(s, "environment:  none");
    }
    for (path, text) in &r.environment {
        block(&mut s, &format!("environment ({path})"), text);
    }
    match &r.runscript {
        Some(t) => block(&mut s, "runscript", t),
        None => {
            let _ = writeln!(s, "runscript:    none (rfake run starts /bin/sh)");
        }
    }
    if let Some(t) = &r.definition {
        block(&mut s, "definition", t);
    }
    s
}
