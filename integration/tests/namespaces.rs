//! Namespaces (created or joined by path), hostname, domainname and sysctls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use anyhow::Result;
use serde_json::json;
use skiff_integration::host::{host_namespace, hostname};
use skiff_integration::{wait_for_file, Harness};

const KINDS: [&str; 6] = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];

/// `kind -> readlink /proc/self/ns/kind` as printed by [`NS_SCRIPT`].
fn parse_ns(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const NS_SCRIPT: &str =
    "for n in pid net ipc uts mnt cgroup; do echo \"$n=$(readlink /proc/self/ns/$n)\"; done";

#[test]
fn the_process_is_pid_1_of_a_new_pid_namespace() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("echo $$; ls /proc | grep -E '^[0-9]+$' | wc -l")?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "1", "{out}");
    // Only the shell and its pipeline are visible, not the host's processes.
    let visible: usize = lines[1].parse()?;
    assert!(visible < 10, "{visible} processes visible");
    Ok(())
}

#[test]
fn configured_namespaces_are_new_and_others_are_shared() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.set_namespace("cgroup", None)?;
    b.sh(NS_SCRIPT)?;
    let inside = parse_ns(&h.run_ok(&b)?);
    assert_eq!(inside.len(), KINDS.len(), "{inside:?}");
    for kind in KINDS {
        assert_ne!(
            inside.get(kind),
            Some(&host_namespace(kind)?),
            "{kind} is the host's"
        );
    }

    // Without a network (or cgroup) namespace in the config the container shares the host's.
    b.remove_namespace("network")?;
    b.remove_namespace("cgroup")?;
    let inside = parse_ns(&h.run_ok(&b)?);
    assert_eq!(inside["net"], host_namespace("net")?);
    assert_eq!(inside["cgroup"], host_namespace("cgroup")?);
    assert_ne!(inside["uts"], host_namespace("uts")?);
    Ok(())
}

#[test]
fn cgroup_namespace_roots_the_container_at_its_cgroup() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.set_namespace("cgroup", None)?;
    b.args(&["cat", "/proc/self/cgroup"])?;
    let out = h.run_ok(&b)?;
    assert!(!out.trim().is_empty(), "no /proc/self/cgroup output");
    for line in out.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        assert_eq!(path, "/", "{out}");
    }
    Ok(())
}

#[test]
fn hostname_is_set_in_the_uts_namespace() -> Result<()> {
    let h = Harness::new()?;
    let host_before = hostname()?;
    let mut b = h.bundle()?;
    b.edit(|c| c["hostname"] = json!("skiff-box"))?;
    b.sh("hostname; cat /proc/sys/kernel/hostname")?;
    assert_eq!(h.run_ok(&b)?, "skiff-box\nskiff-box\n");
    assert_eq!(hostname()?, host_before, "host hostname changed");
    Ok(())
}

/// `domainname` came with runtime-spec 1.1 (runc supports it from 1.2).
#[test]
fn domainname_is_set_in_the_uts_namespace() -> Result<()> {
    let h = Harness::new()?;
    let host_before = std::fs::read_to_string("/proc/sys/kernel/domainname")?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        c["ociVersion"] = json!("1.1.0");
        c["hostname"] = json!("skiff-box");
        c["domainname"] = json!("example.test");
    })?;
    b.args(&["cat", "/proc/sys/kernel/domainname"])?;
    assert_eq!(h.run_ok(&b)?, "example.test\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname")?,
        host_before,
        "host domainname changed"
    );
    Ok(())
}

#[test]
fn a_network_namespace_can_be_joined_by_path() -> Result<()> {
    let h = Harness::new()?;
    let netns = h.netns()?;
    let ino = fs::metadata(&netns)?.ino();
    let mut b = h.bundle()?;
    b.set_namespace("network", Some(&netns))?;
    b.args(&["readlink", "/proc/self/ns/net"])?;
    let out = h.run_ok(&b)?;
    assert_eq!(out.trim(), format!("net:[{ino}]"));
    assert_ne!(out.trim(), host_namespace("net")?);
    Ok(())
}

#[test]
fn a_second_container_joins_the_first_ones_namespaces() -> Result<()> {
    let h = Harness::new()?;
    let gate = h.dir("gate")?;
    let mut first = h.bundle()?;
    first.bind(&gate, "/gate", false)?;
    first.edit(|c| c["hostname"] = json!("pod-host"))?;
    first.sh("touch /gate/ready; while [ ! -e /gate/go ]; do sleep 0.02; done")?;
    let pod = h.id("pod");
    h.create(&pod, &first)?;
    h.start(&pod)?;
    wait_for_file(&gate.join("ready"), h.timeout())?;
    let pid = h.pid(&pod)?;

    let mut second = h.bundle()?;
    for (kind, file) in [("network", "net"), ("uts", "uts"), ("ipc", "ipc")] {
        let path = std::path::PathBuf::from(format!("/proc/{pid}/ns/{file}"));
        second.set_namespace(kind, Some(&path))?;
    }
    // A joined UTS namespace keeps its own hostname.
    second.edit(|c| {
        c.as_object_mut().unwrap().remove("hostname");
    })?;
    second.sh("hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc")?;
    let out = h.run_ok(&second)?;
    let net = fs::read_link(format!("/proc/{pid}/ns/net"))?;
    let ipc = fs::read_link(format!("/proc/{pid}/ns/ipc"))?;
    assert_eq!(
        out,
        format!("pod-host\n{}\n{}\n", net.display(), ipc.display())
    );
    fs::write(gate.join("go"), "")?;
    h.wait_status(&pod, "stopped")?;
    Ok(())
}

#[test]
fn sysctls_apply_inside_the_new_namespaces_only() -> Result<()> {
    let h = Harness::new()?;
    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
    let host_rmid = fs::read_to_string("/proc/sys/kernel/shm_rmid_forced")?;
    let mut b = h.bundle()?;
    // Values opposite to the host's, so the change is visible whatever the host has.
    let forward = if host_forward.trim() == "1" { "0" } else { "1" };
    let rmid = if host_rmid.trim() == "1" { "0" } else { "1" };
    b.edit(|c| {
        c["linux"]["sysctl"] = json!({
            "net.ipv4.ip_forward": forward,
            "kernel.shm_rmid_forced": rmid
        })
    })?;
    b.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced")?;
    let out = h.run_ok(&b)?;
    assert_eq!(out, format!("{forward}\n{rmid}\n"));
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?,
        host_forward
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shm_rmid_forced")?,
        host_rmid
    );
    Ok(())
}

/// What a container without a mount namespace shows: its rootfs (a marker file), its mount
/// namespace, whether its root is read-only; and the lines it added to the host's mountinfo
/// while it ran and after `delete`.
struct NoMountNs {
    inside: String,
    while_running: usize,
    /// Host lines that changed or went while it ran (runc makes the host's mounts slaves).
    changed: Vec<String>,
    after_delete: Vec<String>,
}

fn without_mount_ns(h: &Harness) -> Result<NoMountNs> {
    let mut b = h.bundle()?;
    b.remove_namespace("mount")?;
    b.edit(|c| {
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
    })?;
    fs::write(b.rootfs().join("etc/marker"), "in-the-rootfs\n")?;
    b.sh("cat /etc/marker; readlink /proc/self/ns/mnt; \
          touch /w 2>&1 && echo root-writable && rm /w; \
          grep -c ' /proc ' /proc/self/mountinfo; exec sleep 1000")?;
    let old: std::collections::BTreeSet<String> =
        h.host_mountinfo()?.lines().map(str::to_string).collect();
    let added = |h: &Harness| -> Result<Vec<String>> {
        Ok(h.host_mountinfo()?
            .lines()
            .filter(|l| !old.contains(*l))
            .map(str::to_string)
            .collect())
    };
    let id = h.id("nomnt");
    h.create(&id, &b)?;
    h.start(&id)?.ok()?;
    let inside = skiff_integration::wait_for_content(&h.stdout_path(&id), h.timeout())?;
    // Wait for the last line (the mount count) before looking at the host.
    let deadline = std::time::Instant::now() + h.timeout();
    let mut inside = inside;
    while inside.lines().count() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        inside = h.stdout_of(&id)?;
    }
    let while_running = added(h)?.len();
    let old_text: String = old.iter().map(|l| format!("{l}\n")).collect();
    let changed = skiff_integration::host::mountinfo_lost(&old_text, &h.host_mountinfo()?);
    h.kill(&id, Some("KILL"))?.ok()?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?.ok()?;
    Ok(NoMountNs {
        inside,
        while_running,
        changed,
        after_delete: added(h)?,
    })
}

/// Without a mount namespace the container shares the host's (runc runs such a config): its
/// rootfs is built there and entered with chroot (writable despite `root.readonly`, as runc
/// finalizes a rootfs only in a mount namespace of its own), and `delete` leaves none of its
/// mounts on the host (runc 1.1.5 leaves them all). Run from a stand-in host whose mounts are
/// shared, beside runc for what the container sees.
#[test]
fn without_a_mount_namespace_the_container_shares_the_hosts() -> Result<()> {
    let mut h = Harness::new()?;
    h.use_shared_host_mount_ns()?;
    let got = without_mount_ns(&h)?;
    let host_ns = h.host_mount_ns()?;
    assert_eq!(
        got.inside,
        format!("in-the-rootfs\n{host_ns}\nroot-writable\n1\n"),
        "what the container sees"
    );
    // Its /proc, /dev, /sys, cgroups... are on the host while it runs, as with runc, but the
    // host's own mounts keep their propagation (runc makes them all slaves).
    assert!(got.while_running >= 5, "{} mounts", got.while_running);
    assert!(
        got.changed.is_empty(),
        "host mounts changed:\n{}",
        got.changed.join("\n")
    );
    assert!(
        got.after_delete.is_empty(),
        "left on the host after delete:\n{}",
        got.after_delete.join("\n")
    );
    // A create that fails half-way (after /proc, /dev... are mounted) leaves nothing either.
    let mut b = h.bundle()?;
    b.remove_namespace("mount")?;
    b.edit(|c| {
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
    })?;
    b.add_mount(json!({"destination": "/bad", "type": "nosuchfs", "source": "none"}))?;
    let before = h.host_mountinfo()?;
    let out = h.try_create(&h.id("nomntfail"), &b, &[])?;
    assert!(!out.success(), "{out}");
    let now = h.host_mountinfo()?;
    let left: Vec<&str> = now.lines().filter(|l| !before.contains(l)).collect();
    assert!(
        left.is_empty(),
        "left after a failed create:\n{}",
        left.join("\n")
    );
    let runc_bin = std::path::Path::new(skiff_integration::harness::RUNC);
    if runc_bin.is_file() && h.bin() != runc_bin {
        let mut r = Harness::runc()?;
        r.use_shared_host_mount_ns()?;
        let oracle = without_mount_ns(&r)?;
        let runc_ns = r.host_mount_ns()?;
        assert_eq!(
            got.inside.replace(&host_ns, "HOST-NS"),
            oracle.inside.replace(&runc_ns, "HOST-NS"),
            "skiff vs runc inside"
        );
    }
    Ok(())
}
