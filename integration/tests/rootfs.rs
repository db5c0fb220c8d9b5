//! The root filesystem seen from inside the container: root.path, root.readonly, mounts, /dev,
//! linux.devices, maskedPaths, readonlyPaths, rootfsPropagation, --no-pivot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use anyhow::Result;
use serde_json::json;
use skiff_integration::Harness;

/// The mount point and options fields of the mountinfo line (printed by the container) whose mount
/// point is `point`.
fn mount_options<'a>(mountinfo: &'a str, point: &str) -> Option<(&'a str, &'a str)> {
    mountinfo.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        (fields.get(4) == Some(&point)).then(|| (fields[5], l))
    })
}

#[test]
fn dev_has_the_default_devices_and_links() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("ls -l /dev; echo ---; \
         echo x > /dev/null && echo null-ok; \
         head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; \
         [ -d /dev/pts ] && [ -d /dev/shm ] && [ -d /dev/mqueue ] && echo dirs-ok")?;
    let out = h.run_ok(&b)?;
    let (listing, checks) = out.split_once("---\n").expect("separator");
    let entry = |name: &str| -> Vec<String> {
        listing
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|f| {
                f.len() >= 9 && (f.last() == Some(&name.to_string()) || f[f.len() - 3] == name)
            })
            .unwrap_or_else(|| panic!("/dev/{name} missing:\n{listing}"))
    };
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let f = entry(name);
        assert_eq!(f[0], "crw-rw-rw-", "/dev/{name}: {f:?}");
        assert_eq!(f[4], format!("{major},"), "/dev/{name}: {f:?}");
        assert_eq!(f[5], minor.to_string(), "/dev/{name}: {f:?}");
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let f = entry(name);
        assert!(f[0].starts_with('l'), "/dev/{name} is not a link: {f:?}");
        assert_eq!(f.last().unwrap(), target, "/dev/{name}: {f:?}");
    }
    // /dev/core as runc makes it: a link to /proc/kcore where the kernel has one (the VM's).
    let core = listing
        .lines()
        .find(|l| l.contains(" core -> ") || l.ends_with(" core"));
    if std::path::Path::new("/proc/kcore").exists() {
        let core = core.unwrap_or_else(|| panic!("/dev/core missing:\n{listing}"));
        assert!(
            core.starts_with('l') && core.ends_with(" core -> /proc/kcore"),
            "/dev/core: {core}"
        );
    } else {
        assert_eq!(core, None, "/dev/core without /proc/kcore");
    }
    // ptmx: a link into the devpts instance, or the devpts ptmx itself.
    let ptmx = entry("ptmx");
    assert!(
        (ptmx[0].starts_with('l') && ptmx.last().unwrap() == "pts/ptmx")
            || (ptmx[0].starts_with('c') && ptmx[4] == "5," && ptmx[5] == "2"),
        "/dev/ptmx: {ptmx:?}"
    );
    let checks: Vec<&str> = checks.lines().map(str::trim).collect();
    assert_eq!(checks, ["null-ok", "4", "4", "dirs-ok"], "{out}");
    Ok(())
}

#[test]
fn linux_devices_entries_are_created() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        c["linux"]["devices"] = json!([{
            "path": "/dev/skiffnull", "type": "c", "major": 1, "minor": 3,
            "fileMode": 0o640, "uid": 1000, "gid": 1000
        }]);
        // The device cgroup must let the container use it too.
        c["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}));
    })?;
    // The device belongs to uid 1000; so does the process (root has no CAP_DAC_OVERRIDE here).
    b.edit(|c| c["process"]["user"] = json!({"uid": 1000, "gid": 1000}))?;
    b.sh("ls -ln /dev/skiffnull; echo data > /dev/skiffnull && echo write-ok")?;
    let out = h.run_ok(&b)?;
    let mut lines = out.lines();
    let f: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(f[0], "crw-r-----", "{out}");
    assert_eq!(f[2..6], ["1000", "1000", "1,", "3"], "{out}");
    assert_eq!(lines.next(), Some("write-ok"), "{out}");
    Ok(())
}

#[test]
fn a_linux_devices_entry_is_usable_only_as_far_as_the_device_rules_allow() -> Result<()> {
    // As in runc, a node of linux.devices gets no device-cgroup rule of its own: the spec's
    // resources.devices (deny all, then /dev/fuse read-only) and runc's defaults decide.
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        c["linux"]["devices"] = json!([
            {"path": "/dev/skifffuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666},
            {"path": "/dev/skiffloopctl", "type": "c", "major": 10, "minor": 237, "fileMode": 0o666}
        ]);
        c["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "r"}
        ]);
    })?;
    b.sh("test -c /dev/skiffloopctl && echo loopctl-node; \
         (: < /dev/skiffloopctl) 2>/dev/null && echo loopctl-open || echo loopctl-denied; \
         (: < /dev/skifffuse) && echo fuse-read; \
         (: > /dev/skifffuse) 2>/dev/null && echo fuse-write || echo fuse-write-denied")?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "loopctl-node",
            "loopctl-denied",
            "fuse-read",
            "fuse-write-denied"
        ],
        "{out}"
    );
    Ok(())
}

#[test]
fn a_read_only_tmpfs_is_a_read_only_mount_of_a_writable_superblock() -> Result<()> {
    // As runc: the tmpfs is mounted read-write (so a mount below it can get its mount point)
    // and only the mount is made read-only at the end.
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let src = h.path("ro-tmpfs-src");
    fs::create_dir_all(&src)?;
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                           "options": ["ro", "nosuid"]}),
        );
        mounts.push(json!({"destination": "/scratch/sub", "type": "bind",
                           "source": src.to_str().unwrap(), "options": ["rbind"]}));
    })?;
    b.sh("grep ' /scratch ' /proc/self/mountinfo; touch /scratch/f 2>/dev/null || echo ro-ok")?;
    let out = h.run_ok(&b)?;
    let line = out.lines().next().unwrap_or_default();
    let (mount, sb) = line.split_once(" - ").unwrap_or_default();
    let mount_opts = mount.split_whitespace().nth(5).unwrap_or_default();
    let sb_opts = sb.split_whitespace().nth(2).unwrap_or_default();
    assert!(
        mount_opts.starts_with("ro,") && mount_opts.contains("nosuid"),
        "{out}"
    );
    assert!(sb_opts.starts_with("rw"), "{out}");
    assert_eq!(out.lines().nth(1), Some("ro-ok"), "{out}");
    Ok(())
}

#[test]
fn masked_paths_read_empty() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let rootfs = b.rootfs();
    fs::write(rootfs.join("etc/secret"), "top-secret\n")?;
    fs::create_dir_all(rootfs.join("etc/secretdir"))?;
    fs::write(rootfs.join("etc/secretdir/inner"), "inner-secret\n")?;
    b.edit(|c| {
        let masked = c["linux"]["maskedPaths"].as_array_mut().unwrap();
        masked.push(json!("/etc/secret"));
        masked.push(json!("/etc/secretdir"));
        masked.push(json!("/does/not/exist"));
    })?;
    b.sh(
        "echo \"file=[$(cat /etc/secret)]\"; echo \"dir=[$(ls -A /etc/secretdir)]\"; \
         if [ -e /proc/kcore ]; then echo \"kcore=$(head -c 16 /proc/kcore | wc -c)\"; \
         else echo kcore=0; fi",
    )?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["file=[]", "dir=[]", "kcore=0"], "{out}");
    // The host's copy is untouched.
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/secret"))?,
        "top-secret\n"
    );
    Ok(())
}

#[test]
fn readonly_paths_refuse_writes() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let rootfs = b.rootfs();
    fs::create_dir_all(rootfs.join("data"))?;
    fs::create_dir_all(rootfs.join("other"))?;
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["readonlyPaths"]
            .as_array_mut()
            .unwrap()
            .push(json!("/data"));
    })?;
    b.sh(
        "touch /data/x 2>/dev/null && echo data-writable || echo data-readonly; \
         touch /other/x && echo other-writable; \
         cat /proc/self/mountinfo",
    )?;
    let out = h.run_ok(&b)?;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("data-readonly"), "{out}");
    assert_eq!(lines.next(), Some("other-writable"), "{out}");
    let (opts, line) = mount_options(&out, "/proc/sys").unwrap_or_else(|| panic!("{out}"));
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "/proc/sys not ro: {line}"
    );
    assert!(rootfs.join("other/x").exists());
    assert!(!rootfs.join("data/x").exists());
    Ok(())
}

#[test]
fn readonly_root_refuses_writes_but_a_tmpfs_mount_is_writable() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.add_mount(json!({
        "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=1777"]
    }))?;
    b.sh(
        "touch /newfile 2>/dev/null && echo root-writable || echo root-readonly; \
         echo hi > /scratch/f && cat /scratch/f; \
         grep ' /scratch ' /proc/self/mountinfo",
    )?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["root-readonly", "hi"], "{out}");
    assert!(lines[2].contains(" - tmpfs "), "{out}");
    assert!(!b.rootfs().join("newfile").exists());
    Ok(())
}

#[test]
fn bind_mounts_show_host_content_and_ro_binds_refuse_writes() -> Result<()> {
    let h = Harness::new()?;
    let rw = h.dir("bind-rw")?;
    let ro = h.dir("bind-ro")?;
    fs::write(rw.join("hello.txt"), "hello from the host\n")?;
    fs::write(ro.join("keep.txt"), "read only\n")?;
    let mut b = h.bundle()?;
    b.bind(&rw, "/mnt/rw", false)?;
    b.bind(&ro, "/mnt/ro", true)?;
    b.sh(
        "cat /mnt/rw/hello.txt; echo from-container > /mnt/rw/back.txt; \
         cat /mnt/ro/keep.txt; \
         touch /mnt/ro/x 2>/dev/null && echo ro-writable || echo ro-refused",
    )?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["hello from the host", "read only", "ro-refused"],
        "{out}"
    );
    assert_eq!(fs::read_to_string(rw.join("back.txt"))?, "from-container\n");
    assert!(!ro.join("x").exists());
    Ok(())
}

#[test]
fn missing_mount_destinations_are_created_in_the_rootfs() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    assert!(!b.rootfs().join("deep").exists());
    b.add_mount(json!({"destination": "/deep/er/mount", "type": "tmpfs", "source": "tmpfs"}))?;
    b.sh("grep ' /deep/er/mount ' /proc/self/mountinfo")?;
    let out = h.run_ok(&b)?;
    assert!(out.contains(" - tmpfs "), "{out}");
    assert!(b.rootfs().join("deep/er/mount").is_dir());
    Ok(())
}

#[test]
fn default_mounts_are_in_place() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["cat", "/proc/self/mountinfo"])?;
    let out = h.run_ok(&b)?;
    let fstype = |point: &str| -> String {
        let line = out
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(point))
            .unwrap_or_else(|| panic!("no mount on {point}:\n{out}"));
        let (_, right) = line.split_once(" - ").unwrap();
        right.split(' ').next().unwrap().to_string()
    };
    assert_eq!(fstype("/proc"), "proc");
    assert_eq!(fstype("/dev"), "tmpfs");
    assert_eq!(fstype("/dev/pts"), "devpts");
    assert_eq!(fstype("/dev/shm"), "tmpfs");
    assert_eq!(fstype("/dev/mqueue"), "mqueue");
    assert_eq!(fstype("/sys"), "sysfs");
    let (sys_opts, line) = mount_options(&out, "/sys").unwrap();
    assert!(sys_opts.split(',').any(|o| o == "ro"), "{line}");
    assert!(
        out.lines().any(|l| l
            .split(' ')
            .nth(4)
            .is_some_and(|p| p.starts_with("/sys/fs/cgroup"))),
        "no cgroup mount:\n{out}"
    );
    // The root is the bundle's rootfs, read-only.
    let (root_opts, line) = mount_options(&out, "/").unwrap();
    assert!(root_opts.split(',').any(|o| o == "ro"), "{line}");
    Ok(())
}

#[test]
fn relative_and_absolute_root_paths() -> Result<()> {
    let h = Harness::new()?;
    // Relative to the bundle, under another name than `rootfs`.
    let mut b = h.bundle()?;
    fs::rename(b.rootfs(), b.path().join("myroot"))?;
    fs::write(b.path().join("myroot/etc/marker"), "relative-root\n")?;
    b.edit(|c| c["root"]["path"] = json!("myroot"))?;
    b.args(&["cat", "/etc/marker"])?;
    assert_eq!(h.run_ok(&b)?, "relative-root\n");

    // Absolute, outside the bundle.
    let elsewhere = h.dir("elsewhere")?.join("rootfs");
    fs::rename(b.rootfs(), &elsewhere)?;
    fs::write(elsewhere.join("etc/marker"), "absolute-root\n")?;
    let path = elsewhere.display().to_string();
    b.edit(|c| c["root"]["path"] = json!(path))?;
    assert_eq!(h.run_ok(&b)?, "absolute-root\n");
    Ok(())
}

#[test]
fn no_pivot_still_confines_the_container_to_its_rootfs() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    fs::write(b.rootfs().join("etc/marker"), "inside\n")?;
    let host_only = h.path("host-only");
    fs::write(&host_only, "host")?;
    b.sh(&format!(
        "cat /etc/marker; [ -e {} ] && echo host-visible || echo host-hidden",
        host_only.display()
    ))?;
    let id = h.id("nopivot");
    let out = h.run(&id, &b, &["--no-pivot"])?;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "inside\nhost-hidden\n", "{out}");
    Ok(())
}

/// rootfsPropagation is applied to the container's mounts before the bind mounts are made, so a
/// bind of a shared host mount follows it: with `rslave` a mount the host makes later under the
/// source shows up in the container; with `rprivate` it does not.
#[test]
fn rootfs_propagation_decides_whether_host_mounts_propagate_in() -> Result<()> {
    let h = Harness::new()?;
    for (propagation, want) in [("rslave", "propagated"), ("rprivate", "not-propagated")] {
        let shared = h.dir("shared")?;
        fs::create_dir(shared.join("sub"))?;
        h.make_shared_mount(&shared)?;
        let gate = h.dir("gate")?;
        let mut b = h.bundle()?;
        b.bind(&shared, "/shared", false)?;
        b.bind(&gate, "/gate", false)?;
        b.edit(|c| c["linux"]["rootfsPropagation"] = json!(propagation))?;
        b.sh(
            "touch /gate/ready; while [ ! -e /gate/go ]; do sleep 0.02; done; \
             [ -e /shared/sub/marker ] && echo propagated || echo not-propagated",
        )?;
        let id = h.id("prop");
        h.create(&id, &b)?;
        h.start(&id)?;
        skiff_integration::wait_for_file(&gate.join("ready"), h.timeout())?;
        // The container is up; now the host mounts something under the shared source.
        h.mount_tmpfs(&shared.join("sub"))?;
        fs::write(shared.join("sub/marker"), "x")?;
        fs::write(gate.join("go"), "")?;
        h.wait_status(&id, "stopped")?;
        assert_eq!(
            h.stdout_of(&id)?.trim(),
            want,
            "rootfsPropagation {propagation}"
        );
        h.delete(&id)?;
    }
    Ok(())
}

/// Mount point to propagation, without the peer group numbers (`shared`, `master`, `shared
/// master`, `unbindable`, or `private` when there is no tag), from the lines a container printed
/// with [`PROPAGATION_SCRIPT`].
fn propagation_by_mount_point(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .map(|(point, tags)| {
            let tags = tags.trim();
            let tags = if tags.is_empty() { "private" } else { tags };
            (point.to_string(), tags.to_string())
        })
        .collect()
}

/// Prints each mount point of the container with its propagation tags, then `end`.
const PROPAGATION_SCRIPT: &str = "awk '{ t = \"\"; for (i = 7; $i != \"-\"; i++) \
     { split($i, a, \":\"); t = t \" \" a[1] }; print $5 t }' /proc/self/mountinfo; \
     echo end; exec sleep 1000";

/// Lines of `now` that were not in `before` (a mountinfo line names the mount's id, so a new mount
/// is a new line).
fn new_lines(before: &str, now: &str) -> Vec<String> {
    let old: std::collections::BTreeSet<&str> = before.lines().collect();
    now.lines()
        .filter(|l| !old.contains(l))
        .map(str::to_string)
        .collect()
}

/// The host's mountinfo `now` has no line that `before` lacks (no mount of the container reached
/// it) and kept every line (none of its mounts went or changed propagation).
fn assert_host_untouched(before: &str, now: &str, what: &str) {
    let leaked = new_lines(before, now);
    assert!(
        leaked.is_empty(),
        "{what}: on the host:\n{}",
        leaked.join("\n")
    );
    let lost = skiff_integration::host::mountinfo_lost(before, now);
    assert!(
        lost.is_empty(),
        "{what}: host mounts gone or changed:\n{}",
        lost.join("\n")
    );
}

/// Runs a container with `linux.rootfsPropagation` = `mode` (unset for `None`) and an `rshared`
/// bind of a host mount at /shared-bind, from a host whose mounts are all shared, optionally with the rootfs a
/// mount point of its own (as containerd's overlay is). Asserts that none of the container's
/// mounts appears on the host while it runs or after `delete` and that the host's own mounts are
/// untouched, and returns the propagation of each of the container's mounts, or None when
/// `create` failed.
fn propagation_case(
    h: &Harness,
    mode: Option<&str>,
    rootfs_is_mount: bool,
) -> Result<Option<std::collections::BTreeMap<String, String>>> {
    let mut b = h.bundle()?;
    if let Some(mode) = mode {
        b.edit(|c| c["linux"]["rootfsPropagation"] = json!(mode))?;
    }
    // A mount of its own, so that a non-recursive `unbindable` `/` does not refuse the bind.
    let src = h.dir("shared-src")?;
    let src_path = src.display().to_string();
    h.run_in_host_ns(&["mount", "--bind", &src_path, &src_path])?;
    b.add_mount(json!({
        "destination": "/shared-bind", "type": "bind",
        "source": src.display().to_string(), "options": ["rbind", "rshared"]
    }))?;
    b.sh(PROPAGATION_SCRIPT)?;
    if rootfs_is_mount {
        let rootfs = b.rootfs().display().to_string();
        h.run_in_host_ns(&["mount", "--bind", &rootfs, &rootfs])?;
    }
    let what = format!("{} rootfsPropagation {mode:?}", h.bin().display());
    let before = h.host_mountinfo()?;
    let id = h.id("prop");
    let created = h.try_create(&id, &b, &[])?;
    let result = if created.success() {
        h.start(&id)?.ok()?;
        let deadline = std::time::Instant::now() + h.timeout();
        let mut out = String::new();
        while !out.ends_with("\nend\n") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            out = fs::read_to_string(h.stdout_path(&id)).unwrap_or_default();
        }
        assert_host_untouched(
            &before,
            &h.host_mountinfo()?,
            &format!("{what} while running"),
        );
        h.kill(&id, Some("KILL"))?.ok()?;
        h.wait_status(&id, "stopped")?;
        h.delete(&id)?.ok()?;
        Some(propagation_by_mount_point(out.trim_end_matches("end\n")))
    } else {
        None
    };
    assert_host_untouched(
        &before,
        &h.host_mountinfo()?,
        &format!("{what} after delete"),
    );
    Ok(result)
}

/// What runc 1.1.5 shows on `/` for each mode, from a host whose mounts are shared. runc applies
/// the mode to `/` of the new namespace, makes the mount holding the rootfs private if it is still
/// shared, binds the rootfs and pivots into it; it does not apply the mode again afterwards. So a
/// `slave` root keeps its master only when the rootfs was not a shared mount of its own, and an
/// `unbindable` `/` makes the rootfs bind fail when the rootfs is a plain directory on `/`. A
/// non-recursive mode changes `/` alone: where the temp dir is a mount of its own (the VM's /tmp
/// is a tmpfs), a plain rootfs directory there fares as a rootfs mount point does.
const PROPAGATION_MODES: [(Option<&str>, &str, &str); 9] = [
    // (mode, rootfs a plain directory on `/`, rootfs a mount point of its own or on one)
    (None, "master", "master"),
    (Some("rslave"), "master", "master"),
    (Some("slave"), "master", "private"),
    (Some("rprivate"), "private", "private"),
    (Some("private"), "private", "private"),
    (Some("rshared"), "private", "private"),
    (Some("shared"), "private", "private"),
    (Some("runbindable"), "create failed", "create failed"),
    (Some("unbindable"), "create failed", "private"),
];

/// Each rootfsPropagation mode works as in runc, and never leaks a container's mounts (its cgroup
/// binds, /proc, /dev...) into a host whose mounts are shared: checked against the table above
/// and, when runc is installed, against runc itself on the same host.
fn rootfs_propagation_modes(rootfs_is_mount: bool) -> Result<()> {
    let mut h = Harness::new()?;
    h.use_shared_host_mount_ns()?;
    let runc_bin = std::path::Path::new(skiff_integration::harness::RUNC);
    let mut runc = match runc_bin.is_file() && h.bin() != runc_bin {
        true => Some(Harness::runc()?),
        false => None,
    };
    if let Some(r) = &mut runc {
        r.use_shared_host_mount_ns()?;
    }
    let on_root = mount_point_holding(&std::env::temp_dir())? == std::path::Path::new("/");
    for (mode, plain, own) in PROPAGATION_MODES {
        let want = if rootfs_is_mount || !on_root {
            own
        } else {
            plain
        };
        let got = propagation_case(&h, mode, rootfs_is_mount)?;
        let root = |seen: &Option<std::collections::BTreeMap<String, String>>| match seen {
            Some(m) => m.get("/").cloned().unwrap_or_default(),
            None => "create failed".to_string(),
        };
        assert_eq!(root(&got), want, "rootfsPropagation {mode:?}: /");
        if let Some(m) = &got {
            // A mount's own propagation option survives pivot_root.
            let bind = m.get("/shared-bind").map(String::as_str).unwrap_or("");
            assert!(
                bind.starts_with("shared"),
                "{mode:?}: /shared-bind is {bind}"
            );
        }
        if let Some(r) = &runc {
            let oracle = propagation_case(r, mode, rootfs_is_mount)?;
            assert_eq!(
                root(&got),
                root(&oracle),
                "{mode:?}: / under skiff and runc"
            );
            // Every mount both have (skiff also mounts a hybrid host's cgroup2) propagates alike.
            if let (Some(g), Some(o)) = (&got, &oracle) {
                for (point, tags) in g {
                    if let Some(theirs) = o.get(point) {
                        assert_eq!(tags, theirs, "{mode:?}: {point} under skiff and runc");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The mount point of the mount that holds `path` (the longest mount point above it).
fn mount_point_holding(path: &std::path::Path) -> Result<std::path::PathBuf> {
    let path = fs::canonicalize(path)?;
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(std::path::PathBuf::from)
        .filter(|p| path.starts_with(p))
        .max_by_key(|p| p.components().count())
        .unwrap_or_else(|| "/".into()))
}

#[test]
fn rootfs_propagation_modes_with_a_plain_rootfs_directory() -> Result<()> {
    rootfs_propagation_modes(false)
}

#[test]
fn rootfs_propagation_modes_with_a_rootfs_mount_point() -> Result<()> {
    rootfs_propagation_modes(true)
}

/// A bind of a host directory `src` (with a tmpfs mounted at `src/sub`) at /data with `options`:
/// the mount options of /data and /data/sub inside, and what a write to each says; or the
/// failure of `run`.
fn recursive_attr_case(h: &Harness, src: &std::path::Path, options: &[&str]) -> Result<String> {
    let mut b = h.bundle()?;
    b.add_mount(json!({
        "destination": "/data", "type": "bind",
        "source": src.display().to_string(), "options": options
    }))?;
    b.sh(
        "for p in /data /data/sub; do awk -v p=$p '$5 == p { print p, $6 }' /proc/self/mountinfo; \
         touch $p/w 2>&1 && echo $p writable && rm $p/w; done; true",
    )?;
    let id = h.id("rattr");
    let out = h.run(&id, &b, &[])?;
    Ok(if out.success() {
        out.stdout
    } else {
        format!("run failed with {}", out.exit_code())
    })
}

/// Recursive mount attributes reach the submounts of a bind (mount_setattr with AT_RECURSIVE),
/// where a plain `ro` stops at the bind itself: as in runc 1.1.5, which the test also runs.
#[test]
fn recursive_mount_attributes_reach_submounts() -> Result<()> {
    let h = Harness::new()?;
    let src = h.dir("rsrc")?;
    fs::create_dir(src.join("sub"))?;
    h.mount_tmpfs(&src.join("sub"))?;
    let runc_bin = std::path::Path::new(skiff_integration::harness::RUNC);
    let runc = match runc_bin.is_file() && h.bin() != runc_bin {
        true => Some(Harness::runc()?),
        false => None,
    };
    let cases: [(&[&str], &str); 7] = [
        (
            &["rbind", "rro"],
            "/data ro,relatime\ntouch: /data/w: Read-only file system\n\
             /data/sub ro,relatime\ntouch: /data/sub/w: Read-only file system\n",
        ),
        (
            &["rbind", "ro"],
            "/data ro,relatime\ntouch: /data/w: Read-only file system\n\
             /data/sub rw,relatime\n/data/sub writable\n",
        ),
        (
            &[
                "rbind",
                "rnosuid",
                "rnodev",
                "rnoexec",
                "rnoatime",
                "rnosymfollow",
            ],
            "/data rw,nosuid,nodev,noexec,noatime,nosymfollow\n/data writable\n\
             /data/sub rw,nosuid,nodev,noexec,noatime,nosymfollow\n/data/sub writable\n",
        ),
        // rrw clears what `ro` set; a bit both set and cleared stays set.
        (
            &["rbind", "ro", "rrw"],
            "/data rw,relatime\n/data writable\n/data/sub rw,relatime\n/data/sub writable\n",
        ),
        (
            &["rbind", "rrw", "rro"],
            "/data ro,relatime\ntouch: /data/w: Read-only file system\n\
             /data/sub ro,relatime\ntouch: /data/sub/w: Read-only file system\n",
        ),
        (
            &["rbind", "rstrictatime", "rnodiratime"],
            "/data rw,nodiratime\n/data writable\n/data/sub rw,nodiratime\n/data/sub writable\n",
        ),
        // runc hands this to the kernel, which refuses it; skiff refuses it up front.
        (&["rbind", "ratime"], "run failed with 1"),
    ];
    for (options, want) in cases {
        let got = recursive_attr_case(&h, &src, options)?;
        if let Some(r) = &runc {
            let oracle = recursive_attr_case(r, &src, options)?;
            assert_eq!(got, oracle, "{options:?}: skiff vs runc");
        }
        assert_eq!(got, want, "{options:?}");
    }
    Ok(())
}

/// What a container shows of relative (and empty) maskedPaths and readonlyPaths, with
/// `process.cwd` elsewhere than `/`.
fn relative_paths_case(h: &Harness) -> Result<String> {
    let mut b = h.bundle()?;
    let rootfs = b.rootfs();
    fs::write(rootfs.join("etc/secret"), "secret\n")?;
    fs::write(rootfs.join("etc/other"), "other\n")?;
    fs::create_dir_all(rootfs.join("data"))?;
    fs::write(rootfs.join("data/near"), "near\n")?;
    b.edit(|c| {
        c["process"]["cwd"] = json!("/data");
        c["linux"]["maskedPaths"] = json!(["etc/secret", "../etc/other", "", "near"]);
        c["linux"]["readonlyPaths"] = json!(["./data", ""]);
    })?;
    b.sh(
        "for f in /etc/secret /etc/other /data/near; do echo \"$f=[$(cat $f)]\"; done; \
         awk '$5 == \"/data\" { print $5, $6 }' /proc/self/mountinfo",
    )?;
    h.run_ok(&b)
}

/// runc takes a relative maskedPaths or readonlyPaths entry from the container's `/` (its working
/// directory when it applies them, whatever process.cwd is) and skips an empty one; so does skiff,
/// compared with runc when it is installed.
#[test]
fn relative_masked_and_readonly_paths_start_at_the_root() -> Result<()> {
    let h = Harness::new()?;
    let got = relative_paths_case(&h)?;
    assert_eq!(
        got,
        "/etc/secret=[]\n/etc/other=[]\n/data/near=[near]\n/data ro,relatime\n"
    );
    let runc_bin = std::path::Path::new(skiff_integration::harness::RUNC);
    if runc_bin.is_file() && h.bin() != runc_bin {
        let oracle = relative_paths_case(&Harness::runc()?)?;
        assert_eq!(got, oracle, "skiff vs runc");
    }
    Ok(())
}

/// runc accepts a relative `mounts[].destination` (deprecated): it warns, twice (its spec
/// conversion and its configuration check), and mounts it under the container's `/`. So does
/// skiff; compared with runc when it is installed.
#[test]
fn a_relative_mount_destination_is_mounted_under_the_root_with_warnings() -> Result<()> {
    let case = |h: &Harness| -> Result<(String, usize)> {
        let mut b = h.bundle()?;
        b.add_mount(json!({"destination": "rel/x", "type": "tmpfs", "source": "tmpfs"}))?;
        b.sh("awk '$5 ~ /rel/ { print $5, $6 }' /proc/self/mountinfo")?;
        let out = h.run(&h.id("reldest"), &b, &[])?.ok()?;
        let warnings = out
            .stderr
            .lines()
            .filter(|l| l.contains("level=warning"))
            .count();
        Ok((out.stdout, warnings))
    };
    let h = Harness::new()?;
    let got = case(&h)?;
    assert_eq!(got, ("/rel/x rw,relatime\n".to_string(), 2));
    let runc_bin = std::path::Path::new(skiff_integration::harness::RUNC);
    if runc_bin.is_file() && h.bin() != runc_bin {
        assert_eq!(got, case(&Harness::runc()?)?, "skiff vs runc");
    }
    Ok(())
}

/// A tree under `/data` in the rootfs with what `tmpcopyup` must carry over: owners, a file's
/// set-id and sticky bits, directories (whose set-id bits and group/other write bits runc does not
/// keep), relative and dangling symlinks with their own owners, a hard link.
fn copyup_tree(rootfs: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};
    let d = rootfs.join("data");
    let mode = |p: &std::path::Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m));
    fs::create_dir_all(d.join("sub/deep"))?;
    fs::write(d.join("file"), "content\n")?;
    fs::hard_link(d.join("file"), d.join("hard"))?;
    fs::write(d.join("sub/deep/suid"), "x")?;
    fs::create_dir(d.join("sticky"))?;
    symlink("../file", d.join("sub/link"))?;
    symlink("/nonexistent", d.join("dangling"))?;
    lchown(d.join("dangling"), Some(7), Some(8))?;
    lchown(d.join("sub"), Some(1000), Some(1001))?;
    mode(&d.join("sub/deep/suid"), 0o4755)?;
    mode(&d.join("sub/deep"), 0o2711)?;
    mode(&d.join("sub"), 0o750)?;
    mode(&d.join("sticky"), 0o1777)?;
    mode(&d, 0o1770)?;
    Ok(())
}

/// The tree at `/data` as a container shows it, with the given options on a tmpfs there.
fn copyup_case(h: &Harness, options: &[&str]) -> Result<String> {
    let mut b = h.bundle()?;
    copyup_tree(&b.rootfs())?;
    b.add_mount(
        json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                       "options": options}),
    )?;
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            let caps = c["process"]["capabilities"][set].as_array_mut().unwrap();
            caps.push(json!("CAP_DAC_OVERRIDE"));
            caps.push(json!("CAP_DAC_READ_SEARCH"));
        }
    })?;
    b.sh(
        "cd /data && find . | sort | while read f; do stat -c '%n %F %a %u:%g %h' \"$f\"; done; \
          cat file; readlink sub/link; echo new > new && echo written; \
          awk '$5 == \"/data\" { print $5, $6 }' /proc/self/mountinfo",
    )?;
    let out = h.run_ok(&b)?;
    // The writes went to the tmpfs, not to the rootfs.
    assert!(!b.rootfs().join("data/new").exists());
    Ok(out)
}

/// `tmpcopyup` (runc's mount extension): the tmpfs over a directory starts with a copy of what
/// the directory held, owners, modes and symlinks kept as runc keeps them, and the tmpfs's root
/// takes the directory's mode. Compared with runc when it is installed.
#[test]
fn tmpcopyup_copies_the_covered_directory_as_runc() -> Result<()> {
    let h = Harness::new()?;
    let got = copyup_case(&h, &["tmpcopyup", "size=1m"])?;
    assert_eq!(
        got,
        ". directory 1770 0:0 4\n\
         ./dangling symbolic link 777 7:8 1\n\
         ./file regular file 644 0:0 1\n\
         ./hard regular file 644 0:0 1\n\
         ./sticky directory 1755 0:0 2\n\
         ./sub directory 750 1000:1001 3\n\
         ./sub/deep directory 711 0:0 2\n\
         ./sub/deep/suid regular file 4755 0:0 1\n\
         ./sub/link symbolic link 777 0:0 1\n\
         content\n../file\nwritten\n\
         /data rw,relatime\n"
    );
    let runc_bin = std::path::Path::new(skiff_integration::harness::RUNC);
    if runc_bin.is_file() && h.bin() != runc_bin {
        assert_eq!(
            got,
            copyup_case(&Harness::runc()?, &["tmpcopyup", "size=1m"])?
        );
    }
    // Without tmpcopyup the tmpfs is empty, its root still with the directory's mode (runc).
    let got = copyup_case(&h, &["size=1m"])?;
    assert!(
        got.starts_with(". directory 1770 0:0 2\nwritten\n"),
        "{got}"
    );
    // An explicit mode= wins, as in runc 1.2+ (runc 1.1.5 chmods it back to the directory's).
    let got = copyup_case(&h, &["tmpcopyup", "mode=700"])?;
    assert!(got.starts_with(". directory 700 0:0 4\n"), "{got}");
    Ok(())
}

/// Device nodes and fifos are copied as nodes (runc 1.1.5 fails `lchown ...: no such file or
/// directory` on them).
#[test]
fn tmpcopyup_copies_nodes_and_fifos() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let d = b.rootfs().join("data");
    fs::create_dir_all(&d)?;
    for (name, kind, dev) in [
        ("null", libc::S_IFCHR, libc::makedev(1, 3)),
        ("fifo", libc::S_IFIFO, 0),
    ] {
        let p = std::ffi::CString::new(d.join(name).into_os_string().into_encoded_bytes())?;
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mknod(p.as_ptr(), kind | 0o640, dev) }, 0);
    }
    b.add_mount(
        json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                       "options": ["tmpcopyup"]}),
    )?;
    b.sh("cd /data && stat -c '%n %F %a %t:%T' * && echo x > null && echo null-writes")?;
    let out = h.run_ok(&b)?;
    assert_eq!(
        out,
        "fifo fifo 640 0:0\nnull character special file 640 1:3\nnull-writes\n"
    );
    Ok(())
}
