//! Owners for libsquashfs objects and memory, and error-code checking.

use std::ptr::NonNull;

use super::SqfsError;
use super::ffi;

/// An owned libsquashfs object (anything that "implements sqfs_object_t":
/// its first member is the `sqfs_object_t` with the `destroy` pointer).
/// Destroyed with that function on drop.
pub(crate) struct Obj<T> {
    ptr: NonNull<T>,
}

impl<T> Obj<T> {
    /// Take ownership of what a `*_create` function returned; NULL (the
    /// library's way to say allocation or argument failure) becomes an
    /// error naming `what`.
    ///
    /// # Safety
    /// `ptr` must be NULL or a fresh libsquashfs object of type `T` that
    /// nothing else destroys.
    pub(crate) unsafe fn from_raw(ptr: *mut T, what: &str) -> Result<Obj<T>, SqfsError> {
        NonNull::new(ptr)
            .map(|ptr| Obj { ptr })
            .ok_or_else(|| SqfsError::Lib {
                what: what.to_owned(),
                code: ffi::SQFS_ERROR_ALLOC,
                detail: None,
            })
    }

    pub(crate) fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Give up ownership: the caller now destroys the object.
    pub(crate) fn into_raw(self) -> *mut T {
        let ptr = self.ptr.as_ptr();
        std::mem::forget(self);
        ptr
    }
}

impl<T> Drop for Obj<T> {
    fn drop(&mut self) {
        // SAFETY: per `from_raw`, `ptr` is a live libsquashfs object whose
        // first member is a `sqfs_object_t`; we destroy it exactly once.
        // This is what the header's inline `sqfs_destroy` does.
        unsafe {
            let obj = self.ptr.as_ptr().cast::<ffi::sqfs_object_t>();
            if let Some(destroy) = (*obj).destroy {
                destroy(obj);
            }
        }
    }
}

/// Memory the library allocated and the caller frees with `sqfs_free`
/// (inodes, directory entries, xattr keys and values, data chunks).
pub(crate) struct Malloced<T> {
    ptr: NonNull<T>,
}

impl<T> Malloced<T> {
    /// # Safety
    /// `ptr` must be NULL or a block from libsquashfs to be released with
    /// `sqfs_free`, owned by nobody else.
    pub(crate) unsafe fn from_raw(ptr: *mut T) -> Option<Malloced<T>> {
        NonNull::new(ptr).map(|ptr| Malloced { ptr })
    }

    pub(crate) fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> std::ops::Deref for Malloced<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the block is live and owned by us (see `from_raw`), and
        // libsquashfs filled it in before handing it over.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> std::ops::DerefMut for Malloced<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; we hold the only pointer.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for Malloced<T> {
    fn drop(&mut self) {
        // SAFETY: the block came from libsquashfs and is freed once.
        unsafe { ffi::lib().sqfs_free(self.ptr.as_ptr().cast()) }
    }
}

/// Turn a libsquashfs return code (negative: an `SQFS_ERROR`) into a
/// result; non-negative values pass through.
pub(crate) fn check(ret: i32, what: impl FnOnce() -> String) -> Result<i32, SqfsError> {
    if ret < 0 {
        Err(SqfsError::Lib {
            what: what(),
            code: ret,
            detail: None,
        })
    } else {
        Ok(ret)
    }
}
