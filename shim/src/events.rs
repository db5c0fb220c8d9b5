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
//! Transport: `Events.Forward` over ttrpc at `$TTRPC_ADDRESS` (reconnecting on failure), else the
//! `-publish-binary` (`containerd --address A publish --topic T --namespace NS`, the event `Any` on
//! stdin). Each event is retried with back-off a few times and then dropped with a log line. The
//! queue is bounded so a stuck containerd never blocks the shim: when it is full the event is dropped
//! and logged.

use std::io::Write;
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
use skiff_proto::protos::shim_sync::{Client, EventsClient};
use skiff_proto::ttrpc::context;

use crate::reaper::Reaper;

/// Events waiting to be published.
const QUEUE: usize = 256;
/// How long an idle connection to containerd is kept.
const IDLE: Duration = Duration::from_secs(2);
/// Attempts per event.
const ATTEMPTS: u32 = 5;

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
            .stack_size(256 * 1024)
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
    let mut client: Option<EventsClient> = None;
    loop {
        // The connection (and its two ttrpc threads) lives only while events keep coming.
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

fn forward(
    client: &mut Option<EventsClient>,
    addr: &str,
    namespace: &str,
    ev: &Event,
) -> Result<(), String> {
    if client.is_none() {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("unix://{addr}")
        };
        let c = Client::connect(&url).map_err(|e| format!("connecting to {url}: {e}"))?;
        *client = Some(EventsClient::new(c));
    }
    let Some(c) = client.as_ref() else {
        return Err("no client".into());
    };
    let mut envelope = Envelope::new();
    envelope.timestamp = Some(timestamp(ev.at)).into();
    envelope.namespace = namespace.to_string();
    envelope.topic = ev.topic.to_string();
    envelope.event = Some(ev.event.clone()).into();
    let mut req = ForwardRequest::new();
    req.envelope = Some(envelope).into();
    c.forward(context::with_timeout(5_000_000_000), &req)
        .map(|_| ())
        .map_err(|e| e.to_string())
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
