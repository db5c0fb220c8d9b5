//! The parent ↔ init channel: typed messages over a `SOCK_SEQPACKET`
//! socketpair, JSON-encoded. A message of any size goes as a run of
//! datagrams of at most [`CHUNK`] bytes, each led by one byte that says
//! whether more of the message follows (1) or it is the last (0); the
//! state JSON a message carries holds the config's annotations, which may
//! be megabytes.
//!
//! The protocol, in order:
//!
//! | from   | message            | when                                                        |
//! |--------|--------------------|-------------------------------------------------------------|
//! | parent | `Go { states }`    | after the id maps are written (new user namespace)          |
//! | parent | `CgroupPlaced`     | the init is in its cgroup; it waits for this before its cgroup namespace and cgroup mounts |
//! | init   | `RunHooks`         | rootfs mounted, before pivot_root; only if createRuntime/prestart hooks exist |
//! | parent | `HooksDone`        | the hooks succeeded                                         |
//! | init   | `SeccompFd { fd }` | a notify profile's filter is in; `fd` is the init's listener descriptor, which the parent copies (`pidfd_getfd`) and sends to the agent |
//! | parent | `SeccompDone`      | the agent has the descriptor                                |
//! | init   | `Ready`            | set up and about to block on exec.fifo                      |
//! | either | `Error { message }`| a step failed; the init exits, the parent cleans up         |
//!
//! A closed channel (EOF) in place of a message means the other side died.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The most message bytes in one datagram: well below the socket buffer
/// (net.core.wmem_default), so a send never needs more than one buffer.
const CHUNK: usize = 32 * 1024;
/// Lead byte of a datagram after which the message goes on.
const MORE: u8 = 1;
/// Lead byte of a message's last datagram.
const LAST: u8 = 0;

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
    /// The init's (or exec'd process's) seccomp notify descriptor number.
    SeccompFd {
        fd: i32,
    },
    SeccompDone,
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
    #[error("init channel: bad datagram lead byte {0}")]
    Framing(u8),
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
        let mut chunks = data.chunks(CHUNK).peekable();
        let mut datagram = Vec::with_capacity(CHUNK.min(data.len()) + 1);
        // An empty message is still one (empty, last) datagram.
        if chunks.peek().is_none() {
            return self.send_datagram(&[LAST]);
        }
        while let Some(chunk) = chunks.next() {
            datagram.clear();
            datagram.push(if chunks.peek().is_some() { MORE } else { LAST });
            datagram.extend_from_slice(chunk);
            self.send_datagram(&datagram)?;
        }
        Ok(())
    }

    /// Sends a message that fits one datagram with `write(2)`: for the
    /// message a process sends right after its seccomp filter with notify
    /// rules went in, before the agent has the listener. `write` is the call
    /// runc makes there, and a profile may not send it to the agent (see
    /// `seccomp::check_notify`), while `sendto` may be.
    pub fn send_by_write(&self, msg: &Msg) -> Result<(), ChannelError> {
        let mut datagram = vec![LAST];
        serde_json::to_writer(&mut datagram, msg)?;
        if datagram.len() > CHUNK {
            return Err(ChannelError::Io(io::Error::from_raw_os_error(
                libc::EMSGSIZE,
            )));
        }
        loop {
            // SAFETY: valid buffer. A dead peer means SIGPIPE, which ends us
            // as the parent-death signal would.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    datagram.as_ptr().cast(),
                    datagram.len(),
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

    fn send_datagram(&self, data: &[u8]) -> Result<(), ChannelError> {
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
        let mut message = Vec::new();
        let mut buf = vec![0u8; CHUNK + 1];
        loop {
            let n = self.recv_datagram(&mut buf, flags)?;
            let Some((&lead, chunk)) = buf[..n].split_first() else {
                return Err(ChannelError::Closed);
            };
            message.extend_from_slice(chunk);
            match lead {
                LAST => return Ok(serde_json::from_slice(&message)?),
                MORE => continue,
                other => return Err(ChannelError::Framing(other)),
            }
        }
    }

    /// One datagram into `buf`; its length (0: the peer closed its end).
    fn recv_datagram(&self, buf: &mut [u8], flags: libc::c_int) -> Result<usize, ChannelError> {
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
            return Ok(n as usize);
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
    fn a_message_sent_by_write_is_received() {
        let (a, b) = Channel::pair().unwrap();
        b.send_by_write(&Msg::SeccompFd { fd: 7 }).unwrap();
        assert_eq!(a.recv().unwrap(), Msg::SeccompFd { fd: 7 });
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

    /// The state JSON carries the config's annotations: megabytes pass whole.
    #[test]
    fn messages_of_any_size_pass() {
        let (a, b) = Channel::pair().unwrap();
        let big = "x".repeat(3 * 1024 * 1024 + 7);
        let go = Msg::Go {
            state: big.clone(),
            created_state: String::new(),
        };
        let want = go.clone();
        let reader = std::thread::spawn(move || (b.recv().unwrap(), b.recv().unwrap()));
        a.send(&go).unwrap();
        a.send(&Msg::Ready).unwrap();
        let (got, next) = reader.join().unwrap();
        assert_eq!(got, want);
        assert_eq!(next, Msg::Ready, "the message after a long one is intact");
        // Exactly a chunk's worth, and one byte more.
        for len in [CHUNK - 10, CHUNK + 1] {
            let (a, b) = Channel::pair().unwrap();
            let m = Msg::Error {
                message: "e".repeat(len),
            };
            let r = std::thread::spawn(move || b.recv().unwrap());
            a.send(&m).unwrap();
            assert_eq!(r.join().unwrap(), m);
        }
    }
}
