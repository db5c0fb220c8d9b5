//! The Task service: containerd's calls, served from one table of containers.
//!
//! Locks: the table lock is only ever held for a few reads and writes, never across a runtime
//! command or a wait, so a runtime call that hangs for one container never stops `State`, `Kill`
//! or `Wait` for another (or for the same one). The calls that run the runtime for a container
//! (`Create`, `Start`, `Delete`, `Pause`, `Resume`, `Update`) hold that container's `op` lock, so
//! they run one at a time per container; the server runs them (and `Kill`) on worker threads
//! ([`Gate::offload`]), never on its serving thread.
//!
//! Exits arrive through a [`Subscription`] taken before the server started. An exit can come
//! before its pid is recorded (a process that dies as soon as `create` or `exec` made it): while a
//! launch is in progress, exits of unknown pids are buffered ([`Launches`]) and the launcher takes
//! its own when it records the pid. An init that exits while `runtime start` runs is held until
//! `Start` published `TaskStart`. The event order is documented in [`crate::events`].
//!
//! `Wait` for a running process is parked by the server until [`Gate::ready`] says its answer is
//! there, and every exit or delete wakes the server.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use skiff_proto::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ProcessInfo, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use skiff_proto::convert::{exit_status, timestamp, to_any};
use skiff_proto::event_types::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use skiff_proto::options::{OptionsError, RuntimeOptions};
use skiff_proto::protobuf::Message;
use skiff_proto::protos::shim::oci::ProcessDetails;
use skiff_proto::protos::shim_sync::Task;
use skiff_proto::protos::topics;
use skiff_proto::ttrpc::{self, Code, TtrpcContext};

use crate::cgroup::Cgroup;
use crate::events::Publisher;
use crate::io::{ConsoleSocket, IoError, Owner, ProcessIo, StdioPaths};
use crate::ioloop::IoLoop;
use crate::mount::{mount_rootfs, unmount_rootfs, MountError};
use crate::oom::OomWatcher;
use crate::reaper::{Exit, Reaper, Subscription};
use crate::runtime::{ChildStdio, Runtime, RuntimeError};
use crate::server::{Gate, Waker};
use crate::task::{Container, ProcState, Process, QueuedExit};

/// How long an exit waits for the process's output to be written before it is reported.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How [`Service::drain_exits`] treats an exit whose output is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// On the caller's thread (the exits loop): hand the rest of the queue to a thread of its own.
    Inline,
    /// On that thread: wait for the output (at most [`OUTPUT_GRACE`]), then publish.
    Blocking,
    /// No thread could be had: publish without waiting.
    NoWait,
}
/// The most exits of unknown pids kept while launches are in progress.
const EARLY_EXITS: usize = 4096;

/// The file in the bundle that records the runtime options, for `delete` after a dead shim.
pub const OPTIONS_FILE: &str = "skiff-shim.json";

/// Why a Task call failed; each variant maps to one ttrpc code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("container {0}: not found")]
    NoContainer(String),
    #[error("container {id}: exec {exec_id}: not found")]
    NoProcess { id: String, exec_id: String },
    #[error("container {0}: already exists")]
    ContainerExists(String),
    #[error("container {id}: exec {exec_id}: already exists")]
    ExecExists { id: String, exec_id: String },
    #[error("container {id}: cannot {action} a process that is {state:?}")]
    State {
        id: String,
        action: &'static str,
        state: ProcState,
    },
    #[error("container {id}: cannot delete while execs are running")]
    ExecsRunning { id: String },
    #[error("container {id}: process already finished")]
    Finished { id: String },
    #[error("{0} is not implemented")]
    NotImplemented(&'static str),
    #[error("missing {0} in the request")]
    Missing(&'static str),
    #[error("the exec's process spec: {0}")]
    ProcessSpec(serde_json::Error),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the shim's state is poisoned")]
    Poisoned,
}

impl ServiceError {
    fn code(&self) -> Code {
        match self {
            ServiceError::NoContainer(_)
            | ServiceError::NoProcess { .. }
            | ServiceError::Finished { .. } => Code::NOT_FOUND,
            ServiceError::ContainerExists(_) | ServiceError::ExecExists { .. } => {
                Code::ALREADY_EXISTS
            }
            ServiceError::State { .. } | ServiceError::ExecsRunning { .. } => {
                Code::FAILED_PRECONDITION
            }
            ServiceError::NotImplemented(_) => Code::UNIMPLEMENTED,
            ServiceError::Missing(_) | ServiceError::Options(_) | ServiceError::ProcessSpec(_) => {
                Code::INVALID_ARGUMENT
            }
            ServiceError::Runtime(_) => Code::UNKNOWN,
            ServiceError::Io(_)
            | ServiceError::Mount(_)
            | ServiceError::File { .. }
            | ServiceError::Poisoned => Code::INTERNAL,
        }
    }
}

impl From<ServiceError> for ttrpc::Error {
    fn from(e: ServiceError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

type Result<T> = std::result::Result<T, ServiceError>;

/// A failed `runtime kill` as containerd expects it: NotFound when the process is already gone
/// (as containerd's runc shim answers), so that `task.Delete(WithProcessKill)` after an exit, which
/// is how CRI handles every container exit, goes on to delete the task.
fn kill_error(id: &str, e: RuntimeError) -> ServiceError {
    if e.is_already_finished() || e.is_not_found() {
        ServiceError::Finished { id: id.to_string() }
    } else {
        ServiceError::Runtime(e)
    }
}

/// An exec's process spec with `terminal` set from the request, as containerd's runc shim does:
/// the request's IO decides whether the runtime gets a console socket, and the runtime refuses a
/// console socket for a process without a terminal (and the reverse).
fn with_terminal(spec: &[u8], terminal: bool) -> Result<Vec<u8>> {
    let mut process: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(spec).map_err(ServiceError::ProcessSpec)?;
    if process.get("terminal").and_then(serde_json::Value::as_bool) == Some(terminal) {
        return Ok(spec.to_vec());
    }
    process.insert("terminal".into(), terminal.into());
    serde_json::to_vec(&process).map_err(ServiceError::ProcessSpec)
}

/// Whether a container's other processes must be killed when its init exits: unless the config
/// gives it a pid namespace of its own (which dies with the init), they would live on
/// (containerd's runc shim decides the same way, and also when the config cannot be read).
fn kills_all_on_exit(config_json: &str) -> bool {
    let Ok(config) = serde_json::from_str::<serde_json::Value>(config_json) else {
        return true;
    };
    let own_pid_ns = config["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|ns| ns["type"] == "pid" && ns["path"].as_str().is_none_or(str::is_empty));
    !own_pid_ns
}

/// On an init's exit: `runtime kill --all <id> SIGKILL` when the container shares a pid namespace.
fn kill_all_without_own_pid_namespace(runtime: &Runtime, id: &str, bundle: &Path) {
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap_or_default();
    if !kills_all_on_exit(&config) {
        return;
    }
    let signal = libc::SIGKILL.to_string();
    if let Err(e) = runtime.run(&["kill", "--all", id, &signal]) {
        if !(e.is_already_finished() || e.is_not_found()) {
            log_line!("skiff-shim: {id}: killing what is left after the init: {e}");
        }
    }
}

/// A `runtime kill` that failed: when the runtime no longer has the container's record (removed
/// outside the shim: a `delete` behind containerd's back that left processes, a wiped state
/// directory) while the shim has not yet reaped the init, the shim signals the processes itself,
/// so that containerd can still stop the task. The init's pid cannot have been reused: it is the
/// shim's unreaped child. Anything else is [`kill_error`].
fn kill_unrecorded(c: &Container, signal: i32, all: bool, e: RuntimeError) -> Result<()> {
    if !e.is_not_found() || !c.init.state.is_alive() {
        return Err(kill_error(&c.id, e));
    }
    // The init first: once the cgroup's processes are signalled it may die and be reaped, and a
    // signal to its pid after that would be refused (or reach a reused pid).
    crate::reaper::signal(c.init.pid, signal)
        .map_err(|_| ServiceError::Finished { id: c.id.clone() })?;
    if all {
        for pid in c.cgroup.as_ref().map(Cgroup::pids).unwrap_or_default() {
            if pid != c.init.pid {
                let _ = crate::reaper::signal(pid, signal);
            }
        }
    }
    Ok(())
}

/// What the service needs from `main`.
#[derive(Debug)]
pub struct Config {
    pub namespace: String,
    /// Where `skiff` is looked for first: the shim binary's directory.
    pub shim_dir: Option<PathBuf>,
    /// The shim runs from a sealed view of its binary, so it may serve execs of skiff's
    /// containers itself (`direct`).
    pub direct_exec: bool,
    pub publisher: Arc<Publisher>,
    pub oom: Arc<OomWatcher>,
    pub reaper: Arc<Reaper>,
    /// Copies the processes' stdio.
    pub io: Arc<IoLoop>,
    /// Told whenever a parked `Wait` may be answerable (an exit, a delete).
    pub waker: Arc<Waker>,
    /// Told when `Shutdown` finds no container left.
    pub shutdown: SyncSender<()>,
}

/// How an exec's process spec reaches whatever starts it.
enum ExecSpec {
    /// To the shim's own exec (`direct`), in memory.
    Direct(Vec<u8>),
    /// To the runtime binary's `exec --process`, as a file in the bundle.
    File(PathBuf),
}

/// The launches in progress (a runtime `create` or `exec` whose pid is not recorded yet).
/// Lock order: the table, then this.
#[derive(Debug, Default)]
struct Launches {
    /// Ids being created: a second `Create` of one is refused.
    creating: HashSet<String>,
    /// How many launches are in progress; exits of unknown pids are kept while it is not 0.
    active: usize,
    /// Exits of pids no process was recorded with (yet).
    early: Vec<Exit>,
}

/// The state shared by request threads and the exit loop.
#[derive(Debug)]
struct Shared {
    config: Config,
    containers: Mutex<HashMap<String, Container>>,
    launches: Mutex<Launches>,
    /// Notified after every recorded exit (for `Wait`).
    exited: Condvar,
}

/// The Task service.
#[derive(Debug, Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

fn file_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError {
    let path = path.to_path_buf();
    move |source| ServiceError::File { what, path, source }
}

fn read_pid(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path).map_err(file_err("reading pid file", path))?;
    text.trim().parse().map_err(|_| ServiceError::File {
        what: "parsing pid file",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, text.clone()),
    })
}

/// The default runtime binary: `skiff` beside the shim, else `skiff` from PATH.
pub fn default_binary(shim_dir: Option<&Path>) -> PathBuf {
    match shim_dir.map(|d| d.join("skiff")) {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("skiff"),
    }
}

/// The runtime's `--root`: `<Root or /run/containerd/skiff>/<namespace>`.
pub fn runtime_root(opts: &RuntimeOptions, namespace: &str) -> PathBuf {
    let base = opts.root.as_deref().unwrap_or("/run/containerd/skiff");
    Path::new(base).join(namespace)
}

impl Service {
    /// A service with no containers; start [`Service::run_exits`] with a subscription taken before.
    pub fn new(config: Config) -> Service {
        Service {
            shared: Arc::new(Shared {
                config,
                containers: Mutex::new(HashMap::new()),
                launches: Mutex::new(Launches::default()),
                exited: Condvar::new(),
            }),
        }
    }

    fn table(&self) -> Result<MutexGuard<'_, HashMap<String, Container>>> {
        self.shared
            .containers
            .lock()
            .map_err(|_| ServiceError::Poisoned)
    }

    fn launches(&self) -> Result<MutexGuard<'_, Launches>> {
        self.shared
            .launches
            .lock()
            .map_err(|_| ServiceError::Poisoned)
    }

    /// A launch begins: from now on exits of unknown pids are kept. `create` reserves `id`.
    fn begin_launch(&self, create: Option<&str>) -> Result<()> {
        let table = self.table()?;
        let mut l = self.launches()?;
        if let Some(id) = create {
            if table.contains_key(id) || !l.creating.insert(id.to_string()) {
                return Err(ServiceError::ContainerExists(id.to_string()));
            }
        }
        l.active += 1;
        Ok(())
    }

    /// A launch ended; call with the table locked, right after recording `pid`, so that no exit
    /// falls between. Returns the exit of `pid` if it came first.
    fn end_launch(&self, create: Option<&str>, pid: Option<i32>) -> Option<Exit> {
        let mut l = self.launches().ok()?;
        if let Some(id) = create {
            l.creating.remove(id);
        }
        l.active = l.active.saturating_sub(1);
        let exit = pid.and_then(|pid| {
            let i = l.early.iter().position(|e| e.pid == pid)?;
            Some(l.early.swap_remove(i))
        });
        if l.active == 0 {
            l.early = Vec::new();
        }
        exit
    }

    /// The `op` lock of container `id` (see the module doc).
    fn op_lock(&self, id: &str) -> Result<Arc<Mutex<()>>> {
        let table = self.table()?;
        table
            .get(id)
            .map(|c| c.op.clone())
            .ok_or_else(|| ServiceError::NoContainer(id.to_string()))
    }

    fn publisher(&self) -> &Publisher {
        &self.shared.config.publisher
    }

    fn runtime_for(&self, opts: &RuntimeOptions, bundle: &Path) -> Runtime {
        let cfg = &self.shared.config;
        let mut runtime = Runtime {
            binary: opts
                .binary_name
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| default_binary(cfg.shim_dir.as_deref())),
            root: runtime_root(opts, &cfg.namespace),
            systemd_cgroup: opts.systemd_cgroup,
            log: bundle.join("log.json"),
            bundle: bundle.to_path_buf(),
            reaper: cfg.reaper.clone(),
            in_process: false,
        };
        // Execs are served by the shim (`direct`) and the lifecycle calls run in-process where the
        // shim is sealed and the runtime is the skiff it links.
        runtime.in_process = cfg.direct_exec
            && crate::direct::serves(&runtime, &default_binary(cfg.shim_dir.as_deref()));
        runtime
    }

    /// Run `runtime create`/`exec` with the process's stdio; returns the new pid and its IO. If
    /// the runtime succeeded but the shim then fails (console, pid file), `undo` is called with
    /// the pid if known, to take back what the runtime made.
    fn launch(
        &self,
        runtime: &Runtime,
        mut args: Vec<OsString>,
        id: &str,
        pid_file: &Path,
        stdio: &StdioPaths,
        undo: &dyn Fn(Option<i32>),
    ) -> Result<(i32, ProcessIo)> {
        let owner = Owner {
            container_id: id.to_string(),
            namespace: self.shared.config.namespace.clone(),
        };
        let _ = std::fs::remove_file(pid_file);
        args.push("--pid-file".into());
        args.push(pid_file.into());
        if stdio.terminal {
            let console = ConsoleSocket::new()?;
            args.push("--console-socket".into());
            args.push(console.path().into());
            args.push(id.into());
            runtime.spawn(&args, ChildStdio::default())?.wait(runtime)?;
            let opened = console.receive().map_err(ServiceError::from).and_then(|m| {
                ProcessIo::terminal(stdio, m, &self.shared.config.io).map_err(Into::into)
            });
            let launched = opened.and_then(|io| Ok((read_pid(pid_file)?, io)));
            if launched.is_err() {
                undo(read_pid(pid_file).ok());
            }
            launched
        } else {
            args.push(id.into());
            let (child, mut io) = ProcessIo::pipes(stdio, &owner, &self.shared.config.io)?;
            // On failure `io` is dropped uncopied: the runtime's error is returned, not written
            // into the process's streams.
            runtime
                .spawn(&args, child)
                .and_then(|running| running.wait(runtime))?;
            io.start_copying();
            match read_pid(pid_file) {
                Ok(pid) => Ok((pid, io)),
                Err(e) => {
                    io.shutdown();
                    undo(None);
                    Err(e)
                }
            }
        }
    }

    /// [`Service::launch`] of an exec served by the shim (`direct`): the same stdio, console and
    /// undo, without the runtime binary.
    fn launch_direct(
        &self,
        runtime: &Runtime,
        id: &str,
        spec: &[u8],
        stdio: &StdioPaths,
        undo: &dyn Fn(Option<i32>),
    ) -> Result<(i32, ProcessIo)> {
        if stdio.terminal {
            let console = ConsoleSocket::new()?;
            let pid = crate::direct::exec(
                runtime,
                id,
                spec,
                ChildStdio::default(),
                Some(console.path()),
            )?;
            let opened = console.receive().map_err(ServiceError::from).and_then(|m| {
                ProcessIo::terminal(stdio, m, &self.shared.config.io).map_err(Into::into)
            });
            if opened.is_err() {
                undo(Some(pid));
            }
            opened.map(|io| (pid, io))
        } else {
            let owner = Owner {
                container_id: id.to_string(),
                namespace: self.shared.config.namespace.clone(),
            };
            let (child, mut io) = ProcessIo::pipes(stdio, &owner, &self.shared.config.io)?;
            // On failure `io` is dropped uncopied, as in `launch`.
            let pid = crate::direct::exec(runtime, id, spec, child, None)?;
            io.start_copying();
            Ok((pid, io))
        }
    }

    /// The exit loop: record every exit of a known process, in order, and publish `TaskExit`.
    pub fn run_exits(&self, sub: Subscription) {
        while let Some(exit) = sub.recv() {
            self.handle_exit(exit);
        }
    }

    fn handle_exit(&self, exit: Exit) {
        let Exit {
            pid,
            status: raw,
            at,
        } = exit;
        let Ok(mut table) = self.table() else { return };
        let mut found: Option<(String, String)> = None;
        // The runtime and container whose other processes die with the init (never run with the
        // table locked).
        let mut kill_rest: Option<(Runtime, String, PathBuf)> = None;
        for c in table.values_mut() {
            let unreaped = !matches!(c.init.state, ProcState::Stopped { .. } | ProcState::Exiting);
            if c.init.pid == pid && unreaped {
                if c.init.state == ProcState::Starting {
                    // Reported once Start has published TaskStart.
                    c.pending_init_exit = Some((raw, at));
                    return;
                }
                kill_rest = Some((c.runtime.clone(), c.id.clone(), c.bundle.clone()));
                if c.has_live_execs() {
                    // The init's exit is reported after its execs'; they die with its pid
                    // namespace, and are killed here when they share the host's.
                    c.pending_init_exit = Some((raw, at));
                    for e in c.execs.values().filter(|e| e.state.is_alive()) {
                        let _ = crate::reaper::signal(e.pid, libc::SIGKILL);
                    }
                    break;
                }
                c.init.state = ProcState::Exiting;
                found = Some((c.id.clone(), String::new()));
                break;
            }
            if let Some(e) = c
                .execs
                .values_mut()
                .find(|e| e.pid == pid && e.state.is_alive())
            {
                e.state = ProcState::Exiting;
                found = Some((c.id.clone(), e.exec_id.clone()));
                break;
            }
        }
        if found.is_none() && kill_rest.is_none() {
            // Perhaps the pid of a launch that has not recorded it yet.
            if let Ok(mut l) = self.launches() {
                if l.active > 0 && l.early.len() < EARLY_EXITS {
                    l.early.push(exit);
                }
            }
            return;
        }
        drop(table);
        if let Some((runtime, id, bundle)) = kill_rest {
            kill_all_without_own_pid_namespace(&runtime, &id, &bundle);
        }
        if let Some((id, exec_id)) = found {
            self.report(id, exec_id, raw, at);
        }
    }

    /// Report the exit of a process marked `Exiting` once its output is written. Exits of one
    /// container are published in the order they were reaped; a process still writing its
    /// output holds back only its own container's later exits, never other containers'.
    fn report(&self, id: String, exec_id: String, raw: i32, at: SystemTime) {
        let start = {
            let Ok(mut table) = self.table() else { return };
            let Some(c) = table.get_mut(&id) else { return };
            c.exit_queue.push_back(QueuedExit { exec_id, raw, at });
            !std::mem::replace(&mut c.draining, true)
        };
        if start {
            self.drain_exits(&id, Drain::Inline);
        }
    }

    /// Publishes the queued exits of container `id` in order (see [`Drain`]).
    fn drain_exits(&self, id: &str, mode: Drain) {
        loop {
            let (next, waiter) = {
                let Ok(mut table) = self.table() else { return };
                let Some(c) = table.get_mut(id) else { return };
                let Some(next) = c.exit_queue.front().cloned() else {
                    c.draining = false;
                    return;
                };
                let waiter = c
                    .process(&next.exec_id)
                    .and_then(|p| p.io.as_ref().map(ProcessIo::output_waiter))
                    .filter(|w| !w.is_done() && mode != Drain::NoWait);
                if waiter.is_some() && mode == Drain::Inline {
                    drop(table);
                    let service = self.clone();
                    let tid = id.to_string();
                    let spawned = std::thread::Builder::new()
                        .name("exit".into())
                        .stack_size(128 * 1024)
                        .spawn(move || service.drain_exits(&tid, Drain::Blocking));
                    if let Err(e) = spawned {
                        log_line!(
                            "skiff-shim: exit in {id}: no thread ({e}), not waiting for output"
                        );
                        self.drain_exits(id, Drain::NoWait);
                    }
                    return;
                }
                c.exit_queue.pop_front();
                (next, waiter)
            };
            if let Some(w) = waiter {
                w.wait(OUTPUT_GRACE);
            }
            self.finish_process(id, &next.exec_id, next.raw, next.at);
        }
    }

    /// Mark a process stopped (its output is written), then publish its `TaskExit` (after
    /// `TaskOOM` for an init killed by the OOM killer). An exec's exit may release its init's.
    fn finish_process(&self, id: &str, exec_id: &str, raw: i32, at: SystemTime) {
        if exec_id.is_empty() {
            self.shared.config.oom.check(id);
        }
        let Ok(mut table) = self.table() else { return };
        let Some(c) = table.get_mut(id) else { return };
        let Some(p) = c.process_mut(exec_id) else {
            return;
        };
        let status = exit_status(raw);
        p.state = ProcState::Stopped { status, at };
        let mut ev = TaskExit::new();
        ev.container_id = id.to_string();
        ev.id = if exec_id.is_empty() { id } else { exec_id }.to_string();
        ev.pid = p.pid as u32;
        ev.exit_status = status;
        ev.exited_at = Some(timestamp(at)).into();
        self.publisher().publish(topics::TASK_EXIT_EVENT_TOPIC, &ev);
        // An exec exit may release a held-back init exit.
        let released = match (exec_id.is_empty(), c.has_live_execs()) {
            (false, false) => c.pending_init_exit.take(),
            _ => None,
        };
        if released.is_some() {
            c.init.state = ProcState::Exiting;
        }
        drop(table);
        self.exits_changed();
        if let Some((status, at)) = released {
            self.report(id.to_string(), String::new(), status, at);
        }
    }

    /// An exec launch that failed no longer holds back its init's exit: report that exit if it
    /// came meanwhile and no other exec is left unreported.
    fn release_init_exit(&self, mut table: MutexGuard<'_, HashMap<String, Container>>, id: &str) {
        let Some(c) = table.get_mut(id) else { return };
        if c.has_live_execs() || matches!(c.init.state, ProcState::Starting) {
            return;
        }
        let Some((status, at)) = c.pending_init_exit.take() else {
            return;
        };
        c.init.state = ProcState::Exiting;
        drop(table);
        self.report(id.to_string(), String::new(), status, at);
    }

    /// Wake whatever waits for an exit: blocked `Wait` calls and the server's parked ones.
    fn exits_changed(&self) {
        self.shared.exited.notify_all();
        self.shared.config.waker.wake();
    }

    /// Whether `Wait` for this process would return at once (it exited, or it does not exist).
    fn wait_ready(&self, req: &WaitRequest) -> bool {
        let Ok(table) = self.table() else {
            return true;
        };
        let Some(c) = table.get(&req.id) else {
            return true;
        };
        c.process(&req.exec_id)
            .is_none_or(|p| p.state.exit().is_some())
    }

    fn do_create(&self, req: &CreateTaskRequest) -> Result<CreateTaskResponse> {
        self.begin_launch(Some(&req.id))?;
        match self.create_container(req) {
            Ok((container, resp)) => {
                let pid = container.init.pid;
                let mut table = self.table()?;
                table.insert(req.id.clone(), container);
                let early = self.end_launch(Some(&req.id), Some(pid));
                // Under the table lock: before any TaskExit of this container.
                self.publish_create(req, pid);
                drop(table);
                if let Some(exit) = early {
                    self.handle_exit(exit);
                }
                Ok(resp)
            }
            Err(e) => {
                self.end_launch(Some(&req.id), None);
                Err(e)
            }
        }
    }

    /// Everything `Create` does outside the table: the options record, the rootfs, the runtime.
    fn create_container(&self, req: &CreateTaskRequest) -> Result<(Container, CreateTaskResponse)> {
        let bundle = PathBuf::from(&req.bundle);
        let opts = RuntimeOptions::from_any(req.options.as_ref())?;
        let runtime = self.runtime_for(&opts, &bundle);
        let record = serde_json::json!({
            "binary": runtime.binary,
            "root": runtime.root,
            "systemd_cgroup": runtime.systemd_cgroup,
        });
        let options_file = bundle.join(OPTIONS_FILE);
        std::fs::write(&options_file, record.to_string())
            .map_err(file_err("writing", &options_file))?;
        let rootfs_mounted = mount_rootfs(&bundle, &req.rootfs, &self.shared.config.reaper)?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let args = vec!["create".into(), "--bundle".into(), bundle.clone().into()];
        let pid_file = bundle.join("init.pid");
        // The runtime made the container but the shim cannot use it: remove it.
        let undo = |_: Option<i32>| {
            if let Err(e) = runtime.run(&["delete", "--force", &req.id]) {
                log_line!("skiff-shim: {}: removing the failed container: {e}", req.id);
            }
        };
        let (pid, io) = match self.launch(&runtime, args, &req.id, &pid_file, &stdio, &undo) {
            Ok(r) => r,
            Err(e) => {
                if rootfs_mounted {
                    unmount_rootfs(&bundle);
                }
                return Err(e);
            }
        };
        let cgroup = Cgroup::of_pid(pid);
        if let Some(cg) = &cgroup {
            if let Err(e) = self.shared.config.oom.add(&req.id, cg.clone()) {
                log_line!("skiff-shim: {}: not watching for OOM: {e}", req.id);
            }
        }
        let mut init = Process::new("", stdio);
        init.pid = pid;
        init.io = Some(io);
        let container = Container {
            id: req.id.clone(),
            bundle,
            runtime,
            init,
            execs: HashMap::new(),
            cgroup,
            rootfs_mounted,
            pending_init_exit: None,
            op: Arc::new(Mutex::new(())),
            exit_queue: Default::default(),
            draining: false,
        };
        let mut resp = CreateTaskResponse::new();
        resp.pid = pid as u32;
        Ok((container, resp))
    }

    fn publish_create(&self, req: &CreateTaskRequest, pid: i32) {
        let mut ev = TaskCreate::new();
        ev.container_id = req.id.clone();
        ev.bundle = req.bundle.clone();
        ev.rootfs = req.rootfs.clone();
        let mut io = TaskIO::new();
        io.stdin = req.stdin.clone();
        io.stdout = req.stdout.clone();
        io.stderr = req.stderr.clone();
        io.terminal = req.terminal;
        ev.io = Some(io).into();
        ev.checkpoint = req.checkpoint.clone();
        ev.pid = pid as u32;
        self.publisher()
            .publish(topics::TASK_CREATE_EVENT_TOPIC, &ev);
    }

    fn do_start(&self, req: &StartRequest) -> Result<StartResponse> {
        let op = self.op_lock(&req.id)?;
        let _serial = op.lock().map_err(|_| ServiceError::Poisoned)?;
        if req.exec_id.is_empty() {
            self.start_init(&req.id)
        } else {
            self.start_exec(&req.id, &req.exec_id)
        }
    }

    fn start_init(&self, id: &str) -> Result<StartResponse> {
        let runtime = {
            let mut table = self.table()?;
            let c = table
                .get_mut(id)
                .ok_or_else(|| ServiceError::NoContainer(id.to_string()))?;
            if !c.init.state.can_start() {
                return Err(ServiceError::State {
                    id: id.to_string(),
                    action: "start",
                    state: c.init.state,
                });
            }
            c.init.state = ProcState::Starting;
            c.runtime.clone()
        };
        let started = runtime.run(&["start", id]);
        let mut table = self.table()?;
        let c = table
            .get_mut(id)
            .ok_or_else(|| ServiceError::NoContainer(id.to_string()))?;
        let held = c.pending_init_exit.take().map(|(status, at)| Exit {
            pid: c.init.pid,
            status,
            at,
        });
        let mut resp = StartResponse::new();
        resp.pid = c.init.pid as u32;
        c.init.state = match started {
            Ok(()) => ProcState::Running,
            Err(_) => ProcState::Created,
        };
        if started.is_ok() {
            let mut ev = TaskStart::new();
            ev.container_id = id.to_string();
            ev.pid = resp.pid;
            self.publisher()
                .publish(topics::TASK_START_EVENT_TOPIC, &ev);
        }
        drop(table);
        // An exit that came while the runtime started it, reported now, after TaskStart.
        if let Some(exit) = held {
            self.handle_exit(exit);
        }
        started?;
        Ok(resp)
    }

    fn start_exec(&self, id: &str, exec_id: &str) -> Result<StartResponse> {
        let (runtime, spec, stdio) = {
            let mut table = self.table()?;
            let c = table
                .get_mut(id)
                .ok_or_else(|| ServiceError::NoContainer(id.to_string()))?;
            if !c.init.state.is_alive() {
                return Err(ServiceError::State {
                    id: id.to_string(),
                    action: "exec in",
                    state: c.init.state,
                });
            }
            // The same criterion as the in-process lifecycle calls (`runtime_for`).
            let direct = c.runtime.in_process;
            let (runtime, bundle) = (c.runtime.clone(), c.bundle.clone());
            let exec = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| ServiceError::NoProcess {
                    id: id.to_string(),
                    exec_id: exec_id.to_string(),
                })?;
            if !exec.state.can_start() {
                return Err(ServiceError::State {
                    id: id.to_string(),
                    action: "start",
                    state: exec.state,
                });
            }
            let spec = if direct {
                ExecSpec::Direct(exec.spec.clone())
            } else {
                let spec_file = bundle.join(format!("exec-{exec_id}.json"));
                std::fs::write(&spec_file, &exec.spec).map_err(file_err("writing", &spec_file))?;
                ExecSpec::File(spec_file)
            };
            // From now on an exit of the init waits for this exec (`has_live_execs`): the
            // process may exist, and exit, before its pid is recorded below.
            exec.state = ProcState::Starting;
            (runtime, spec, exec.stdio.clone())
        };
        // The exec runs but the shim cannot serve it: kill it.
        let undo = |pid: Option<i32>| {
            if let Some(pid) = pid {
                let _ = crate::reaper::signal(pid, libc::SIGKILL);
            }
        };
        self.begin_launch(None)?;
        let launched = match spec {
            ExecSpec::Direct(spec) => self.launch_direct(&runtime, id, &spec, &stdio, &undo),
            ExecSpec::File(spec_file) => {
                let pid_file = spec_file.with_file_name(format!("exec-{exec_id}.pid"));
                let args = vec![
                    "exec".into(),
                    "--process".into(),
                    spec_file.clone().into(),
                    "--detach".into(),
                ];
                let launched = self.launch(&runtime, args, id, &pid_file, &stdio, &undo);
                let _ = std::fs::remove_file(&spec_file);
                launched
            }
        };
        let mut table = self.table()?;
        let (pid, io) = match launched {
            Ok(r) => r,
            Err(e) => {
                self.end_launch(None, None);
                if let Some(x) = table.get_mut(id).and_then(|c| c.execs.get_mut(exec_id)) {
                    x.state = ProcState::Created;
                }
                self.release_init_exit(table, id);
                return Err(e);
            }
        };
        let exec = table.get_mut(id).and_then(|c| c.execs.get_mut(exec_id));
        let Some(exec) = exec else {
            // Deleted meanwhile (containerd does not, but the table is the truth).
            self.end_launch(None, None);
            io.shutdown();
            undo(Some(pid));
            self.release_init_exit(table, id);
            return Err(ServiceError::NoProcess {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
            });
        };
        exec.pid = pid;
        exec.io = Some(io);
        exec.state = ProcState::Running;
        let early = self.end_launch(None, Some(pid));
        let mut resp = StartResponse::new();
        resp.pid = pid as u32;
        let mut ev = TaskExecStarted::new();
        ev.container_id = id.to_string();
        ev.exec_id = exec_id.to_string();
        ev.pid = resp.pid;
        self.publisher()
            .publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, &ev);
        drop(table);
        if let Some(exit) = early {
            self.handle_exit(exit);
        }
        Ok(resp)
    }

    fn do_delete(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let op = self.op_lock(&req.id)?;
        let _serial = op.lock().map_err(|_| ServiceError::Poisoned)?;
        let mut table = self.table()?;
        let c = table
            .get_mut(&req.id)
            .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
        let mut resp = DeleteResponse::new();
        if !req.exec_id.is_empty() {
            let exec = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| ServiceError::NoProcess {
                    id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                })?;
            if !exec.state.can_delete() {
                return Err(ServiceError::State {
                    id: req.id.clone(),
                    action: "delete",
                    state: exec.state,
                });
            }
            if let Some(exec) = c.execs.remove(&req.exec_id) {
                if let Some(io) = &exec.io {
                    io.shutdown();
                }
                let (status, at) = exec.state.exit().unwrap_or((0, SystemTime::now()));
                resp.pid = exec.pid as u32;
                resp.exit_status = status;
                resp.exited_at = Some(timestamp(at)).into();
            }
            drop(table);
            self.exits_changed();
            return Ok(resp);
        }
        if c.has_live_execs() {
            return Err(ServiceError::ExecsRunning { id: req.id.clone() });
        }
        if !c.init.state.can_delete() {
            return Err(ServiceError::State {
                id: req.id.clone(),
                action: "delete",
                state: c.init.state,
            });
        }
        // Nothing else changes the init's state while it is stopped or created and `op` is held
        // (an exit of a created init is reported anyway, below, from its state then).
        let runtime = c.runtime.clone();
        drop(table);
        if let Err(e) = runtime.run(&["delete", "--force", &req.id]) {
            // A container the runtime no longer knows is deleted already; anything else is an
            // error containerd may retry.
            if !e.is_not_found() {
                return Err(e.into());
            }
        }
        let mut table = self.table()?;
        let Some(c) = table.remove(&req.id) else {
            return Err(ServiceError::NoContainer(req.id.clone()));
        };
        drop(table);
        if let Some(io) = &c.init.io {
            io.shutdown();
        }
        if c.rootfs_mounted {
            unmount_rootfs(&c.bundle);
        }
        self.shared.config.oom.remove(&c.id);
        let (status, at) = c.init.state.exit().unwrap_or((137, SystemTime::now()));
        resp.pid = c.init.pid as u32;
        resp.exit_status = status;
        resp.exited_at = Some(timestamp(at)).into();
        let mut ev = TaskDelete::new();
        ev.container_id = req.id.clone();
        ev.id = req.id.clone();
        ev.pid = resp.pid;
        ev.exit_status = status;
        ev.exited_at = Some(timestamp(at)).into();
        self.publisher()
            .publish(topics::TASK_DELETE_EVENT_TOPIC, &ev);
        // Wake waiters of a container that was deleted before it exited.
        self.exits_changed();
        Ok(resp)
    }

    fn do_state(&self, req: &StateRequest) -> Result<StateResponse> {
        let table = self.table()?;
        let c = table
            .get(&req.id)
            .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
        let p = c
            .process(&req.exec_id)
            .ok_or_else(|| ServiceError::NoProcess {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
            })?;
        let mut resp = StateResponse::new();
        resp.id = if req.exec_id.is_empty() {
            &req.id
        } else {
            &req.exec_id
        }
        .clone();
        resp.bundle = c.bundle.display().to_string();
        resp.pid = p.pid as u32;
        resp.status = p.state.status().into();
        resp.stdin = p.stdio.stdin.clone();
        resp.stdout = p.stdio.stdout.clone();
        resp.stderr = p.stdio.stderr.clone();
        resp.terminal = p.stdio.terminal;
        resp.exec_id = req.exec_id.clone();
        if let Some((status, at)) = p.state.exit() {
            resp.exit_status = status;
            resp.exited_at = Some(timestamp(at)).into();
        }
        Ok(resp)
    }

    fn do_kill(&self, req: &KillRequest) -> Result<()> {
        let table = self.table()?;
        let c = table
            .get(&req.id)
            .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
        if !req.exec_id.is_empty() {
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| ServiceError::NoProcess {
                    id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                })?;
            if !p.state.is_alive() {
                return Err(ServiceError::Finished { id: req.id.clone() });
            }
            return crate::reaper::signal(p.pid, req.signal as i32)
                .map_err(|_| ServiceError::Finished { id: req.id.clone() });
        }
        if matches!(c.init.state, ProcState::Stopped { .. }) && !req.all {
            return Err(ServiceError::Finished { id: req.id.clone() });
        }
        let runtime = c.runtime.clone();
        // Not serialised with `op`: a kill must reach a container whose other call hangs.
        drop(table);
        let signal = req.signal.to_string();
        let mut args = vec!["kill"];
        if req.all {
            args.push("--all");
        }
        args.push(&req.id);
        args.push(&signal);
        match runtime.run(&args) {
            Ok(()) => Ok(()),
            Err(e) => {
                let table = self.table()?;
                let c = table
                    .get(&req.id)
                    .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
                kill_unrecorded(c, req.signal as i32, req.all, e)
            }
        }
    }

    fn do_exec(&self, req: &ExecProcessRequest) -> Result<()> {
        let mut table = self.table()?;
        let c = table
            .get_mut(&req.id)
            .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
        if c.execs.contains_key(&req.exec_id) || req.exec_id.is_empty() {
            return Err(ServiceError::ExecExists {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
            });
        }
        if !c.init.state.is_alive() {
            return Err(ServiceError::State {
                id: req.id.clone(),
                action: "exec in",
                state: c.init.state,
            });
        }
        let spec = req.spec.as_ref().ok_or(ServiceError::Missing("spec"))?;
        let spec = with_terminal(&spec.value, req.terminal)?;
        let mut p = Process::new(
            &req.exec_id,
            StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
        );
        p.spec = spec;
        c.execs.insert(req.exec_id.clone(), p);
        let mut ev = TaskExecAdded::new();
        ev.container_id = req.id.clone();
        ev.exec_id = req.exec_id.clone();
        self.publisher()
            .publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, &ev);
        Ok(())
    }

    fn do_pause(&self, id: &str, pause: bool) -> Result<()> {
        let op = self.op_lock(id)?;
        let _serial = op.lock().map_err(|_| ServiceError::Poisoned)?;
        let (ok, action, state, runtime) = {
            let table = self.table()?;
            let c = table
                .get(id)
                .ok_or_else(|| ServiceError::NoContainer(id.to_string()))?;
            let (ok, action) = if pause {
                (c.init.state.can_pause(), "pause")
            } else {
                (c.init.state.can_resume(), "resume")
            };
            (ok, action, c.init.state, c.runtime.clone())
        };
        if !ok {
            return Err(ServiceError::State {
                id: id.to_string(),
                action,
                state,
            });
        }
        runtime.run(&[action, id])?;
        let mut table = self.table()?;
        let c = table
            .get_mut(id)
            .ok_or_else(|| ServiceError::NoContainer(id.to_string()))?;
        if c.init.state.exit().is_some() {
            // It exited meanwhile: the exit stands.
            return Ok(());
        }
        if pause {
            c.init.state = ProcState::Paused;
            let mut ev = TaskPaused::new();
            ev.container_id = id.to_string();
            self.publisher()
                .publish(topics::TASK_PAUSED_EVENT_TOPIC, &ev);
        } else {
            c.init.state = ProcState::Running;
            let mut ev = TaskResumed::new();
            ev.container_id = id.to_string();
            self.publisher()
                .publish(topics::TASK_RESUMED_EVENT_TOPIC, &ev);
        }
        Ok(())
    }

    fn do_pids(&self, req: &PidsRequest) -> Result<PidsResponse> {
        let table = self.table()?;
        let c = table
            .get(&req.id)
            .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
        let mut pids = c.cgroup.as_ref().map(Cgroup::pids).unwrap_or_default();
        if pids.is_empty() && c.init.state.is_alive() {
            pids.push(c.init.pid);
        }
        let mut resp = PidsResponse::new();
        for pid in pids {
            let mut info = ProcessInfo::new();
            info.pid = pid as u32;
            if let Some(e) = c.execs.values().find(|e| e.pid == pid && pid != 0) {
                let mut details = ProcessDetails::new();
                details.exec_id = e.exec_id.clone();
                info.info = Some(to_any(&details)).into();
            }
            resp.processes.push(info);
        }
        Ok(resp)
    }

    fn with_process<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&Process) -> Result<T>,
    ) -> Result<T> {
        let table = self.table()?;
        let c = table
            .get(id)
            .ok_or_else(|| ServiceError::NoContainer(id.to_string()))?;
        let p = c.process(exec_id).ok_or_else(|| ServiceError::NoProcess {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        })?;
        f(p)
    }

    fn do_update(&self, req: &UpdateTaskRequest) -> Result<()> {
        let op = self.op_lock(&req.id)?;
        let _serial = op.lock().map_err(|_| ServiceError::Poisoned)?;
        let (bundle, runtime) = {
            let table = self.table()?;
            let c = table
                .get(&req.id)
                .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
            (c.bundle.clone(), c.runtime.clone())
        };
        let resources = req
            .resources
            .as_ref()
            .ok_or(ServiceError::Missing("resources"))?;
        let file = bundle.join("resources.json");
        std::fs::write(&file, &resources.value).map_err(file_err("writing", &file))?;
        let file_str = file.display().to_string();
        let result = runtime.run(&["update", "--resources", &file_str, &req.id]);
        let _ = std::fs::remove_file(&file);
        result?;
        Ok(())
    }

    fn do_stats(&self, req: &StatsRequest) -> Result<StatsResponse> {
        let table = self.table()?;
        let c = table
            .get(&req.id)
            .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
        let cgroup = c
            .cgroup
            .as_ref()
            .ok_or(ServiceError::Missing("cgroup of the container"))?;
        let mut resp = StatsResponse::new();
        resp.stats = Some(cgroup.metrics()).into();
        Ok(resp)
    }

    fn do_wait(&self, req: &WaitRequest) -> Result<WaitResponse> {
        let mut table = self.table()?;
        loop {
            let c = table
                .get(&req.id)
                .ok_or_else(|| ServiceError::NoContainer(req.id.clone()))?;
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| ServiceError::NoProcess {
                    id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                })?;
            if let Some((status, at)) = p.state.exit() {
                let mut resp = WaitResponse::new();
                resp.exit_status = status;
                resp.exited_at = Some(timestamp(at)).into();
                return Ok(resp);
            }
            table = self
                .shared
                .exited
                .wait(table)
                .map_err(|_| ServiceError::Poisoned)?;
        }
    }
}

impl Gate for Service {
    /// Only `Wait` can block: it is ready once the process exited or is gone.
    fn ready(&self, path: &str, payload: &[u8]) -> bool {
        if !path.ends_with("/Wait") {
            return true;
        }
        match WaitRequest::parse_from_bytes(payload) {
            Ok(req) => self.wait_ready(&req),
            // The handler reports the bad request.
            Err(_) => true,
        }
    }

    /// The calls that run the runtime (or a logger) or take a container's `op` lock.
    fn offload(&self, path: &str) -> bool {
        let method = path.rsplit('/').next().unwrap_or_default();
        matches!(
            method,
            "Create" | "Start" | "Delete" | "Kill" | "Pause" | "Resume" | "Update"
        )
    }
}

fn answer<T>(method: &str, r: Result<T>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        if !matches!(e.code(), Code::NOT_FOUND) {
            log_line!("skiff-shim: {method}: {e}");
        }
        e.into()
    })
}

impl Task for Service {
    fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        answer("State", self.do_state(&req))
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        answer("Create", self.do_create(&req))
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        answer("Start", self.do_start(&req))
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        answer("Delete", self.do_delete(&req))
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        answer("Pids", self.do_pids(&req))
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        answer("Pause", self.do_pause(&req.id, true).map(|_| Empty::new()))
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        answer(
            "Resume",
            self.do_pause(&req.id, false).map(|_| Empty::new()),
        )
    }

    fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: skiff_proto::api::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        answer(
            "Checkpoint",
            Err(ServiceError::NotImplemented("Checkpoint")),
        )
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        answer("Kill", self.do_kill(&req).map(|_| Empty::new()))
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        answer("Exec", self.do_exec(&req).map(|_| Empty::new()))
    }

    fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let r = self.with_process(&req.id, &req.exec_id, |p| {
            if let Some(io) = &p.io {
                io.resize(req.width, req.height)?;
            }
            Ok(Empty::new())
        });
        answer("ResizePty", r)
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let r = self.with_process(&req.id, &req.exec_id, |p| {
            if let (true, Some(io)) = (req.stdin, &p.io) {
                io.close_stdin();
            }
            Ok(Empty::new())
        });
        answer("CloseIO", r)
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        answer("Update", self.do_update(&req).map(|_| Empty::new()))
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        answer("Wait", self.do_wait(&req))
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        answer("Stats", self.do_stats(&req))
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let r = self.table().map(|t| {
            let mut resp = ConnectResponse::new();
            resp.shim_pid = std::process::id();
            resp.task_pid = t.get(&req.id).map(|c| c.init.pid as u32).unwrap_or(0);
            resp.version = skiff_proto::VERSION.to_string();
            resp
        });
        answer("Connect", r)
    }

    fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> ttrpc::Result<Empty> {
        // Not while a Create is in flight: its container is not in the table yet.
        let empty = self
            .table()
            .and_then(|t| Ok(t.is_empty() && self.launches()?.creating.is_empty()));
        if let Ok(true) = empty {
            let _ = self.shared.config.shutdown.try_send(());
        }
        answer("Shutdown", empty.map(|_| Empty::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes() {
        assert_eq!(
            ServiceError::NoContainer("c".into()).code(),
            Code::NOT_FOUND
        );
        assert_eq!(
            ServiceError::ContainerExists("c".into()).code(),
            Code::ALREADY_EXISTS
        );
        let e = ServiceError::State {
            id: "c".into(),
            action: "start",
            state: ProcState::Running,
        };
        assert_eq!(e.code(), Code::FAILED_PRECONDITION);
        assert_eq!(
            ServiceError::NotImplemented("Checkpoint").code(),
            Code::UNIMPLEMENTED
        );
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::FAILED_PRECONDITION);
                assert!(s.message().contains("cannot start"), "{}", s.message());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn killing_a_finished_process_is_not_found() {
        let failed = |m: &str| RuntimeError::Failed {
            command: "skiff kill --all c 9".into(),
            message: m.into(),
        };
        assert_eq!(
            kill_error("c", failed("container c not running")).code(),
            Code::NOT_FOUND
        );
        assert_eq!(
            kill_error("c", failed("container \"c\" does not exist")).code(),
            Code::NOT_FOUND
        );
        assert_eq!(
            kill_error("c", failed("permission denied")).code(),
            Code::UNKNOWN
        );
    }

    #[test]
    fn exec_spec_terminal_follows_the_request() {
        let spec = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        let got = with_terminal(br#"{"terminal":false,"args":["sh"]}"#, true).unwrap();
        assert_eq!(
            spec(&got),
            serde_json::json!({"terminal": true, "args": ["sh"]})
        );
        let got = with_terminal(br#"{"args":["sh"]}"#, false).unwrap();
        assert_eq!(spec(&got)["terminal"], false);
        let unchanged = br#"{"terminal":true}"#;
        assert_eq!(with_terminal(unchanged, true).unwrap(), unchanged.to_vec());
        assert_eq!(
            with_terminal(b"[1]", true).unwrap_err().code(),
            Code::INVALID_ARGUMENT
        );
        assert!(with_terminal(b"not json", true).is_err());
    }

    #[test]
    fn only_an_own_pid_namespace_spares_the_kill_all() {
        let own = r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#;
        assert!(!kills_all_on_exit(own));
        let own_empty_path = r#"{"linux":{"namespaces":[{"type":"pid","path":""}]}}"#;
        assert!(!kills_all_on_exit(own_empty_path));
        let joined = r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#;
        assert!(kills_all_on_exit(joined));
        assert!(kills_all_on_exit(
            r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#
        ));
        assert!(kills_all_on_exit("{}"));
        assert!(kills_all_on_exit("not json"));
    }

    #[test]
    fn roots_and_binaries() {
        let o = RuntimeOptions::default();
        assert_eq!(
            runtime_root(&o, "k8s.io"),
            PathBuf::from("/run/containerd/skiff/k8s.io")
        );
        let o = RuntimeOptions {
            root: Some("/r".into()),
            ..Default::default()
        };
        assert_eq!(runtime_root(&o, "default"), PathBuf::from("/r/default"));
        assert_eq!(
            default_binary(Some(Path::new("/nonexistent"))),
            PathBuf::from("skiff")
        );
    }
}
