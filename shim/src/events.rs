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
//! stdin).
//!
//! Delivery: the queue is ordered and only its head is being sent, so containerd sees events in
//! the order above. `TaskExit` and `TaskDelete` are never dropped: each is retried (with back-off up
//! to [`MAX_DELAY`]) until containerd acknowledges it, however long containerd is down, so an exit
//! that happens while containerd restarts reaches the new containerd. The other events are lifecycle
//! notices that containerd also learns from the calls' answers: each is tried [`ATTEMPTS`] times,
//! and at most [`OPTIONAL_QUEUE`] of them wait, so a containerd that never comes back costs
//! bounded memory for them (the kept events are bounded by the processes the shim ran).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use skiff_proto::api::ForwardRequest;
use skiff_proto::convert::{timestamp, to_any, Named};
use skiff_proto::protobuf::well_known_types::any::Any;
use skiff_proto::protobuf::Message;
use skiff_proto::protos::shim::event::Envelope;
use skiff_proto::protos::topics;
use skiff_proto::ttrpc::{Code, Request, Response};

use crate::reaper::Reaper;
use crate::wire::{put_frame, Header, HEADER_LEN, MAX_PAYLOAD, TYPE_REQUEST, TYPE_RESPONSE};

/// Events other than `TaskExit` and `TaskDelete` that may wait; more are dropped.
const OPTIONAL_QUEUE: usize = 1024;
/// How long an idle connection to containerd is kept.
const IDLE: Duration = Duration::from_secs(2);
/// Attempts for an event that may be dropped.
const ATTEMPTS: u32 = 5;
/// The longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// After [`Publisher::close`], how long the events that must be delivered are still retried.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
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

impl Event {
    /// Whether the event is retried until containerd takes it.
    fn must_deliver(&self) -> bool {
        must_deliver(self.topic)
    }
}

/// `TaskExit` and `TaskDelete` are the only record containerd gets of an exit that happened while
/// it was not waiting: they are never dropped.
fn must_deliver(topic: &str) -> bool {
    topic == topics::TASK_EXIT_EVENT_TOPIC || topic == topics::TASK_DELETE_EVENT_TOPIC
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.topic)
    }
}

/// The events not yet acknowledged, oldest first.
#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<Event>,
    /// How many of `events` may be dropped.
    optional: usize,
    /// Set by [`Publisher::close`]: deliver what is queued, then stop.
    closed_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> Option<MutexGuard<'_, Queue>> {
        self.queue.lock().ok()
    }

    /// The next event to send; `None` once closed and empty. Waits at most `idle` for one to
    /// arrive, calling `on_idle` (drop the connection) when that passes, then waits on.
    fn next(&self, idle: Duration, mut on_idle: impl FnMut()) -> Option<Event> {
        let mut q = self.lock()?;
        let mut idled = false;
        loop {
            if let Some(ev) = q.events.pop_front() {
                if !ev.must_deliver() {
                    q.optional -= 1;
                }
                return Some(ev);
            }
            if q.closed_at.is_some() {
                return None;
            }
            if idled {
                q = self.changed.wait(q).ok()?;
            } else {
                let (guard, timeout) = self.changed.wait_timeout(q, idle).ok()?;
                q = guard;
                if timeout.timed_out() {
                    idled = true;
                    on_idle();
                }
            }
        }
    }

    /// Whether a must-deliver event should still be retried after `close`.
    fn give_up(&self) -> bool {
        self.lock()
            .and_then(|q| q.closed_at)
            .is_some_and(|at| at.elapsed() > CLOSE_GRACE)
    }
}

/// The handle the service publishes through.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Publisher {
    /// Start the publisher thread.
    pub fn start(target: Target, reaper: Arc<Reaper>) -> Result<Publisher, EventsError> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("events".into())
            .stack_size(128 * 1024)
            .spawn(move || run(&target, &reaper, &s))
            .map_err(EventsError::Thread)?;
        Ok(Publisher {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue `event` for `topic` (a `/tasks/...` topic).
    pub fn publish<M: Named>(&self, topic: &'static str, event: &M) {
        let ev = Event {
            topic,
            event: to_any(event),
            at: SystemTime::now(),
        };
        let Some(mut q) = self.shared.lock() else {
            return;
        };
        if q.closed_at.is_some() {
            log_line!("skiff-shim: publisher stopped, dropping {ev:?}");
            return;
        }
        if !ev.must_deliver() {
            if q.optional >= OPTIONAL_QUEUE {
                log_line!("skiff-shim: event queue full, dropping {ev:?}");
                return;
            }
            q.optional += 1;
        }
        q.events.push_back(ev);
        drop(q);
        self.shared.changed.notify_one();
    }

    /// Deliver what is queued (events that must be delivered are retried for [`CLOSE_GRACE`])
    /// and stop.
    pub fn close(&self) {
        if let Some(mut q) = self.shared.lock() {
            q.closed_at = Some(Instant::now());
        }
        self.shared.changed.notify_one();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn run(target: &Target, reaper: &Arc<Reaper>, shared: &Shared) {
    // The connection lives only while events keep coming.
    let mut client: Option<Connection> = None;
    while let Some(ev) = shared.next(IDLE, || client = None) {
        deliver(target, reaper, shared, &mut client, &ev);
    }
}

/// Send one event, retrying as its kind allows.
fn deliver(
    target: &Target,
    reaper: &Arc<Reaper>,
    shared: &Shared,
    client: &mut Option<Connection>,
    ev: &Event,
) {
    let mut delay = Duration::from_millis(50);
    let mut attempt: u32 = 0;
    loop {
        let result = match &target.ttrpc_address {
            Some(addr) => forward(client, addr, &target.namespace, ev),
            None => publish_binary(target, reaper, ev),
        };
        let Err(e) = result else { return };
        *client = None;
        attempt += 1;
        // Logged on the first failures and then seldom: containerd may be down for long.
        if attempt <= ATTEMPTS || attempt.is_power_of_two() {
            log_line!(
                "skiff-shim: publishing {} (attempt {attempt}): {e}",
                ev.topic
            );
        }
        let keep_trying = if ev.must_deliver() {
            !shared.give_up()
        } else {
            attempt < ATTEMPTS
        };
        if !keep_trying {
            log_line!(
                "skiff-shim: dropped event {} after {attempt} attempts",
                ev.topic
            );
            return;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(MAX_DELAY);
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
    let mut cmd = Command::new(binary);
    cmd.args([
        "--address",
        &target.grpc_address,
        "publish",
        "--topic",
        ev.topic,
    ])
    .args(["--namespace", &target.namespace])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child =
        crate::reaper::spawn(&mut cmd).map_err(|e| format!("running {}: {e}", binary.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::Path;

    use skiff_proto::event_types::task::{TaskDelete, TaskExit, TaskPaused};

    use crate::wire::Frames;

    /// Read one request frame from `s`; `None` when the peer closed.
    fn read_request(s: &mut UnixStream, frames: &mut Frames) -> Option<(u32, Request)> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some((h, body)) = frames.next_frame().unwrap() {
                return Some((h.stream_id, Request::parse_from_bytes(&body).unwrap()));
            }
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            frames.extend(&buf[..n]);
        }
    }

    fn topic_of(req: &Request) -> String {
        let fwd = ForwardRequest::parse_from_bytes(&req.payload).unwrap();
        fwd.envelope.topic.clone()
    }

    /// A containerd that acknowledges every event until it has seen `want`; with `crash`, the
    /// first connection takes one event and is closed unanswered (containerd killed mid-call).
    fn fake_containerd(path: &Path, want: usize, crash: bool) -> Vec<String> {
        let mut seen = Vec::new();
        let mut crash = crash;
        while seen.len() < want {
            let listener = UnixListener::bind(path).unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut frames = Frames::default();
            while let Some((id, req)) = read_request(&mut s, &mut frames) {
                if crash {
                    crash = false;
                    break;
                }
                seen.push(topic_of(&req));
                let mut out = Vec::new();
                let res = Response::new().write_to_bytes().unwrap();
                put_frame(&mut out, id, TYPE_RESPONSE, &res);
                s.write_all(&out).unwrap();
                if seen.len() == want {
                    break;
                }
            }
            drop(s);
            drop(listener);
            let _ = std::fs::remove_file(path);
            // Down for longer than the attempts an optional event gets.
            std::thread::sleep(Duration::from_secs(2));
        }
        seen
    }

    /// [`fake_containerd`] on a thread; fails the test if the events do not all come in time.
    fn events_seen(path: &Path, want: usize, crash: bool) -> Vec<String> {
        let path = path.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(fake_containerd(&path, want, crash)));
        rx.recv_timeout(Duration::from_secs(30))
            .expect("containerd did not get every event")
    }

    fn publisher(path: &Path) -> Publisher {
        let target = Target {
            ttrpc_address: Some(format!("unix://{}", path.display())),
            publish_binary: None,
            grpc_address: String::new(),
            namespace: "ns".into(),
        };
        Publisher::start(target, Arc::new(Reaper::default())).unwrap()
    }

    fn exit(id: &str) -> TaskExit {
        let mut e = TaskExit::new();
        e.container_id = id.into();
        e
    }

    #[test]
    fn exits_and_deletes_wait_for_containerd_and_keep_their_order() {
        let dir = std::env::temp_dir().join(format!("skiff-events-{}-a", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let _ = std::fs::remove_file(&path);
        let p = publisher(&path);
        // containerd is down: the exit must wait however long that lasts (more than the
        // attempts an optional event gets), and a flood of other events must not push it out.
        p.publish(topics::TASK_EXIT_EVENT_TOPIC, &exit("a"));
        for _ in 0..OPTIONAL_QUEUE + 200 {
            p.publish(topics::TASK_PAUSED_EVENT_TOPIC, &TaskPaused::new());
        }
        p.publish(topics::TASK_DELETE_EVENT_TOPIC, &TaskDelete::new());
        p.publish(topics::TASK_EXIT_EVENT_TOPIC, &exit("b"));
        std::thread::sleep(Duration::from_secs(3));
        let seen = events_seen(&path, OPTIONAL_QUEUE + 3, false);
        p.close();
        assert_eq!(seen[0], topics::TASK_EXIT_EVENT_TOPIC);
        assert!(seen[1..=OPTIONAL_QUEUE]
            .iter()
            .all(|t| t == topics::TASK_PAUSED_EVENT_TOPIC));
        assert_eq!(
            &seen[OPTIONAL_QUEUE + 1..],
            [
                topics::TASK_DELETE_EVENT_TOPIC,
                topics::TASK_EXIT_EVENT_TOPIC
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_exit_unanswered_by_a_crashed_containerd_reaches_the_next_one() {
        let dir = std::env::temp_dir().join(format!("skiff-events-{}-b", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let _ = std::fs::remove_file(&path);
        let p = publisher(&path);
        p.publish(topics::TASK_EXIT_EVENT_TOPIC, &exit("a"));
        p.publish(topics::TASK_DELETE_EVENT_TOPIC, &TaskDelete::new());
        let seen = events_seen(&path, 2, true);
        p.close();
        assert_eq!(
            seen,
            [
                topics::TASK_EXIT_EVENT_TOPIC,
                topics::TASK_DELETE_EVENT_TOPIC
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
