//! `containerd-shim-skiff-v2`: the containerd shim v2 for skiff.
//!
//! containerd's shim contract:
//!
//! | invocation | what it does |
//! | --- | --- |
//! | `-namespace NS -address A -publish-binary B -id ID [-debug] start` | run in the bundle directory: start (or reuse) the server, write `address` in the bundle, print the address (containerd 2.3+, which writes a `BootstrapParams` on stdin: the JSON bootstrap `{"version":3,"address":…,"protocol":"ttrpc"}`) |
//! | `-namespace NS -address A -id ID [-bundle DIR] delete` | clean up after a dead shim: force-delete the container, unmount the rootfs, print a `DeleteResponse` |
//! | `-info` | print a `RuntimeInfo` (name, version, the runtime's features) for the options on stdin ([`info`]) |
//! | `-v` | print the version |
//! | `... -socket PATH serve` | (internal) the server itself, started by `start` |
//!
//! `start` binds the socket itself, then re-executes this binary as `serve` with the listening
//! socket as fd 3, in a new session (its own process group, no controlling terminal), with stdio
//! on `/dev/null` and stderr on the bundle's `log` fifo when containerd made one. A re-exec instead of
//! a bare fork keeps the long-lived server's memory small and its startup single-threaded.
//!
//! The socket is `/run/skiff-shim/<hash>.sock`, the hash of containerd's address, the namespace
//! and the grouping key: the `io.kubernetes.cri.sandbox-id` (or `io.containerd.runc.v2.group`)
//! annotation when the container has one, else its id. Containers of one pod therefore find the
//! same socket, and `start` hands out the running server's address instead of starting another.
//! `start` binds first and, only when the address is taken, connects to see whether a server
//! answers there (else the socket is stale and is replaced), so two `start`s of one pod racing
//! never make two servers. The directory is 0700 and the socket 0600 (root's only). The server
//! marks the socket close-on-exec at once, so runtime commands, hooks and loggers never get it.

/// Write one line to stderr, ignoring failures. The server's stderr is the bundle's `log` fifo,
/// read by containerd: while containerd is down a write fails with `EPIPE`, and `eprintln!` would
/// panic on it (and so, built with `panic = "abort"`, kill the shim and lose every exit it holds).
macro_rules! log_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        // One write per line, so lines from several threads are not interleaved.
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

mod cgroup;
mod direct;
mod events;
mod idmap;
mod info;
mod io;
mod ioloop;
mod memory;
mod mount;
mod oom;
mod reaper;
mod runtime;
mod server;
mod service;
mod task;
mod wire;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use skiff_proto::api::DeleteResponse;
use skiff_proto::convert::timestamp;
use skiff_proto::event_types::task::TaskOOM;
use skiff_proto::options::RuntimeOptions;
use skiff_proto::protobuf::well_known_types::any::Any;
use skiff_proto::protobuf::Message;
use skiff_proto::protos::topics;

use crate::events::{Publisher, Target};
use crate::ioloop::IoLoop;
use crate::oom::OomWatcher;
use crate::reaper::Reaper;
use crate::runtime::Runtime;
use crate::server::{Server, Waker};
use crate::service::{default_binary, runtime_root, Config, Service, OPTIONS_FILE};

/// Where server sockets live.
const SOCKET_DIR: &str = "/run/skiff-shim";

/// Errors at the binary's edge.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("usage: containerd-shim-skiff-v2 [-namespace NS] [-address A] [-publish-binary B] [-id ID] [-debug] start|delete")]
    Usage,
    #[error("flag -{0} needs a value")]
    FlagValue(String),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the server: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Reaper(#[from] reaper::ReaperError),
    #[error(transparent)]
    Events(#[from] events::EventsError),
    #[error(transparent)]
    Loop(#[from] ioloop::LoopError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Info(#[from] info::InfoError),
    #[error(transparent)]
    ShimCgroup(#[from] cgroup::JoinError),
}

fn file_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MainError {
    let path = path.to_path_buf();
    move |source| MainError::File { what, path, source }
}

/// The command line, parsed the way Go's `flag` package does (`-k v`, `-k=v`, `--k v`).
#[derive(Debug, Default, Clone)]
struct Args {
    namespace: String,
    address: String,
    publish_binary: String,
    id: String,
    bundle: Option<PathBuf>,
    socket: Option<PathBuf>,
    debug: bool,
    version: bool,
    info: bool,
    action: Option<String>,
}

fn parse_args(argv: &[String]) -> Result<Args, MainError> {
    let mut args = Args {
        namespace: "default".into(),
        ..Default::default()
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            args.action = Some(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match name {
            "debug" => args.debug = inline.as_deref() != Some("false"),
            "v" | "version" => args.version = true,
            "info" => args.info = inline.as_deref() != Some("false"),
            "namespace" | "address" | "publish-binary" | "id" | "bundle" | "socket" => {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| MainError::FlagValue(name.into()))?,
                };
                match name {
                    "namespace" => args.namespace = value,
                    "address" => args.address = value,
                    "publish-binary" => args.publish_binary = value,
                    "id" => args.id = value,
                    "bundle" => args.bundle = Some(value.into()),
                    _ => args.socket = Some(value.into()),
                }
            }
            // Unknown boolean flags from newer containerds are ignored.
            _ => {}
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&argv).and_then(|args| {
        if args.version {
            println!(
                "containerd-shim-skiff-v2:\n  Version: {}\n  Revision: {}",
                skiff_proto::VERSION,
                info::REVISION
            );
            return Ok(());
        }
        if args.info {
            return Ok(info::run(shim_dir().as_deref())?);
        }
        match args.action.as_deref() {
            Some("start") => start(&args),
            Some("delete") => delete(&args),
            Some("serve") => serve(&args),
            _ => Err(MainError::Usage),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_line!("containerd-shim-skiff-v2: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The shim binary's directory, where the default runtime binary is looked for first.
fn shim_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// FNV-1a: a stable, dependency-free hash for socket names.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The grouping key: the pod's sandbox id, the runc group annotation, or the container id.
fn group_key(config_json: &str, id: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(config_json).unwrap_or_default();
    let annotations = &value["annotations"];
    [
        "io.kubernetes.cri.sandbox-id",
        "io.containerd.runc.v2.group",
    ]
    .iter()
    .find_map(|k| annotations[*k].as_str())
    .filter(|s| !s.is_empty())
    .unwrap_or(id)
    .to_string()
}

fn socket_path(args: &Args, key: &str) -> PathBuf {
    let hash = fnv1a(format!("{}\0{}\0{}", args.address, args.namespace, key).as_bytes());
    Path::new(SOCKET_DIR).join(format!("{hash:016x}.sock"))
}

fn start(args: &Args) -> Result<(), MainError> {
    let bundle = std::env::current_dir().map_err(file_err("reading", Path::new(".")))?;
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap_or_default();
    let key = group_key(&config, &args.id);
    let path = socket_path(args, &key);
    let address = format!("unix://{}", path.display());
    // Before anything else: what containerd wrote tells which answer it reads. Unreadable
    // options are left to `Create` to report.
    let stdin = info::read_stdin().unwrap_or_default();
    let answer = start_answer(&address, stdin.bootstrap);

    let Some(listener) = bind_or_share(&path)? else {
        // A server for this pod is running: share it.
        return announce(&bundle, &address, &answer, None);
    };

    let exe = std::env::current_exe().map_err(file_err("finding", Path::new("/proc/self/exe")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["-namespace", &args.namespace, "-address", &args.address])
        .args(["-publish-binary", &args.publish_binary, "-id", &args.id])
        .arg("-socket")
        .arg(&path);
    if args.debug {
        cmd.arg("-debug");
    }
    cmd.arg("serve")
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(shim_log(&bundle));
    let fd = listener.as_raw_fd();
    // SAFETY: the closure calls only async-signal-safe functions (setsid, dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(MainError::Spawn)?;
    // Before containerd learns the address, as containerd's runc shim does: the server (and the
    // runtime commands it starts) are accounted to the ShimCgroup from the first request on.
    if let Err(e) = enter_shim_cgroup(child.id(), stdin.options) {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    announce(&bundle, &address, &answer, Some(child.id()))
}

/// What `start` prints: containerd 2.3+ (which wrote a `BootstrapParams` on stdin) reads the
/// JSON bootstrap and then speaks Task v3; older containerds (1.6 cannot parse JSON) take the
/// bare address and speak Task v2. The server serves both.
fn start_answer(address: &str, bootstrap: bool) -> String {
    if !bootstrap {
        return address.to_string();
    }
    serde_json::json!({"version": 3, "address": address, "protocol": "ttrpc"}).to_string()
}

/// Bind the server socket at `path`, or `None` when a server already answers there.
fn bind_or_share(path: &Path) -> Result<Option<UnixListener>, MainError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = Path::new(SOCKET_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(file_err("creating", dir))?;
    // Also when it existed before with looser permissions.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(file_err("restricting", dir))?;
    // Twice at most: a stale socket is removed once and bound again.
    for _ in 0..2 {
        match UnixListener::bind(path) {
            Ok(l) => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(file_err("restricting", path))?;
                return Ok(Some(l));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if UnixStream::connect(path).is_ok() {
                    return Ok(None);
                }
                // Nobody answers: the socket of a server that died.
                let _ = std::fs::remove_file(path);
            }
            Err(e) => return Err(file_err("binding", path)(e)),
        }
    }
    UnixListener::bind(path)
        .map(Some)
        .map_err(file_err("binding", path))
}

/// Move the new server into the `ShimCgroup` of the runtime options containerd wrote on stdin.
/// Options that cannot be read are left to `Create` to report.
fn enter_shim_cgroup(pid: u32, options: Option<Any>) -> Result<(), MainError> {
    let Ok(opts) = RuntimeOptions::from_any(options.as_ref()) else {
        return Ok(());
    };
    match opts.shim_cgroup {
        Some(path) => Ok(cgroup::join_cgroup(pid, &path)?),
        None => Ok(()),
    }
}

/// The bundle's `log` fifo (containerd reads the shim's log from it), else `/dev/null`.
fn shim_log(bundle: &Path) -> Stdio {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"));
    match fifo {
        Ok(f) => {
            // Blocking writes from here on: the reader is containerd.
            let fd = f.as_raw_fd();
            // SAFETY: fcntl on an fd we own.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
            Stdio::from(f)
        }
        Err(_) => Stdio::null(),
    }
}

/// Record `address` in the bundle (and the server's pid), and print `answer` for containerd.
fn announce(bundle: &Path, address: &str, answer: &str, pid: Option<u32>) -> Result<(), MainError> {
    let file = bundle.join("address");
    std::fs::write(&file, address).map_err(file_err("writing", &file))?;
    if let Some(pid) = pid {
        let file = bundle.join("shim.pid");
        std::fs::write(&file, pid.to_string()).map_err(file_err("writing", &file))?;
    }
    print!("{answer}");
    let _ = std::io::stdout().flush();
    Ok(())
}

/// The server process. Its threads, whatever the number of containers:
///
/// | thread | does |
/// | --- | --- |
/// | main | the ttrpc server ([`server`]) |
/// | `io` | every stdio copy, the OOM fds and `SIGCHLD` ([`ioloop`]) |
/// | `exits` | records exits and publishes `TaskExit` ([`Service::run_exits`]) |
/// | `events` | forwards events to containerd ([`events`]) |
/// Carries the shim's directory across the re-execution from a sealed view (whose
/// `/proc/self/exe` names the view, not the installed binary).
const SHIM_DIR_VAR: &str = "_SKIFF_SHIM_DIR";

/// Runs the server from a sealed view of the shim's binary (`skiff::exeseal`'s overlay view, never
/// a memfd copy, which would cost every pod a copy of the binary; re-executing once),
/// as the runtime runs from one: an exec the shim serves itself (`direct`) is the shim's image in
/// the container until it execs. Returns the shim's directory, and whether the seal holds (when
/// it does not, execs go through the runtime binary, which seals itself).
fn seal_shim() -> (Option<PathBuf>, bool) {
    let dir = match std::env::var_os(SHIM_DIR_VAR) {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            let dir = shim_dir();
            if let Some(d) = &dir {
                // Single-threaded here (before any thread is started); read back below.
                std::env::set_var(SHIM_DIR_VAR, d);
            }
            dir
        }
    };
    let sealed = match skiff::exeseal::ensure_with(Path::new("/run"), false) {
        Ok(()) => true,
        Err(e) => {
            log_line!("containerd-shim-skiff-v2: execs go through the runtime binary: {e}");
            false
        }
    };
    std::env::remove_var(SHIM_DIR_VAR);
    (dir, sealed)
}

fn serve(args: &Args) -> Result<(), MainError> {
    // First, while single-threaded: a re-execution keeps argv, environment and descriptors.
    let (dir, sealed) = seal_shim();
    // SAFETY: fd 3 is the listening socket `start` handed down, owned by nothing else here.
    let listener = unsafe { UnixListener::from_raw_fd(3) };
    // Before anything can start a process: no child (runtime command, logger, publish binary)
    // may inherit the listening socket, nor whatever containerd's caller left open without
    // close-on-exec and containerd handed on to us; a child that needs one of ours gets it
    // dup2'd to a number of its own.
    runtime::cloexec_from(3).map_err(MainError::Spawn)?;
    // While this is the only thread: one malloc arena, SIGCHLD blocked everywhere (the
    // I/O loop takes it from a signalfd).
    memory::single_arena();
    let reaper = Reaper::new()?;
    // The first container's bundle may be deleted while the pod's other containers run: hold no
    // directory (every path the server uses is absolute).
    let _ = std::env::set_current_dir("/");
    let io = IoLoop::start(Some(reaper.clone()))?;
    let target = Target {
        ttrpc_address: std::env::var("TTRPC_ADDRESS")
            .ok()
            .filter(|s| !s.is_empty()),
        publish_binary: (!args.publish_binary.is_empty())
            .then(|| PathBuf::from(&args.publish_binary)),
        grpc_address: args.address.clone(),
        namespace: args.namespace.clone(),
    };
    let publisher = Arc::new(Publisher::start(target, reaper.clone())?);
    let oom_publisher = publisher.clone();
    let oom = OomWatcher::new(
        Box::new(move |id: &str| {
            let mut ev = TaskOOM::new();
            ev.container_id = id.to_string();
            oom_publisher.publish(topics::TASK_OOM_EVENT_TOPIC, &ev);
        }),
        io.clone(),
    );
    let waker = Arc::new(Waker::new()?);
    let (shutdown_tx, shutdown_rx) = sync_channel(1);
    let service = Service::new(Config {
        namespace: args.namespace.clone(),
        shim_dir: dir,
        direct_exec: sealed,
        publisher: publisher.clone(),
        oom,
        reaper: reaper.clone(),
        io,
        waker: waker.clone(),
        shutdown: shutdown_tx,
    });
    let exits = reaper.subscribe();
    let exit_loop = service.clone();
    // 8 MiB (only the pages touched are memory): an init's exit may run `kill --all`, which runs
    // the runtime's code in a child forked from this thread, on this stack.
    std::thread::Builder::new()
        .name("exits".into())
        .stack_size(8 << 20)
        .spawn(move || exit_loop.run_exits(exits))
        .map_err(MainError::Spawn)?;

    let methods = skiff_proto::service::task_methods(Arc::new(service.clone()));
    let server = Server::new(listener, methods, Arc::new(service), waker, shutdown_rx)?;
    // Returns after Shutdown's reply is written.
    server.run();
    publisher.close();
    if let Some(socket) = &args.socket {
        let _ = std::fs::remove_file(socket);
    }
    std::process::exit(0);
}

fn delete(args: &Args) -> Result<(), MainError> {
    let bundle = match &args.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(file_err("reading", Path::new(".")))?,
    };
    let reaper = Reaper::start()?;
    let recorded: serde_json::Value = std::fs::read_to_string(bundle.join(OPTIONS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let defaults = RuntimeOptions::default();
    let shim_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let runtime = Runtime {
        binary: recorded["binary"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| default_binary(shim_dir.as_deref())),
        root: recorded["root"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| runtime_root(&defaults, &args.namespace)),
        systemd_cgroup: recorded["systemd_cgroup"].as_bool().unwrap_or(false),
        log: bundle.join("log.json"),
        bundle: bundle.clone(),
        reaper,
        in_process: false,
    };
    if let Err(e) = runtime.run(&["delete", "--force", &args.id]) {
        log_line!("containerd-shim-skiff-v2: delete {}: {e}", args.id);
    }
    mount::unmount_rootfs(&bundle);
    // The dead server's socket, unless another server of the pod still answers on it.
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap_or_default();
    let socket = socket_path(args, &group_key(&config, &args.id));
    if UnixStream::connect(&socket).is_err() {
        let _ = std::fs::remove_file(&socket);
    }
    let mut resp = DeleteResponse::new();
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = Some(timestamp(std::time::SystemTime::now())).into();
    let bytes = resp.write_to_bytes().unwrap_or_default();
    let mut out = std::io::stdout();
    let _ = out.write_all(&bytes);
    let _ = out.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn go_style_flags() {
        let a = parse_args(&argv(
            "-namespace k8s.io -address /run/c.sock -publish-binary /usr/bin/containerd -id abc -debug start",
        ))
        .unwrap();
        assert_eq!(a.namespace, "k8s.io");
        assert_eq!(a.address, "/run/c.sock");
        assert_eq!(a.publish_binary, "/usr/bin/containerd");
        assert_eq!(a.id, "abc");
        assert!(a.debug);
        assert_eq!(a.action.as_deref(), Some("start"));
        let b = parse_args(&argv("--id=x -bundle /b -unknownflag delete")).unwrap();
        assert_eq!(b.id, "x");
        assert_eq!(b.bundle, Some(PathBuf::from("/b")));
        assert_eq!(b.action.as_deref(), Some("delete"));
        assert!(parse_args(&argv("-v")).unwrap().version);
        assert!(parse_args(&argv("-info")).unwrap().info);
        assert!(parse_args(&argv("-id")).is_err());
    }

    #[test]
    fn containerd_2_3_and_later_get_the_json_bootstrap() {
        let a = "unix:///run/skiff-shim/0123.sock";
        assert_eq!(start_answer(a, false), a);
        let json: serde_json::Value = serde_json::from_str(&start_answer(a, true)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"version": 3, "address": a, "protocol": "ttrpc"})
        );
    }

    #[test]
    fn pods_share_a_socket() {
        let cfg = r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#;
        assert_eq!(group_key(cfg, "c1"), "pod1");
        assert_eq!(group_key("{}", "c1"), "c1");
        assert_eq!(
            group_key(
                r#"{"annotations":{"io.containerd.runc.v2.group":"g"}}"#,
                "c"
            ),
            "g"
        );
        let args = Args {
            address: "/a".into(),
            namespace: "n".into(),
            ..Default::default()
        };
        assert_eq!(socket_path(&args, "pod1"), socket_path(&args, "pod1"));
        assert_ne!(socket_path(&args, "pod1"), socket_path(&args, "pod2"));
        assert!(socket_path(&args, "x").as_os_str().len() < 108);
    }
}
