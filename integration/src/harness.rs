//! The runtime driver: runs `RUNTIME --root R <args>` with a timeout and cleans up after the test.

use std::fmt;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::bundle::Bundle;
use crate::console::ConsoleSocket;
use crate::host;

/// The environment variable set on every runtime command and every container process a harness
/// starts, so that leftovers can be found (and only ours are ever killed).
pub const TAG_VAR: &str = "SKIFF_IT_TAG";

/// runc, the reference the runtime is compared with.
pub const RUNC: &str = "/usr/sbin/runc";

/// Harnesses created by this test process, to make tags unique across test threads.
static HARNESSES: AtomicUsize = AtomicUsize::new(0);

/// The runtime under test: `$SKIFF_BIN`, else the `skiff` that cargo built beside this test binary
/// (tests run from `<target dir>/<triple>/debug/deps/`; the binaries are in `debug/`).
pub fn runtime_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(bin);
    }
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("skiff")));
    built.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-gnu/debug/skiff")
    })
}

/// The per-command timeout: `$SKIFF_IT_TIMEOUT` seconds, else 30.
pub fn default_timeout() -> Duration {
    let secs = std::env::var("SKIFF_IT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// A directory removed (recursively) on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(name);
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How to run one runtime command.
#[derive(Debug, Default)]
pub struct Opts {
    /// Where the command's stdout goes (and so a detached container's); default: a fresh file.
    pub stdout: Option<PathBuf>,
    /// Where the command's stderr goes; default: a fresh file.
    pub stderr: Option<PathBuf>,
    /// Working directory of the command.
    pub cwd: Option<PathBuf>,
    /// Kill the command after this long; default: [`default_timeout`].
    pub timeout: Option<Duration>,
    /// A file passed to the command as fd 3 (for `--preserve-fds`).
    pub fd3: Option<File>,
    /// Leave out `--root` (for commands such as `spec` that do not need it).
    pub no_root: bool,
    /// A terminal (a pty slave) to use as the command's stdin, stdout and stderr instead of files.
    pub terminal: Option<File>,
}

/// The result of one runtime command.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code as a shell reports it: the code, or 128 + the signal that killed the command.
    pub fn exit_code(&self) -> i32 {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => -1,
        }
    }

    /// This output if the command succeeded, else an error describing it.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            Err(anyhow!("command failed: {self}"))
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// A runtime command running in the background (e.g. a foreground `run` the test signals).
/// Dropping it kills the command if it is still running.
#[derive(Debug)]
pub struct Spawned {
    child: Option<Child>,
    command: String,
    stdout: PathBuf,
    stderr: PathBuf,
    deadline: Instant,
}

impl Spawned {
    /// The pid of the runtime command.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Send `signal` to the runtime command (not to the container).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let Some(child) = &self.child else {
            bail!("command already waited for");
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own, not yet reaped child.
        let rc = unsafe { libc::kill(child.id() as i32, signal) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        Ok(())
    }

    /// Whether the command has exited (without reaping it for good: a later `wait` still works).
    pub fn finished(&mut self) -> Result<bool> {
        match &mut self.child {
            Some(child) => Ok(child.try_wait()?.is_some()),
            None => Ok(true),
        }
    }

    /// Wait for the command, killing it if it outlives its deadline.
    pub fn wait(mut self) -> Result<Output> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("command already waited for"))?;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > self.deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`{}` timed out and was killed; stderr so far:\n{}",
                    self.command,
                    fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        Ok(Output {
            command: self.command.clone(),
            status,
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// One test's view of the runtime: its own `--root`, temp dir, container ids, cgroups and
/// namespaces, all cleaned up on drop.
#[derive(Debug)]
pub struct Harness {
    tmp: TempDir,
    root: PathBuf,
    bin: PathBuf,
    tag: String,
    seq: AtomicUsize,
    timeout: Duration,
    ids: Mutex<Vec<String>>,
    cgroups: Mutex<Vec<String>>,
    ns_files: Mutex<Vec<PathBuf>>,
    host_ns: Option<HostMountNs>,
}

impl Harness {
    /// A fresh harness. Fails when not root or when the runtime binary is missing.
    pub fn new() -> Result<Harness> {
        Harness::with_binary(runtime_binary())
    }

    /// A harness driving runc ([`RUNC`]), the oracle a test compares the runtime under test with.
    pub fn runc() -> Result<Harness> {
        Harness::with_binary(PathBuf::from(RUNC))
    }

    /// A fresh harness driving `bin`.
    pub fn with_binary(bin: PathBuf) -> Result<Harness> {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the integration tests create real containers and must run as root");
        }
        if !bin.is_file() {
            bail!(
                "runtime binary {} not found: build it first (`cargo build -p skiff`) or point \
                 SKIFF_BIN at a runc-compatible runtime",
                bin.display()
            );
        }
        let n = HARNESSES.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{:x}x{n}", std::process::id());
        let tmp = TempDir::new(&format!("skiff-it-{tag}"))?;
        let root = tmp.0.join("state");
        fs::create_dir_all(&root)?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
        Ok(Harness {
            tmp,
            root,
            bin,
            tag,
            seq: AtomicUsize::new(0),
            timeout: default_timeout(),
            ids: Mutex::new(Vec::new()),
            cgroups: Mutex::new(Vec::new()),
            ns_files: Mutex::new(Vec::new()),
            host_ns: None,
        })
    }

    fn next(&self) -> usize {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    /// This harness's unique tag (also the value of [`TAG_VAR`]).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The `--root` state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The runtime binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The harness's temp directory (removed on drop).
    pub fn tmp(&self) -> &Path {
        &self.tmp.0
    }

    /// The per-command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A new container id, unique to this harness, force-deleted when the harness drops.
    pub fn id(&self, prefix: &str) -> String {
        let id = format!("{prefix}-{}-{}", self.tag, self.next());
        self.register_id(&id);
        id
    }

    /// Make the harness force-delete `id` on drop (for ids not made by [`Harness::id`]).
    pub fn register_id(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id.to_string());
        }
    }

    /// A new cgroups path (`/skiff-it-<tag>-<n>`) whose directories are removed on drop.
    pub fn cgroup_path(&self) -> String {
        let path = format!("/skiff-it-{}-{}", self.tag, self.next());
        if let Ok(mut cgroups) = self.cgroups.lock() {
            cgroups.push(path.clone());
        }
        path
    }

    /// A fresh, empty, world-writable directory in the temp dir (for bind mounts and hook output).
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.tmp.0.join(format!("{name}-{}", self.next()));
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
        Ok(dir)
    }

    /// A fresh file path in the temp dir (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.0.join(format!("{}-{name}", self.next()))
    }

    /// A bundle with the default spec, plus two harness additions: `process.env` carries
    /// [`TAG_VAR`] (so leftover container processes can be found) and `linux.cgroupsPath` is a fresh
    /// [`Harness::cgroup_path`] (so the test knows, and cleans, the container's cgroup).
    pub fn bundle(&self) -> Result<Bundle> {
        let path = self.tmp.0.join(format!("bundle-{}", self.next()));
        let mut bundle = Bundle::with_default_spec(&path)?;
        let cgroup = self.cgroup_path();
        let tag = format!("{TAG_VAR}={}", self.tag);
        bundle.edit(|c| {
            c["linux"]["cgroupsPath"] = json!(cgroup);
            if let Some(env) = c["process"]["env"].as_array_mut() {
                env.push(json!(tag));
            }
        })?;
        Ok(bundle)
    }

    /// Where a container's stdout and stderr go when the harness creates or runs it.
    pub fn stdout_path(&self, id: &str) -> PathBuf {
        self.tmp.0.join(format!("{}.stdout", id.replace('/', "_")))
    }

    /// What a container created or run by the harness has written to stdout (and stderr, which
    /// goes to its own file: see [`Harness::stderr_path`]).
    pub fn stdout_of(&self, id: &str) -> Result<String> {
        let path = self.stdout_path(id);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Where a container's stderr goes when the harness creates or runs it.
    pub fn stderr_path(&self, id: &str) -> PathBuf {
        self.tmp.0.join(format!("{}.stderr", id.replace('/', "_")))
    }

    fn command(&self, args: &[&str], opts: &Opts) -> Command {
        let mut cmd = Command::new(&self.bin);
        if !opts.no_root {
            cmd.arg("--root").arg(&self.root);
        }
        cmd.args(args).env(TAG_VAR, &self.tag).stdin(Stdio::null());
        if let Some(cwd) = &opts.cwd {
            cmd.current_dir(cwd);
        }
        if let Some(ns) = &self.host_ns {
            ns.enter_in(&mut cmd, opts.cwd.as_deref());
        }
        cmd
    }

    /// Run every later runtime command of this harness in a mount namespace of its own that stands
    /// in for the host: every mount in it is shared, as systemd leaves a real host's, but in peer
    /// groups of its own, so nothing a runtime does there can reach the real host (whose mounts may
    /// be private, as on the development machines). [`Harness::host_mountinfo`] reads it.
    pub fn use_shared_host_mount_ns(&mut self) -> Result<()> {
        self.host_ns = Some(HostMountNs::start()?);
        Ok(())
    }

    /// The mountinfo of the host's mount namespace as this harness's runtime commands see it: the
    /// stand-in's ([`Harness::use_shared_host_mount_ns`]) or the test process's own.
    pub fn host_mountinfo(&self) -> Result<String> {
        let path = match &self.host_ns {
            Some(ns) => format!("/proc/{}/mountinfo", ns.holder.id()),
            None => "/proc/self/mountinfo".to_string(),
        };
        fs::read_to_string(&path).with_context(|| format!("reading {path}"))
    }

    /// `mnt:[N]`, the host's mount namespace as this harness's runtime commands see it.
    pub fn host_mount_ns(&self) -> Result<String> {
        let path = match &self.host_ns {
            Some(ns) => format!("/proc/{}/ns/mnt", ns.holder.id()),
            None => "/proc/self/ns/mnt".to_string(),
        };
        let link = fs::read_link(&path).with_context(|| format!("reading {path}"))?;
        Ok(link.display().to_string())
    }

    /// Run `argv` to success in the host's mount namespace as this harness's runtime commands see it
    /// (for mounts the test makes there, such as a rootfs that is a mount point of its own).
    pub fn run_in_host_ns(&self, argv: &[&str]) -> Result<()> {
        let (program, args) = argv.split_first().context("empty command")?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        if let Some(ns) = &self.host_ns {
            ns.enter_in(&mut cmd, None);
        }
        let status = cmd.status().with_context(|| format!("running {argv:?}"))?;
        if !status.success() {
            bail!("{argv:?} failed: {status}");
        }
        Ok(())
    }

    /// Start `RUNTIME --root R <args>` in the background.
    pub fn spawn(&self, args: &[&str], opts: Opts) -> Result<Spawned> {
        let mut cmd = self.command(args, &opts);
        let n = self.next();
        let stdout = opts
            .stdout
            .clone()
            .unwrap_or_else(|| self.tmp.0.join(format!("cmd-{n}.stdout")));
        let stderr = opts
            .stderr
            .clone()
            .unwrap_or_else(|| self.tmp.0.join(format!("cmd-{n}.stderr")));
        // Files, not pipes: a detached container inherits them and may outlive the command, and
        // reading a pipe to its end would wait for the container.
        let out_file =
            File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let err_file =
            File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        match &opts.terminal {
            Some(tty) => {
                cmd.stdin(tty.try_clone()?)
                    .stdout(tty.try_clone()?)
                    .stderr(tty.try_clone()?);
            }
            None => {
                cmd.stdout(out_file).stderr(err_file);
            }
        }
        if let Some(file) = &opts.fd3 {
            let raw = file.as_raw_fd();
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // async-signal-safe functions (dup2, fcntl).
            unsafe {
                cmd.pre_exec(move || {
                    let rc = if raw == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(raw, 3)
                    };
                    if rc < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let command = format!(
            "{} {}{}",
            self.bin.display(),
            if opts.no_root {
                String::new()
            } else {
                format!("--root {} ", self.root.display())
            },
            args.join(" ")
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning `{command}`"))?;
        // Our copies must go, or the command's end of a pipe or terminal would never close.
        drop(cmd);
        drop(opts.fd3);
        drop(opts.terminal);
        Ok(Spawned {
            child: Some(child),
            command,
            stdout,
            stderr,
            deadline: Instant::now() + opts.timeout.unwrap_or(self.timeout),
        })
    }

    /// Run `RUNTIME --root R <args>` under ptrace, SIGKILLed on entry to its `kill_at`-th system
    /// call ([`crate::ptrace`]); its output is discarded. `None`: run it whole and count.
    pub fn traced(&self, args: &[&str], kill_at: Option<u64>) -> Result<crate::ptrace::Traced> {
        let mut cmd = self.command(args, &Opts::default());
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        crate::ptrace::run_killed_at(cmd, kill_at)
            .with_context(|| format!("tracing `{}`", args.join(" ")))
    }

    /// Run `RUNTIME --root R <args>` to completion (or its timeout).
    pub fn exec(&self, args: &[&str], opts: Opts) -> Result<Output> {
        self.spawn(args, opts)?.wait()
    }

    /// Run `RUNTIME --root R <args>` with default options; the exit status is not checked.
    pub fn cmd(&self, args: &[&str]) -> Result<Output> {
        self.exec(args, Opts::default())
    }

    /// `create --bundle B [extra...] ID`, with the container's stdout and stderr going to
    /// [`Harness::stdout_path`] and [`Harness::stderr_path`]. The exit status is not checked.
    pub fn try_create(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Result<Output> {
        let path = bundle.path_str();
        let mut args = vec!["create", "--bundle", path.as_str()];
        args.extend_from_slice(extra);
        args.push(id);
        self.exec(
            &args,
            Opts {
                stdout: Some(self.stdout_path(id)),
                stderr: Some(self.stderr_path(id)),
                ..Opts::default()
            },
        )
    }

    /// `create`, which must succeed.
    pub fn create(&self, id: &str, bundle: &Bundle) -> Result<Output> {
        self.try_create(id, bundle, &[])?.ok()
    }

    /// `start ID`, which must succeed.
    pub fn start(&self, id: &str) -> Result<Output> {
        self.cmd(&["start", id])?.ok()
    }

    /// `state ID`, parsed.
    pub fn state(&self, id: &str) -> Result<Value> {
        let out = self.cmd(&["state", id])?.ok()?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("state output is not JSON: {:?}", out.stdout))
    }

    /// The `status` field of `state ID`.
    pub fn status(&self, id: &str) -> Result<String> {
        let state = self.state(id)?;
        state["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("state has no status: {state}"))
    }

    /// The `pid` field of `state ID`.
    pub fn pid(&self, id: &str) -> Result<i32> {
        let state = self.state(id)?;
        state["pid"]
            .as_i64()
            .map(|p| p as i32)
            .ok_or_else(|| anyhow!("state has no pid: {state}"))
    }

    /// Poll `state ID` until its status is `want` (or the timeout passes). A failing `state` (the
    /// container may not exist yet when a background `run` is starting it) is retried too.
    pub fn wait_status(&self, id: &str, want: &str) -> Result<Value> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let last = match self.state(id) {
                Ok(state) if state["status"] == want => return Ok(state),
                Ok(state) => state.to_string(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("container {id} never reached status {want:?}; last: {last}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// `create` then `start` under a fresh id: the bundle's process must keep running for the test
    /// to act on the container (e.g. `sleep 600`). Returns the id.
    pub fn create_and_start(&self, prefix: &str, bundle: &Bundle) -> Result<String> {
        let id = self.id(prefix);
        self.create(&id, bundle)?;
        self.start(&id)?;
        Ok(id)
    }

    /// `exec [flags...] ID ARGS...`, with the process's stdio going to the command's own files
    /// (returned in the [`Output`]). The exit status is not checked.
    pub fn exec_in(&self, id: &str, flags: &[&str], args: &[&str]) -> Result<Output> {
        self.exec(&exec_args(id, flags, args), Opts::default())
    }

    /// `exec --detach --pid-file F [flags...] ID ARGS...`, which must succeed; returns the host pid
    /// written to F.
    pub fn exec_detached(&self, id: &str, flags: &[&str], args: &[&str]) -> Result<i32> {
        let pid_file = self.path("exec.pid");
        let pid_arg = pid_file.display().to_string();
        let mut all = vec!["--detach", "--pid-file", pid_arg.as_str()];
        all.extend_from_slice(flags);
        self.exec_in(id, &all, args)?.ok()?;
        // The command has returned: the file is complete.
        let text = fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("pid file {} holds {text:?}", pid_file.display()))
    }

    /// `kill ID [SIGNAL]`, which must succeed.
    pub fn kill(&self, id: &str, signal: Option<&str>) -> Result<Output> {
        let mut args = vec!["kill", id];
        args.extend(signal);
        self.cmd(&args)?.ok()
    }

    /// `delete ID`, which must succeed.
    pub fn delete(&self, id: &str) -> Result<Output> {
        self.cmd(&["delete", id])?.ok()
    }

    /// `delete --force ID`, which must succeed.
    pub fn delete_force(&self, id: &str) -> Result<Output> {
        self.cmd(&["delete", "--force", id])?.ok()
    }

    /// `run --bundle B [extra...] ID` in the foreground, its stdio (and so the container's) going to
    /// [`Harness::stdout_path`] and [`Harness::stderr_path`]. The exit status is not checked.
    pub fn run(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Result<Output> {
        self.spawn_run(id, bundle, extra)?.wait()
    }

    /// [`Harness::run`] in the background.
    pub fn spawn_run(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Result<Spawned> {
        let path = bundle.path_str();
        let mut args = vec!["run", "--bundle", path.as_str()];
        args.extend_from_slice(extra);
        args.push(id);
        self.spawn(
            &args,
            Opts {
                stdout: Some(self.stdout_path(id)),
                stderr: Some(self.stderr_path(id)),
                ..Opts::default()
            },
        )
    }

    /// Run the bundle in the foreground under a fresh id and return the container's stdout; the
    /// container must exit 0.
    pub fn run_ok(&self, bundle: &Bundle) -> Result<String> {
        let id = self.id("run");
        let out = self.run(&id, bundle, &[])?;
        if !out.success() {
            bail!(
                "container {id} failed: {out}\n--- bundle config ---\n{}",
                serde_json::to_string_pretty(bundle.config())?
            );
        }
        Ok(out.stdout)
    }

    /// A listening `--console-socket` in the temp dir.
    pub fn console_socket(&self) -> Result<ConsoleSocket> {
        ConsoleSocket::listen(&self.path("console.sock"), self.timeout)
    }

    /// A persistent network namespace (bind-mounted on a file in the temp dir by
    /// `unshare --net=FILE`), unmounted when the harness drops.
    pub fn netns(&self) -> Result<PathBuf> {
        let file = self.path("netns");
        File::create(&file)?;
        if let Ok(mut list) = self.ns_files.lock() {
            list.push(file.clone());
        }
        let status = Command::new("unshare")
            .arg(format!("--net={}", file.display()))
            .arg("true")
            .status()
            .context("running unshare (util-linux)")?;
        if !status.success() {
            bail!("unshare --net={} true failed: {status}", file.display());
        }
        Ok(file)
    }

    /// Make `dir` (in the temp dir) a mount point of its own with shared propagation, so that mounts
    /// made under it later propagate to its peers and slaves. Unmounted when the harness drops.
    pub fn make_shared_mount(&self, dir: &Path) -> Result<()> {
        use nix::mount::{mount, MsFlags};
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("bind-mounting {} on itself", dir.display()))?;
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .with_context(|| format!("making {} shared", dir.display()))?;
        Ok(())
    }

    /// Mount a tmpfs on `dir` (in the temp dir). Unmounted when the harness drops.
    pub fn mount_tmpfs(&self, dir: &Path) -> Result<()> {
        use nix::mount::{mount, MsFlags};
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting a tmpfs on {}", dir.display()))
    }

    /// Pids of live processes carrying this harness's tag (runtime commands, container processes).
    pub fn tagged_pids(&self) -> Vec<i32> {
        host::pids_with_env(TAG_VAR, &self.tag)
            .into_iter()
            .filter(|p| host::process_alive(*p))
            .collect()
    }

    /// Check that nothing of container `id` from `bundle` is left: no state directory under the
    /// root, no mount mentioning the bundle, no directory of the bundle's cgroup, and no live
    /// process of this harness (waiting a little for processes that are being killed).
    pub fn check_no_trace(&self, id: &str, bundle: &Bundle) -> Result<()> {
        // (An id that is not a plain name has no state directory of its own to look for.)
        let plain = !id.contains('/') && id != "." && id != "..";
        let state_dir = self.root.join(id);
        if plain && state_dir.exists() {
            bail!("state directory {} is left", state_dir.display());
        }
        let mounts = host::mountinfo_lines_containing(bundle.path())?;
        if !mounts.is_empty() {
            bail!("mounts of the bundle are left:\n{}", mounts.join("\n"));
        }
        if let Some(cgroup) = bundle.cgroups_path() {
            let dirs = host::existing_cgroup_dirs(&cgroup)?;
            if !dirs.is_empty() {
                bail!("cgroup directories are left: {dirs:?}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.tagged_pids();
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let desc: Vec<String> = pids
                    .iter()
                    .map(|p| {
                        let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                        format!(
                            "{p}: {}",
                            String::from_utf8_lossy(&cmdline).replace('\0', " ")
                        )
                    })
                    .collect();
                bail!("processes are left:\n{}", desc.join("\n"));
            }
            sleep(Duration::from_millis(20));
        }
    }
}

/// Removes a cgroup directory and the sub-cgroups a test made in it (e.g. for `exec --cgroup`),
/// deepest first; errors are ignored (this is cleanup).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for Harness {
    fn drop(&mut self) {
        // 1. Ask the runtime to remove every container we created (killing running ones).
        let ids = self.ids.lock().map(|l| l.clone()).unwrap_or_default();
        for id in ids.iter().rev() {
            if self.root.join(id).exists() {
                let _ = self.exec(
                    &["delete", "--force", id],
                    Opts {
                        timeout: Some(Duration::from_secs(10)),
                        ..Opts::default()
                    },
                );
            }
        }
        // 2. Kill what is still alive of ours (only processes carrying our tag).
        for pid in self.tagged_pids() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.tagged_pids().is_empty() && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        // 3. Namespace files we mounted, and anything else still mounted in our temp dir.
        let mut points = self.ns_files.lock().map(|l| l.clone()).unwrap_or_default();
        points.extend(host::mount_points_under(&self.tmp.0).unwrap_or_default());
        for point in points {
            let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
        }
        // 4. The cgroups we named, deepest first.
        let cgroups = self.cgroups.lock().map(|l| l.clone()).unwrap_or_default();
        for cgroup in cgroups {
            for dir in host::existing_cgroup_dirs(&cgroup).unwrap_or_default() {
                remove_cgroup_tree(&dir);
            }
        }
        // 5. The stand-in host mount namespace, and what is mounted in it.
        drop(self.host_ns.take());
        // 6. The temp dir itself goes when `self.tmp` drops.
    }
}

/// A mount namespace whose every mount is shared in peer groups of its own, kept alive by a `sleep`
/// we start (and kill when the harness drops: the namespace and its mounts go with it).
#[derive(Debug)]
struct HostMountNs {
    holder: Child,
    ns: File,
}

impl HostMountNs {
    fn start() -> Result<HostMountNs> {
        // Private first, so the copy's peer groups are cut from the real host's; then shared.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount --make-rshared / && echo ready && exec sleep 3600")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe; the holder dies with the test if it is killed.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut holder = cmd
            .spawn()
            .context("starting a mount namespace with unshare (util-linux)")?;
        let mut ready = String::new();
        if let Some(out) = holder.stdout.take() {
            use std::io::BufRead;
            std::io::BufReader::new(out).read_line(&mut ready)?;
        }
        if ready.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            bail!("the stand-in host mount namespace did not come up");
        }
        let ns = File::open(format!("/proc/{}/ns/mnt", holder.id()))?;
        Ok(HostMountNs { holder, ns })
    }

    /// Make `cmd` enter this namespace before it execs (and go to `cwd` again, which `setns`
    /// resets to the namespace's root).
    fn enter_in(&self, cmd: &mut Command, cwd: Option<&Path>) {
        let fd = self.ns.as_raw_fd();
        let cwd = cwd.and_then(|c| std::ffi::CString::new(c.as_os_str().as_encoded_bytes()).ok());
        // SAFETY: the closure runs in the child between fork and exec and only calls setns(2) and
        // chdir(2), which are async-signal-safe; the fd and string outlive the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(dir) = &cwd {
                    if libc::chdir(dir.as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

impl Drop for HostMountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The command line `exec [flags...] ID ARGS...` (for [`Harness::exec`] or [`Harness::spawn`] with
/// options of their own).
pub fn exec_args<'a>(id: &'a str, flags: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["exec"];
    all.extend_from_slice(flags);
    all.push(id);
    all.extend_from_slice(args);
    all
}

/// Wait until `path` exists and return its content (for files a container or hook writes).
pub fn wait_for_content(path: &Path, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        // A file that exists but is still empty is being written: a shell's
        // `> file` creates it before the command writes.
        if let Ok(text) = fs::read_to_string(path) {
            if text.ends_with('\n') {
                return Ok(text);
            }
        }
        if Instant::now() > deadline {
            bail!("{} got no complete line within {timeout:?}", path.display());
        }
        sleep(Duration::from_millis(10));
    }
}

/// Waits until `path` exists and returns its content.
pub fn wait_for_file(path: &Path, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        sleep(Duration::from_millis(10));
    }
}
