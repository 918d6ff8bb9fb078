//! A `sqfs_file_t` implemented over a [`std::fs::File`], with every access
//! shifted by a fixed offset (a SquashFS inside a SIF file starts at the
//! partition's offset).
//!
//! libsquashfs talks to files only through the function pointers of
//! `sqfs_file_t` (io.h). The object is a `#[repr(C)]` struct whose first
//! field is the `sqfs_file_t`, so a pointer to it is a valid
//! `sqfs_file_t *` and `sqfs_object_t *`; `destroy` frees the Rust box.
//! Reads and writes use `pread`/`pwrite`, so the object may be used from
//! any thread (the block processor's workers included).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ffi;

#[repr(C)]
struct RustFile {
    /// Must stay the first field: libsquashfs casts the object pointer.
    base: ffi::sqfs_file_t,
    file: File,
    /// Where the SquashFS starts inside `file`.
    offset: u64,
    writable: bool,
    /// The size libsquashfs sees: the bytes written so far (writable), or
    /// the file's size minus `offset` (read-only).
    size: AtomicU64,
    /// The last I/O error a callback met, for error messages.
    last_error: Mutex<Option<io::Error>>,
}

/// An owned `sqfs_file_t`; destroyed (and the descriptor closed) on drop.
pub(crate) struct SqfsFile {
    ptr: NonNull<RustFile>,
}

// SAFETY: the object only holds a `File` (used with pread/pwrite), atomics
// and a mutex; nothing in it is tied to the thread that made it.
unsafe impl Send for SqfsFile {}

impl SqfsFile {
    /// A read-only file object for the SquashFS at `offset` in `file`,
    /// which ends at the end of the file, or `limit` bytes after `offset`
    /// if that is sooner (a SIF partition).
    pub(crate) fn reader(file: File, offset: u64, limit: Option<u64>) -> io::Result<SqfsFile> {
        let len = file.metadata()?.len();
        if len < offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file has {len} bytes, fewer than the offset {offset}"),
            ));
        }
        let size = (len - offset).min(limit.unwrap_or(u64::MAX));
        Ok(SqfsFile::new(file, offset, false, size))
    }

    /// A writable file object over `file`, which must be empty.
    pub(crate) fn writer(file: File) -> SqfsFile {
        SqfsFile::new(file, 0, true, 0)
    }

    fn new(file: File, offset: u64, writable: bool, size: u64) -> SqfsFile {
        let obj = Box::new(RustFile {
            base: ffi::sqfs_file_t {
                base: ffi::sqfs_object_t {
                    destroy: Some(destroy),
                    copy: Some(copy),
                },
                read_at: Some(read_at),
                write_at: Some(write_at),
                get_size: Some(get_size),
                truncate: Some(truncate),
            },
            file,
            offset,
            writable,
            size: AtomicU64::new(size),
            last_error: Mutex::new(None),
        });
        SqfsFile {
            ptr: NonNull::from(Box::leak(obj)),
        }
    }

    /// The descriptor of the underlying file.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.inner().file.as_raw_fd()
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::sqfs_file_t {
        self.ptr.as_ptr().cast()
    }

    fn inner(&self) -> &RustFile {
        // SAFETY: `ptr` came from `Box::leak` and stays valid until `drop`;
        // libsquashfs only reads it or goes through the callbacks, which
        // take shared references too.
        unsafe { self.ptr.as_ref() }
    }

    /// The number of bytes written so far (writable objects).
    pub(crate) fn size(&self) -> u64 {
        self.inner().size.load(Ordering::SeqCst)
    }

    /// Extend (with zeros) or cut the file to `size` bytes.
    pub(crate) fn set_size(&self, size: u64) -> io::Result<()> {
        let inner = self.inner();
        inner.file.set_len(inner.offset + size)?;
        inner.size.store(size, Ordering::SeqCst);
        Ok(())
    }

    /// Tell the kernel that `len` bytes at `pos` (in the SquashFS) will be
    /// read soon (`POSIX_FADV_WILLNEED`): it starts reading them into the
    /// page cache in the background. A hint: failures are ignored.
    pub(crate) fn will_need(&self, pos: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let inner = self.inner();
        let size = inner.size.load(Ordering::SeqCst);
        let len = len.min(size.saturating_sub(pos));
        if len == 0 {
            return;
        }
        let (Ok(start), Ok(len)) = (
            libc::off_t::try_from(inner.offset + pos),
            libc::off_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: plain integers and our own open descriptor.
        unsafe {
            libc::posix_fadvise(
                inner.file.as_raw_fd(),
                start,
                len,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Take the I/O error that made a callback fail, if one did.
    pub(crate) fn take_error(&self) -> Option<io::Error> {
        self.inner()
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Attach the I/O error behind a library error (an SQFS_ERROR_IO says
    /// only that a callback failed), if this file saw one.
    pub(crate) fn explain(&self, e: super::SqfsError) -> super::SqfsError {
        match e {
            super::SqfsError::Lib {
                what,
                code,
                detail: None,
            } => super::SqfsError::Lib {
                what,
                code,
                detail: self.take_error().map(|e| e.to_string()),
            },
            e => e,
        }
    }
}

impl Drop for SqfsFile {
    fn drop(&mut self) {
        // SAFETY: the object is alive (we own it) and `destroy` is set; it
        // frees the box, after which `ptr` is never used again.
        unsafe {
            let obj = self.ptr.as_ptr().cast::<ffi::sqfs_object_t>();
            if let Some(destroy) = (*obj).destroy {
                destroy(obj);
            }
        }
    }
}

/// The Rust object behind a `sqfs_file_t` pointer handed to a callback.
///
/// # Safety
/// `file` must point to the `base` of a live `RustFile`.
unsafe fn this<'a>(file: *const ffi::sqfs_file_t) -> &'a RustFile {
    // SAFETY: guaranteed by the caller; `base` is the first field of the
    // `#[repr(C)]` struct, so the pointers coincide.
    unsafe { &*file.cast::<RustFile>() }
}

fn remember(f: &RustFile, e: io::Error) -> i32 {
    let code = if e.kind() == io::ErrorKind::UnexpectedEof {
        ffi::SQFS_ERROR_OUT_OF_BOUNDS
    } else {
        ffi::SQFS_ERROR_IO
    };
    *f.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
    code
}

unsafe extern "C" fn destroy(obj: *mut ffi::sqfs_object_t) {
    // SAFETY: every object whose `destroy` is this function was made by
    // `SqfsFile::new` or `copy` with `Box::leak`/`Box::into_raw`, and
    // libsquashfs (or `SqfsFile::drop`) destroys it exactly once.
    drop(unsafe { Box::from_raw(obj.cast::<RustFile>()) });
}

unsafe extern "C" fn copy(obj: *const ffi::sqfs_object_t) -> *mut ffi::sqfs_object_t {
    // SAFETY: `obj` is one of our file objects (it has our vtable).
    let f = unsafe { this(obj.cast()) };
    // io.h: files open for writing are not copyable.
    if f.writable {
        return std::ptr::null_mut();
    }
    match f.file.try_clone() {
        Ok(file) => {
            let copy = SqfsFile::new(file, f.offset, false, f.size.load(Ordering::SeqCst));
            let ptr = copy.ptr.as_ptr();
            std::mem::forget(copy);
            ptr.cast()
        }
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn read_at(
    file: *mut ffi::sqfs_file_t,
    offset: u64,
    buffer: *mut std::ffi::c_void,
    size: usize,
) -> i32 {
    // SAFETY: libsquashfs passes the object it was given.
    let f = unsafe { this(file) };
    let end = offset.checked_add(size as u64);
    if end.is_none_or(|end| end > f.size.load(Ordering::SeqCst)) {
        return ffi::SQFS_ERROR_OUT_OF_BOUNDS;
    }
    if size == 0 {
        return 0;
    }
    // SAFETY: libsquashfs hands a buffer of at least `size` writable bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buffer.cast::<u8>(), size) };
    match f.file.read_exact_at(buf, f.offset + offset) {
        Ok(()) => 0,
        Err(e) => remember(f, e),
    }
}

unsafe extern "C" fn write_at(
    file: *mut ffi::sqfs_file_t,
    offset: u64,
    buffer: *const std::ffi::c_void,
    size: usize,
) -> i32 {
    // SAFETY: libsquashfs passes the object it was given.
    let f = unsafe { this(file) };
    if !f.writable {
        return remember(f, io::Error::other("the image is open read-only"));
    }
    if size == 0 {
        return 0;
    }
    // SAFETY: libsquashfs hands a buffer of at least `size` readable bytes.
    let buf = unsafe { std::slice::from_raw_parts(buffer.cast::<u8>(), size) };
    match f.file.write_all_at(buf, f.offset + offset) {
        Ok(()) => {
            f.size.fetch_max(offset + size as u64, Ordering::SeqCst);
            0
        }
        Err(e) => remember(f, e),
    }
}

unsafe extern "C" fn get_size(file: *const ffi::sqfs_file_t) -> u64 {
    // SAFETY: libsquashfs passes the object it was given.
    unsafe { this(file) }.size.load(Ordering::SeqCst)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqfs_file_t, size: u64) -> i32 {
    // SAFETY: libsquashfs passes the object it was given.
    let f = unsafe { this(file) };
    if !f.writable {
        return remember(f, io::Error::other("the image is open read-only"));
    }
    match f.file.set_len(f.offset + size) {
        Ok(()) => {
            f.size.store(size, Ordering::SeqCst);
            0
        }
        Err(e) => remember(f, e),
    }
}
