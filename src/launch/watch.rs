//! Watching the image server while a payload runs: when it ends (killed,
//! OOM-killed, crashed), every access to the container's files fails with
//! `ENOTCONN`, and rfake says so in one line naming how it ended, so the
//! payload's own errors are explained.
//!
//! Who sees the end: the server's parent reaps it and knows its status. A
//! launch with a mount of its own is that parent ([`OwnServer`]: the
//! server's pidfd). A launch on a warm mount, or a rank in a joined
//! container, is not: its keeper is, and sends the line over the
//! connection the member keeps open while it runs ([`FromKeeper`]). If the
//! keeper itself ends, its server goes with it (parent-death signal); the
//! member knows the server's pid from the hand-over and checks it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::rendezvous;
use crate::container::process::{self, Watch};
use crate::image_server::{self, Server};

/// The server is this process's child.
pub struct OwnServer<'a> {
    server: &'a mut Server,
    image: &'a Path,
}

impl<'a> OwnServer<'a> {
    /// `None` without a pidfd to watch it by (Linux before 5.3).
    pub fn new(server: &'a mut Server, image: &'a Path) -> Option<Self> {
        server.pidfd()?;
        Some(OwnServer { server, image })
    }
}

impl Watch for OwnServer<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.server
            .pidfd()
            .expect("an OwnServer is only made with a pidfd")
    }

    fn fired(&mut self) -> Option<String> {
        let how = match self.server.reap_if_ended() {
            Some(status) => process::describe_end(&status),
            None => "ended".to_string(),
        };
        Some(image_server::ended_line(
            self.server.pid(),
            &how,
            self.image,
        ))
    }
}

/// The image server, as the pid a keeper handed over; `None` if it has
/// ended already (then the hand-over is worth nothing).
pub fn server_alive(pid: u32) -> Option<(u32, OwnedFd)> {
    let fd = process::pidfd_open(pid).ok()?;
    (!process::readable(fd.as_fd(), Duration::ZERO)).then_some((pid, fd))
}

/// The server belongs to a keeper, which this process is connected to.
pub struct FromKeeper<'a> {
    stream: &'a UnixStream,
    /// The server's pid and pidfd, from the hand-over.
    server: Option<(u32, OwnedFd)>,
    image: &'a Path,
}

impl<'a> FromKeeper<'a> {
    pub fn new(stream: &'a UnixStream, server: Option<(u32, OwnedFd)>, image: &'a Path) -> Self {
        FromKeeper {
            stream,
            server,
            image,
        }
    }
}

impl Watch for FromKeeper<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn fired(&mut self) -> Option<String> {
        if let Some(line) = rendezvous::read_notice(self.stream) {
            return Some(line);
        }
        // The keeper closed the connection without a word: it ended, and
        // its own server went with it (parent-death signal). (Its pid is
        // not known here: the socket's credentials are those of the launch
        // that bound it and then forked the keeper.)
        let (pid, fd) = self.server.as_ref()?;
        if process::readable(fd.as_fd(), Duration::from_secs(1)) {
            Some(image_server::ended_line(
                *pid,
                "ended with its keeper",
                self.image,
            ))
        } else {
            log::info!("the keeper has ended; the image server (pid {pid}) still serves");
            None
        }
    }
}
