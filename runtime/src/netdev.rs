//! `linux.netDevices`: host network devices moved into the container's
//! network namespace, as runc 1.3 does it over rtnetlink: the device is set
//! down, moved and renamed in one RTM_NEWLINK (so the new name never clashes
//! in the host's namespace), its permanent global addresses are added again
//! inside (the kernel drops addresses on a move), and it is set up. Nothing
//! is done at delete: when the namespace goes, the kernel hands physical
//! devices back to the host and destroys virtual ones.

use crate::sys;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Moving a device failed.
#[derive(Debug, thiserror::Error)]
pub enum NetDevError {
    #[error("linux.netDevices[{name:?}]: {what}: {source}")]
    Netlink {
        name: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("linux.netDevices: open the container's network namespace {path}: {source}")]
    Namespace {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Whether `name` can name a network interface (the kernel's
/// `dev_valid_name`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const IFLA_IFNAME: u16 = 3;
const IFLA_NET_NS_FD: u16 = 28;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_PERMANENT: u32 = 0x80;
const RT_SCOPE_UNIVERSE: u8 = 0;

/// A netlink request under construction: header, fixed part, attributes.
struct Request(Vec<u8>);

impl Request {
    fn new(kind: u16, flags: u16) -> Self {
        let mut b = vec![0u8; NLMSG_HDRLEN];
        b[4..6].copy_from_slice(&kind.to_ne_bytes());
        b[6..8].copy_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        b[8..12].copy_from_slice(&1u32.to_ne_bytes());
        Request(b)
    }

    /// `struct ifinfomsg` for `index`, changing IFF_UP to `up` if given.
    fn ifinfo(mut self, index: i32, up: Option<bool>) -> Self {
        let mut m = [0u8; IFINFOMSG_LEN];
        m[4..8].copy_from_slice(&index.to_ne_bytes());
        if let Some(up) = up {
            let flags = if up { libc::IFF_UP as u32 } else { 0 };
            m[8..12].copy_from_slice(&flags.to_ne_bytes());
            m[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        }
        self.0.extend_from_slice(&m);
        self
    }

    fn ifaddr(mut self, family: u8, prefix: u8, index: u32) -> Self {
        let mut m = [0u8; IFADDRMSG_LEN];
        m[0] = family;
        m[1] = prefix;
        m[3] = RT_SCOPE_UNIVERSE;
        m[4..8].copy_from_slice(&index.to_ne_bytes());
        self.0.extend_from_slice(&m);
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn bytes(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// An rtnetlink socket (in the network namespace current when opened).
struct Netlink(OwnedFd);

/// One message of a reply: its type and payload.
struct Reply {
    kind: u16,
    payload: Vec<u8>,
}

impl Netlink {
    fn open() -> std::io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        Ok(Netlink(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `req` and reads replies until the ACK (or NLMSG_DONE of a
    /// dump); a negative ACK is the errno it carries.
    fn call(&self, req: Vec<u8>) -> std::io::Result<Vec<Reply>> {
        sys::write_all(self.as_fd(), &req)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(std::io::Error::other("truncated netlink message"));
                }
                let payload = &rest[NLMSG_HDRLEN..len];
                match kind as i32 {
                    libc::NLMSG_DONE => return Ok(out),
                    libc::NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EPROTO);
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(std::io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => out.push(Reply {
                        kind,
                        payload: payload.to_vec(),
                    }),
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    /// The index of the device called `name`.
    fn index_of(&self, name: &str) -> std::io::Result<i32> {
        let req = Request::new(libc::RTM_GETLINK, libc::NLM_F_ACK as u16)
            .ifinfo(0, None)
            .attr(IFLA_IFNAME, &nul_terminated(name))
            .bytes();
        let replies = self.call(req)?;
        replies
            .iter()
            .find(|r| r.kind == libc::RTM_NEWLINK && r.payload.len() >= IFINFOMSG_LEN)
            .map(|r| i32::from_ne_bytes([r.payload[4], r.payload[5], r.payload[6], r.payload[7]]))
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))
    }

    fn set_up(&self, index: i32, up: bool) -> std::io::Result<()> {
        let req = Request::new(libc::RTM_NEWLINK, libc::NLM_F_ACK as u16)
            .ifinfo(index, Some(up))
            .bytes();
        self.call(req).map(drop)
    }

    /// The device's permanent addresses of global scope (what runc moves).
    fn addresses(&self, index: i32) -> std::io::Result<Vec<Address>> {
        let req = Request::new(libc::RTM_GETADDR, libc::NLM_F_DUMP as u16)
            .ifaddr(libc::AF_UNSPEC as u8, 0, 0)
            .bytes();
        Ok(self
            .call(req)?
            .iter()
            .filter(|r| r.kind == libc::RTM_NEWADDR)
            .filter_map(|r| Address::parse(&r.payload))
            .filter(|a| a.index == index as u32 && a.permanent && a.scope == RT_SCOPE_UNIVERSE)
            .collect())
    }

    fn add_address(&self, index: i32, a: &Address) -> std::io::Result<()> {
        let req = Request::new(
            libc::RTM_NEWADDR,
            (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        )
        .ifaddr(a.family, a.prefix, index as u32)
        .attr(IFA_LOCAL, &a.addr)
        .attr(IFA_ADDRESS, &a.addr)
        .bytes();
        self.call(req).map(drop)
    }

    /// Moves device `index` into the namespace `ns`, named `name` there.
    fn move_to(&self, index: i32, name: &str, ns: &OwnedFd) -> std::io::Result<()> {
        let fd = ns.as_raw_fd() as u32;
        let req = Request::new(libc::RTM_NEWLINK, libc::NLM_F_ACK as u16)
            .ifinfo(index, None)
            .attr(IFLA_IFNAME, &nul_terminated(name))
            .attr(IFLA_NET_NS_FD, &fd.to_ne_bytes())
            .bytes();
        self.call(req).map(drop)
    }
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// An address of a device, as RTM_NEWADDR carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    family: u8,
    prefix: u8,
    scope: u8,
    index: u32,
    permanent: bool,
    addr: Vec<u8>,
}

impl Address {
    fn parse(p: &[u8]) -> Option<Address> {
        let head = p.get(..IFADDRMSG_LEN)?;
        let mut a = Address {
            family: head[0],
            prefix: head[1],
            scope: head[3],
            index: u32::from_ne_bytes([head[4], head[5], head[6], head[7]]),
            permanent: head[2] as u32 & IFA_F_PERMANENT != 0,
            addr: Vec::new(),
        };
        let mut local = None;
        let mut rest = &p[IFADDRMSG_LEN..];
        while rest.len() >= 4 {
            let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
            let kind = u16::from_ne_bytes([rest[2], rest[3]]);
            let data = rest.get(4..len)?;
            match kind {
                IFA_ADDRESS => a.addr = data.to_vec(),
                IFA_LOCAL => local = Some(data.to_vec()),
                // The full flags, when the kernel has more than 8 bits.
                IFA_FLAGS if data.len() == 4 => {
                    let f = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                    a.permanent = f & IFA_F_PERMANENT != 0;
                }
                _ => {}
            }
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        }
        // IFA_LOCAL is the interface's own address on point-to-point links.
        if let Some(l) = local {
            a.addr = l;
        }
        (!a.addr.is_empty()).then_some(a)
    }
}

/// A netlink socket of the network namespace `ns`: we enter it for the
/// socket(2) call only and return to our own.
fn netlink_in(ns: &OwnedFd) -> std::io::Result<Netlink> {
    let own = sys::open(
        Path::new("/proc/thread-self/ns/net"),
        libc::O_RDONLY | libc::O_CLOEXEC,
        0,
    )?;
    // SAFETY: setns on a namespace descriptor; checked.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = Netlink::open();
    // SAFETY: as above, back to our own namespace.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    sock
}

/// Moves each `(host name, container name)` device into the network
/// namespace at `ns_path`, with its permanent global addresses, and sets
/// it up there.
pub fn move_devices(devices: &[(String, String)], ns_path: &Path) -> Result<(), NetDevError> {
    if devices.is_empty() {
        return Ok(());
    }
    let ns = sys::open(ns_path, libc::O_RDONLY | libc::O_CLOEXEC, 0).map_err(|source| {
        NetDevError::Namespace {
            path: ns_path.to_path_buf(),
            source,
        }
    })?;
    for (host, inside) in devices {
        let err = |what| {
            let name = host.clone();
            move |source| NetDevError::Netlink { name, what, source }
        };
        let here = Netlink::open().map_err(err("netlink socket"))?;
        let index = here.index_of(host).map_err(err("find the device"))?;
        here.set_up(index, false).map_err(err("set it down"))?;
        let addresses = here.addresses(index).map_err(err("read its addresses"))?;
        here.move_to(index, inside, &ns)
            .map_err(err("move it into the container's namespace"))?;
        let there = netlink_in(&ns).map_err(err("netlink socket in the container"))?;
        let index = there
            .index_of(inside)
            .map_err(err("find it in the container"))?;
        for a in &addresses {
            there
                .add_address(index, a)
                .map_err(err("add its address in the container"))?;
        }
        there.set_up(index, true).map_err(err("set it up"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_as_the_kernel_does() {
        for ok in ["eth0", "a", "dummy-1.x", "123456789012345"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "1234567890123456"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn requests_are_laid_out_as_rtnetlink_reads_them() {
        let r = Request::new(libc::RTM_NEWLINK, libc::NLM_F_ACK as u16)
            .ifinfo(7, Some(true))
            .attr(IFLA_IFNAME, &nul_terminated("eth1"))
            .bytes();
        assert_eq!(r.len(), 16 + 16 + 12);
        assert_eq!(
            u32::from_ne_bytes([r[0], r[1], r[2], r[3]]) as usize,
            r.len()
        );
        assert_eq!(i32::from_ne_bytes([r[20], r[21], r[22], r[23]]), 7);
        assert_eq!(&r[36..41], b"eth1\0");
    }

    #[test]
    fn addresses_parse_with_their_flags() {
        let mut p = vec![libc::AF_INET as u8, 24, 0x80, 0, 3, 0, 0, 0];
        for (kind, data) in [(IFA_ADDRESS, [10u8, 0, 0, 1]), (IFA_LOCAL, [10, 0, 0, 2])] {
            p.extend_from_slice(&8u16.to_ne_bytes());
            p.extend_from_slice(&kind.to_ne_bytes());
            p.extend_from_slice(&data);
        }
        let a = Address::parse(&p).unwrap();
        assert!(a.permanent);
        assert_eq!((a.prefix, a.index), (24, 3));
        assert_eq!(a.addr, vec![10, 0, 0, 2]);
    }
}
