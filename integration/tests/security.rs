//! Attacks on the runtime from a hostile image or process, each of which must fail safe: leaked
//! descriptors and a cwd through them (CVE-2024-21626), the runtime's binary reached through
//! `/proc/<pid>/exe` (CVE-2019-5736), symlinks in the image redirecting masked paths, `/dev/null`,
//! `/dev/console` or a bind destination (CVE-2025-31133, CVE-2025-52565 and older mount races).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use skiff_integration::host::mountinfo_lines_containing;
use skiff_integration::procfs::fd_listing;
use skiff_integration::{Bundle, Harness, Output};

/// The descriptors of a host process, from `/proc/<pid>/fd`.
fn host_fds(pid: i32) -> Result<BTreeSet<i32>> {
    let mut fds = BTreeSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let name = entry?.file_name();
        if let Some(fd) = name.to_str().and_then(|n| n.parse().ok()) {
            fds.insert(fd);
        }
    }
    Ok(fds)
}

/// A host file with a secret only the host knows, and its path relative to `/` (to read it from
/// a cwd that escaped to the host's root).
fn host_secret(h: &Harness) -> Result<(String, String)> {
    let secret = format!("host-secret-{}", h.tag());
    let path = h.path("secret");
    fs::write(&path, &secret)?;
    let relative = path
        .strip_prefix("/")
        .context("temp dir is absolute")?
        .display()
        .to_string();
    Ok((secret, relative))
}

/// Climb far enough to reach `/` from any directory, then read `relative`: from inside the
/// container that finds nothing; from a cwd on the host it reads the host's file.
fn climb_and_read(relative: &str) -> String {
    format!(
        "cd ../../../../../../../../../../../../../../..; cat {relative} 2>/dev/null; echo; \
         echo cwd=$(pwd)"
    )
}

// --- CVE-2024-21626: descriptors and the cwd ----------------------------------------------------

#[test]
fn no_runtime_descriptor_reaches_the_init() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["ls", "-l", "/proc/self/fd"])?;
    let out = h.run_ok(&b)?;
    let fds = fd_listing(&out)?;
    assert_eq!(
        fds.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "descriptors beyond stdio reached the init:\n{out}"
    );

    // The same seen from the host, on a long-running init.
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("fds", &b)?;
    let pid = h.pid(&id)?;
    assert_eq!(host_fds(pid)?, BTreeSet::from([0, 1, 2]), "init {pid}");
    Ok(())
}

#[test]
fn no_runtime_descriptor_reaches_an_exec_process() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("fds", &b)?;
    let out = h.exec_in(&id, &[], &["ls", "-l", "/proc/self/fd"])?.ok()?;
    let fds = fd_listing(&out.stdout)?;
    assert_eq!(
        fds.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "descriptors beyond stdio reached the exec'd process:\n{out}"
    );
    let pid = h.exec_detached(&id, &[], &["sleep", "600"])?;
    assert_eq!(host_fds(pid)?, BTreeSet::from([0, 1, 2]), "exec'd {pid}");
    Ok(())
}

/// The run either failed before the process ran, or the process stayed inside the container.
fn assert_not_escaped(out: &Output, secret: &str, what: &str) {
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "{what}: the process read a host file:\n{out}"
    );
    if out.success() {
        assert!(
            out.stdout.contains("cwd=/\n"),
            "{what}: the process ran outside the container's root:\n{out}"
        );
    } else {
        assert!(
            !out.stdout.contains("cwd="),
            "{what}: failed, but after running the process:\n{out}"
        );
    }
}

#[test]
fn init_cwd_through_a_leaked_descriptor_never_reaches_the_host() -> Result<()> {
    let h = Harness::new()?;
    let (secret, relative) = host_secret(&h)?;
    for fd in 3..=12 {
        let mut b = h.bundle()?;
        b.sh(&climb_and_read(&relative))?;
        b.edit(|c| c["process"]["cwd"] = json!(format!("/proc/self/fd/{fd}")))?;
        let id = h.id("cwd");
        let out = h.run(&id, &b, &[])?;
        assert_not_escaped(&out, &secret, &format!("cwd /proc/self/fd/{fd}"));
        h.cmd(&["delete", "--force", &id])?;
        h.check_no_trace(&id, &b)?;
    }
    Ok(())
}

#[test]
fn init_cwd_through_a_symlink_in_the_image_stays_in_the_rootfs() -> Result<()> {
    let h = Harness::new()?;
    let (secret, relative) = host_secret(&h)?;
    let mut b = h.bundle()?;
    // Relative and absolute links that would climb out of the rootfs if resolved on the host.
    symlink("../../../../../../../../../..", b.rootfs().join("up"))?;
    symlink("/", b.rootfs().join("slash"))?;
    for cwd in ["/up", "/slash", "/up/up/tmp/.."] {
        b.sh(&climb_and_read(&relative))?;
        b.edit(|c| c["process"]["cwd"] = json!(cwd))?;
        let id = h.id("cwd");
        let out = h.run(&id, &b, &[])?;
        assert_not_escaped(&out, &secret, &format!("cwd {cwd}"));
        assert!(out.success(), "cwd {cwd} resolves inside the rootfs: {out}");
    }
    Ok(())
}

#[test]
fn exec_cwd_through_a_leaked_descriptor_never_reaches_the_host() -> Result<()> {
    let h = Harness::new()?;
    let (secret, relative) = host_secret(&h)?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("cwd", &b)?;
    let script = climb_and_read(&relative);
    for fd in 3..=12 {
        let cwd = format!("/proc/self/fd/{fd}");
        let out = h.exec_in(&id, &["--cwd", &cwd], &["sh", "-c", &script])?;
        assert_not_escaped(&out, &secret, &format!("exec --cwd {cwd}"));
    }
    assert_eq!(h.status(&id)?, "running");
    Ok(())
}

// --- capabilities --------------------------------------------------------------------------------

/// The `Cap*:` lines of `/proc/self/status` that are not all zero.
fn nonzero_caps(status: &str) -> Vec<&str> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap") && !l.ends_with(":\t0000000000000000"))
        .collect()
}

#[test]
fn a_config_without_capabilities_gives_the_process_none() -> Result<()> {
    // runc gives such a process no capabilities at all (not even a bounding set), never the
    // runtime's own; so must skiff, for the init and for an exec.
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        c["process"].as_object_mut().unwrap().remove("capabilities");
    })?;
    b.args(&["grep", "^Cap", "/proc/self/status"])?;
    let out = h.run_ok(&b)?;
    assert_eq!(nonzero_caps(&out), Vec::<&str>::new(), "init:\n{out}");

    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("nocaps", &b)?;
    let out = h.exec_in(&id, &[], &["grep", "^Cap", "/proc/self/status"])?;
    assert!(out.success(), "{out}");
    assert_eq!(
        nonzero_caps(&out.stdout),
        Vec::<&str>::new(),
        "exec:\n{out}"
    );
    Ok(())
}

// --- CVE-2019-5736: the runtime's binary --------------------------------------------------------

#[test]
fn proc_1_exe_of_a_created_container_cannot_be_opened_from_inside() -> Result<()> {
    let h = Harness::new()?;
    let bin = h.bin().to_path_buf();
    let before = fs::metadata(&bin)?;
    let mut b = h.bundle()?;
    b.args(&["true"])?;
    let id = h.id("exe");
    h.create(&id, &b)?;
    assert_eq!(h.status(&id)?, "created");
    // Root in the container, default capabilities: no CAP_SYS_PTRACE. `>>` opens for writing
    // without truncating, so a runtime that lets it through is still not damaged (in a child
    // shell: a failed redirection of `:` ends the shell).
    let out = h.exec_in(
        &id,
        &[],
        &[
            "sh",
            "-c",
            "cat /proc/1/exe >/dev/null && echo READ-OPENED; \
             sh -c ': >>/proc/1/exe' && echo WRITE-OPENED; \
             readlink /proc/1/exe && echo LINK-READ; echo done",
        ],
    )?;
    assert!(out.stdout.contains("done"), "the exec did not run: {out}");
    for leak in ["READ-OPENED", "WRITE-OPENED", "LINK-READ"] {
        assert!(
            !out.stdout.contains(leak),
            "{leak}: the created container's init is reachable through /proc/1/exe:\n{out}"
        );
    }
    let after = fs::metadata(&bin)?;
    assert_eq!(
        (before.len(), before.mtime(), before.mtime_nsec()),
        (after.len(), after.mtime(), after.mtime_nsec()),
        "{} changed",
        bin.display()
    );
    // The container still starts normally.
    h.start(&id)?;
    h.wait_status(&id, "stopped")?;
    Ok(())
}

/// Whether `/proc/<pid>/maps` maps `file` (by device and inode, as the kernel prints them).
fn maps_file(pid: i32, file: &Path) -> Result<bool> {
    let meta = fs::metadata(file)?;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let inode = meta.ino().to_string();
    Ok(maps
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(inode.as_str()) || l.contains("skiff")))
}

#[test]
fn after_start_no_process_of_the_container_runs_the_runtime() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("exe", &b)?;
    let out = h
        .exec_in(
            &id,
            &[],
            &["sh", "-c", "readlink /proc/1/exe; readlink /proc/self/exe"],
        )?
        .ok()?;
    assert_eq!(out.stdout, "/bin/busybox\n/bin/busybox\n", "{out}");

    let init = h.pid(&id)?;
    let exec = h.exec_detached(&id, &[], &["sleep", "600"])?;
    let busybox = fs::metadata(b.rootfs().join("bin/busybox"))?;
    for pid in [init, exec] {
        let exe = fs::metadata(format!("/proc/{pid}/exe"))?;
        assert_eq!(
            (exe.dev(), exe.ino()),
            (busybox.dev(), busybox.ino()),
            "/proc/{pid}/exe is not the image's busybox"
        );
        assert!(
            !maps_file(pid, h.bin())?,
            "pid {pid} still maps the runtime {}",
            h.bin().display()
        );
    }
    Ok(())
}

// --- Symlinks in the image: masked paths, /dev/null, /dev/console, bind destinations -------------

/// A bundle whose `/dev` is the image's own directory (no tmpfs on it), as an image that ships a
/// hostile `/dev` gets.
fn bundle_with_image_dev(h: &Harness) -> Result<Bundle> {
    let mut b = h.bundle()?;
    b.edit(|c| {
        if let Some(mounts) = c["mounts"].as_array_mut() {
            mounts.retain(|m| m["destination"] != "/dev");
        }
    })?;
    Ok(b)
}

/// `create` of a hostile bundle: either refused (exit 1, nothing left: `None`) or created (the id).
fn create_or_refuse(h: &Harness, b: &Bundle, extra: &[&str]) -> Result<Option<String>> {
    let id = h.id("attack");
    let out = h.try_create(&id, b, extra)?;
    if !out.success() {
        assert_eq!(out.exit_code(), 1, "{out}");
        h.check_no_trace(&id, b)?;
        return Ok(None);
    }
    Ok(Some(id))
}

#[test]
fn masked_paths_that_are_symlinks_out_of_the_rootfs_fail_safe() -> Result<()> {
    let h = Harness::new()?;
    // Host victims, in a shared mount so that a mount made on them in the container's mount
    // namespace would show on the host too.
    let dir = h.dir("victims")?;
    h.make_shared_mount(&dir)?;
    let victim_file = dir.join("file");
    let victim_dir = dir.join("dir");
    fs::write(&victim_file, "host-file")?;
    fs::create_dir(&victim_dir)?;
    fs::write(victim_dir.join("inside"), "host-dir")?;

    let mut b = h.bundle()?;
    let rootfs = b.rootfs();
    // The same paths inside the rootfs, where an in-root resolution lands.
    let in_root = |p: &Path| rootfs.join(p.strip_prefix("/").unwrap_or(p));
    fs::create_dir_all(in_root(&victim_dir))?;
    fs::write(in_root(&victim_file), "rootfs-file")?;
    fs::write(in_root(&victim_dir).join("inside"), "rootfs-dir")?;
    symlink(&victim_file, rootfs.join("mask-file"))?;
    symlink(&victim_dir, rootfs.join("mask-dir"))?;
    b.edit(|c| {
        c["linux"]["rootfsPropagation"] = json!("rshared");
        if let Some(list) = c["linux"]["maskedPaths"].as_array_mut() {
            list.push(json!("/mask-file"));
            list.push(json!("/mask-dir"));
        }
    })?;
    b.sh("echo file=$(cat /mask-file 2>&1); echo dir=$(cat /mask-dir/inside 2>&1); sleep 600")?;
    if let Some(id) = create_or_refuse(&h, &b, &[])? {
        h.start(&id)?;
        // The container sleeps after printing, so that its mounts still exist for the host check.
        let out = wait_until_lines(&h, &id, 2)?;
        assert!(!out.contains("host-"), "the container read the host: {out}");
        // Masked inside the rootfs (or not followed at all): never the host's files.
        let host_mounts = mountinfo_lines_containing(&dir)?;
        assert_eq!(
            host_mounts.len(),
            1,
            "mounts on the host victims:\n{}",
            host_mounts.join("\n")
        );
    }
    assert_eq!(fs::read_to_string(&victim_file)?, "host-file");
    assert_eq!(fs::read_to_string(victim_dir.join("inside"))?, "host-dir");
    Ok(())
}

/// Wait until the container's stdout has `n` lines.
fn wait_until_lines(h: &Harness, id: &str, n: usize) -> Result<String> {
    let deadline = Instant::now() + h.timeout();
    loop {
        let text = h.stdout_of(id).unwrap_or_default();
        if text.lines().count() >= n {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("container {id} wrote only {text:?}");
        }
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn dev_null_replaced_by_a_symlink_is_never_used_to_mask() -> Result<()> {
    let h = Harness::new()?;
    // Two targets: a file of the image with a telltale content, and a procfs file as the
    // CVE-2025-31133 exploits use (here the container's own hostname, which lives in its UTS
    // namespace: a runtime that falls for it writes nothing the host shares; runc 1.1.5 sends the
    // container's stdio there, with kernel/core_pattern that rewrites the host's core_pattern).
    let hostname = format!("hostname-{}", h.tag());
    for target in ["/not-null", "/proc/sys/kernel/hostname"] {
        let b = bundle_with_image_dev(&h)?;
        fs::write(b.rootfs().join("not-null"), "NOT-THE-NULL-DEVICE\n")?;
        symlink(target, b.rootfs().join("dev/null"))?;
        let mut b = b;
        b.edit(|c| c["hostname"] = json!(hostname))?;
        b.sh("cat /proc/keys /proc/timer_list 2>&1; echo end")?;
        if let Some(id) = create_or_refuse(&h, &b, &[])? {
            h.start(&id)?;
            h.wait_status(&id, "stopped")?;
            let out = h.stdout_of(&id)?;
            assert!(
                out.ends_with("end\n"),
                "{target}: the container's output went elsewhere: {out:?}"
            );
            for telltale in ["NOT-THE-NULL-DEVICE", hostname.as_str()] {
                assert!(
                    !out.contains(telltale),
                    "{target}: a masked path shows the symlink's target:\n{out}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn dev_console_replaced_by_a_symlink_is_never_followed() -> Result<()> {
    let h = Harness::new()?;
    // An image file, and a procfs file of the container's own UTS namespace (harmless if written).
    for target in ["/console-target", "/proc/sys/kernel/domainname"] {
        let b = bundle_with_image_dev(&h)?;
        fs::write(b.rootfs().join("console-target"), "")?;
        symlink(target, b.rootfs().join("dev/console"))?;
        let mut b = b;
        b.edit(|c| c["process"]["terminal"] = json!(true))?;
        let name = Path::new(target)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        b.sh(&format!(
            "echo mounts=$(grep -c {name} /proc/self/mountinfo); echo end"
        ))?;
        let console = h.console_socket()?;
        let socket = console.path().display().to_string();
        let Some(id) = create_or_refuse(&h, &b, &["--console-socket", &socket])? else {
            continue;
        };
        h.start(&id)?;
        let capture = console.wait()?;
        h.wait_status(&id, "stopped")?;
        let out = capture.output;
        assert!(out.contains("end"), "{target}: {out:?}");
        assert!(
            out.contains("mounts=0"),
            "{target}: the terminal was mounted through the /dev/console symlink:\n{out:?}"
        );
    }
    Ok(())
}

#[test]
fn bind_destination_symlinked_to_etc_is_mounted_inside_the_rootfs() -> Result<()> {
    let h = Harness::new()?;
    let marker = format!("marker-{}", h.tag());
    let host_etc_before: BTreeSet<PathBuf> = fs::read_dir("/etc")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    for (link, target) in [
        ("etc-abs", "/etc"),
        ("etc-rel", "../../../../../../../../../../etc"),
    ] {
        let src = h.dir("bind-src")?;
        fs::write(src.join(&marker), "from-the-bind")?;
        let mut b = h.bundle()?;
        symlink(target, b.rootfs().join(link))?;
        b.bind(&src, &format!("/{link}"), false)?;
        b.sh(&format!(
            "cat /etc/{marker}; echo; grep -c ' /etc ' /proc/self/mountinfo"
        ))?;
        let id = h.id("bind");
        let out = h.run(&id, &b, &[])?;
        // Whatever the runtime did, the host's /etc got nothing.
        assert!(
            !Path::new("/etc").join(&marker).exists(),
            "{link}: the bind went over the host's /etc"
        );
        let host_etc_mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some("/etc"))
            .map(str::to_string)
            .collect();
        assert!(
            host_etc_mounts.is_empty(),
            "{link}: mounts on the host's /etc:\n{}",
            host_etc_mounts.join("\n")
        );
        // The destination was resolved inside the rootfs: the container's /etc is the bind.
        assert!(out.success(), "{link}: {out}");
        assert_eq!(out.stdout, "from-the-bind\n1\n", "{link}: {out}");
        h.check_no_trace(&id, &b)?;
    }
    let host_etc_after: BTreeSet<PathBuf> = fs::read_dir("/etc")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(host_etc_before, host_etc_after, "the host's /etc changed");
    Ok(())
}
