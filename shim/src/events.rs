//! Events to containerd: a bounded queue drained by one publisher thread.
//!
//! The service enqueues events in the order they happen; the publisher forwards them one at a
//! time, so containerd sees them in that order. For one container it is:
//!
//! | # | event | published when |
//! | --- | --- | --- |
//! | 1 | `TaskCreate` | `Create` succeeded (the init exists, blocked before its user process) |
//! | 2 | `TaskStart` | `Start` of the init succeeded |
//! | 3 | `TaskExecAdded` | `Exec` registered an exec process |
//! | 4 | `TaskExecStarted` | `Start` of that exec succeeded |
//! | 5 | `TaskExit` (exec) | an exec process was reaped, before the init's own exit |
//! | 6 | `TaskOOM` | the cgroup's OOM-kill count rose; always before the `TaskExit` it causes |
//! | 7 | `TaskExit` (init) | the init was reaped, after its execs and after its output was written |
//! | - | `TaskPaused` / `TaskResumed` | `Pause` / `Resume` succeeded |
//! | 8 | `TaskDelete` | `Delete` of the init succeeded |
//!
//! Transport: `Events.Forward` over ttrpc at `$TTRPC_ADDRESS` (one blocking connection, written and
//! read by the publisher thread itself, reconnecting on failure), else the
//! `-publish-binary` (`containerd --address A publish --topic T --namespace NS`, the event `Any` on
//! stdin). Each event is retried with back-off a few times and then dropped with a log line. The
//! queue is bounded so a stuck containerd never blocks the shim: when it is full the event is dropped
//! and logged.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use skiff_proto::api::ForwardRequest;
use skiff_proto::convert::{timestamp, to_any, Named};
use skiff_proto::protobuf::well_known_types::any::Any;
use skiff_proto::protobuf::Message;
use skiff_proto::protos::shim::event::Envelope;
use skiff_proto::ttrpc::{Code, Request, Response};

use crate::reaper::Reaper;
use crate::wire::{put_frame, Header, HEADER_LEN, MAX_PAYLOAD, TYPE_REQUEST, TYPE_RESPONSE};

/// Events waiting to be published.
const QUEUE: usize = 256;
/// How long an idle connection to containerd is kept.
const IDLE: Duration = Duration::from_secs(2);
/// Attempts per event.
const ATTEMPTS: u32 = 5;
/// How long containerd may take to answer one event.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// containerd's event service.
const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("starting the publisher thread: {0}")]
    Thread(std::io::Error),
}

/// Where events go.
#[derive(Debug, Clone)]
pub struct Target {
    /// containerd's ttrpc address (`$TTRPC_ADDRESS`).
    pub ttrpc_address: Option<String>,
    /// containerd's binary and gRPC address, for the `publish` fallback.
    pub publish_binary: Option<PathBuf>,
    pub grpc_address: String,
    pub namespace: String,
}

struct Event {
    topic: &'static str,
    event: Any,
    at: SystemTime,
}

/// The handle the service publishes through.
#[derive(Debug)]
pub struct Publisher {
    tx: Mutex<Option<SyncSender<Event>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.topic)
    }
}

impl Publisher {
    /// Start the publisher thread.
    pub fn start(target: Target, reaper: Arc<Reaper>) -> Result<Publisher, EventsError> {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("events".into())
            .stack_size(128 * 1024)
            .spawn(move || run(target, reaper, rx))
            .map_err(EventsError::Thread)?;
        Ok(Publisher {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue `event` for `topic` (a `/tasks/...` topic).
    pub fn publish<M: Named>(&self, topic: &'static str, event: &M) {
        let Ok(guard) = self.tx.lock() else { return };
        let Some(tx) = guard.as_ref() else { return };
        let ev = Event {
            topic,
            event: to_any(event),
            at: SystemTime::now(),
        };
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                eprintln!("skiff-shim: event queue full, dropping {ev:?}")
            }
            Err(TrySendError::Disconnected(ev)) => {
                eprintln!("skiff-shim: publisher stopped, dropping {ev:?}")
            }
        }
    }

    /// Publish what is queued (the publisher gives up on each event after its retries) and stop.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            *tx = None;
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn run(target: Target, reaper: Arc<Reaper>, rx: Receiver<Event>) {
    let mut client: Option<Connection> = None;
    loop {
        // The connection lives only while events keep coming.
        let ev = match rx.recv_timeout(IDLE) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => {
                client = None;
                match rx.recv() {
                    Ok(ev) => ev,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut delay = Duration::from_millis(50);
        let mut sent = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay *= 2;
            }
            let result = match &target.ttrpc_address {
                Some(addr) => forward(&mut client, addr, &target.namespace, &ev),
                None => publish_binary(&target, &reaper, &ev),
            };
            match result {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(e) => {
                    client = None;
                    eprintln!("skiff-shim: publishing {}: {e}", ev.topic);
                }
            }
        }
        if !sent {
            eprintln!(
                "skiff-shim: dropped event {} after {ATTEMPTS} attempts",
                ev.topic
            );
        }
    }
}

/// A ttrpc connection to containerd, used by one thread: write a request, read its response.
struct Connection {
    stream: UnixStream,
    next_stream: u32,
}

impl Connection {
    fn open(addr: &str) -> std::io::Result<Connection> {
        let path = addr.strip_prefix("unix://").unwrap_or(addr);
        let stream = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                UnixStream::connect_addr(&sa)?
            }
            None => UnixStream::connect(path)?,
        };
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        stream.set_write_timeout(Some(CALL_TIMEOUT))?;
        Ok(Connection {
            stream,
            next_stream: 1,
        })
    }

    /// One unary call; the response's payload, or its status as an error.
    fn call(&mut self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let stream_id = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        let mut req = Request::new();
        req.service = EVENTS_SERVICE.into();
        req.method = method.into();
        req.payload = payload;
        req.timeout_nano = CALL_TIMEOUT.as_nanos() as i64;
        let body = req.write_to_bytes().map_err(|e| e.to_string())?;
        let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
        put_frame(&mut frame, stream_id, TYPE_REQUEST, &body);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("writing: {e}"))?;
        loop {
            let mut head = [0u8; HEADER_LEN];
            self.stream
                .read_exact(&mut head)
                .map_err(|e| format!("reading: {e}"))?;
            let header = Header::decode(&head);
            let len = header.length as usize;
            if len > MAX_PAYLOAD {
                return Err(format!("response of {len} bytes"));
            }
            let mut body = vec![0u8; len];
            self.stream
                .read_exact(&mut body)
                .map_err(|e| format!("reading: {e}"))?;
            if header.kind != TYPE_RESPONSE || header.stream_id != stream_id {
                continue;
            }
            let res = Response::parse_from_bytes(&body).map_err(|e| e.to_string())?;
            return match res.status.as_ref() {
                Some(st) if st.code.value() != Code::OK as i32 => Err(st.message.clone()),
                _ => Ok(res.payload),
            };
        }
    }
}

fn forward(
    client: &mut Option<Connection>,
    addr: &str,
    namespace: &str,
    ev: &Event,
) -> Result<(), String> {
    if client.is_none() {
        let c = Connection::open(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
        *client = Some(c);
    }
    let Some(c) = client.as_mut() else {
        return Err("no client".into());
    };
    let mut envelope = Envelope::new();
    envelope.timestamp = Some(timestamp(ev.at)).into();
    envelope.namespace = namespace.to_string();
    envelope.topic = ev.topic.to_string();
    envelope.event = Some(ev.event.clone()).into();
    let mut req = ForwardRequest::new();
    req.envelope = Some(envelope).into();
    let payload = req.write_to_bytes().map_err(|e| e.to_string())?;
    c.call("Forward", payload).map(|_| ())
}

fn publish_binary(target: &Target, reaper: &Arc<Reaper>, ev: &Event) -> Result<(), String> {
    let Some(binary) = &target.publish_binary else {
        return Err("neither TTRPC_ADDRESS nor -publish-binary is set".into());
    };
    let data = ev.event.write_to_bytes().map_err(|e| e.to_string())?;
    let sub = reaper.subscribe();
    let mut child = Command::new(binary)
        .args([
            "--address",
            &target.grpc_address,
            "publish",
            "--topic",
            ev.topic,
        ])
        .args(["--namespace", &target.namespace])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("running {}: {e}", binary.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&data);
    }
    match sub.wait_for(child.id() as i32, Duration::from_secs(10)) {
        Some(exit) if skiff_proto::convert::exit_status(exit.status) == 0 => Ok(()),
        Some(exit) => Err(format!(
            "publish exited with {}",
            skiff_proto::convert::exit_status(exit.status)
        )),
        None => Err("publish timed out".into()),
    }
}
