//! rfake's own FUSE server: [`crate::fuse`] (libfuse3's low-level API,
//! multi-threaded) over [`crate::squashfs::ImageFs`] (libsquashfs, with caches).
//!
//! The image is opened and its root directory read in rfake itself, so a
//! bad image is reported like any other bad input, before anything runs.
//! Then rfake forks: the child is the server (no exec, no program to find),
//! the parent goes on with the launch. The child keeps only the FUSE device,
//! the image and stderr (for its error messages); it runs until the last
//! mount of the filesystem is gone, or until rfake dies (parent-death
//! signal).

use std::fs::File;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::{ForkResult, Pid, fork};

use super::{MountError, Server};
use crate::fuse::{self, LoopConfig};
use crate::host::HostError;
use crate::squashfs::{ImageFs, SqfsError};

/// What names this server in messages.
pub const NAME: &str = "rfake's FUSE server";

/// The built-in server's settings and the image it serves.
#[derive(Debug)]
pub struct Builtin {
    /// The image, opened once at validation time (close-on-exec).
    pub image: Arc<File>,
    pub offset: u64,
    /// Bound of the decompressed-block cache (0: none).
    pub cache_bytes: u64,
    /// Worker threads (see [`LoopConfig`]).
    pub threads: u32,
    /// Point the server's stderr at /dev/null: a server started by a keeper
    /// outlives the launch whose stderr it would otherwise hold open (the
    /// reader of that stderr, srun say, would wait for the keeper).
    pub quiet: bool,
    /// Prefetch profile and node cache (none: both off).
    pub cold: crate::squashfs::ColdSettings,
}

impl Builtin {
    /// Open the image for serving (in rfake, before the fork). libfuse3 is
    /// loaded here too, for the server to inherit: a missing library is
    /// reported by rfake, like a missing squashfuse (exit 69).
    pub fn open(&self, image_path: &Path) -> Result<ImageFs, MountError> {
        crate::fuse::load().map_err(HostError::from)?;
        let failed = |message: String| MountError::Server {
            image: image_path.to_path_buf(),
            server: NAME,
            message,
        };
        let file = self
            .image
            .try_clone()
            .map_err(|e| failed(format!("duplicating its descriptor: {e}")))?;
        let mut fs = ImageFs::open(
            file,
            self.offset,
            self.cache_bytes,
            &image_path.display().to_string(),
        )
        .map_err(|e| match e {
            SqfsError::Library(e) => MountError::Host(e.into()),
            e => failed(e.to_string()),
        })?;
        if self.cold != crate::squashfs::ColdSettings::default() {
            crate::squashfs::Cold::attach(
                &mut fs,
                &self.image,
                self.offset,
                &self.cold,
                self.cache_bytes,
            );
        }
        Ok(fs)
    }

    /// Fork the server for `fs` on the FUSE device `fuse_fd`.
    pub fn start(&self, fs: ImageFs, fuse_fd: RawFd) -> Result<Server, MountError> {
        let parent = nix::unistd::getpid();
        // SAFETY: rfake is single-threaded here (it has just entered its
        // user namespace, which requires that); the child only calls
        // async-signal-safe functions until it starts serving, and then
        // lives in its own world (its own threads, no locks inherited).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let code = self.serve_in_child(fs, fuse_fd, parent);
                // SAFETY: leave without running the parent's exit handlers
                // or flushing its buffers a second time.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => Ok(Server::new(child, None)),
            Err(e) => Err(MountError::Spawn {
                program: "/proc/self/exe".into(),
                source: e.into(),
            }),
        }
    }

    /// The server process: detach from rfake's session and signals, keep only
    /// the descriptors it needs, serve. Returns the exit status.
    fn serve_in_child(&self, fs: ImageFs, fuse_fd: RawFd, parent: Pid) -> i32 {
        // SAFETY: plain system calls on this process.
        unsafe {
            // What ps and top show: the server, not another rfake.
            libc::prctl(libc::PR_SET_NAME, c"rfake-fuse".as_ptr());
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1
                || libc::getppid() != parent.as_raw()
            {
                return 1;
            }
            libc::setsid();
            // Its working directory must not pin a host directory.
            libc::chdir(c"/".as_ptr());
        }
        for sig in crate::container::process::FORWARDED {
            let handler = match sig {
                Signal::SIGUSR1 | Signal::SIGUSR2 => SigHandler::SigDfl,
                // A job's cancellation must not stop it before the payload.
                _ => SigHandler::SigIgn,
            };
            // SAFETY: installing SIG_IGN/SIG_DFL.
            let _ = unsafe { signal(sig, handler) };
        }
        let mut keep = vec![fuse_fd, fs.raw_fd()];
        keep.extend(fs.cold_fds());
        keep_only_fds(&keep, self.quiet);
        // One malloc arena for all of the server's threads: with one per
        // thread (glibc's default), blocks decompressed on a read-ahead
        // thread and freed by another's cache eviction fragment a second
        // arena, and the peak RSS of a cold `tar` of /usr went from 76 to
        // 96-105 MiB (64 MiB cache); with one, 77 MiB (benchmarks.md).
        #[cfg(target_env = "gnu")]
        // SAFETY: a malloc tunable, set before the server starts threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
        // Shared after the fork: read-ahead runs on threads of the server.
        let fs = fs.into_shared();
        ImageFs::start_cold(&fs);
        let fs: Arc<dyn fuse::Filesystem> = fs;
        match fuse::serve(
            fs,
            fuse_fd,
            LoopConfig {
                threads: self.threads,
            },
        ) {
            Ok(()) => 0,
            Err(message) => {
                log::error!("{NAME}: {message}");
                1
            }
        }
    }
}

/// Reap the server `pid` (any server: it was just killed) and, at debug
/// level, say its peak RSS and CPU time (`RFAKE_LOG=rfake::image_server=debug`;
/// benches/cold-start.sh reads this line).
pub(super) fn reap_with_usage(pid: Pid) {
    // SAFETY: wait4 fills the zeroed rusage it is given.
    let usage = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        let mut status = 0;
        if libc::wait4(pid.as_raw(), &mut status, 0, &mut ru) != pid.as_raw() {
            return;
        }
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    log::debug!(
        "image server pid {pid}: done: peak RSS {} KiB, CPU {:.3} s user {:.3} s system",
        usage.ru_maxrss,
        secs(usage.ru_utime),
        secs(usage.ru_stime)
    );
}

/// Point stdin and stdout (and stderr too when `quiet`) at /dev/null and
/// close every descriptor above stderr except `keep`.
pub(crate) fn keep_only_fds(keep: &[RawFd], quiet: bool) {
    // SAFETY: plain system calls on this process's descriptor table.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if quiet {
                libc::dup2(null, 2);
            }
        }
        let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
        keep.sort_unstable();
        let mut first: u32 = 3;
        for fd in keep {
            let fd = fd as u32;
            if fd > first {
                libc::close_range(first, fd - 1, 0);
            }
            first = fd + 1;
        }
        libc::close_range(first, u32::MAX, 0);
    }
}
