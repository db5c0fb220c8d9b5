//! The parent ↔ init channel: typed messages over a `SOCK_SEQPACKET`
//! socketpair (one datagram per message, JSON-encoded).
//!
//! The protocol, in order:
//!
//! | from   | message            | when                                                        |
//! |--------|--------------------|-------------------------------------------------------------|
//! | parent | `Go { states }`    | after the id maps are written (new user namespace)          |
//! | parent | `CgroupPlaced`     | the init is in its cgroup; it waits for this before its cgroup namespace and cgroup mounts |
//! | init   | `RunHooks`         | rootfs mounted, before pivot_root; only if createRuntime/prestart hooks exist |
//! | parent | `HooksDone`        | the hooks succeeded                                         |
//! | init   | `Ready`            | set up and about to block on exec.fifo                      |
//! | either | `Error { message }`| a step failed; the init exits, the parent cleans up         |
//!
//! A closed channel (EOF) in place of a message means the other side died.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A message between the parent and the init.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Msg {
    /// Go on; the OCI state JSON for the hooks run in the init: `state`
    /// (status creating) for createContainer, `created_state` for
    /// startContainer.
    Go {
        state: String,
        created_state: String,
    },
    CgroupPlaced,
    RunHooks,
    HooksDone,
    Ready,
    Error {
        message: String,
    },
}

/// A channel end could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("init channel: {0}")]
    Io(#[from] io::Error),
    #[error("init channel: bad message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("init channel: the other side exited")]
    Closed,
}

/// One end of the channel.
pub struct Channel {
    fd: OwnedFd,
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl Channel {
    /// A connected pair (parent end, init end), both close-on-exec.
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fresh descriptors we own.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn send(&self, msg: &Msg) -> Result<(), ChannelError> {
        let data = serde_json::to_vec(msg)?;
        loop {
            // SAFETY: valid buffer; MSG_NOSIGNAL so a dead peer is an error,
            // not a SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
    }

    pub fn recv(&self) -> Result<Msg, ChannelError> {
        self.recv_flags(0)
    }

    /// The error the peer reported before it went away, if one is queued.
    /// For a parent whose child died early: its own words beat "it died".
    pub fn queued_error(&self) -> Option<String> {
        loop {
            match self.recv_flags(libc::MSG_DONTWAIT) {
                Ok(Msg::Error { message }) => return Some(message),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    fn recv_flags(&self, flags: libc::c_int) -> Result<Msg, ChannelError> {
        let mut buf = vec![0u8; 1 << 16];
        let mut reset_seen = false;
        loop {
            // SAFETY: valid buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    flags,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A peer that exits with one of our messages unread resets
                // the connection, and the kernel reports that before the
                // messages it had queued for us (its last words, usually
                // an Error): the reset is cleared once reported, read again.
                if e.raw_os_error() == Some(libc::ECONNRESET) && !reset_seen {
                    reset_seen = true;
                    continue;
                }
                return Err(e.into());
            }
            if n == 0 {
                return Err(ChannelError::Closed);
            }
            return Ok(serde_json::from_slice(&buf[..n as usize])?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_peers_error_is_still_read() {
        let (a, b) = Channel::pair().unwrap();
        assert_eq!(a.queued_error(), None, "nothing queued: no wait");
        b.send(&Msg::Ready).unwrap();
        b.send(&Msg::Error {
            message: "cgroup: write tasks".into(),
        })
        .unwrap();
        drop(b);
        assert!(a.send(&Msg::CgroupPlaced).is_err(), "the peer is gone");
        assert_eq!(a.queued_error().as_deref(), Some("cgroup: write tasks"));
    }

    #[test]
    fn last_words_of_a_peer_that_left_our_message_unread_are_read() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::CgroupPlaced).unwrap();
        b.send(&Msg::Error {
            message: "mounts: destination /dev".into(),
        })
        .unwrap();
        drop(b);
        assert_eq!(
            a.recv().unwrap(),
            Msg::Error {
                message: "mounts: destination /dev".into()
            }
        );
        assert!(matches!(a.recv(), Err(ChannelError::Closed)));
    }

    #[test]
    fn roundtrip_and_close() {
        let (a, b) = Channel::pair().unwrap();
        let go = Msg::Go {
            state: "{}".into(),
            created_state: "{}".into(),
        };
        a.send(&go).unwrap();
        a.send(&Msg::Error {
            message: "x".into(),
        })
        .unwrap();
        assert_eq!(b.recv().unwrap(), go);
        assert_eq!(
            b.recv().unwrap(),
            Msg::Error {
                message: "x".into()
            }
        );
        drop(a);
        assert!(matches!(b.recv(), Err(ChannelError::Closed)));
    }
}
