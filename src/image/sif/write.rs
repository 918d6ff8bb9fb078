//! Writing SIF files (the layout facts are in `../shared/testdata/sif/README.md`):
//! the 128-byte header, a table of 48 descriptors at 4096, then each object
//! aligned to 4096, the way Apptainer's tools lay files out, so Apptainer
//! and rfake both read what `rfake build` writes.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use super::read::{
    Arch, DESCRIPTOR_LEN, DataType, Descriptor, EXTRA_LEN, FsType, LAUNCH_LEN, PartType,
    PartitionInfo, SIF_VERSION, SifHeader,
};

const TABLE_OFFSET: u64 = 4096;
const TABLE_SLOTS: u64 = 48;
const ALIGN: u64 = 4096;
const LAUNCH: &[u8] = b"#!/usr/bin/env run-singularity\n";

/// Where an object's bytes come from.
pub enum ObjectData {
    Bytes(Vec<u8>),
    /// The whole of an open file (a SquashFS written beside the SIF).
    File(File),
}

/// One object to store.
pub struct Object {
    pub data_type: DataType,
    pub name: String,
    pub data: ObjectData,
    /// For partitions: filesystem, role and architecture.
    pub partition: Option<(FsType, PartType)>,
}

impl Object {
    /// The root filesystem: a SquashFS primary system partition.
    pub fn root_squashfs(file: File) -> Object {
        Object {
            data_type: DataType::Partition,
            name: "rootfs.squashfs".into(),
            data: ObjectData::File(file),
            partition: Some((FsType::Squashfs, PartType::PrimarySystem)),
        }
    }
}

/// Write a SIF file to `out` (empty, at offset 0): all objects in group 1,
/// timestamps `time`, the given UUID (zero for reproducible builds).
pub fn write(
    out: &mut File,
    arch: Arch,
    uuid: [u8; 16],
    time: i64,
    objects: Vec<Object>,
) -> io::Result<u64> {
    if objects.len() as u64 > TABLE_SLOTS {
        return Err(io::Error::other("too many SIF objects"));
    }
    let data_offset = TABLE_OFFSET + TABLE_SLOTS * DESCRIPTOR_LEN as u64;
    let mut descriptors = Vec::new();
    let mut end = data_offset;
    for (i, mut object) in objects.into_iter().enumerate() {
        let offset = end.div_ceil(ALIGN) * ALIGN;
        out.seek(SeekFrom::Start(offset))?;
        let size = match &mut object.data {
            ObjectData::Bytes(bytes) => {
                out.write_all(bytes)?;
                bytes.len() as u64
            }
            ObjectData::File(file) => {
                file.seek(SeekFrom::Start(0))?;
                io::copy(file, out)?
            }
        };
        let extra = match object.partition {
            Some((fstype, parttype)) => PartitionInfo {
                fstype,
                parttype,
                arch_code: arch.code(),
            }
            .to_extra(),
            None => vec![0; EXTRA_LEN],
        };
        descriptors.push(Descriptor {
            data_type: object.data_type,
            used: true,
            id: i as u32 + 1,
            group_id: 1,
            linked_id: 0,
            offset,
            size,
            size_with_padding: offset + size - end,
            created: time,
            modified: time,
            uid: 0,
            gid: 0,
            name: object.name,
            extra,
        });
        end = offset + size;
    }
    let mut launch = [0u8; LAUNCH_LEN];
    launch[..LAUNCH.len()].copy_from_slice(LAUNCH);
    let header = SifHeader {
        launch,
        version: SIF_VERSION,
        arch_code: arch.code(),
        uuid,
        created: time,
        modified: time,
        descriptors_free: (TABLE_SLOTS - descriptors.len() as u64) as i64,
        descriptors_total: TABLE_SLOTS as i64,
        descriptors_offset: TABLE_OFFSET as i64,
        descriptors_size: (TABLE_SLOTS * DESCRIPTOR_LEN as u64) as i64,
        data_offset: data_offset as i64,
        data_size: (end - data_offset) as i64,
    };
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header.to_bytes())?;
    out.seek(SeekFrom::Start(TABLE_OFFSET))?;
    for d in &descriptors {
        out.write_all(&d.to_bytes())?;
    }
    // Unused slots are zeros (sparse until the data area).
    out.set_len(end)?;
    out.flush()?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sif::Sif;
    use std::io::Read;

    #[test]
    fn round_trip_with_the_reader() {
        let mut squash = tempfile::tempfile().unwrap();
        let payload = {
            let mut b = crate::image::test_support::sample_squashfs_bytes();
            b.resize(10_000, 7);
            b
        };
        squash.write_all(&payload).unwrap();
        let mut out = tempfile::tempfile().unwrap();
        let objects = vec![
            Object {
                data_type: DataType::Deffile,
                name: "definition".into(),
                data: ObjectData::Bytes(b"bootstrap: rfake\n".to_vec()),
                partition: None,
            },
            Object {
                data_type: DataType::Labels,
                name: "labels.json".into(),
                data: ObjectData::Bytes(br#"{"a":"b"}"#.to_vec()),
                partition: None,
            },
            Object::root_squashfs(squash),
        ];
        let len = write(&mut out, Arch::Amd64, [0; 16], 0, objects).unwrap();
        assert_eq!(out.metadata().unwrap().len(), len);
        let sif = Sif::read(&mut out).unwrap();
        assert_eq!(sif.header.arch(), Arch::Amd64);
        assert_eq!(sif.descriptors.len(), 3);
        let (root, info) = sif.root_partition().unwrap();
        assert_eq!(root.offset % 4096, 0);
        assert_eq!(root.size, payload.len() as u64);
        assert_eq!(info.fstype, FsType::Squashfs);
        assert_eq!(info.arch(), Arch::Amd64);
        let mut back = vec![0; payload.len()];
        out.seek(SeekFrom::Start(root.offset)).unwrap();
        out.read_exact(&mut back).unwrap();
        assert_eq!(back, payload);
        assert_eq!(sif.descriptors[0].offset, 32768);
    }

    #[test]
    fn deterministic() {
        let build = || {
            let mut out = tempfile::tempfile().unwrap();
            let objects = vec![Object {
                data_type: DataType::Deffile,
                name: "d".into(),
                data: ObjectData::Bytes(b"x".to_vec()),
                partition: None,
            }];
            write(&mut out, Arch::Arm64, [0; 16], 0, objects).unwrap();
            let mut bytes = Vec::new();
            out.seek(SeekFrom::Start(0)).unwrap();
            out.read_to_end(&mut bytes).unwrap();
            bytes
        };
        assert_eq!(build(), build());
    }
}
