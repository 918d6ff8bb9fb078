//! Little-endian field readers and writers for fixed-size records (SIF
//! descriptors, the SquashFS super block).

/// Reads consecutive little-endian fields from a record.
pub struct FieldReader<'a> {
    rest: &'a [u8],
}

impl<'a> FieldReader<'a> {
    /// A reader at the start of `record`.
    pub fn new(record: &'a [u8]) -> Self {
        FieldReader { rest: record }
    }

    /// The next `N` bytes. Records are fixed-size and fully covered by
    /// their layouts, so reading past the end is a layout bug: it yields
    /// zeros (and fails debug builds) rather than panicking.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        debug_assert!(self.rest.len() >= N, "field beyond the record");
        if let Some((field, rest)) = self.rest.split_first_chunk::<N>() {
            self.rest = rest;
            *field
        } else {
            self.rest = &[];
            [0; N]
        }
    }

    pub fn u8(&mut self) -> u8 {
        u8::from_le_bytes(self.array())
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }

    /// Whether the whole record has been read.
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Writes consecutive little-endian fields into an `N`-byte record.
pub struct FieldWriter<const N: usize> {
    record: [u8; N],
    len: usize,
}

impl<const N: usize> FieldWriter<N> {
    /// An empty (all-zero) record.
    pub fn new() -> Self {
        FieldWriter {
            record: [0; N],
            len: 0,
        }
    }

    /// Appends raw bytes (a layout bug past the end: dropped, and fails
    /// debug builds).
    pub fn bytes(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        debug_assert!(end <= N, "field beyond the record");
        if let Some(field) = self.record.get_mut(self.len..end) {
            field.copy_from_slice(bytes);
        }
        self.len = end;
    }

    pub fn u16(&mut self, value: u16) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn i32(&mut self, value: i32) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.bytes(&value.to_le_bytes());
    }

    /// The finished record.
    pub fn finish(self) -> [u8; N] {
        debug_assert_eq!(self.len, N, "layout must cover the record");
        self.record
    }
}
