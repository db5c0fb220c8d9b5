//! A private containerd for the shim tests, and `ctr` to drive it.
//!
//! [`Containerd::start`] runs Debian's `/usr/bin/containerd` with its own config, root, state
//! directory and sockets in a fresh temp dir, CRI disabled, and the workspace's build directory (`target/x86_64-unknown-linux-gnu/debug`)
//! first on its `PATH` so that `--runtime io.containerd.skiff.v2` finds `containerd-shim-skiff-v2`.
//! Each instance uses its own namespace, so the runtimes' state roots
//! (`/run/containerd/{skiff,runc}/<namespace>`) never collide between tests. Dropping it kills
//! containerd and every shim started for it, force-deletes the containers left in those roots,
//! unmounts whatever is left under its directory and removes the directory, so a failing test
//! still cleans up.
//!
//! [`Containerd::start_with`] takes [`StartOptions`] for the CRI tests: the CRI plugin left on with
//! extra config, files written into the instance dir before containerd starts, the fixed `k8s.io`
//! namespace (then cleanup touches only the runtime roots named in the options, never the shared
//! default ones), and a network namespace of containerd's own, so that what CNI does on "the host"
//! side (veth ends, routes, `ip_forward`) stays inside it and vanishes with it.
//!
//! [`StartOptions::version`] picks the containerd: Debian's 1.6 (the default) or 2.4 from
//! `../shared/tools/containerd-2.4.tar.xz` ([`containerd2_bin`] unpacks it once per machine; a test
//! that wants it and finds no tarball skips with a message). With 2.4, its `ctr` drives it and its
//! own `containerd-shim-runc-v2` comes after our build directory on containerd's `PATH`.
//!
//! [`busybox_image`] builds, once per test process, an OCI image archive from the busybox rootfs of
//! [`crate::bundle`]: one uncompressed layer, a config and a manifest, with sha256 digests, written
//! by hand (no registry is reachable). [`Containerd::import_busybox`] imports it with
//! `ctr images import`; [`image_archive`] builds others from the same rootfs with another image
//! config (the CRI tests' pause image).

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::bundle::build_rootfs;
use crate::harness::{default_timeout, runtime_binary, Output};
use crate::host::{mount_points_under, process_alive};

/// The name the test image is imported under.
pub const IMAGE: &str = "docker.io/library/skiff-busybox:latest";
/// Our shim's runtime name.
pub const SKIFF_RUNTIME: &str = "io.containerd.skiff.v2";

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// The directory where cargo built the shim and skiff (beside the runtime under test).
pub fn target_dir() -> PathBuf {
    runtime_binary()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target/x86_64-unknown-linux-gnu/debug"))
}

/// The shim binary under test.
pub fn shim_binary() -> PathBuf {
    target_dir().join("containerd-shim-skiff-v2")
}

fn sha256_file(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("sha256sum printed nothing"))
}

/// Store `path` as a blob of the layout in `dir`; returns (digest, size).
fn add_blob(dir: &Path, path: &Path) -> Result<(String, u64)> {
    let hex = sha256_file(path)?;
    let size = fs::metadata(path)?.len();
    let blob = dir.join("blobs/sha256").join(&hex);
    fs::rename(path, &blob)
        .with_context(|| format!("moving {} to {}", path.display(), blob.display()))?;
    Ok((format!("sha256:{hex}"), size))
}

fn add_json_blob(dir: &Path, name: &str, value: &serde_json::Value) -> Result<(String, u64)> {
    let tmp = dir.join(name);
    fs::write(&tmp, serde_json::to_vec(value)?)?;
    add_blob(dir, &tmp)
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Image dirs left by earlier test processes (each keeps its own until it exits).
fn remove_stale_images() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("skiff-image-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32 && !process_alive(pid) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The busybox OCI image archive, built once per test process.
pub fn busybox_image() -> Result<PathBuf> {
    // Tests run on several threads: the first builds, the others wait for it.
    static IMAGE_TAR: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = IMAGE_TAR
        .lock()
        .map_err(|_| anyhow!("image lock poisoned"))?;
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let tar = image_archive(
        IMAGE,
        "busybox-oci",
        json!({"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}),
    )?;
    *built = Some(tar.clone());
    Ok(tar)
}

/// Build an OCI image archive named `name` from the busybox rootfs with the image config `config`
/// (`Cmd`, `Entrypoint`, `Env`, ...), as `<tmp>/skiff-image-<pid>/<file>.tar`. Each call builds
/// anew; callers that want one archive per process keep it (see [`busybox_image`]).
pub fn image_archive(name: &str, file: &str, config: serde_json::Value) -> Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("skiff-image-{}", std::process::id()));
    remove_stale_images();
    let work = base.join(file);
    let _ = fs::remove_dir_all(&work);
    let rootfs = work.join("rootfs");
    let layout = work.join("layout");
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    build_rootfs(&rootfs)?;

    let layer = layout.join("layer.tar");
    run_checked(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    )?;
    let (layer_digest, layer_size) = add_blob(&layout, &layer)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = add_json_blob(&layout, "config.json", &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = add_json_blob(&layout, "manifest.json", &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("latest"),
            },
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let tar = base.join(format!("{file}.tar"));
    run_checked(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tar)
            .args(["oci-layout", "index.json", "blobs"]),
    )?;
    let _ = fs::remove_dir_all(&work);
    Ok(tar)
}

/// Which containerd an instance runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Debian's `/usr/bin/containerd` (1.6), config version 2.
    #[default]
    Debian,
    /// containerd 2.4 from the tools tarball, config version 3.
    V2_4,
}

/// Where the containerd 2.4 tarball is looked for: `$SKIFF_CONTAINERD2_TARBALL`, else
/// `shared/tools/containerd-2.4.tar.xz` beside the workspace or one or two levels above it
/// (`/work/main` and `/work/wt/<name>` both find `/work/shared/tools`).
fn containerd2_tarball() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SKIFF_CONTAINERD2_TARBALL") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    workspace
        .ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join("shared/tools/containerd-2.4.tar.xz"))
        .find(|p| p.is_file())
}

/// containerd 2.4's `bin` directory (`containerd`, `ctr`, `containerd-shim-runc-v2`, `crictl`),
/// unpacked once per machine into `<tmp>/skiff-containerd-2.4`; `None` when the tarball is not
/// there, after printing why (the caller skips its test).
pub fn containerd2_bin() -> Result<Option<PathBuf>> {
    // One unpacking at a time in this process: its tests run on several threads and share the
    // per-process scratch directory below (one thread removed it under another's tar).
    static UNPACKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = UNPACKING.lock().unwrap_or_else(|e| e.into_inner());
    let dest = std::env::temp_dir().join("skiff-containerd-2.4");
    let bin = dest.join("bin");
    if bin.join("containerd").is_file() && bin.join("ctr").is_file() {
        return Ok(Some(bin));
    }
    let Some(tarball) = containerd2_tarball() else {
        eprintln!(
            "skipping: containerd 2.4 not found (shared/tools/containerd-2.4.tar.xz above the \
             workspace, or $SKIFF_CONTAINERD2_TARBALL)"
        );
        return Ok(None);
    };
    // Unpack beside the destination and rename into place, so that concurrent test processes
    // never see a half-written tree.
    let tmp = std::env::temp_dir().join(format!("skiff-containerd-2.4.{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    run_checked(
        Command::new("tar")
            .arg("-C")
            .arg(&tmp)
            .arg("-xJf")
            .arg(&tarball),
    )?;
    if fs::rename(tmp.join("containerd-2.4"), &dest).is_err() && !bin.is_dir() {
        bail!("unpacking {} into {}", tarball.display(), dest.display());
    }
    let _ = fs::remove_dir_all(&tmp);
    Ok(Some(bin))
}

/// How [`Containerd::start_with`] sets up an instance; the default is what [`Containerd::start`]
/// does. In every string `{dir}` stands for the instance's directory.
#[derive(Debug, Default, Clone)]
pub struct StartOptions {
    /// Leave the CRI plugin enabled and append this text (its `[plugins."io.containerd.grpc.v1.cri"]`
    /// tables) to the generated config.
    pub cri_config: Option<String>,
    /// Files (relative to the instance dir) written before containerd starts: CNI configs, runtime
    /// option files.
    pub files: Vec<(String, String)>,
    /// The namespace to use instead of a fresh one (`k8s.io` for CRI). Such a namespace may be
    /// shared with other containerds, so cleanup then leaves the default runtime roots
    /// (`/run/containerd/{skiff,runc}/<namespace>`) and the `/<namespace>` cgroups alone.
    pub namespace: Option<String>,
    /// More (runtime binary, root) pairs whose `<root>/<namespace>` cleanup force-deletes.
    pub runtime_roots: Vec<(PathBuf, String)>,
    /// Run containerd (and so its shims and CNI plugins) in a network namespace of its own, with
    /// only `lo`, up.
    pub own_netns: bool,
    /// Which containerd to run (and which `ctr` drives it).
    pub version: Version,
    /// Give containerd, at this descriptor number and without close-on-exec, an open file
    /// (`stray-fd` in the instance dir), as a careless caller leaks one: containerd hands it on to
    /// the shims it starts, which must not pass it further.
    pub stray_fd: Option<i32>,
    /// More environment for containerd, and so for the shims it starts.
    pub env: Vec<(String, String)>,
}

/// `text` with `{dir}` replaced by `dir`.
fn in_dir(text: &str, dir: &Path) -> String {
    text.replace("{dir}", &dir.display().to_string())
}

/// Unshare the network namespace and bring `lo` up; runs in the child between fork and exec, so
/// it makes plain syscalls only.
fn enter_own_netns() -> std::io::Result<()> {
    // SAFETY: unshare, socket, ioctl and close with valid arguments; `ifr` lives on this stack.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// A private containerd.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    config: PathBuf,
    /// The directory of containerd 2.4's binaries, when it is the one running.
    bin: Option<PathBuf>,
    namespace: String,
    child: Option<Child>,
    opts: StartOptions,
}

impl Containerd {
    /// Start a containerd in a fresh temp dir and wait until it answers.
    pub fn start() -> Result<Containerd> {
        Containerd::start_with(StartOptions::default())
    }

    /// Start containerd 2.4 with the busybox image imported; `None` (the test skips) when the
    /// tools tarball is absent.
    pub fn start_v2() -> Result<Option<Containerd>> {
        if containerd2_bin()?.is_none() {
            return Ok(None);
        }
        let c = Containerd::start_with(StartOptions {
            version: Version::V2_4,
            ..StartOptions::default()
        })?;
        c.import_busybox()?;
        Ok(Some(c))
    }

    /// Start a containerd set up as `opts` says and wait until it answers.
    pub fn start_with(opts: StartOptions) -> Result<Containerd> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the containerd tests start containerd and must run as root");
        }
        for bin in [shim_binary(), runtime_binary()] {
            if !bin.is_file() {
                bail!(
                    "{} not found: run `cargo build --workspace` first",
                    bin.display()
                );
            }
        }
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| format!("skiff-it-{}-{n}", std::process::id()));
        let dir = std::env::temp_dir().join(format!("ctrd-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let config = dir.join("config.toml");
        for (name, text) in &opts.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&path, in_dir(text, &dir))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let disabled = if opts.cri_config.is_some() {
            ""
        } else {
            r#""io.containerd.grpc.v1.cri""#
        };
        let bin = match opts.version {
            Version::Debian => None,
            Version::V2_4 => {
                Some(containerd2_bin()?.ok_or_else(|| anyhow!("containerd 2.4 is not available"))?)
            }
        };
        let config_version = if bin.is_some() { 3 } else { 2 };
        let mut text = format!(
            r#"version = {config_version}
root = "{root}"
state = "{state}"
disabled_plugins = [{disabled}]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "debug"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = dir.join("c.sock").display(),
        );
        if let Some(cri) = &opts.cri_config {
            text.push('\n');
            text.push_str(&in_dir(cri, &dir));
        }
        fs::write(&config, text)?;
        let mut c = Containerd {
            dir,
            config,
            bin,
            namespace,
            child: None,
            opts,
        };
        c.launch()?;
        Ok(c)
    }

    fn launch(&mut self) -> Result<()> {
        let system =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let path = match &self.bin {
            Some(bin) => format!("{}:{}:{system}", target_dir().display(), bin.display()),
            None => format!("{}:{system}", target_dir().display()),
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))?;
        let binary = self.bin.as_ref().map_or_else(
            || PathBuf::from("/usr/bin/containerd"),
            |b| b.join("containerd"),
        );
        let mut cmd = Command::new(&binary);
        cmd.arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.opts.own_netns {
            // SAFETY: the closure makes only async-signal-safe syscalls.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, enter_own_netns);
            }
        }
        let stray = match self.opts.stray_fd {
            Some(n) => Some((fs::File::create(self.dir.join("stray-fd"))?, n)),
            None => None,
        };
        if let Some((file, n)) = &stray {
            let (fd, n) = (file.as_raw_fd(), *n);
            // SAFETY: the closure only calls dup2 (async-signal-safe); dup2 leaves the copy
            // without close-on-exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    let r = if fd == n {
                        libc::fcntl(n, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, n)
                    };
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        // Generous: under emulation (the VM) on a loaded machine containerd 2.x
        // takes tens of seconds to load its plugins; the wait ends as soon as it answers.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.socket().exists() {
                if let Ok(out) = self.ctr(&["version"]) {
                    if out.success() {
                        return Ok(());
                    }
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("containerd exited with {status}:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!("containerd did not come up:\n{}", self.log());
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Stop containerd (SIGTERM, then SIGKILL) and wait for it; shims and containers keep running.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Kill containerd with SIGKILL (a crash: no shutdown of its own) and wait for it; shims and
    /// containers keep running. [`Containerd::relaunch`] starts it again.
    pub fn crash(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Start containerd again (after [`Containerd::crash`] or [`Containerd::stop`]) with the same
    /// config, root and state, and wait until it answers.
    pub fn relaunch(&mut self) -> Result<()> {
        self.launch()
    }

    /// Stop and start containerd again with the same config and state.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// The namespace this instance's tests use.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The instance's temp dir (for runtime config files and the like).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Import the OCI image archive `tar` (see [`image_archive`]).
    pub fn import_image(&self, tar: &Path) -> Result<()> {
        let tar = tar.display().to_string();
        self.ctr_ok(&["images", "import", &tar])?;
        Ok(())
    }

    /// The bundle containerd made for container `id`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// The containerd version this instance runs.
    pub fn version(&self) -> Version {
        self.opts.version
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let ctr = self
            .bin
            .as_ref()
            .map_or_else(|| PathBuf::from("ctr"), |b| b.join("ctr"));
        let mut cmd = Command::new(ctr);
        cmd.arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        cmd
    }

    /// Run `ctr ARGS` (stdin from /dev/null) with the default timeout.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.ctr_command(args);
        run_with_timeout(&mut cmd, default_timeout())
    }

    /// Run `ctr ARGS` and fail unless it exits 0.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.ctr(args)?;
        if !out.success() {
            bail!("{out}\ncontainerd log tail:\n{}", self.log_tail());
        }
        Ok(out)
    }

    /// Start `ctr ARGS` in the background with stdout and stderr to files in the instance dir.
    pub fn ctr_spawn(&self, name: &str, args: &[&str]) -> Result<Background> {
        let out = self.dir.join(format!("{name}.out"));
        let mut cmd = self.ctr_command(args);
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&out)?)
            .stderr(fs::File::create(self.dir.join(format!("{name}.err")))?);
        let child = cmd.spawn().context("starting ctr")?;
        Ok(Background { child, out })
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Import the busybox image as [`IMAGE`].
    pub fn import_busybox(&self) -> Result<()> {
        let tar = busybox_image()?;
        let tar = tar.display().to_string();
        self.ctr_ok(&["images", "import", &tar])?;
        Ok(())
    }

    /// The pids of the shims serving this containerd (their `-address` is our socket). A shim's
    /// child between fork and exec (a runtime command being started) has the same command line:
    /// it is not counted.
    pub fn shim_pids(&self) -> Vec<i32> {
        let sock = self.socket().display().to_string();
        let pids: Vec<i32> = processes_with_args(&["-address", &sock])
            .into_iter()
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|e| !e.ends_with("containerd") && !e.ends_with("ctr"))
                    .unwrap_or(false)
            })
            .collect();
        pids.iter()
            .copied()
            .filter(|pid| !matches!(parent_pid(*pid), Some(ppid) if pids.contains(&ppid)))
            .collect()
    }

    /// The pids of our own shim (not containerd's runc shim) serving this containerd.
    pub fn skiff_shim_pids(&self) -> Vec<i32> {
        self.shim_pids()
            .into_iter()
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|e| e.to_string_lossy().contains("containerd-shim-skiff-v2"))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Wait until `f` holds, at most `timeout`.
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            sleep(Duration::from_millis(50));
        }
        f()
    }

    /// `ctr task ls` as (id, pid, status) rows.
    pub fn tasks(&self) -> Result<Vec<(String, String, String)>> {
        let out = self.ctr_ok(&["task", "ls"])?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
            })
            .collect())
    }

    /// The status of task `id` in `ctr task ls`, if listed.
    pub fn task_status(&self, id: &str) -> Result<Option<String>> {
        Ok(self.tasks()?.into_iter().find(|t| t.0 == id).map(|t| t.2))
    }

    /// The server sockets named in the bundles' `address` files.
    fn shim_sockets(&self) -> Vec<PathBuf> {
        let dir = self
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace);
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path().join("address")).ok())
            .filter_map(|a| a.strip_prefix("unix://").map(PathBuf::from))
            .collect()
    }

    fn cleanup(&mut self) {
        let shims = self.shim_pids();
        let sockets = self.shim_sockets();
        let _ = self.stop();
        for pid in shims {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Containers left behind by the shims: force-delete them with the runtimes that made them.
        let shared_namespace = self.opts.namespace.is_some();
        let mut roots = Vec::new();
        if !shared_namespace {
            roots.extend([
                (runtime_binary(), PathBuf::from("/run/containerd/skiff")),
                (
                    PathBuf::from("/usr/sbin/runc"),
                    PathBuf::from("/run/containerd/runc"),
                ),
                (runtime_binary(), PathBuf::from("/run/containerd/runc")),
            ]);
        }
        for (bin, root) in &self.opts.runtime_roots {
            roots.push((bin.clone(), PathBuf::from(in_dir(root, &self.dir))));
        }
        for (bin, base) in roots {
            let root = base.join(&self.namespace);
            if let Ok(entries) = fs::read_dir(&root) {
                for e in entries.flatten() {
                    let _ = Command::new(&bin)
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force"])
                        .arg(e.file_name())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = fs::remove_dir_all(&root);
        }
        for socket in sockets {
            if std::os::unix::net::UnixStream::connect(&socket).is_err() {
                let _ = fs::remove_file(socket);
            }
        }
        // ctr puts containers in the cgroup /<namespace>/<id>; the runtimes remove the leaves.
        if !shared_namespace {
            remove_cgroup_dirs(&self.namespace);
        }
        if let Ok(points) = mount_points_under(&self.dir) {
            for p in points {
                if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
                    // SAFETY: a valid NUL-terminated path.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// rmdir `<hierarchy>/<name>` (and what is below it, deepest first) in every cgroup hierarchy.
fn remove_cgroup_dirs(name: &str) {
    fn rmdir_tree(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = fs::remove_dir(dir);
    }
    let mut hierarchies = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    for h in hierarchies {
        let dir = h.join(name);
        if dir.is_dir() {
            rmdir_tree(&dir);
        }
    }
}

/// The cgroup directories named `<namespace>/<id>` that still exist.
pub fn leftover_cgroups(namespace: &str, id: &str) -> Vec<PathBuf> {
    let mut hierarchies = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    hierarchies
        .into_iter()
        .map(|h| h.join(namespace).join(id))
        .filter(|d| d.is_dir())
        .collect()
}

/// The content of `file` in the v1 `controller` hierarchy (or, with an empty controller, the v2
/// hierarchy) of the cgroup `<namespace>/<id>`.
pub fn cgroup_file(namespace: &str, id: &str, controller: &str, file: &str) -> Option<String> {
    let dir = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(namespace)
        .join(id);
    fs::read_to_string(dir.join(file)).ok()
}

/// A `ctr` running in the background.
#[derive(Debug)]
pub struct Background {
    child: Child,
    out: PathBuf,
}

impl Background {
    /// What it printed so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Wait for it to exit (killing it after `timeout`); returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(None);
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` (stdin from /dev/null), killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let command = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("running {command}"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command} timed out after {timeout:?}");
        }
        sleep(Duration::from_millis(10));
    };
    Ok(Output {
        command,
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// The parent of `pid`, from `/proc/<pid>/stat` (after the command name, which may hold spaces).
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Pids of processes whose command line contains `needle` as consecutive arguments.
pub fn processes_with_args(needle: &[&str]) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .windows(needle.len())
            .any(|w| w.iter().zip(needle).all(|(a, b)| a == b))
            && process_alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}
