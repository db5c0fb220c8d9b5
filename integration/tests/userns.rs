//! User namespaces: `linux.uidMappings`/`gidMappings` with a `user` namespace. Container root is
//! host uid 100000; the rootfs is owned by the mapped ids, as an image unpacked for such a container
//! is.
//!
//! Kept in a file of their own (they were written while user namespaces were being added to
//! skiff): `cargo test -p skiff-integration --test userns -- --test-threads=2`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::{lchown, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use skiff_integration::procfs::{id_map, status_field};
use skiff_integration::userns::UsernsHolder;
use skiff_integration::{Bundle, Harness};

/// The first host id of the container's range, and its size.
const HOST_BASE: u32 = 100_000;
const RANGE: u32 = 65_536;

/// `chown -hR uid:gid`, without following symlinks.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    lchown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A harness bundle with a new user namespace mapping container ids 0..65536 to host ids
/// 100000..165536, and its rootfs owned by the container's root.
fn userns_bundle(h: &Harness) -> Result<Bundle> {
    let mut b = h.bundle()?;
    let map = json!([{"containerID": 0, "hostID": HOST_BASE, "size": RANGE}]);
    b.set_namespace("user", None)?;
    b.edit(|c| {
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
    })?;
    chown_tree(&b.rootfs(), HOST_BASE, HOST_BASE)?;
    Ok(b)
}

/// The numbers of a `Name:` line of a `/proc/<pid>/status` text (`Uid:`, `Gid:`, `Groups:`).
fn field(status: &str, name: &str) -> Vec<u32> {
    status_field(status, name)
        .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{name}: {n:?}")))
        .collect()
}

#[test]
fn the_mapping_is_visible_inside_and_the_process_is_root_there() -> Result<()> {
    let h = Harness::new()?;
    let mut b = userns_bundle(&h)?;
    b.sh("cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; id -u; id -g")?;
    let out = h.run_ok(&b)?;
    let parts: Vec<&str> = out.split("--\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    let want = vec![[0, u64::from(HOST_BASE), u64::from(RANGE)]];
    assert_eq!(id_map(parts[0])?, want, "uid_map: {out}");
    assert_eq!(id_map(parts[1])?, want, "gid_map: {out}");
    assert_eq!(parts[2], "0\n0\n", "{out}");
    Ok(())
}

#[test]
fn the_host_sees_the_init_as_the_mapped_uid_in_a_new_user_namespace() -> Result<()> {
    let h = Harness::new()?;
    let mut b = userns_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("userns", &b)?;
    let pid = h.pid(&id)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(field(&status, "Uid"), [HOST_BASE; 4], "{status}");
    assert_eq!(field(&status, "Gid"), [HOST_BASE; 4], "{status}");
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
    assert_eq!(
        id_map(&map)?,
        [[0, u64::from(HOST_BASE), u64::from(RANGE)]],
        "{map}"
    );
    let theirs = fs::read_link(format!("/proc/{pid}/ns/user"))?;
    let ours = fs::read_link("/proc/self/ns/user")?;
    assert_ne!(theirs, ours, "the init shares the host's user namespace");
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn files_created_in_a_bind_mount_belong_to_the_mapped_ids() -> Result<()> {
    let h = Harness::new()?;
    let dir = h.dir("userns-data")?;
    let mut b = userns_bundle(&h)?;
    b.bind(&dir, "/data", false)?;
    // chown needs CAP_CHOWN (in the container's user namespace), not in the default set.
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(caps) = c["process"]["capabilities"][set].as_array_mut() {
                caps.push(json!("CAP_CHOWN"));
            }
        }
    })?;
    b.sh(
        "touch /data/by-root && mkdir /data/dir-by-root && touch /data/by-1000 && \
          chown 1000:1000 /data/by-1000 && stat -c '%u:%g' /data/by-root /data/by-1000",
    )?;
    // Inside, the container's ids.
    assert_eq!(h.run_ok(&b)?, "0:0\n1000:1000\n");
    // On the host, the ids they map to.
    let owner = |name: &str| -> Result<(u32, u32)> {
        let meta = fs::metadata(dir.join(name))?;
        Ok((meta.uid(), meta.gid()))
    };
    assert_eq!(owner("by-root")?, (HOST_BASE, HOST_BASE));
    assert_eq!(owner("dir-by-root")?, (HOST_BASE, HOST_BASE));
    assert_eq!(owner("by-1000")?, (HOST_BASE + 1000, HOST_BASE + 1000));
    Ok(())
}

#[test]
fn a_non_root_user_maps_into_the_range_and_keeps_its_groups() -> Result<()> {
    let h = Harness::new()?;
    let mut b = userns_bundle(&h)?;
    b.sh("id -u; id -g; grep ^Groups: /proc/self/status")?;
    b.edit(|c| c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10]}))?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000"], "{out}");
    assert_eq!(field(&out, "Groups"), [10], "{out}");
    Ok(())
}

#[test]
fn unmapped_root_owned_files_show_as_nobody() -> Result<()> {
    let h = Harness::new()?;
    let dir = h.dir("userns-host")?;
    // Owned by host root, which the mapping does not cover.
    fs::write(dir.join("host-file"), "x")?;
    let mut b = userns_bundle(&h)?;
    b.bind(&dir, "/host", true)?;
    b.sh("stat -c '%u:%g' /host/host-file")?;
    assert_eq!(h.run_ok(&b)?, "65534:65534\n");
    Ok(())
}

#[test]
fn exec_joins_the_user_namespace() -> Result<()> {
    let h = Harness::new()?;
    let mut b = userns_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("userns", &b)?;
    let init = h.pid(&id)?;
    let out = h
        .exec_in(&id, &[], &["sh", "-c", "cat /proc/self/uid_map; id -u"])?
        .ok()?;
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    let uid = lines.pop().unwrap_or_default();
    let map = lines.join("\n");
    assert_eq!(
        id_map(&map)?,
        [[0, u64::from(HOST_BASE), u64::from(RANGE)]],
        "{out}"
    );
    assert_eq!(uid, "0", "{out}");

    let pid = h.exec_detached(&id, &[], &["sleep", "600"])?;
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/user"))?,
        fs::read_link(format!("/proc/{init}/ns/user"))?
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(field(&status, "Uid"), [HOST_BASE; 4], "{status}");

    // As another user of the container: host uid 100000 + 1000.
    let pid = h.exec_detached(&id, &["-u", "1000:1000"], &["sleep", "600"])?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(field(&status, "Uid"), [HOST_BASE + 1000; 4], "{status}");
    Ok(())
}

/// runc makes a new IPC namespace inside the new user namespace, as its root (nsexec, after
/// setresuid(0) and before the gid changes): the namespace's mqueue root, /dev/mqueue, belongs to
/// the container's root (uid 0; gid the host's root, unmapped there: 65534), not to the host's
/// root (65534:65534). `exec` joins that IPC namespace. Compared with runc when it is installed.
#[test]
fn mqueue_belongs_to_the_containers_root_as_in_runc() -> Result<()> {
    let case = |h: &Harness| -> Result<String> {
        let mut b = userns_bundle(h)?;
        b.sh("stat -c '%u:%g %a' /dev/mqueue")?;
        h.run_ok(&b)
    };
    let h = Harness::new()?;
    let got = case(&h)?;
    assert_eq!(got, "0:65534 1777\n");
    let runc_bin = Path::new(skiff_integration::harness::RUNC);
    if runc_bin.is_file() && h.bin() != runc_bin {
        assert_eq!(got, case(&Harness::runc()?)?, "skiff vs runc");
    }

    let mut b = userns_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("userns-ipc", &b)?;
    let init = h.pid(&id)?;
    assert_ne!(
        fs::read_link(format!("/proc/{init}/ns/ipc"))?,
        fs::read_link("/proc/self/ns/ipc")?
    );
    let pid = h.exec_detached(&id, &[], &["sleep", "600"])?;
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/ipc"))?,
        fs::read_link(format!("/proc/{init}/ns/ipc"))?
    );
    Ok(())
}

/// In a user namespace the default devices are bind mounts of the host's nodes, made in runc's
/// order (null, random, full, tty, zero, urandom), which the container's mountinfo shows.
/// Compared with runc when it is installed.
#[test]
fn device_binds_are_made_in_runcs_order() -> Result<()> {
    let case = |h: &Harness| -> Result<String> {
        let mut b = userns_bundle(h)?;
        b.sh(
            "awk '$5 ~ /^\\/dev\\/[a-z]+$/ && $(NF-2) == \"devtmpfs\" { print $5 }' \
              /proc/self/mountinfo",
        )?;
        h.run_ok(&b)
    };
    let h = Harness::new()?;
    let got = case(&h)?;
    assert_eq!(
        got,
        "/dev/null\n/dev/random\n/dev/full\n/dev/tty\n/dev/zero\n/dev/urandom\n"
    );
    let runc_bin = Path::new(skiff_integration::harness::RUNC);
    if runc_bin.is_file() && h.bin() != runc_bin {
        assert_eq!(got, case(&Harness::runc()?)?, "skiff vs runc");
    }
    Ok(())
}

/// In the foreground without a terminal the process's stdio are pipes given to the container's
/// root, as runc gives them (its `InitializeIO`): the process can reopen them through
/// `/dev/stdout` and `/dev/stderr`, for `run` and for `exec`. (The caller's own files, owned by
/// the host's root, could not be reopened from the user namespace.)
#[test]
fn the_container_root_can_reopen_its_foreground_stdio() -> Result<()> {
    let h = Harness::new()?;
    let script = "echo out > /dev/stdout && echo err > /dev/stderr && echo done";
    let mut b = userns_bundle(&h)?;
    b.sh(script)?;
    let out = h.run_ok(&b)?;
    assert_eq!(out, "out\ndone\n");
    let mut b = userns_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("userns", &b)?;
    let out = h.exec_in(&id, &[], &["sh", "-c", script])?.ok()?;
    assert_eq!(out.stdout, "out\ndone\n", "{out}");
    assert_eq!(out.stderr, "err\n", "{out}");
    Ok(())
}

/// A bundle that joins the user namespace at `userns` (whose mapping is the harness's range) while
/// getting new pid, network, ipc, uts and mount namespaces of its own, as a pod's container joins
/// the user namespace of its sandbox.
fn joining_bundle(h: &Harness, userns: &Path) -> Result<Bundle> {
    let mut b = userns_bundle(h)?;
    b.set_namespace("user", Some(userns))?;
    Ok(b)
}

/// What a container joining a user namespace sees of itself: its ids, the namespace's map, and
/// that its hostname and network are its own.
const JOINED_VIEW: &str = "id -u; id -g; cat /proc/self/uid_map; hostname; \
     ls /sys/class/net | tr '\\n' ' '; echo; stat -c '%u:%g' /";

#[test]
fn a_container_joins_the_user_namespace_of_another_with_new_namespaces_of_its_own() -> Result<()> {
    let h = Harness::new()?;
    let mut sandbox = userns_bundle(&h)?;
    sandbox.args(&["sleep", "600"])?;
    let sandbox_id = h.create_and_start("userns-sandbox", &sandbox)?;
    let sandbox_pid = h.pid(&sandbox_id)?;
    let userns = Path::new("/proc")
        .join(sandbox_pid.to_string())
        .join("ns/user");

    let mut b = joining_bundle(&h, &userns)?;
    b.edit(|c| c["hostname"] = json!("joined"))?;
    b.sh(JOINED_VIEW)?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["0", "0"], "{out}");
    assert_eq!(
        id_map(lines[2])?,
        [[0, u64::from(HOST_BASE), u64::from(RANGE)]],
        "{out}"
    );
    assert_eq!(lines[3], "joined", "{out}");
    assert_eq!(
        lines[4].trim(),
        "lo",
        "a network namespace of its own: {out}"
    );
    assert_eq!(
        lines[5], "0:0",
        "the rootfs owned by the container's root: {out}"
    );

    // From the host: the mapped uid, the sandbox's user namespace, and namespaces of its own.
    let mut b = joining_bundle(&h, &userns)?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("userns-joined", &b)?;
    let pid = h.pid(&id)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(field(&status, "Uid"), [HOST_BASE; 4], "{status}");
    assert_eq!(field(&status, "Gid"), [HOST_BASE; 4], "{status}");
    let ns = |pid: i32, kind: &str| fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    assert_eq!(ns(pid, "user"), ns(sandbox_pid, "user"));
    for kind in ["mnt", "uts", "ipc", "net", "pid"] {
        assert_ne!(ns(pid, kind), ns(sandbox_pid, kind), "{kind}");
        let host = fs::read_link(format!("/proc/self/ns/{kind}"))?;
        assert_ne!(ns(pid, kind), host, "{kind}");
    }
    // exec enters the joined user namespace and the container's own namespaces.
    let out = h.exec_in(&id, &[], &["id", "-u"])?.ok()?;
    assert_eq!(out.stdout, "0\n", "{out}");
    let exec_pid = h.exec_detached(&id, &[], &["sleep", "600"])?;
    for kind in ["user", "mnt", "uts", "ipc", "net", "pid"] {
        assert_eq!(ns(exec_pid, kind), ns(pid, kind), "{kind}");
    }
    // The runtime reaps the init as usual: `kill` makes it stopped, `delete` leaves nothing.
    h.kill(&id, Some("KILL"))?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    assert!(
        !skiff_integration::host::process_alive(pid),
        "the joined container's init is left"
    );
    // The sandbox is untouched, and goes as usual.
    let out = h.exec_in(&sandbox_id, &[], &["sh", "-c", "id -u"])?.ok()?;
    assert_eq!(out.stdout, "0\n");
    h.delete_force(&sandbox_id)?;
    h.check_no_trace(&sandbox_id, &sandbox)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// The same bundle, joining a user namespace held by `unshare --user` (maps written by us), under
/// skiff and runc: the same view from inside.
#[test]
fn joining_a_held_user_namespace_matches_runc() -> Result<()> {
    let holder = UsernsHolder::start(HOST_BASE, RANGE)?;
    let case = |h: &Harness| -> Result<String> {
        let mut b = joining_bundle(h, &holder.path())?;
        b.edit(|c| c["hostname"] = json!("held"))?;
        b.sh(JOINED_VIEW)?;
        h.run_ok(&b)
    };
    let h = Harness::new()?;
    let got = case(&h)?;
    assert_eq!(
        got,
        format!("0\n0\n         0     {HOST_BASE}      {RANGE}\nheld\nlo \n0:0\n")
    );
    let runc_bin = Path::new(skiff_integration::harness::RUNC);
    if runc_bin.is_file() && h.bin() != runc_bin {
        assert_eq!(got, case(&Harness::runc()?)?, "skiff vs runc");
    } else {
        eprintln!("runc not installed: not compared");
    }
    Ok(())
}

/// A user namespace path that does not exist, or names a namespace of another kind: refused with
/// an error naming `linux.namespaces` and the path, and nothing is left.
#[test]
fn a_bad_user_namespace_path_is_refused_clearly_and_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    let missing = h.path("no-such-userns");
    let cases = [
        (missing.clone(), "no such file"),
        (
            Path::new("/proc/self/ns/net").to_path_buf(),
            "invalid argument",
        ),
    ];
    for (path, why) in cases {
        let mut b = joining_bundle(&h, &path)?;
        b.args(&["true"])?;
        let id = h.id("userns-bad");
        let out = h.try_create(&id, &b, &[])?;
        assert!(!out.success(), "{out}");
        assert!(out.stderr.contains("linux.namespaces"), "{out}");
        assert!(out.stderr.contains(&path.display().to_string()), "{out}");
        assert!(out.stderr.contains(why), "{out}");
        assert!(!out.stderr.contains("panicked"), "{out}");
        h.check_no_trace(&id, &b)?;
    }
    Ok(())
}

/// What needs the host's privileges still works for an init in a user namespace, new or joined:
/// an `oomScoreAdj` below the runtime's (CAP_SYS_RESOURCE in the host's user namespace), and a
/// bind source under a directory only the host's root may search (kubelet's volume directories
/// are 0750), which the runtime opens for the init as runc 1.1 does. Compared with runc.
#[test]
fn host_privileged_steps_work_in_new_and_joined_user_namespaces() -> Result<()> {
    let h = Harness::new()?;
    let private = h.dir("userns-private")?;
    fs::create_dir(private.join("vol"))?;
    fs::write(private.join("vol/file"), "inside\n")?;
    chown_tree(&private.join("vol"), HOST_BASE, HOST_BASE)?;
    fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let holder = UsernsHolder::start(HOST_BASE, RANGE)?;
    // Lowering it needs CAP_SYS_RESOURCE, which some hosts do not give even their root (runc
    // fails there too): then a value above ours, which still has to reach the process.
    let ours = skiff_integration::caps::parse_status(&fs::read_to_string("/proc/self/status")?)?;
    let adj = match ours.effective & (1 << 24) {
        0 => {
            eprintln!("no CAP_SYS_RESOURCE here: oomScoreAdj 500 instead of -500");
            500
        }
        _ => -500,
    };
    let case = |h: &Harness, joined: bool| -> Result<String> {
        let mut b = match joined {
            true => joining_bundle(h, &holder.path())?,
            false => userns_bundle(h)?,
        };
        b.edit(|c| c["process"]["oomScoreAdj"] = json!(adj))?;
        b.bind(&private.join("vol"), "/vol", false)?;
        b.sh("cat /proc/self/oom_score_adj /vol/file; stat -c '%u:%g' /vol/file")?;
        h.run_ok(&b)
    };
    let runc_bin = Path::new(skiff_integration::harness::RUNC);
    for joined in [false, true] {
        let got = case(&h, joined)?;
        assert_eq!(got, format!("{adj}\ninside\n0:0\n"), "joined: {joined}");
        if runc_bin.is_file() && h.bin() != runc_bin {
            assert_eq!(
                got,
                case(&Harness::runc()?, joined)?,
                "skiff vs runc, joined: {joined}"
            );
        }
    }
    Ok(())
}

// Idmapped mounts: `mounts[].uidMappings`/`gidMappings` and runc 1.2's `idmap`/`ridmap`.

/// A directory (outside the bundle) holding `root-file` owned by the host's root and `user-file`
/// owned by 1000:1000 on disk.
fn idmap_source(h: &Harness) -> Result<std::path::PathBuf> {
    let dir = h.dir("idmap-src")?;
    fs::write(dir.join("root-file"), "r")?;
    fs::write(dir.join("user-file"), "u")?;
    lchown(dir.join("user-file"), Some(1000), Some(1000))?;
    Ok(dir)
}

/// An idmapped bind of `source` at /data, with `mappings` (as JSON, both uid and gid) or none, and
/// `options` besides `rbind`.
fn idmapped(
    source: &Path,
    mappings: Option<serde_json::Value>,
    options: &[&str],
) -> serde_json::Value {
    let mut opts = vec!["rbind"];
    opts.extend(options);
    let mut m = json!({
        "destination": "/data", "type": "bind", "source": source.display().to_string(),
        "options": opts,
    });
    if let Some(map) = mappings {
        m["uidMappings"] = map.clone();
        m["gidMappings"] = map;
    }
    m
}

/// Runs `b`; `None` (after saying why) when the kernel cannot idmap the source's filesystem (the
/// VM's 6.1 kernel cannot idmap tmpfs, for one).
fn run_idmapped(h: &Harness, b: &Bundle) -> Result<Option<String>> {
    let id = h.id("idmap");
    let out = h.run(&id, b, &[])?;
    if !out.success()
        && out.stderr.contains("MOUNT_ATTR_IDMAP")
        && out.stderr.contains("invalid argument")
    {
        eprintln!("skipped: this kernel cannot idmap the test directory's filesystem: {out}");
        return Ok(None);
    }
    anyhow::ensure!(out.success(), "{out}");
    Ok(Some(out.stdout))
}

/// Nothing of `dir` is mounted in the host's mount namespace.
fn not_mounted_on_host(dir: &Path) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let shown = dir.display().to_string();
    let left: Vec<&str> = info.lines().filter(|l| l.contains(&shown)).collect();
    assert!(left.is_empty(), "mounted on the host: {left:?}");
    Ok(())
}

#[test]
fn an_idmapped_bind_shows_files_as_the_mapping_says_in_a_user_namespace() -> Result<()> {
    let h = Harness::new()?;
    let src = idmap_source(&h)?;
    let map = json!([{"containerID": 0, "hostID": HOST_BASE, "size": RANGE}]);
    let script = "stat -c '%n %u:%g' /data/root-file /data/user-file; touch /data/made-inside";
    // With the mappings given, and with runc 1.2's `idmap` taking the container's.
    for (mappings, options) in [(Some(map), vec![]), (None, vec!["idmap"])] {
        let _ = fs::remove_file(src.join("made-inside"));
        let mut b = userns_bundle(&h)?;
        b.add_mount(idmapped(&src, mappings, &options))?;
        b.sh(script)?;
        let Some(out) = run_idmapped(&h, &b)? else {
            return Ok(());
        };
        // Host root's file is the container's root's (not 65534: see
        // unmapped_root_owned_files_show_as_nobody), 1000 stays 1000.
        assert_eq!(
            out, "/data/root-file 0:0\n/data/user-file 1000:1000\n",
            "{options:?}"
        );
        // What the container's root makes is the host's root's on disk.
        let meta = fs::metadata(src.join("made-inside"))?;
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{options:?}");
        not_mounted_on_host(&src)?;
    }
    Ok(())
}

/// Without a user namespace the mapping still applies: a file owned by 1000 on disk shows as the
/// host id 2000 the mapping gives it; nothing stays mounted on the host while the container runs or
/// after.
#[test]
fn an_idmapped_bind_without_a_user_namespace_and_nothing_left_on_the_host() -> Result<()> {
    let h = Harness::new()?;
    let src = idmap_source(&h)?;
    let map = json!([{"containerID": 1000, "hostID": 2000, "size": 1}]);
    let mut b = h.bundle()?;
    b.add_mount(idmapped(&src, Some(map.clone()), &[]))?;
    b.sh("stat -c '%n %u:%g' /data/root-file /data/user-file")?;
    let Some(out) = run_idmapped(&h, &b)? else {
        return Ok(());
    };
    // Root is outside the mapping: overflow ids.
    assert_eq!(
        out,
        "/data/root-file 65534:65534\n/data/user-file 2000:2000\n"
    );
    let mut b = h.bundle()?;
    b.add_mount(idmapped(&src, Some(map), &[]))?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("idmap", &b)?;
    not_mounted_on_host(&src)?;
    let pid = h.pid(&id)?;
    let theirs = fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    assert!(
        theirs
            .lines()
            .any(|l| l.contains(" /data ") && l.contains("idmapped")),
        "{theirs}"
    );
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)?;
    not_mounted_on_host(&src)?;
    Ok(())
}

#[test]
fn invalid_mount_mappings_are_refused_naming_the_field() -> Result<()> {
    let h = Harness::new()?;
    let src = idmap_source(&h)?;
    let good = json!([{"containerID": 0, "hostID": HOST_BASE, "size": RANGE}]);
    let tmpfs = json!({
        "destination": "/data", "type": "tmpfs", "source": "tmpfs",
        "uidMappings": good.clone(), "gidMappings": good.clone(),
    });
    let mut only_uid = idmapped(&src, None, &[]);
    only_uid["uidMappings"] = good.clone();
    let cases = [
        (tmpfs, "mounts[7].uidMappings", "only bind mounts"),
        (
            idmapped(&src, Some(json!([])), &[]),
            "mounts[7].uidMappings",
            "empty",
        ),
        (
            idmapped(
                &src,
                Some(json!([{"containerID": 0, "hostID": 1, "size": 0}])),
                &[],
            ),
            "mounts[7].uidMappings[0].size",
            "0",
        ),
        (only_uid, "mounts[7].uidMappings", "together"),
        // `idmap` alone takes the container's mappings, and there are none.
        (
            idmapped(&src, None, &["idmap"]),
            "mounts[7].options",
            "linux.uidMappings",
        ),
    ];
    for (mount, field, why) in cases {
        let mut b = h.bundle()?;
        assert_eq!(b.config()["mounts"].as_array().map(Vec::len), Some(7));
        b.add_mount(mount.clone())?;
        b.args(&["true"])?;
        let id = h.id("idmap-bad");
        let out = h.try_create(&id, &b, &[])?;
        assert!(!out.success(), "{mount}: {out}");
        assert!(out.stderr.contains(field), "{mount}: {out}");
        assert!(out.stderr.contains(why), "{mount}: {out}");
        h.check_no_trace(&id, &b)?;
        not_mounted_on_host(&src)?;
    }
    Ok(())
}
