//! A compressor wrapper that never stores a block bigger than its input.
//!
//! compressor.h says `do_block` returns 0 when "the result is larger than
//! the input when compressing", so the caller stores the block raw. The
//! LZ4 backend of libsquashfs 1.2 does not: it returns 5 bytes for the
//! 4-byte ID table, a "compressed" meta data block bigger than its content,
//! which squashfs-tools' `unsquashfs` rejects as corruption ("failed to
//! read id table block"). The wrapper enforces the documented contract for
//! every backend (mksquashfs also stores such blocks raw).

use std::ptr::NonNull;

use super::SqfsError;
use super::ffi;
use super::obj::Obj;

#[repr(C)]
struct Guarded {
    /// Must stay the first field: libsquashfs casts the object pointer.
    base: ffi::sqfs_compressor_t,
    inner: NonNull<ffi::sqfs_compressor_t>,
}

/// Wrap `inner` (a compressing compressor); the wrapper owns it.
pub(crate) fn guard(
    inner: Obj<ffi::sqfs_compressor_t>,
    what: &str,
) -> Result<Obj<ffi::sqfs_compressor_t>, SqfsError> {
    let inner = NonNull::new(inner.into_raw()).expect("Obj pointers are not NULL");
    let ptr = wrap(inner);
    // SAFETY: a fresh object (ours) with a `destroy` that frees it and the
    // wrapped compressor; only the returned owner destroys it.
    unsafe { Obj::from_raw(ptr, what) }
}

fn wrap(inner: NonNull<ffi::sqfs_compressor_t>) -> *mut ffi::sqfs_compressor_t {
    let obj = Box::new(Guarded {
        base: ffi::sqfs_compressor_t {
            base: ffi::sqfs_object_t {
                destroy: Some(destroy),
                copy: Some(copy),
            },
            get_configuration: Some(get_configuration),
            write_options: Some(write_options),
            read_options: Some(read_options),
            do_block: Some(do_block),
        },
        inner,
    });
    Box::into_raw(obj).cast()
}

/// The wrapped compressor behind a wrapper pointer.
///
/// # Safety
/// `cmp` must point to a live `Guarded`.
unsafe fn inner(cmp: *const ffi::sqfs_compressor_t) -> *mut ffi::sqfs_compressor_t {
    // SAFETY: guaranteed by the caller; `base` is the first field.
    unsafe { (*cmp.cast::<Guarded>()).inner.as_ptr() }
}

unsafe extern "C" fn destroy(obj: *mut ffi::sqfs_object_t) {
    // SAFETY: `obj` is a `Guarded` made by `wrap` and destroyed once; it
    // owns the wrapped compressor, destroyed with its own method.
    unsafe {
        let me = Box::from_raw(obj.cast::<Guarded>());
        let inner = me.inner.as_ptr().cast::<ffi::sqfs_object_t>();
        if let Some(destroy) = (*inner).destroy {
            destroy(inner);
        }
    }
}

unsafe extern "C" fn copy(obj: *const ffi::sqfs_object_t) -> *mut ffi::sqfs_object_t {
    // SAFETY: `obj` is a live `Guarded`; the wrapped compressor's own
    // `copy` makes an independent instance (predef.h's `sqfs_copy`).
    unsafe {
        let inner = inner(obj.cast()).cast::<ffi::sqfs_object_t>();
        let Some(copy) = (*inner).copy else {
            return std::ptr::null_mut();
        };
        match NonNull::new(copy(inner)) {
            Some(dup) => wrap(dup.cast()).cast(),
            None => std::ptr::null_mut(),
        }
    }
}

unsafe extern "C" fn get_configuration(
    cmp: *const ffi::sqfs_compressor_t,
    cfg: *mut ffi::sqfs_compressor_config_t,
) {
    // SAFETY: forwarding to the wrapped, live compressor.
    unsafe {
        let inner = inner(cmp);
        if let Some(f) = (*inner).get_configuration {
            f(inner, cfg);
        }
    }
}

unsafe extern "C" fn write_options(
    cmp: *mut ffi::sqfs_compressor_t,
    file: *mut ffi::sqfs_file_t,
) -> i32 {
    // SAFETY: forwarding to the wrapped, live compressor.
    unsafe {
        let inner = inner(cmp);
        (*inner).write_options.map_or(0, |f| f(inner, file))
    }
}

unsafe extern "C" fn read_options(
    cmp: *mut ffi::sqfs_compressor_t,
    file: *mut ffi::sqfs_file_t,
) -> i32 {
    // SAFETY: forwarding to the wrapped, live compressor.
    unsafe {
        let inner = inner(cmp);
        (*inner).read_options.map_or(0, |f| f(inner, file))
    }
}

unsafe extern "C" fn do_block(
    cmp: *mut ffi::sqfs_compressor_t,
    input: *const u8,
    size: u32,
    out: *mut u8,
    outsize: u32,
) -> i32 {
    // SAFETY: forwarding to the wrapped, live compressor with the caller's
    // buffers.
    let ret = unsafe {
        let inner = inner(cmp);
        match (*inner).do_block {
            Some(f) => f(inner, input, size, out, outsize),
            None => return ffi::SQFS_ERROR_INTERNAL,
        }
    };
    // Not smaller: tell the caller to store the block uncompressed.
    if ret > 0 && ret as u32 >= size {
        0
    } else {
        ret
    }
}
