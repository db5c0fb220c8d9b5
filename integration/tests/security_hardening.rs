//! Attacks from a hostile image or spec on what the runtime does inside the container's root,
//! after runc's hardening since 2024: writes redirected through a fake `/proc` (CVE-2025-52881),
//! a fake `/dev/ptmx` or `/dev/pts` for the console, mounts over `/proc`, an image whose `/dev`
//! is a symlink to the host (CVE-2026-41579), and descriptors of the runtime reaching the
//! container or its hooks.
//!
//! Each test names the attack; each fails against a runtime without the defence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use skiff_integration::procfs::fd_listing;
use skiff_integration::{Bundle, Harness, Opts};

/// Removes the spec's `proc` mount, so the container's `/proc` is the image's own directory.
fn without_proc_mount(b: &mut Bundle) -> Result<()> {
    b.edit(|c| {
        if let Some(m) = c["mounts"].as_array_mut() {
            m.retain(|m| m["destination"] != "/proc");
        }
    })?;
    Ok(())
}

/// Fills the image's `/proc` with a fake `self/fd/N` for every plausible descriptor number,
/// each a symlink to `decoy`: a runtime that names its descriptors as `/proc/self/fd/N` after
/// pivot_root acts on `decoy` instead.
fn fake_proc_self_fd(rootfs: &Path, decoy: &str) -> Result<()> {
    let proc = rootfs.join("proc");
    let fd = proc.join("fakeself/fd");
    fs::create_dir_all(&fd)?;
    symlink("fakeself", proc.join("self"))?;
    symlink("fakeself", proc.join("thread-self"))?;
    for n in 0..64 {
        symlink(decoy, fd.join(n.to_string()))?;
    }
    Ok(())
}

/// Runs the bundle; `None` when the runtime refused it (runc 1.1.5 refuses any container whose
/// `/proc` is not a procfs: it closes its descriptors through `/proc/self/fd`). Refusing is a
/// safe answer to these attacks; running with the wrong effect is not.
fn run_or_refused(h: &Harness, b: &Bundle) -> Result<Option<String>> {
    let id = h.id("run");
    let out = h.run(&id, b, &[])?;
    if out.success() {
        return Ok(Some(out.stdout));
    }
    eprintln!("refused: {out}");
    Ok(None)
}

fn set_paths(b: &mut Bundle, masked: Value, readonly: Value) -> Result<()> {
    b.edit(|c| {
        c["linux"]["maskedPaths"] = masked;
        c["linux"]["readonlyPaths"] = readonly;
    })?;
    Ok(())
}

// --- CVE-2025-52881: writes after pivot_root through a fake /proc ----------------------------

#[test]
fn fake_proc_self_fd_in_the_image_cannot_move_a_masked_path_onto_another_file() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    without_proc_mount(&mut b)?;
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    let rootfs = b.rootfs();
    fs::write(rootfs.join("secret"), "SECRET\n")?;
    fs::write(rootfs.join("decoy"), "DECOY\n")?;
    fake_proc_self_fd(&rootfs, "/decoy")?;
    set_paths(&mut b, json!(["/secret"]), json!([]))?;
    b.sh("echo secret=$(cat /secret); echo decoy=$(cat /decoy)")?;
    let Some(out) = run_or_refused(&h, &b)? else {
        return Ok(());
    };
    assert!(
        out.contains("secret=\n"),
        "the masked path is readable: the mask went elsewhere:\n{out}"
    );
    assert!(
        out.contains("decoy=DECOY\n"),
        "a file the spec did not mask was masked:\n{out}"
    );
    Ok(())
}

#[test]
fn fake_proc_self_fd_in_the_image_cannot_move_a_read_only_path_onto_another_dir() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    without_proc_mount(&mut b)?;
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    let rootfs = b.rootfs();
    fs::create_dir_all(rootfs.join("guarded"))?;
    fs::create_dir_all(rootfs.join("decoydir"))?;
    fake_proc_self_fd(&rootfs, "/decoydir")?;
    set_paths(&mut b, json!([]), json!(["/guarded"]))?;
    b.sh(
        "touch /guarded/x 2>/dev/null && echo guarded=writable || echo guarded=read-only; \
         touch /decoydir/x 2>/dev/null && echo decoy=writable || echo decoy=read-only",
    )?;
    let Some(out) = run_or_refused(&h, &b)? else {
        return Ok(());
    };
    assert!(
        out.contains("guarded=read-only"),
        "the read-only path is writable:\n{out}"
    );
    assert!(
        out.contains("decoy=writable"),
        "the wrong directory was made read-only:\n{out}"
    );
    Ok(())
}

/// `nsenter`s the network namespace of `pid` and reads a sysctl from the host's procfs there.
fn sysctl_in_netns_of(pid: i32, key: &str) -> Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["cat", &format!("/proc/sys/{}", key.replace('.', "/"))])
        .output()
        .context("nsenter")?;
    if !out.status.success() {
        bail!("nsenter: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn fake_proc_sys_in_the_image_cannot_swallow_a_sysctl() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    without_proc_mount(&mut b)?;
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    let rootfs = b.rootfs();
    let fake = rootfs.join("proc/sys/net/ipv4");
    fs::create_dir_all(&fake)?;
    fs::write(fake.join("ip_forward"), "0\n")?;
    b.edit(|c| c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"}))?;
    set_paths(&mut b, json!([]), json!([]))?;
    b.args(&["sleep", "600"])?;
    let id = h.id("sysctl");
    let out = h.try_create(&id, &b, &[])?;
    // Refusing the fake /proc is acceptable too; writing into it is not.
    if out.success() {
        let pid = h.pid(&id)?;
        assert_eq!(
            sysctl_in_netns_of(pid, "net.ipv4.ip_forward")?,
            "1",
            "the sysctl did not reach the container's network namespace"
        );
    }
    assert_eq!(
        fs::read_to_string(fake.join("ip_forward"))?,
        "0\n",
        "the sysctl was written into the image's fake /proc/sys"
    );
    Ok(())
}

#[test]
fn fake_proc_self_in_the_image_cannot_swallow_oom_score_adj() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    without_proc_mount(&mut b)?;
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["oomScoreAdj"] = json!(567);
    })?;
    let rootfs = b.rootfs();
    fake_proc_self_fd(&rootfs, "/decoy")?;
    let fake = rootfs.join("proc/fakeself/oom_score_adj");
    fs::write(&fake, "0\n")?;
    set_paths(&mut b, json!([]), json!([]))?;
    b.args(&["sleep", "600"])?;
    let id = h.id("oom");
    let out = h.try_create(&id, &b, &[])?;
    if out.success() {
        let pid = h.pid(&id)?;
        let real = fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?;
        assert_eq!(real.trim(), "567", "oomScoreAdj did not reach the process");
    }
    assert_eq!(
        fs::read_to_string(&fake)?,
        "0\n",
        "oomScoreAdj was written into the image's fake /proc/self"
    );
    Ok(())
}

// --- runc's checkProcMount: nothing mounted over /proc but a procfs ---------------------------

/// Creates the bundle and expects a refusal naming `dest` and `reason`, leaving nothing behind.
fn assert_refused(h: &Harness, b: &Bundle, dest: &str, reason: &str) -> Result<()> {
    let id = h.id("procmount");
    let out = h.try_create(&id, b, &[])?;
    assert!(!out.success(), "a mount on {dest} was accepted: {out}");
    assert!(
        out.stderr.contains(dest) && out.stderr.contains(reason),
        "the error does not name {dest} and {reason:?}: {out}"
    );
    h.check_no_trace(&id, b)
}

#[test]
fn tmpfs_over_proc_sys_is_refused() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.add_mount(json!({"destination": "/proc/sys", "type": "tmpfs", "source": "tmpfs"}))?;
    assert_refused(&h, &b, "/proc/sys", "inside /proc")
}

#[test]
fn bind_over_proc_self_attr_is_refused() -> Result<()> {
    let h = Harness::new()?;
    let dir = h.dir("attr")?;
    let mut b = h.bundle()?;
    b.bind(&dir, "/proc/self/attr", false)?;
    assert_refused(&h, &b, "/proc/self/attr", "inside /proc")
}

#[test]
fn tmpfs_over_proc_itself_is_refused() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.add_mount(json!({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}))?;
    assert_refused(&h, &b, "/proc", "not of type proc")
}

#[test]
fn symlink_in_the_image_cannot_carry_a_mount_into_proc() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    symlink("/proc/sys/kernel", b.rootfs().join("innocent"))?;
    b.add_mount(json!({"destination": "/innocent", "type": "tmpfs", "source": "tmpfs"}))?;
    assert_refused(&h, &b, "/innocent", "inside /proc")
}

#[test]
fn lxcfs_style_bind_over_proc_meminfo_is_allowed() -> Result<()> {
    let h = Harness::new()?;
    let meminfo = h.path("meminfo");
    fs::write(&meminfo, "MemTotal: 42 kB\n")?;
    let mut b = h.bundle()?;
    b.add_mount(json!({
        "destination": "/proc/meminfo", "type": "bind",
        "source": meminfo.display().to_string(), "options": ["bind", "ro"]
    }))?;
    b.args(&["cat", "/proc/meminfo"])?;
    assert_eq!(h.run_ok(&b)?, "MemTotal: 42 kB\n");
    Ok(())
}

// --- The console: the pty slave from its master, never from /dev/pts/N -----------------------

/// `CAP_SYS_ADMIN` besides the default capabilities, so the container's own root can remount its
/// `/dev` the way an attacker with that capability inside would.
fn add_sys_admin(b: &mut Bundle) -> Result<()> {
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(list) = c["process"]["capabilities"][set].as_array_mut() {
                list.push(json!("CAP_SYS_ADMIN"));
            }
        }
    })?;
    Ok(())
}

#[test]
fn fake_dev_pts_in_a_running_container_cannot_stand_in_for_an_exec_terminal() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    add_sys_admin(&mut b)?;
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    // The container's root mounts a second devpts (so /dev/ptmx still hands out real ptys) and
    // covers /dev/pts with a tmpfs whose every `N` names a file of its choice: a runtime that
    // opens the slave as /dev/pts/N opens that file as the exec's terminal.
    b.sh(
        "mkdir -p /dev/pts2 && mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts2 \
         && mount -t tmpfs tmpfs /dev/pts && ln -s /dev/pts2/ptmx /dev/pts/ptmx \
         && touch /captured && for n in $(seq 0 63); do ln -s /captured /dev/pts/$n; done \
         && echo armed > /armed; sleep 600",
    )?;
    let id = h.create_and_start("ptyfake", &b)?;
    skiff_integration::wait_for_file(&b.rootfs().join("armed"), h.timeout())?;
    let console = h.console_socket()?;
    let socket = console.path().display().to_string();
    let out = h.exec_in(
        &id,
        &["--tty", "--detach", "--console-socket", &socket],
        &[
            "sh",
            "-c",
            "echo hello-real-terminal; [ -t 1 ] && echo stdout-is-a-tty",
        ],
    )?;
    assert!(out.success(), "exec with a terminal failed: {out}");
    let text = console.wait()?.output;
    assert!(
        text.contains("hello-real-terminal") && text.contains("stdout-is-a-tty"),
        "the exec's output did not reach the pty handed to the console socket: {text:?}"
    );
    assert_eq!(fs::read_to_string(b.rootfs().join("captured"))?, "");
    Ok(())
}

#[test]
fn console_bound_from_the_slave_descriptor_works_in_a_user_namespace() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.set_namespace("user", None)?;
    b.edit(|c| {
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
        c["process"]["terminal"] = json!(true);
    })?;
    let status = Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(b.rootfs())
        .status()?;
    assert!(status.success(), "chown of the rootfs failed");
    b.sh("tty; [ /dev/console -ef $(tty) ] && echo console-is-the-terminal")?;
    let console = h.console_socket()?;
    let socket = console.path().display().to_string();
    let id = h.id("usertty");
    h.try_create(&id, &b, &["--console-socket", &socket])?
        .ok()?;
    h.start(&id)?;
    let out = console.wait()?.output;
    assert!(out.contains("console-is-the-terminal"), "{out:?}");
    Ok(())
}

// --- CVE-2026-41579: an image whose /dev (or /proc, /sys) is a symlink out of the rootfs ------

/// Every entry below `dir`, as paths relative to it.
fn tree(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in walk(dir)? {
        out.push(e.strip_prefix(dir)?.display().to_string());
    }
    out.sort();
    Ok(out)
}

fn walk(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let meta = fs::symlink_metadata(&p)?;
        out.push(p.clone());
        if meta.is_dir() {
            out.extend(walk(&p)?);
        }
    }
    Ok(out)
}

/// A host directory the image's symlinks point at, with one file in it, and what it holds.
fn host_target(h: &Harness, name: &str) -> Result<(std::path::PathBuf, Vec<String>)> {
    let dir = h.dir(name)?;
    fs::write(dir.join("host-file"), "host\n")?;
    let before = tree(&dir)?;
    Ok((dir, before))
}

/// The relative spelling of `target` from the rootfs's top directory: enough `..` to climb out of
/// any rootfs, then the host path.
fn climbing(target: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(16),
        target.strip_prefix("/").unwrap().display()
    )
}

/// Runs `b` (with and without a terminal) and checks that the host directory `dir` is untouched,
/// whether the runtime ran the container or refused it; returns what the container printed each
/// time it ran, and each refusal's text.
fn run_and_check_host(
    h: &Harness,
    b: &mut Bundle,
    dir: &Path,
    before: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    let (mut outputs, mut refusals) = (Vec::new(), Vec::new());
    for terminal in [false, true] {
        b.edit(|c| c["process"]["terminal"] = json!(terminal))?;
        let id = h.id("devlink");
        let (ok, text) = if terminal {
            let console = h.console_socket()?;
            let socket = console.path().display().to_string();
            let out = h.try_create(&id, b, &["--console-socket", &socket])?;
            if out.success() {
                h.start(&id)?;
                (true, console.wait()?.output)
            } else {
                (false, out.to_string())
            }
        } else {
            let out = h.run(&id, b, &[])?;
            (out.success(), out.to_string())
        };
        let _ = h.delete_force(&id);
        assert_eq!(
            tree(dir)?,
            before,
            "the container (terminal: {terminal}) wrote into the host's {}:\n{text}",
            dir.display()
        );
        if ok {
            outputs.push(text);
        } else {
            // A clear refusal names the mount it could not make, never a lost init.
            assert!(
                text.contains("destination /"),
                "unclear refusal (terminal: {terminal}): {text}"
            );
            refusals.push(format!("terminal: {terminal}: {text}"));
        }
    }
    Ok((outputs, refusals))
}

const DEV_PROBE: &str =
    "[ -c /dev/null ] && [ -c /dev/zero ] && [ -L /dev/fd ] && [ -d /dev/pts ] \
     && [ -d /dev/shm ] && [ -d /dev/mqueue ] && echo dev-complete; \
     touch /dev/x /dev/shm/x /dev/mqueue/x 2>/dev/null; echo probed";

#[test]
fn dev_as_an_absolute_symlink_to_a_host_dir_writes_nothing_there() -> Result<()> {
    let h = Harness::new()?;
    let (dir, before) = host_target(&h, "host-dev")?;
    let mut b = h.bundle()?;
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    fs::remove_dir_all(b.rootfs().join("dev")).ok();
    symlink(&dir, b.rootfs().join("dev"))?;
    b.sh(DEV_PROBE)?;
    run_and_check_host(&h, &mut b, &dir, &before)?;
    // The same directory also present inside the rootfs: the container then runs (as runc's
    // does), with its /dev made there and not on the host.
    fs::create_dir_all(b.rootfs().join(dir.strip_prefix("/")?))?;
    let (outputs, refusals) = run_and_check_host(&h, &mut b, &dir, &before)?;
    assert!(
        refusals.is_empty(),
        "refused although /dev resolves inside the rootfs: {refusals:?}"
    );
    for out in outputs {
        assert!(out.contains("dev-complete"), "{out}");
    }
    Ok(())
}

#[test]
fn dev_as_a_relative_symlink_climbing_to_a_host_dir_writes_nothing_there() -> Result<()> {
    let h = Harness::new()?;
    let (dir, before) = host_target(&h, "host-dev-rel")?;
    let mut b = h.bundle()?;
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    fs::remove_dir_all(b.rootfs().join("dev")).ok();
    symlink(climbing(&dir), b.rootfs().join("dev"))?;
    b.sh(DEV_PROBE)?;
    run_and_check_host(&h, &mut b, &dir, &before)?;
    fs::create_dir_all(b.rootfs().join(dir.strip_prefix("/")?))?;
    let (outputs, refusals) = run_and_check_host(&h, &mut b, &dir, &before)?;
    assert!(
        refusals.is_empty(),
        "refused although /dev resolves inside the rootfs: {refusals:?}"
    );
    for out in outputs {
        assert!(out.contains("dev-complete"), "{out}");
    }
    Ok(())
}

#[test]
fn dev_shm_and_dev_pts_as_symlinks_to_host_dirs_write_nothing_there() -> Result<()> {
    let h = Harness::new()?;
    let (dir, before) = host_target(&h, "host-shm")?;
    let mut b = h.bundle()?;
    // The image's own /dev (no tmpfs over it), whose shm, pts and mqueue point at the host.
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        if let Some(m) = c["mounts"].as_array_mut() {
            m.retain(|m| m["destination"] != "/dev");
        }
    })?;
    let dev = b.rootfs().join("dev");
    fs::create_dir_all(&dev)?;
    for name in ["shm", "pts", "mqueue"] {
        let _ = fs::remove_dir_all(dev.join(name));
        symlink(dir.join(name), dev.join(name))?;
    }
    b.sh(DEV_PROBE)?;
    run_and_check_host(&h, &mut b, &dir, &before)?;
    Ok(())
}

#[test]
fn proc_and_sys_as_symlinks_to_host_dirs_write_nothing_there() -> Result<()> {
    let h = Harness::new()?;
    let (dir, before) = host_target(&h, "host-procsys")?;
    let mut b = h.bundle()?;
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    for (name, link) in [
        ("proc", climbing(&dir.join("proc"))),
        ("sys", dir.join("sys").display().to_string()),
    ] {
        let p = b.rootfs().join(name);
        let _ = fs::remove_dir_all(&p);
        symlink(link, p)?;
    }
    b.sh("cat /proc/self/status >/dev/null && echo proc-ok; ls /sys >/dev/null && echo sys-ok")?;
    run_and_check_host(&h, &mut b, &dir, &before)?;
    Ok(())
}

// --- No descriptor of the runtime (or of its caller) reaches the container or a hook -----------

const LIST_FDS: &str = "ls -l /proc/self/fd";

fn fds_of(listing: &str) -> Result<Vec<i32>> {
    Ok(fd_listing(listing)?.keys().copied().collect())
}

/// Runs `args` in a new container with a terminal through create/start and returns its listing.
fn through_a_terminal(h: &Harness, b: &mut Bundle) -> Result<String> {
    b.edit(|c| c["process"]["terminal"] = json!(true))?;
    let console = h.console_socket()?;
    let socket = console.path().display().to_string();
    let id = h.id("ttyfds");
    h.try_create(&id, b, &["--console-socket", &socket])?.ok()?;
    h.start(&id)?;
    Ok(console.wait()?.output)
}

#[test]
fn no_runtime_descriptor_reaches_an_init_with_a_terminal() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh(LIST_FDS)?;
    let out = through_a_terminal(&h, &mut b)?;
    assert_eq!(fds_of(&out)?, [0, 1, 2], "{out}");
    Ok(())
}

#[test]
fn no_runtime_descriptor_reaches_an_exec_with_a_terminal() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("execfds", &b)?;
    let console = h.console_socket()?;
    let socket = console.path().display().to_string();
    h.exec_in(
        &id,
        &["--tty", "--detach", "--console-socket", &socket],
        &["sh", "-c", LIST_FDS],
    )?
    .ok()?;
    let out = console.wait()?.output;
    assert_eq!(fds_of(&out)?, [0, 1, 2], "{out}");
    Ok(())
}

/// `run --preserve-fds 1` with a file as fd 3 (inherited without close-on-exec, as a caller's
/// descriptors are): the container gets exactly 0..=3.
#[test]
fn preserved_descriptors_are_the_only_extra_ones_in_the_container() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh(LIST_FDS)?;
    let id = h.id("preserve");
    let out = h.exec(
        &["run", "--bundle", &b.path_str(), "--preserve-fds", "1", &id],
        Opts {
            fd3: Some(fs::File::create(h.path("fd3"))?),
            ..Opts::default()
        },
    )?;
    assert!(out.success(), "{out}");
    assert_eq!(fds_of(&out.stdout)?, [0, 1, 2, 3], "{out}");
    Ok(())
}

/// Every hook lists its descriptors into a file; the runtime is given an extra descriptor by its
/// caller (fd 3, preserved for the container), which must not reach the hooks either.
#[test]
fn no_runtime_or_caller_descriptor_reaches_a_hook() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    let out_dir = h.dir("hook-fds")?;
    // startContainer runs in the container after pivot_root: it writes into the container's /.
    for stage in [
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
        "startContainer",
    ] {
        let file = if stage == "startContainer" {
            format!("/hook-{stage}")
        } else {
            out_dir.join(format!("hook-{stage}")).display().to_string()
        };
        b.add_hook(
            stage,
            json!({"path": "/bin/sh", "args": ["sh", "-c", format!("{LIST_FDS} > {file}")]}),
        )?;
    }
    b.args(&["true"])?;
    let id = h.id("hookfds");
    let out = h.exec(
        &["run", "--bundle", &b.path_str(), "--preserve-fds", "1", &id],
        Opts {
            fd3: Some(fs::File::create(h.path("fd3"))?),
            ..Opts::default()
        },
    )?;
    assert!(out.success(), "{out}");
    for stage in [
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
        "startContainer",
    ] {
        let file = if stage == "startContainer" {
            b.rootfs().join(format!("hook-{stage}"))
        } else {
            out_dir.join(format!("hook-{stage}"))
        };
        let listing = fs::read_to_string(&file).with_context(|| format!("{stage} did not run"))?;
        assert_eq!(fds_of(&listing)?, [0, 1, 2], "{stage} hook:\n{listing}");
    }
    Ok(())
}

#[test]
fn no_shim_or_runtime_descriptor_reaches_a_container_run_by_containerd() -> Result<()> {
    use skiff_integration::containerd::{Containerd, IMAGE, SKIFF_RUNTIME};
    let c = Containerd::start()?;
    c.import_busybox()?;
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "fds1",
        "sh",
        "-c",
        LIST_FDS,
    ])?;
    assert!(out.success(), "{out}\n{}", c.log_tail());
    assert_eq!(
        fds_of(&out.stdout)?,
        [0, 1, 2],
        "init through the shim: {out}"
    );
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "fds2",
        "sleep",
        "300",
    ])?;
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "fds2",
        "sh",
        "-c",
        LIST_FDS,
    ])?;
    assert!(out.success(), "{out}\n{}", c.log_tail());
    assert_eq!(
        fds_of(&out.stdout)?,
        [0, 1, 2],
        "exec through the shim: {out}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", "fds2"])?;
    c.wait_until(std::time::Duration::from_secs(10), || {
        c.task_status("fds2").ok().flatten().as_deref() == Some("STOPPED")
    });
    c.ctr(&["task", "delete", "fds2"])?;
    c.ctr(&["container", "delete", "fds2"])?;
    Ok(())
}

#[test]
fn dev_ptmx_replaced_in_a_running_container_is_refused_for_an_exec_terminal() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("ptmxfake", &b)?;
    // The container's root (default capabilities) swaps its /dev/ptmx for another device, then
    // for a fifo, either of which a runtime would otherwise take for the pty multiplexer.
    h.exec_in(&id, &[], &["mkfifo", "/dev/fifo"])?.ok()?;
    for target in ["/dev/null", "/dev/fifo"] {
        h.exec_in(&id, &[], &["ln", "-sf", target, "/dev/ptmx"])?
            .ok()?;
        let console = h.console_socket()?;
        let socket = console.path().display().to_string();
        let out = h.exec_in(
            &id,
            &["--tty", "--detach", "--console-socket", &socket],
            &["echo", "should-not-run"],
        )?;
        assert!(!out.success(), "{target} as /dev/ptmx was accepted: {out}");
        assert!(
            out.stderr.contains("/dev/ptmx") && out.stderr.contains("pty multiplexer"),
            "{target}: the error does not say /dev/ptmx is not the pty multiplexer: {out}"
        );
    }
    Ok(())
}

#[test]
fn bind_of_a_directory_with_a_fake_proc_tree_over_proc_is_refused() -> Result<()> {
    let h = Harness::new()?;
    let fake = h.dir("fakeproc")?;
    fs::create_dir_all(fake.join("sys/net/ipv4"))?;
    fs::write(fake.join("sys/net/ipv4/ip_forward"), "0\n")?;
    let mut b = h.bundle()?;
    b.bind(&fake, "/proc", false)?;
    assert_refused(&h, &b, "/proc", "not of type proc")
}

#[test]
fn bind_of_a_real_procfs_over_proc_is_allowed() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    // What runc accepts too: the root of a procfs (here the host's) bound over the container's.
    b.bind(Path::new("/proc"), "/proc", true)?;
    b.sh("[ -r /proc/self/status ] && echo proc-ok")?;
    assert_eq!(h.run_ok(&b)?, "proc-ok\n");
    Ok(())
}

/// The sockets among the descriptors of `listing` (an `ls -l /proc/<pid>/fd`), above stdio.
fn sockets_above_stdio(listing: &str) -> Result<Vec<String>> {
    Ok(fd_listing(listing)?
        .into_iter()
        .filter(|(fd, target)| *fd > 2 && target.starts_with("socket:"))
        .map(|(_, target)| target)
        .collect())
}

/// The runtime started by the shim (under containerd) runs hooks: no descriptor of containerd, the
/// shim or the runtime reaches them, and the runtime itself holds none of the shim's sockets.
#[test]
fn no_shim_descriptor_reaches_the_runtime_or_its_hooks() -> Result<()> {
    use skiff_integration::containerd::{Containerd, SKIFF_RUNTIME};
    let h = Harness::new()?;
    let c = Containerd::start()?;
    let mut b = h.bundle()?;
    let out_dir = h.dir("shim-hook-fds")?;
    let rootfs = b.rootfs().display().to_string();
    b.edit(|c| {
        c["root"]["path"] = json!(rootfs);
        c["linux"].as_object_mut().map(|l| l.remove("cgroupsPath"));
    })?;
    // createRuntime runs under `create` and poststart under `start`: each lists its own
    // descriptors and its parent's (the runtime's).
    for stage in ["createRuntime", "createContainer", "poststart"] {
        let file = out_dir.join(format!("hook-{stage}")).display().to_string();
        let script =
            format!("{LIST_FDS} > {file}; ls -l /proc/$PPID/fd > {file}.runtime 2>&1; true");
        b.add_hook(
            stage,
            json!({"path": "/bin/sh", "args": ["sh", "-c", script]}),
        )?;
    }
    b.args(&["sleep", "300"])?;
    let config = b.path().join("config.json").display().to_string();
    let out = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        "--config",
        &config,
        "shimhooks",
    ])?;
    assert!(out.success(), "{out}\n{}", c.log_tail());
    let shim_sockets: Vec<String> = c
        .skiff_shim_pids()
        .iter()
        .map(|pid| {
            let listing = Command::new("ls")
                .args(["-l", &format!("/proc/{pid}/fd")])
                .output()?;
            sockets_above_stdio(&String::from_utf8_lossy(&listing.stdout))
        })
        .collect::<Result<Vec<_>>>()?
        .concat();
    assert!(!shim_sockets.is_empty(), "the shim holds no socket?");
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", "shimhooks"]);
    c.wait_until(std::time::Duration::from_secs(10), || {
        c.task_status("shimhooks").ok().flatten().as_deref() == Some("STOPPED")
    });
    let _ = c.ctr(&["task", "delete", "shimhooks"]);
    let _ = c.ctr(&["container", "delete", "shimhooks"]);
    for stage in ["createRuntime", "createContainer", "poststart"] {
        let file = out_dir.join(format!("hook-{stage}"));
        let listing = fs::read_to_string(&file).with_context(|| format!("{stage} did not run"))?;
        assert_eq!(
            fds_of(&listing)?,
            [0, 1, 2],
            "{stage} hook under the shim:\n{listing}"
        );
    }
    for stage in ["createRuntime", "poststart"] {
        let file = out_dir.join(format!("hook-{stage}.runtime"));
        let listing = fs::read_to_string(&file)?;
        let leaked: Vec<_> = sockets_above_stdio(&listing)?
            .into_iter()
            .filter(|s| shim_sockets.contains(s))
            .collect();
        assert!(
            leaked.is_empty(),
            "the runtime ({stage}) holds the shim's sockets {leaked:?}:\n{listing}"
        );
    }
    Ok(())
}

/// Runs a shell command line under `script(1)`, which gives it a terminal (for `ctr -t`).
fn in_terminal(line: &str) -> Result<skiff_integration::Output> {
    let mut cmd = Command::new("script");
    cmd.args(["-qefc", line, "/dev/null"]);
    skiff_integration::containerd::run_with_timeout(&mut cmd, std::time::Duration::from_secs(30))
}

/// Under the shim, the paths the tests above leave out: the hooks of `start` and `delete`
/// (prestart, startContainer in the container, poststop), an exec'd process and an init with a
/// terminal, and a `binary://` logger the shim starts itself. Each lists its descriptors: stdio
/// only (the logger: stdio and the three pipes containerd's protocol gives it, fds 3 to 5), even
/// when the shim inherited a stray descriptor from containerd's caller.
#[test]
fn no_shim_descriptor_reaches_late_hooks_terminals_or_a_logger() -> Result<()> {
    use skiff_integration::containerd::{Containerd, StartOptions, IMAGE, SKIFF_RUNTIME};
    let h = Harness::new()?;
    // containerd, and so the shim, starts with a stray descriptor (fd 200) of its caller's.
    let c = Containerd::start_with(StartOptions {
        stray_fd: Some(200),
        ..StartOptions::default()
    })?;
    c.import_busybox()?;
    let mut b = h.bundle()?;
    let out_dir = h.dir("shim-late-fds")?;
    let rootfs = b.rootfs().display().to_string();
    b.edit(|c| {
        c["root"]["path"] = json!(rootfs);
        c["root"]["readonly"] = json!(false);
        c["linux"].as_object_mut().map(|l| l.remove("cgroupsPath"));
    })?;
    for stage in ["prestart", "startContainer", "poststop"] {
        let file = if stage == "startContainer" {
            format!("/hook-{stage}")
        } else {
            out_dir.join(format!("hook-{stage}")).display().to_string()
        };
        b.add_hook(
            stage,
            json!({"path": "/bin/sh", "args": ["sh", "-c", format!("{LIST_FDS} > {file}")]}),
        )?;
    }
    b.args(&["sleep", "300"])?;
    let config = b.path().join("config.json").display().to_string();
    // The logger lists its own descriptors (`$$`: not those of an `ls` it forks) before it
    // reports ready by closing fd 5.
    let logger = out_dir.join("logger.sh");
    let logger_fds = out_dir.join("logger-fds");
    fs::write(
        &logger,
        format!(
            "#!/bin/sh\nls -l /proc/self/fd > {}\nexec 5>&-\ncat <&3 >/dev/null &\ncat <&4 >/dev/null\nwait\n",
            logger_fds.display()
        ),
    )?;
    fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let uri = format!("binary://{}", logger.display());
    let out = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        "--log-uri",
        &uri,
        "--config",
        &config,
        "shimlate",
    ])?;
    assert!(out.success(), "{out}\n{}", c.log_tail());
    let ctr = format!(
        "ctr --address {} --namespace {}",
        c.socket().display(),
        c.namespace()
    );
    let exec_tty = in_terminal(&format!(
        "{ctr} task exec -t --exec-id t1 shimlate {LIST_FDS}"
    ))?;
    let run_tty = in_terminal(&format!(
        "{ctr} run --rm -t --runtime {SKIFF_RUNTIME} {IMAGE} shimtty {LIST_FDS}"
    ))?;
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", "shimlate"]);
    c.wait_until(std::time::Duration::from_secs(10), || {
        c.task_status("shimlate").ok().flatten().as_deref() == Some("STOPPED")
    });
    let _ = c.ctr(&["task", "delete", "shimlate"]);
    let _ = c.ctr(&["container", "delete", "shimlate"]);

    for (what, out) in [("exec -t", &exec_tty), ("run -t", &run_tty)] {
        // The terminal turns \n into \r\n.
        let listing = out.stdout.replace('\r', "");
        assert!(out.success(), "{what}: {out}\n{}", c.log_tail());
        assert_eq!(
            fds_of(&listing)?,
            [0, 1, 2],
            "{what} through the shim:\n{listing}"
        );
    }
    for stage in ["prestart", "startContainer", "poststop"] {
        let file = if stage == "startContainer" {
            b.rootfs().join(format!("hook-{stage}"))
        } else {
            out_dir.join(format!("hook-{stage}"))
        };
        let listing = fs::read_to_string(&file).with_context(|| format!("{stage} did not run"))?;
        assert_eq!(
            fds_of(&listing)?,
            [0, 1, 2],
            "{stage} hook under the shim:\n{listing}"
        );
    }
    let listing = fs::read_to_string(&logger_fds).context("the logger did not run")?;
    let extra: Vec<_> = fd_listing(&listing)?
        .into_iter()
        .filter(|(fd, _)| *fd > 5)
        .collect();
    assert!(
        extra.is_empty(),
        "the logger got descriptors of the shim {extra:?}:\n{listing}"
    );
    Ok(())
}
