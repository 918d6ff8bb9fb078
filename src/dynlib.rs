//! The shared libraries rfake loads when it first uses them instead of
//! linking them: libsquashfs (`crate::squashfs::ffi`) and libfuse3
//! (`crate::fuse::ffi`).
//!
//! Linked, they and the compression libraries libsquashfs needs (liblzma,
//! libz, liblz4, libzstd) were mapped and relocated at every start, about
//! 0.3 ms of a 1.9 ms `rfake --version` (issue 18), while most rfake
//! processes never call them: a launch that joins a warm mount neither
//! reads the image nor serves FUSE. Each binding (bindgen's dynamic
//! bindings, see build.rs) is a struct holding the library and one field
//! per function, all looked up when it is loaded. The code that starts
//! using a library (opening an image, writing one, starting the FUSE
//! server) loads it first and reports a failure as a [`LibraryError`]
//! (exit 69, a host prerequisite); code behind it uses the loaded struct.

use std::sync::OnceLock;

/// A library as rfake names it in messages.
#[derive(Debug)]
pub struct Library {
    /// What `dlopen` is given (the SONAME build.rs read).
    pub soname: &'static str,
    /// The Debian/Ubuntu package that has it.
    pub package: &'static str,
    /// What rfake uses it for.
    pub used_for: &'static str,
}

/// A library that cannot be loaded: missing, or without a function rfake
/// calls (older than the headers rfake was built with).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot load {soname}: {detail}; rfake needs it for {used_for}: install the {package} package \
     (Debian/Ubuntu: apt-get install {package})"
)]
pub struct LibraryError {
    pub soname: &'static str,
    pub package: &'static str,
    pub used_for: &'static str,
    /// `dlerror`'s text, without the SONAME it starts with when the file
    /// is not found.
    pub detail: String,
}

impl Library {
    /// The error for `detail` (what `dlopen` or `dlsym` said).
    pub fn error(&self, detail: &str) -> LibraryError {
        let detail = detail
            .strip_prefix(self.soname)
            .and_then(|d| d.strip_prefix(": "))
            .unwrap_or(detail);
        LibraryError {
            soname: self.soname,
            package: self.package,
            used_for: self.used_for,
            detail: detail.to_owned(),
        }
    }

    /// The library in `cell`, loaded by `open` (given the SONAME) the first
    /// time; a failure is kept too, so each process tries once.
    pub fn load<T>(
        &self,
        cell: &'static OnceLock<Result<T, LibraryError>>,
        open: impl FnOnce(&str) -> Result<T, libloading::Error>,
    ) -> Result<&'static T, LibraryError> {
        cell.get_or_init(|| open(self.soname).map_err(|e| self.error(&e.to_string())))
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::exit::ExitKind;
    use crate::host::HostError;

    const NOWHERE: Library = Library {
        soname: "librfake-nowhere.so.1",
        package: "librfake-nowhere1",
        used_for: "nothing",
    };

    #[test]
    fn a_missing_library_is_a_host_prerequisite() {
        static CELL: OnceLock<Result<(), LibraryError>> = OnceLock::new();
        let err = NOWHERE
            .load(&CELL, |soname| {
                // SAFETY: the file does not exist; nothing is run.
                unsafe { libloading::Library::new(soname) }.map(|_| ())
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot load librfake-nowhere.so.1: cannot open shared object file: No such file or \
             directory; rfake needs it for nothing: install the librfake-nowhere1 package \
             (Debian/Ubuntu: apt-get install librfake-nowhere1)"
        );
        // Tried once: the second use gives the same error.
        let again = NOWHERE.load(&CELL, |_| panic!("loaded twice")).unwrap_err();
        assert_eq!(again, err);
        let top = Error::from(HostError::from(err));
        assert_eq!(top.exit_kind(), ExitKind::HostUnavailable);
        assert_eq!(top.exit_kind().code(), 69);
    }

    /// Wherever a library is first needed, its failure is exit 69 (not
    /// "bad image" or "kernel call failed", the codes around it there).
    #[test]
    fn every_entry_point_reports_it_as_exit_69() {
        let err = || NOWHERE.error("librfake-nowhere.so.1: cannot open shared object file");
        let build = crate::build::run::BuildError::Write {
            out: "out.sqfs".into(),
            error: crate::squashfs::SqfsError::Library(err()),
        };
        assert_eq!(build.exit_kind(), ExitKind::HostUnavailable);
        let mount = crate::image_server::MountError::Host(err().into());
        assert_eq!(mount.exit_kind(), ExitKind::HostUnavailable);
        assert_eq!(mount.to_string(), err().to_string());
    }

    #[test]
    fn a_missing_function_keeps_the_path() {
        let err = NOWHERE.error("/usr/lib/librfake-nowhere.so.1: undefined symbol: f");
        assert_eq!(
            err.detail,
            "/usr/lib/librfake-nowhere.so.1: undefined symbol: f"
        );
    }
}
