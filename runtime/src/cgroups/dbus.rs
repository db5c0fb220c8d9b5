//! A minimal D-Bus client for systemd's manager, over its private socket.
//!
//! systemd (pid 1) answers D-Bus on `/run/systemd/private` itself, for root
//! only, with no bus daemon in between: no `Hello`, no names, no match
//! rules (it sends its signals, `JobRemoved` among them, to every private
//! connection). This module speaks just what the systemd cgroup driver
//! needs: EXTERNAL authentication, method calls on
//! `org.freedesktop.systemd1.Manager` with the few argument types those
//! methods take, their replies and errors, and `JobRemoved`. It is
//! blocking, single-threaded and allocates one buffer per message; why it
//! exists instead of a D-Bus crate is in the README (dependencies).
//!
//! The wire format (little-endian, the D-Bus specification's "marshaling"):
//!
//! | part | layout |
//! | --- | --- |
//! | fixed header | `'l'`, type (1 call, 2 return, 3 error, 4 signal), flags, version 1, body length u32, serial u32 |
//! | header fields | `a(yv)`: 1 path `o`, 2 interface `s`, 3 member `s`, 4 error name `s`, 5 reply serial `u`, 6 destination `s`, 8 signature `g` |
//! | body | padded to 8; the values, each aligned to its own size (structs and dict entries to 8) |

use super::gvariant::Gv;
use std::borrow::Cow;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A D-Bus exchange with systemd failed.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    #[error("connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("D-Bus {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("D-Bus authentication refused: {answer:?}")]
    Auth { answer: String },
    #[error("D-Bus: malformed message from systemd: {what}")]
    Malformed { what: &'static str },
    /// systemd answered with an error.
    #[error("{method}: {name}: {message}")]
    Remote {
        method: &'static str,
        name: String,
        message: String,
    },
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        what: &'static str,
        waited: Duration,
    },
}

/// A property value, of the types systemd's unit properties take here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bool(bool),
    U64(u64),
    /// `au` (PIDs).
    U32s(Vec<u32>),
    /// `ay` (CPU and memory-node bitmasks).
    Bytes(Vec<u8>),
    /// `as` (Wants).
    Strs(Vec<String>),
    /// `a(st)` (per-device I/O weights and limits).
    PathU64s(Vec<(String, u64)>),
    /// Any value written in GVariant's text format (the
    /// `org.systemd.property.<Name>` annotations).
    Text(Gv),
}

impl Value {
    /// The D-Bus signature.
    pub fn signature(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Value::Str(_) => "s",
            Value::Bool(_) => "b",
            Value::U64(_) => "t",
            Value::U32s(_) => "au",
            Value::Bytes(_) => "ay",
            Value::Strs(_) => "as",
            Value::PathU64s(_) => "a(st)",
            Value::Text(g) => return Cow::Owned(g.signature()),
        })
    }
}

/// The alignment of a value of signature `sig` (its first type).
fn align_of_sig(sig: &str) -> usize {
    match sig.as_bytes().first() {
        Some(b'y' | b'g' | b'v') => 1,
        Some(b'n' | b'q') => 2,
        Some(b'x' | b't' | b'd' | b'(' | b'{') => 8,
        _ => 4,
    }
}

/// A property: name and value, an `(sv)`.
pub type Property = (String, Value);

/// An argument of a method call.
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    Str(&'a str),
    Bool(bool),
    /// `a(sv)`.
    Props(&'a [Property]),
    /// `a(sa(sv))` (StartTransientUnit's auxiliary units).
    NoAux,
}

impl Arg<'_> {
    fn signature(&self) -> &'static str {
        match self {
            Arg::Str(_) => "s",
            Arg::Bool(_) => "b",
            Arg::Props(_) => "a(sv)",
            Arg::NoAux => "a(sa(sv))",
        }
    }
}

/// Marshals values; offsets count from the start of the message (the body
/// starts 8-aligned, so aligning within the body is the same).
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    fn pad(&mut self, align: usize) {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
    }
    fn u16(&mut self, v: u16) {
        self.pad(2);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.pad(8);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    fn sig(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    /// An array: its length, then padding to the element's alignment
    /// (present even when the array is empty), then the elements.
    fn array(&mut self, elem_align: usize, body: impl FnOnce(&mut Encoder)) {
        self.pad(4);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.pad(elem_align);
        let start = self.buf.len();
        body(self);
        let len = (self.buf.len() - start) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Str(s) => self.str(s),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::U64(n) => self.u64(*n),
            Value::U32s(l) => self.array(4, |e| l.iter().for_each(|n| e.u32(*n))),
            Value::Bytes(b) => self.array(1, |e| e.buf.extend_from_slice(b)),
            Value::Strs(l) => self.array(4, |e| l.iter().for_each(|s| e.str(s))),
            Value::PathU64s(l) => self.array(8, |e| {
                for (s, n) in l {
                    e.pad(8);
                    e.str(s);
                    e.u64(*n);
                }
            }),
            Value::Text(g) => self.gv(g),
        }
    }
    fn gv(&mut self, g: &Gv) {
        match g {
            Gv::Byte(b) => self.buf.push(*b),
            Gv::Bool(b) => self.u32(u32::from(*b)),
            Gv::I16(n) => self.u16(*n as u16),
            Gv::U16(n) => self.u16(*n),
            Gv::I32(n) => self.u32(*n as u32),
            Gv::U32(n) => self.u32(*n),
            Gv::I64(n) => self.u64(*n as u64),
            Gv::U64(n) => self.u64(*n),
            Gv::F64(d) => self.u64(d.to_bits()),
            Gv::Str(s) | Gv::ObjPath(s) => self.str(s),
            Gv::Sig(s) => self.sig(s),
            Gv::Array(elem, items) => {
                self.array(align_of_sig(elem), |e| items.iter().for_each(|i| e.gv(i)))
            }
            Gv::Variant(inner) => {
                self.sig(&inner.signature());
                self.gv(inner);
            }
        }
    }
    fn props(&mut self, props: &[Property]) {
        self.array(8, |e| {
            for (name, v) in props {
                e.pad(8);
                e.str(name);
                e.sig(&v.signature());
                e.value(v);
            }
        });
    }
    fn arg(&mut self, a: &Arg<'_>) {
        match a {
            Arg::Str(s) => self.str(s),
            Arg::Bool(b) => self.u32(u32::from(*b)),
            Arg::Props(p) => self.props(p),
            Arg::NoAux => self.array(8, |_| {}),
        }
    }
}

const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const SYSTEMD_NAME: &str = "org.freedesktop.systemd1";

/// A whole method-call message to systemd's manager.
pub fn method_call(serial: u32, member: &str, args: &[Arg<'_>]) -> Vec<u8> {
    method_call_on(serial, MANAGER, member, args)
}

/// A whole method-call message to systemd's object, on `interface`.
fn method_call_on(serial: u32, interface: &str, member: &str, args: &[Arg<'_>]) -> Vec<u8> {
    let mut body = Encoder::default();
    let mut signature = String::new();
    for a in args {
        body.arg(a);
        signature.push_str(a.signature());
    }
    let mut m = Encoder::default();
    m.buf.extend_from_slice(&[b'l', 1, 0, 1]);
    m.u32(body.buf.len() as u32);
    m.u32(serial);
    m.array(8, |e| {
        let field = |e: &mut Encoder, code: u8, sig: &str, v: &str| {
            e.pad(8);
            e.buf.push(code);
            e.sig(sig);
            if sig == "g" {
                e.sig(v);
            } else {
                e.str(v);
            }
        };
        field(e, 1, "o", SYSTEMD_PATH);
        field(e, 2, "s", interface);
        field(e, 3, "s", member);
        field(e, 6, "s", SYSTEMD_NAME);
        if !signature.is_empty() {
            field(e, 8, "g", &signature);
        }
    });
    m.pad(8);
    m.buf.extend_from_slice(&body.buf);
    m.buf
}

/// A received message, with the parts the client looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u8,
    pub reply_serial: Option<u32>,
    pub member: Option<String>,
    pub error_name: Option<String>,
    pub signature: String,
    pub body: Vec<u8>,
}

const RETURN: u8 = 2;
const ERROR: u8 = 3;
const SIGNAL: u8 = 4;

/// Reads values out of a message (offsets from its start, for alignment).
struct Decoder<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn bad(what: &'static str) -> DbusError {
        DbusError::Malformed { what }
    }
    fn align(&mut self, a: usize) {
        self.pos = self.pos.div_ceil(a) * a;
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DbusError> {
        let s = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or_else(|| Self::bad("truncated"))?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DbusError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DbusError> {
        self.align(4);
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn str(&mut self) -> Result<String, DbusError> {
        let n = self.u32()? as usize;
        let s = self.take(n + 1)?;
        Ok(String::from_utf8_lossy(&s[..n]).into_owned())
    }
    fn sig(&mut self) -> Result<String, DbusError> {
        let n = usize::from(self.u8()?);
        let s = self.take(n + 1)?;
        Ok(String::from_utf8_lossy(&s[..n]).into_owned())
    }
}

/// The total length of the message whose first 16 bytes are `head`.
pub fn message_len(head: &[u8]) -> Result<usize, DbusError> {
    if head.len() < 16 {
        return Err(DbusError::Malformed {
            what: "short header",
        });
    }
    if head[0] != b'l' {
        return Err(DbusError::Malformed {
            what: "not little-endian",
        });
    }
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let fields = word(12) as usize;
    let body = word(4) as usize;
    Ok((16 + fields).div_ceil(8) * 8 + body)
}

/// Parses one whole message.
pub fn parse(b: &[u8]) -> Result<Message, DbusError> {
    let total = message_len(b)?;
    let mut d = Decoder { b, pos: 12 };
    let fields_len = d.u32()? as usize;
    let end = 16 + fields_len;
    let mut m = Message {
        kind: b[1],
        ..Message::default()
    };
    while d.pos < end {
        d.align(8);
        let code = d.u8()?;
        let sig = d.sig()?;
        match sig.as_str() {
            "s" | "o" => {
                let v = d.str()?;
                match code {
                    3 => m.member = Some(v),
                    4 => m.error_name = Some(v),
                    _ => {}
                }
            }
            "u" => {
                let v = d.u32()?;
                if code == 5 {
                    m.reply_serial = Some(v);
                }
            }
            "g" => {
                let v = d.sig()?;
                if code == 8 {
                    m.signature = v;
                }
            }
            _ => return Err(Decoder::bad("unknown header field type")),
        }
    }
    let start = end.div_ceil(8) * 8;
    m.body = b
        .get(start..total)
        .ok_or(DbusError::Malformed { what: "truncated" })?
        .to_vec();
    Ok(m)
}

impl Message {
    fn decoder(&self) -> Decoder<'_> {
        // The body starts 8-aligned, so aligning from 0 is the same.
        Decoder {
            b: &self.body,
            pos: 0,
        }
    }
    /// The first string (or object path) of the body.
    pub fn first_str(&self) -> Option<String> {
        matches!(self.signature.chars().next(), Some('s' | 'o'))
            .then(|| self.decoder().str().ok())
            .flatten()
    }
    /// A `JobRemoved(u id, o job, s unit, s result)` signal's job and
    /// result.
    pub fn job_removed(&self) -> Option<(String, String)> {
        if self.kind != SIGNAL
            || self.member.as_deref() != Some("JobRemoved")
            || self.signature != "uoss"
        {
            return None;
        }
        let mut d = self.decoder();
        d.u32().ok()?;
        let job = d.str().ok()?;
        d.str().ok()?;
        Some((job, d.str().ok()?))
    }
}

/// The path of systemd's private socket.
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";

/// How long a call or a job may take (runc waits 30 s for a job).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a call waits for its reply before it sends systemd a `Ping`.
/// systemd 252 on its private socket answers some calls (`StopUnit`,
/// seen in the test VM) only when more input arrives on the connection:
/// the call waits inside sd-bus until the socket is readable again, and
/// without more input the reply came after 30 s. Another message wakes
/// it; the Ping's own reply is skipped.
const KICK_AFTER: Duration = Duration::from_millis(20);

/// A connection to systemd.
pub struct Bus {
    sock: UnixStream,
    serial: u32,
    /// Bytes read but not yet parsed.
    pending: Vec<u8>,
    /// Jobs seen finishing (job path, result) while waiting for a reply.
    removed: Vec<(String, String)>,
}

impl Bus {
    /// Connects to `path` and authenticates as our uid.
    pub fn connect(path: &Path) -> Result<Bus, DbusError> {
        let sock = UnixStream::connect(path).map_err(|source| DbusError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let io = |what| move |source| DbusError::Io { what, source };
        sock.set_read_timeout(Some(TIMEOUT))
            .map_err(io("set timeout"))?;
        let mut bus = Bus {
            sock,
            serial: 0,
            pending: Vec::new(),
            removed: Vec::new(),
        };
        bus.auth()?;
        Ok(bus)
    }

    fn auth(&mut self) -> Result<(), DbusError> {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() }.to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let io = |what| move |source| DbusError::Io { what, source };
        self.sock
            .write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())
            .map_err(io("write AUTH"))?;
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            let mut b = [0u8; 64];
            let n = self.sock.read(&mut b).map_err(io("read AUTH answer"))?;
            if n == 0 {
                return Err(DbusError::Auth {
                    answer: String::from_utf8_lossy(&line).into_owned(),
                });
            }
            line.extend_from_slice(&b[..n]);
        }
        if !line.starts_with(b"OK ") {
            return Err(DbusError::Auth {
                answer: String::from_utf8_lossy(&line).trim_end().to_string(),
            });
        }
        // BEGIN goes out with the first call (one write).
        self.pending.clear();
        Ok(())
    }

    /// Calls `member` on systemd's manager and returns the reply; an error
    /// reply becomes [`DbusError::Remote`].
    pub fn call(&mut self, member: &'static str, args: &[Arg<'_>]) -> Result<Message, DbusError> {
        self.serial += 1;
        let serial = self.serial;
        let mut out = Vec::new();
        if serial == 1 {
            out.extend_from_slice(b"BEGIN\r\n");
        }
        out.extend_from_slice(&method_call(serial, member, args));
        self.sock.write_all(&out).map_err(|source| DbusError::Io {
            what: "write call",
            source,
        })?;
        let deadline = Instant::now() + TIMEOUT;
        let mut wait = KICK_AFTER;
        let mut kick = Instant::now() + wait;
        loop {
            let m = match self.next(kick.min(deadline), "systemd's reply") {
                Err(DbusError::Timeout { .. }) if kick < deadline => {
                    // See KICK_AFTER; again, less and less often, until the deadline.
                    wait = (wait * 2).min(Duration::from_secs(1));
                    kick = Instant::now() + wait;
                    self.serial += 1;
                    let ping =
                        method_call_on(self.serial, "org.freedesktop.DBus.Peer", "Ping", &[]);
                    self.sock.write_all(&ping).map_err(|source| DbusError::Io {
                        what: "write ping",
                        source,
                    })?;
                    continue;
                }
                r => r?,
            };
            if let Some(j) = m.job_removed() {
                self.removed.push(j);
                continue;
            }
            if m.reply_serial != Some(serial) {
                continue;
            }
            return match m.kind {
                RETURN => Ok(m),
                ERROR => Err(DbusError::Remote {
                    method: member,
                    name: m.error_name.clone().unwrap_or_default(),
                    message: m.first_str().unwrap_or_default(),
                }),
                _ => Err(DbusError::Malformed {
                    what: "reply of an unexpected type",
                }),
            };
        }
    }

    /// Waits for `job` to finish and returns its result (`done`,
    /// `failed`, `canceled`, ...).
    pub fn wait_job(&mut self, job: &str) -> Result<String, DbusError> {
        if let Some(i) = self.removed.iter().position(|(j, _)| j == job) {
            return Ok(self.removed.swap_remove(i).1);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let m = self.next(deadline, "systemd's job")?;
            if let Some((j, result)) = m.job_removed() {
                if j == job {
                    return Ok(result);
                }
            }
        }
    }

    /// The next message, reading until one is whole.
    fn next(&mut self, deadline: Instant, what: &'static str) -> Result<Message, DbusError> {
        loop {
            if self.pending.len() >= 16 {
                let len = message_len(&self.pending)?;
                if self.pending.len() >= len {
                    let m = parse(&self.pending[..len])?;
                    self.pending.drain(..len);
                    return Ok(m);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DbusError::Timeout {
                    what,
                    waited: TIMEOUT,
                });
            }
            let io = |source| DbusError::Io {
                what: "read",
                source,
            };
            self.sock.set_read_timeout(Some(left)).map_err(io)?;
            let mut b = [0u8; 4096];
            match self.sock.read(&mut b) {
                Ok(0) => return Err(io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))),
                Ok(n) => self.pending.extend_from_slice(&b[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(DbusError::Timeout {
                        what,
                        waited: TIMEOUT,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as systemd would send it, built with the same encoder.
    fn reply(
        kind: u8,
        fields: &[(u8, &str, &str)],
        serial_field: Option<u32>,
        body: &[u8],
    ) -> Vec<u8> {
        let mut m = Encoder::default();
        m.buf.extend_from_slice(&[b'l', kind, 0, 1]);
        m.u32(body.len() as u32);
        m.u32(7);
        m.array(8, |e| {
            for (code, sig, v) in fields {
                e.pad(8);
                e.buf.push(*code);
                e.sig(sig);
                if *sig == "g" {
                    e.sig(v);
                } else {
                    e.str(v);
                }
            }
            if let Some(s) = serial_field {
                e.pad(8);
                e.buf.push(5);
                e.sig("u");
                e.u32(s);
            }
        });
        m.pad(8);
        m.buf.extend_from_slice(body);
        m.buf
    }

    /// The bytes of a call match the specification's layout, checked by hand for a small one.
    #[test]
    fn a_call_is_marshalled_as_the_spec_says() {
        let m = method_call(3, "ResetFailedUnit", &[Arg::Str("a.scope")]);
        assert_eq!(&m[..4], &[b'l', 1, 0, 1]);
        assert_eq!(u32::from_le_bytes(m[4..8].try_into().unwrap()), 12); // 4 + 7 + NUL
        assert_eq!(u32::from_le_bytes(m[8..12].try_into().unwrap()), 3);
        assert_eq!(m.len() % 8, 4, "body of 12 after an 8-aligned header");
        assert_eq!(&m[m.len() - 12..], b"\x07\0\0\0a.scope\0");
        let parsed = parse(&m).unwrap();
        assert_eq!(parsed.member.as_deref(), Some("ResetFailedUnit"));
        assert_eq!(parsed.signature, "s");
        assert_eq!(parsed.first_str().as_deref(), Some("a.scope"));
    }

    /// Properties of each type: the variant's signature, alignment of u64 and structs, array lengths.
    #[test]
    fn properties_align_and_count() {
        let mut e = Encoder::default();
        e.props(&[
            ("Delegate".into(), Value::Bool(true)),
            ("MemoryMax".into(), Value::U64(1 << 20)),
            ("PIDs".into(), Value::U32s(vec![5])),
            ("AllowedCPUs".into(), Value::Bytes(vec![3])),
        ]);
        let b = &e.buf;
        let len = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
        assert_eq!(
            len,
            b.len() - 8,
            "length counts from the first 8-aligned element"
        );
        // ("Delegate", b true): name at 8, signature "b", value u32 1.
        assert_eq!(&b[8..12], &8u32.to_le_bytes());
        assert_eq!(&b[12..21], b"Delegate\0");
        assert_eq!(&b[21..24], b"\x01b\0");
        assert_eq!(&b[24..28], &1u32.to_le_bytes());
        // ("MemoryMax", t): struct at 32, value aligned to 8.
        assert_eq!(&b[32..36], &9u32.to_le_bytes());
        assert_eq!(&b[46..49], b"\x01t\0");
        assert_eq!(&b[56..64], &(1u64 << 20).to_le_bytes());
        // An empty a(sa(sv)) still pads to 8 after its length.
        let mut e = Encoder::default();
        e.buf.push(1);
        e.arg(&Arg::NoAux);
        assert_eq!(e.buf, vec![1, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// Annotation values marshal as the typed values the driver sends.
    #[test]
    fn text_values_marshal_like_typed_ones() {
        use crate::cgroups::gvariant::parse;
        let enc = |v: Value| {
            let mut e = Encoder::default();
            e.props(&[("P".into(), v)]);
            e.buf
        };
        let t = |s: &str| Value::Text(parse(s).unwrap());
        assert_eq!(enc(t("uint64 5")), enc(Value::U64(5)));
        assert_eq!(enc(t("'x'")), enc(Value::Str("x".into())));
        assert_eq!(enc(t("true")), enc(Value::Bool(true)));
        assert_eq!(enc(t("[uint32 1, 2]")), enc(Value::U32s(vec![1, 2])));
        assert_eq!(
            enc(t("['a', 'b']")),
            enc(Value::Strs(vec!["a".into(), "b".into()]))
        );
        assert_eq!(enc(t("@ay []")), enc(Value::Bytes(vec![])));
        // A 16-bit value is aligned to 2 and a variant carries its signature.
        let mut e = Encoder::default();
        e.buf.push(0);
        e.gv(&parse("uint16 258").unwrap());
        assert_eq!(e.buf, [0, 0, 2, 1]);
        let mut e = Encoder::default();
        e.gv(&parse("<byte 7>").unwrap());
        assert_eq!(e.buf, [1, b'y', 0, 7]);
    }

    #[test]
    fn errors_and_signals_are_read() {
        let mut body = Encoder::default();
        body.str("Unit x.scope not loaded.");
        let m = reply(
            3,
            &[
                (4, "s", "org.freedesktop.systemd1.NoSuchUnit"),
                (8, "g", "s"),
            ],
            Some(2),
            &body.buf,
        );
        assert_eq!(message_len(&m).unwrap(), m.len());
        let p = parse(&m).unwrap();
        assert_eq!(p.kind, ERROR);
        assert_eq!(p.reply_serial, Some(2));
        assert_eq!(
            p.error_name.as_deref(),
            Some("org.freedesktop.systemd1.NoSuchUnit")
        );
        assert_eq!(p.first_str().as_deref(), Some("Unit x.scope not loaded."));

        let mut body = Encoder::default();
        body.u32(42);
        body.str("/org/freedesktop/systemd1/job/42");
        body.str("x.scope");
        body.str("done");
        let m = reply(
            4,
            &[
                (1, "o", "/org/freedesktop/systemd1"),
                (2, "s", "org.freedesktop.systemd1.Manager"),
                (3, "s", "JobRemoved"),
                (8, "g", "uoss"),
            ],
            None,
            &body.buf,
        );
        let p = parse(&m).unwrap();
        assert_eq!(
            p.job_removed(),
            Some(("/org/freedesktop/systemd1/job/42".into(), "done".into()))
        );
    }

    #[test]
    fn truncated_and_foreign_messages_are_errors() {
        let m = method_call(1, "StopUnit", &[Arg::Str("x"), Arg::Str("replace")]);
        assert!(parse(&m[..m.len() - 1]).is_err());
        assert!(message_len(&m[..10]).is_err());
        let mut big = m.clone();
        big[0] = b'B';
        assert!(message_len(&big).is_err());
    }
}
