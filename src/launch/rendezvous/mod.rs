//! Rendezvous of launches that share a container: the ranks of one job
//! step on a node (joining), and the launches of one image on a node (warm
//! mounts).
//!
//! Measured with Open MPI 4.1: when every rank has its own user namespace,
//! the shared-memory transport's single-copy mechanism (CMA) is refused
//! between ranks and large messages hang; when all ranks of a node are in
//! one user namespace it works at full speed. So ranks of the same step on
//! the same node *join* one container: one user + mount namespace, one
//! image server.
//!
//! Rendezvous: an abstract unix socket named from the user, a key (job,
//! step, node, image) and the user's secret ([`secret`]: other users cannot
//! compute the name). The first rank binds it and starts a *keeper*
//! process (detached: it must outlive the rank that started it) that builds
//! the container and then hands every rank that connects the namespace file
//! descriptors (SCM_RIGHTS); ranks `setns(2)` into them. A rank stays
//! connected while its payload runs; the kernel closes the connection when
//! it ends, however it ends, so when the last one is gone the keeper stops
//! the server and exits and the namespaces die: a crash of any member,
//! including the first, leaves nothing behind. Every wait is bounded.
//!
//! The protocol, keeper → member: a status byte (0, or the exit code of
//! the keeper's failure followed by its message, or [`GONE`] when its image
//! server has ended), on success the server's pid (4 bytes) with the
//! descriptors attached; later, at most one line, when the server ends
//! under the running members.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::container::sys::{Sys, SysResult};

mod names;
mod secret;

pub use names::{SocketName, socket_name, warm_socket_name};
pub use secret::{SecretError, locate as secret_dir};

/// How long a rank waits for the keeper to finish building the container.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a keeper waits for its first rank before giving up.
pub const FIRST_MEMBER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("joining the container of {key}: {what}: {error}")]
    Io {
        key: String,
        what: &'static str,
        error: std::io::Error,
    },
    #[error(
        "joining the container of {key}: the rendezvous socket belongs to uid {owner}, not to you"
    )]
    Foreign { key: String, owner: u32 },
    #[error("joining the container of {key}: {message}")]
    Keeper {
        key: String,
        message: String,
        /// The exit status the keeper's error maps to (its own code).
        code: u8,
    },
    /// The keeper closed the connection without a word (it was leaving).
    #[error("joining the container of {key}: the keeper ended without an answer")]
    NoAnswer { key: String },
    /// The keeper's image server has ended: it serves nobody any more and
    /// is leaving (the next rendezvous starts a fresh keeper).
    #[error("joining the container of {key}: {message}")]
    Gone { key: String, message: String },
    /// A keeper's own error, passed on as it is (a warm mount's set-up
    /// fails exactly as the launch's own would have).
    #[error("{message}")]
    Relayed { message: String, code: u8 },
    #[error("joining the container of {key}: no answer from its keeper within {} s", SETUP_TIMEOUT.as_secs())]
    Timeout { key: String },
}

/// The role this rank got at the rendezvous.
pub enum Role {
    /// First: start the keeper with this listener, then join as a member.
    Leader(UnixListener),
    /// Another rank's keeper is there.
    Member(UnixStream),
}

/// Connect to the keeper of `name`, or become the leader.
pub fn rendezvous(name: &str, key: &str) -> Result<Role, JoinError> {
    let io = |what, error| JoinError::Io {
        key: key.to_string(),
        what,
        error,
    };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| io("socket name", e))?;
    for _ in 0..50 {
        match UnixStream::connect_addr(&addr) {
            Ok(stream) => {
                check_peer(&stream, key)?;
                return Ok(Role::Member(stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(io("connecting", e)),
        }
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => return Ok(Role::Leader(listener)),
            // Another rank bound it between our connect and bind: connect again.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io("binding", e)),
        }
    }
    Err(JoinError::Timeout {
        key: key.to_string(),
    })
}

fn check_peer(stream: &UnixStream, key: &str) -> Result<(), JoinError> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| JoinError::Io {
            key: key.to_string(),
            what: "checking the keeper",
            error: e.into(),
        })?;
    let me = nix::unistd::getuid().as_raw();
    if cred.uid() != me {
        return Err(JoinError::Foreign {
            key: key.to_string(),
            owner: cred.uid(),
        });
    }
    Ok(())
}

/// Whether the peer of `stream` is the calling user (credentials are seen
/// through the caller's own user namespace, like its own uid).
pub fn same_user(stream: &UnixStream) -> bool {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map(|cred| cred.uid() == nix::unistd::getuid().as_raw())
        .unwrap_or(false)
}

/// The namespaces a member enters, in this order.
pub struct Namespaces {
    pub outer_user: OwnedFd,
    pub mount: OwnedFd,
    /// `--ipc`, `--uts`, `--net`, `--pid` (in that order): the keeper's,
    /// owned by the outer user namespace. Entering a PID namespace puts
    /// the member's children in it (its payload), not the member.
    pub extra: Vec<(OwnedFd, CloneFlags)>,
    pub inner_user: Option<OwnedFd>,
}

impl Namespaces {
    /// Open the calling process's current namespaces (`inner` after it
    /// entered an inner user namespace: then `outer` was opened before).
    pub fn open(outer_user: OwnedFd, inner: bool) -> std::io::Result<Namespaces> {
        let open = |p: &str| std::fs::File::open(p).map(OwnedFd::from);
        let mount = open("/proc/self/ns/mnt")?;
        let inner_user = if inner {
            Some(open("/proc/self/ns/user")?)
        } else {
            None
        };
        Ok(Namespaces {
            outer_user,
            mount,
            extra: Vec::new(),
            inner_user,
        })
    }

    /// Enter them: the outer user namespace (the caller is the user, who
    /// owns it, so it gets its capabilities there), its mount namespace
    /// (needs CAP_SYS_ADMIN in the outer one: hence the order), then the
    /// inner user namespace. The root and working directory become the
    /// container's root.
    pub fn enter(&self, sys: &dyn Sys) -> SysResult {
        let user = CloneFlags::CLONE_NEWUSER;
        sys.setns(
            self.outer_user.as_fd(),
            user,
            "the shared container's user namespace",
        )?;
        sys.setns(
            self.mount.as_fd(),
            CloneFlags::CLONE_NEWNS,
            "the shared container's mount namespace",
        )?;
        for (fd, kind) in &self.extra {
            sys.setns(fd.as_fd(), *kind, "a namespace of the shared container")?;
        }
        if let Some(inner) = &self.inner_user {
            sys.setns(
                inner.as_fd(),
                user,
                "the shared container's inner user namespace",
            )?;
        }
        Ok(())
    }
}

/// The most descriptors a keeper hands over: the outer user, mount, IPC,
/// UTS, network, PID and inner user namespaces.
pub const MAX_FDS: usize = 7;

/// The kind of namespace `fd` refers to (`NS_GET_NSTYPE`, Linux 4.11).
fn ns_type(fd: &OwnedFd) -> Option<CloneFlags> {
    // <linux/nsfs.h>: NS_GET_NSTYPE is _IO(0xb7, 0x3).
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without argument on a descriptor we own.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    (kind > 0).then(|| CloneFlags::from_bits_truncate(kind))
}

/// The status byte of a keeper whose image server has ended (not an exit
/// code: rfake's own are below 128).
const GONE: u8 = 255;

/// What a member gets from its keeper: descriptors, and the pid of the
/// image server the container's files depend on (none for a directory
/// image), so that the member can tell when it ends.
#[derive(Debug)]
pub struct Handover {
    pub fds: Vec<OwnedFd>,
    pub server: Option<u32>,
}

/// Keeper → member: status 0, the server's pid, then the namespace fds.
pub fn send_ready(
    stream: &UnixStream,
    ns: &Namespaces,
    server: Option<u32>,
) -> std::io::Result<()> {
    let mut fds = vec![ns.outer_user.as_raw_fd(), ns.mount.as_raw_fd()];
    fds.extend(ns.extra.iter().map(|(fd, _)| fd.as_raw_fd()));
    if let Some(inner) = &ns.inner_user {
        fds.push(inner.as_raw_fd());
    }
    send_fds(stream, &fds, server)
}

/// Keeper → member: status 0 and the server's pid (4 bytes, little-endian,
/// 0 for none), with `fds` (at most [`MAX_FDS`]) attached.
pub fn send_fds(
    stream: &UnixStream,
    fds: &[std::os::fd::RawFd],
    server: Option<u32>,
) -> std::io::Result<()> {
    let mut payload = [0u8; 5];
    payload[1..].copy_from_slice(&server.unwrap_or(0).to_le_bytes());
    let iov = [IoSlice::new(&payload)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    if sent < payload.len() {
        (&*stream).write_all(&payload[sent..])?;
    }
    Ok(())
}

/// Keeper → a launch waiting to be served: the image server has ended
/// (`why`); start again.
pub fn send_gone(stream: &UnixStream, why: &str) {
    send_error(stream, GONE, why);
}

/// Keeper → member, after the hand-over: one line saying the image server
/// has ended (the member prints it: its payload is on that server's files).
pub fn send_notice(mut stream: &UnixStream, line: &str) {
    let mut text = line.replace('\n', " ");
    text.push('\n');
    let _ = stream.write_all(text.as_bytes());
}

/// Member: the keeper's notice, once its end of the stream is readable;
/// `None` if the keeper closed it without one (the keeper ended).
pub fn read_notice(stream: &UnixStream) -> Option<String> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    let mut s = stream;
    while text.len() < 4096 {
        match s.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => text.push(byte[0]),
            _ => break,
        }
    }
    (!text.is_empty()).then(|| String::from_utf8_lossy(&text).into_owned())
}

/// Keeper → member: the container could not be built.
pub fn send_error(mut stream: &UnixStream, code: u8, message: &str) {
    let mut bytes = vec![code.max(1)];
    bytes.extend_from_slice(message.as_bytes());
    let _ = stream.write_all(&bytes);
}

/// Member: wait (bounded) for the keeper's answer: the namespaces.
pub fn receive(stream: &UnixStream, key: &str) -> Result<(Namespaces, Option<u32>), JoinError> {
    let handover = receive_fds(stream, key)?;
    let mut fds = handover.fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(outer_user), Some(mount)) => {
            // The rest: the other namespaces, then the inner user one; each
            // says what it is (ioctl_ns(2), NS_GET_NSTYPE).
            let mut extra = Vec::new();
            let mut inner_user = None;
            for fd in fds {
                match ns_type(&fd) {
                    Some(CloneFlags::CLONE_NEWUSER) => inner_user = Some(fd),
                    Some(kind) => extra.push((fd, kind)),
                    None => {
                        return Err(JoinError::Keeper {
                            key: key.to_string(),
                            message: "the keeper sent a descriptor that is no namespace".into(),
                            code: crate::exit::ExitKind::Internal.code(),
                        });
                    }
                }
            }
            Ok((
                Namespaces {
                    outer_user,
                    mount,
                    extra,
                    inner_user,
                },
                handover.server,
            ))
        }
        _ => Err(JoinError::Keeper {
            key: key.to_string(),
            message: "the keeper sent no namespaces".into(),
            code: crate::exit::ExitKind::Internal.code(),
        }),
    }
}

/// Member: wait (bounded) for the keeper's answer: the descriptors it sent
/// and its server's pid (an error if it sent its error instead, or nothing).
pub fn receive_fds(stream: &UnixStream, key: &str) -> Result<Handover, JoinError> {
    let io = |what, error| JoinError::Io {
        key: key.to_string(),
        what,
        error,
    };
    let no_answer = || JoinError::NoAnswer {
        key: key.to_string(),
    };
    stream
        .set_read_timeout(Some(SETUP_TIMEOUT))
        .map_err(|e| io("waiting", e))?;
    let mut head = [0u8; 5];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut head)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| match e {
        nix::errno::Errno::EAGAIN => JoinError::Timeout {
            key: key.to_string(),
        },
        // The keeper closed its listener with this connection not yet
        // accepted: it was leaving.
        nix::errno::Errno::ECONNRESET => no_answer(),
        e => io("receiving the namespaces", e.into()),
    })?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let received = msg.bytes;
    if received == 0 {
        return Err(no_answer());
    }
    let mut s = stream;
    if head[0] != 0 {
        let mut bytes = head[1..received].to_vec();
        let _ = s.read_to_end(&mut bytes);
        let message = String::from_utf8_lossy(&bytes).into_owned();
        if head[0] == GONE {
            return Err(JoinError::Gone {
                key: key.to_string(),
                message,
            });
        }
        return Err(JoinError::Keeper {
            key: key.to_string(),
            message,
            code: head[0],
        });
    }
    if received < head.len() {
        s.read_exact(&mut head[received..])
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => no_answer(),
                _ => io("receiving the namespaces", e),
            })?;
    }
    let pid = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    Ok(Handover {
        fds,
        server: (pid != 0).then_some(pid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_leader_then_member() {
        let name = format!("rfake-join-test-{}", std::process::id());
        let Role::Leader(listener) = rendezvous(&name, "k").unwrap() else {
            panic!("first must lead")
        };
        let Role::Member(member) = rendezvous(&name, "k").unwrap() else {
            panic!("second must join")
        };
        let (keeper_side, _) = listener.accept().unwrap();
        send_error(&keeper_side, 66, "image X: bad");
        drop(keeper_side);
        let err = receive(&member, "k").err().unwrap();
        assert_eq!(err.to_string(), "joining the container of k: image X: bad");
        assert!(matches!(err, JoinError::Keeper { code: 66, .. }));
    }

    /// A joining rank enters the shared container: the outer user
    /// namespace first (it owns the mount namespace: setns to that needs
    /// its capabilities), then the mount namespace, the others (`--pid`
    /// here), then the inner user namespace of `--keep-id`.
    #[test]
    fn a_member_enters_user_then_mount_then_inner_user() {
        let dir = tempfile::tempdir().unwrap();
        let rec = crate::container::sys::recorder::Recorder::new(dir.path());
        let fd = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let ns = Namespaces {
            outer_user: fd(),
            mount: fd(),
            extra: vec![(fd(), CloneFlags::CLONE_NEWPID)],
            inner_user: Some(fd()),
        };
        ns.enter(&rec).unwrap();
        assert_eq!(
            rec.take(),
            vec![
                "setns CloneFlags(CLONE_NEWUSER) (the shared container's user namespace)",
                "setns CloneFlags(CLONE_NEWNS) (the shared container's mount namespace)",
                "setns CloneFlags(CLONE_NEWPID) (a namespace of the shared container)",
                "setns CloneFlags(CLONE_NEWUSER) (the shared container's inner user namespace)",
            ]
        );
    }
}
