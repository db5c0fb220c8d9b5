//! The container's cgroup: named by `linux.cgroupsPath`, joined by the init, removed on delete.
//! Works on cgroup v1 (and hybrid) hosts and on pure cgroup v2 hosts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use skiff_integration::host::{
    cgroup_dirs_of, cgroup_mode, check_in_cgroup, existing_cgroup_dirs, required_cgroup_dirs,
    CgroupMode,
};
use skiff_integration::Harness;

#[test]
fn the_init_is_in_the_cgroups_path_and_delete_removes_it() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let cgroup = b.cgroups_path().unwrap();
    assert!(existing_cgroup_dirs(&cgroup)?.is_empty());
    let id = h.id("cg");
    h.create(&id, &b)?;
    let pid = h.pid(&id)?;
    for dir in required_cgroup_dirs(&cgroup)? {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    check_in_cgroup(pid, &cgroup)?;

    // The user process (same pid after exec) stays there.
    h.start(&id)?;
    check_in_cgroup(pid, &cgroup)?;

    h.kill(&id, Some("KILL"))?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    let left = existing_cgroup_dirs(&cgroup)?;
    assert!(left.is_empty(), "left after delete: {left:?}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn children_of_the_container_share_its_cgroup() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let cgroup = b.cgroups_path().unwrap();
    // Print the child's own view: with no cgroup namespace it names the host path.
    b.sh("sh -c 'cat /proc/self/cgroup'")?;
    let out = h.run_ok(&b)?;
    let want = format!("/{}", cgroup.trim_start_matches('/'));
    let paths: Vec<&str> = out
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    assert!(
        paths.iter().any(|p| *p == want),
        "child not in {want}:\n{out}"
    );
    Ok(())
}

/// Removes directories a test found (only ones named after its own container) if they are left.
struct RmdirOnDrop(Vec<std::path::PathBuf>);

impl Drop for RmdirOnDrop {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn without_a_cgroups_path_the_default_cgroup_is_removed_on_delete() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        c["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    })?;
    b.args(&["sleep", "60"])?;
    let id = h.id("cgdefault");
    h.create(&id, &b)?;
    let pid = h.pid(&id)?;
    // The runtime picks a cgroup of its own for the container, named after it (runc: `<id>` under
    // the caller's cgroup).
    let dirs: Vec<_> = cgroup_dirs_of(pid)?
        .into_iter()
        .filter(|d| d.display().to_string().contains(&id))
        .collect();
    let _guard = RmdirOnDrop(dirs.clone());
    assert!(
        !dirs.is_empty(),
        "init is in no cgroup of its own: {}",
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?
    );
    h.start(&id)?;
    h.kill(&id, Some("KILL"))?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "left after delete: {left:?}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// The mounts at and under /sys/fs/cgroup a container shows (mount point, options, and type,
/// source and super options; not the cgroup root, which names each harness's own cgroup), and the
/// names in /sys/fs/cgroup, with the bundle's config edited by `edit`.
fn cgroup_mounts_case(h: &Harness, edit: &dyn Fn(&mut serde_json::Value)) -> Result<String> {
    let mut b = h.bundle()?;
    b.edit(|c| edit(c))?;
    b.sh("ls /sys/fs/cgroup | tr '\\n' ' '; echo; \
          awk '$5 ~ /^\\/sys\\/fs\\/cgroup/ { s = 7; while ($s != \"-\") s++; \
          print $5, $6, $(s+1), $(s+2), $(s+3) }' /proc/self/mountinfo")?;
    h.run_ok(&b)
}

/// With the `cgroup` mount's own options (`None`: the default spec's, read-only) and with or
/// without a cgroup namespace.
fn cgroup_mount_config(
    options: Option<&'static [&'static str]>,
    cgroupns: bool,
) -> impl Fn(&mut serde_json::Value) {
    move |c: &mut serde_json::Value| {
        if let Some(opts) = options {
            for m in c["mounts"].as_array_mut().unwrap() {
                if m["destination"] == "/sys/fs/cgroup" {
                    m["options"] = serde_json::json!(opts);
                }
            }
        }
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "cgroup");
        if cgroupns {
            ns.push(serde_json::json!({"type": "cgroup"}));
        }
    }
}

/// On cgroup v1 the container's /sys/fs/cgroup is runc's: a tmpfs that stays read-write with
/// nosuid, nodev and noexec even under a read-only cgroup mount (runc 1.1 to 1.4), the v1
/// hierarchies only (not a hybrid host's cgroup2 `unified`), each with the cgroup mount's flags
/// (a read-write one keeps nosuid, nodev, noexec), and with a cgroup namespace the named systemd
/// hierarchy mounted with source `systemd`. Compared with runc when it is installed.
#[test]
fn v1_cgroup_mounts_are_runcs() -> Result<()> {
    if !matches!(cgroup_mode()?, CgroupMode::V1 { .. }) {
        eprintln!("v1_cgroup_mounts_are_runcs: skipped: not a cgroup v1 host");
        return Ok(());
    }
    const RW: &[&str] = &["nosuid", "noexec", "nodev", "relatime"];
    let h = Harness::new()?;
    let runc_bin = std::path::Path::new(skiff_integration::harness::RUNC);
    let runc = match runc_bin.is_file() && h.bin() != runc_bin {
        true => Some(Harness::runc()?),
        false => None,
    };
    for (what, options, cgroupns, hierarchy_opts) in [
        ("read-only", None, false, "ro,nosuid,nodev,noexec,relatime"),
        (
            "read-write",
            Some(RW),
            false,
            "rw,nosuid,nodev,noexec,relatime",
        ),
        ("cgroupns", None, true, "ro,nosuid,nodev,noexec,relatime"),
    ] {
        let config = cgroup_mount_config(options, cgroupns);
        let got = cgroup_mounts_case(&h, &config)?;
        let mut lines = got.lines();
        let names = lines.next().unwrap_or_default();
        assert!(!names.contains("unified"), "{what}: {got}");
        let mounts: Vec<&str> = lines.collect();
        assert_eq!(
            mounts.first().copied(),
            Some("/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime tmpfs tmpfs rw,mode=755"),
            "{what}: {got}"
        );
        assert!(mounts.len() > 1, "{what}: {got}");
        for m in &mounts[1..] {
            let f: Vec<&str> = m.split(' ').collect();
            assert_eq!(f[1], hierarchy_opts, "{what}: {m}");
            assert_eq!(f[2], "cgroup", "{what}: {m}");
            let want_source = match cgroupns && f[0] == "/sys/fs/cgroup/systemd" {
                true => "systemd",
                false => "cgroup",
            };
            assert_eq!(f[3], want_source, "{what}: {m}");
        }
        if let Some(r) = &runc {
            let oracle = cgroup_mounts_case(r, &config)?;
            assert_eq!(got, oracle, "{what}: skiff vs runc");
        }
    }
    Ok(())
}

/// On cgroup v2 the container's /sys/fs/cgroup is runc's (`mountCgroupV2`): a fresh cgroup2 with
/// the cgroup mount's flags, whose root is the container's cgroup with a cgroup namespace and the
/// hierarchy's root without one (the container then sees the host's top-level cgroups, its own
/// among them, as under runc); in a user namespace without a cgroup namespace, where the kernel
/// refuses the mount, a bind of the whole hierarchy with the mount's flags. Compared with runc
/// when it is installed.
#[test]
fn v2_cgroup_mounts_are_runcs() -> Result<()> {
    if !matches!(cgroup_mode()?, CgroupMode::V2 { .. }) {
        eprintln!("v2_cgroup_mounts_are_runcs: skipped: not a cgroup v2 host");
        return Ok(());
    }
    const RW: &[&str] = &["nosuid", "noexec", "nodev", "relatime"];
    const RO_OPTS: &str = "ro,nosuid,nodev,noexec,relatime";
    let h = Harness::new()?;
    let runc_bin = std::path::Path::new(skiff_integration::harness::RUNC);
    let runc = match runc_bin.is_file() && h.bin() != runc_bin {
        true => Some(Harness::runc()?),
        false => None,
    };
    // (what, options, cgroupns, userns, mount options, source, whether the root is the host's)
    for (what, options, cgroupns, userns, opts, source, host_root) in [
        ("read-only", None, false, false, RO_OPTS, "cgroup", true),
        (
            "read-write",
            Some(RW),
            false,
            false,
            "rw,nosuid,nodev,noexec,relatime",
            "cgroup",
            true,
        ),
        ("cgroupns", None, true, false, RO_OPTS, "cgroup", false),
        ("userns", None, false, true, RO_OPTS, "", true),
        (
            "userns and cgroupns",
            None,
            true,
            true,
            RO_OPTS,
            "cgroup",
            false,
        ),
    ] {
        let edit = cgroup_mount_config(options, cgroupns);
        let config = |c: &mut serde_json::Value| {
            edit(c);
            if userns {
                let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"type": "user"}));
                c["linux"]["uidMappings"] = map.clone();
                c["linux"]["gidMappings"] = map;
            }
        };
        let (cgroup, got) = cgroup_mounts_v2_case(&h, &config)?;
        let (names, mounts) = got.split_once('\n').unwrap_or((&got, ""));
        let mounts: Vec<&str> = mounts.lines().collect();
        assert_eq!(mounts.len(), 1, "{what}: {got}");
        let f: Vec<&str> = mounts[0].split(' ').collect();
        assert_eq!(f[..3], ["/sys/fs/cgroup", opts, "cgroup2"], "{what}: {got}");
        if !source.is_empty() {
            assert_eq!(f[3], source, "{what}: {got}");
        }
        let own = cgroup.trim_start_matches('/');
        let names: Vec<&str> = names.split_whitespace().collect();
        assert_eq!(
            names.contains(&own),
            host_root,
            "{what}: {own} in {names:?}"
        );
        assert!(names.contains(&"cgroup.procs"), "{what}: {names:?}");
        if let Some(r) = &runc {
            let (_, oracle) = cgroup_mounts_v2_case(r, &config)?;
            let oracle = oracle.split_once('\n').map(|(_, m)| m).unwrap_or_default();
            assert_eq!(
                mounts.join("\n"),
                oracle.trim_end(),
                "{what}: skiff vs runc"
            );
        }
    }
    Ok(())
}

/// [`cgroup_mounts_case`] with the bundle's `linux.cgroupsPath` (a top-level cgroup).
fn cgroup_mounts_v2_case(
    h: &Harness,
    edit: &dyn Fn(&mut serde_json::Value),
) -> Result<(String, String)> {
    let cgroup = std::cell::RefCell::new(String::new());
    let out = cgroup_mounts_case(h, &|c: &mut serde_json::Value| {
        edit(c);
        *cgroup.borrow_mut() = c["linux"]["cgroupsPath"].as_str().unwrap().to_string();
    })?;
    Ok((cgroup.into_inner(), out))
}

/// runc's default device rules allow /dev/net/tun (`c 10:200 rwm`) without creating it: a node
/// made in the container may be opened, where a device outside the rules (/dev/kmsg) may not.
#[test]
fn the_default_device_rules_allow_dev_net_tun() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!("CAP_MKNOD"));
        }
    })?;
    b.sh("[ -e /dev/net/tun ] && echo tun-exists; \
          mknod /dev/tun c 10 200 && mknod /dev/kmsg2 c 1 11 || exit 1; \
          for d in tun kmsg2; do \
            if (exec 3</dev/$d) 2>&1 | grep -q 'not permitted'; then echo $d-denied; \
            else echo $d-allowed; fi; \
          done")?;
    let out = h.run_ok(&b)?;
    // (Denied is EPERM from the device rules; an allowed open may still fail without the driver.)
    assert_eq!(out, "tun-allowed\nkmsg2-denied\n");
    Ok(())
}
