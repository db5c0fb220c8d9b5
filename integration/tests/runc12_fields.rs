//! Fields runc 1.2–1.5 implements and runc 1.1.5 (the oracle on the development hosts) does not
//! know: `linux.memoryPolicy`, `process.execCPUAffinity`, `linux.netDevices`, `exec --cgroup`.
//! runc 1.1.5 ignores the fields, so each test asserts the effect the runtime-spec and runc's
//! later releases describe, seen from inside the container.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use serde_json::json;
use skiff_integration::Harness;

/// The task's memory policy as `/proc/self/numa_maps` shows it on its first mapping.
fn policy_seen(h: &Harness, policy: Option<serde_json::Value>) -> Result<String> {
    let mut b = h.bundle()?;
    if let Some(p) = policy {
        b.edit(|c| c["linux"]["memoryPolicy"] = p)?;
    }
    b.sh("head -1 /proc/self/numa_maps")?;
    let out = h.run_ok(&b)?;
    Ok(out
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string())
}

#[test]
fn the_memory_policy_is_the_processs() -> Result<()> {
    let h = Harness::new()?;
    assert_eq!(policy_seen(&h, None)?, "default");
    let seen = policy_seen(
        &h,
        Some(json!({"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]})),
    )?;
    assert_eq!(seen, "interleave=static:0");
    assert_eq!(
        policy_seen(&h, Some(json!({"mode": "MPOL_BIND", "nodes": "0"})))?,
        "bind:0"
    );
    assert_eq!(
        policy_seen(&h, Some(json!({"mode": "MPOL_PREFERRED"})))?,
        "local"
    );
    Ok(())
}

#[test]
fn a_bad_memory_policy_fails_create_naming_the_field() -> Result<()> {
    let h = Harness::new()?;
    for bad in [
        json!({"mode": "MPOL_BIND"}),
        json!({"mode": "MPOL_BIND", "nodes": "0",
               "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
        json!({"mode": "MPOL_DEFAULT", "nodes": "0"}),
        json!({"mode": "MPOL_BIND", "nodes": "5-1"}),
        // Valid, but no such node on the host: the kernel refuses it in the init.
        json!({"mode": "MPOL_BIND", "nodes": "1000"}),
    ] {
        let mut b = h.bundle()?;
        b.edit(|c| c["linux"]["memoryPolicy"] = bad.clone())?;
        b.args(&["true"])?;
        let id = h.id("badmempolicy");
        let out = h.try_create(&id, &b, &[])?;
        assert_eq!(out.exit_code(), 1, "{bad}: {out}");
        assert!(out.stderr.contains("memoryPolicy"), "{bad}: {out}");
        h.check_no_trace(&id, &b)?;
    }
    Ok(())
}

fn cpus_allowed(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `final` pins an exec'd process once it is in the container's cgroup; `initial` pins the
/// runtime's side before that; the container's init is left alone (the spec keeps the field off
/// it).
#[test]
fn exec_cpu_affinity_pins_exec_not_the_init() -> Result<()> {
    let h = Harness::new()?;
    let all = cpus_allowed(&std::fs::read_to_string("/proc/self/status")?);
    if all == "0" {
        eprintln!("skipped: one CPU");
        return Ok(());
    }
    let mut b = h.bundle()?;
    b.edit(|c| c["process"]["execCPUAffinity"] = json!({"initial": "0", "final": "1"}))?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("execaff", &b)?;
    let init = std::fs::read_to_string(format!("/proc/{}/status", h.pid(&id)?))?;
    assert_eq!(cpus_allowed(&init), all, "the init must not be pinned");
    let out = h.exec_in(&id, &[], &["cat", "/proc/self/status"])?.ok()?;
    assert_eq!(cpus_allowed(&out.stdout), "1", "final");
    // The runtime's side: `skiff exec` itself, relaying a running process.
    let running = h.spawn(
        &skiff_integration::exec_args(&id, &[], &["sleep", "600"]),
        skiff_integration::Opts::default(),
    )?;
    // Polled, not slept on: under emulation `skiff exec` takes a while to get that far.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut parent = String::new();
    while std::time::Instant::now() < deadline {
        parent = std::fs::read_to_string(format!("/proc/{}/status", running.pid()))?;
        if cpus_allowed(&parent) == "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(cpus_allowed(&parent), "0", "initial");
    drop(running);
    // Given with --process too, and checked.
    let proc_file = h.path("process.json");
    let mut p = b.config()["process"].clone();
    p["args"] = json!(["cat", "/proc/self/status"]);
    p["execCPUAffinity"] = json!({"final": "0"});
    std::fs::write(&proc_file, p.to_string())?;
    let path = proc_file.display().to_string();
    let out = h.exec_in(&id, &["--process", &path], &[])?.ok()?;
    assert_eq!(cpus_allowed(&out.stdout), "0");
    p["execCPUAffinity"] = json!({"final": "7000"});
    std::fs::write(&proc_file, p.to_string())?;
    let out = h.exec_in(&id, &["--process", &path], &[])?;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("execCPUAffinity"), "{out}");
    Ok(())
}

/// `exec --cgroup` puts the process in an existing sub-cgroup of the container (`PATH` on cgroup
/// v2, `CONTROLLER:PATH` on v1); a missing one fails the exec; `delete` removes the sub-cgroup with
/// the container's. runc 1.1.5 has the flag too: this test passes with `SKIFF_BIN=/usr/sbin/runc`.
#[test]
fn exec_cgroup_joins_a_sub_cgroup() -> Result<()> {
    use skiff_integration::cgroup_helpers::{controller_dir, is_v2};
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let cg = b.cgroups_path().unwrap();
    let id = h.create_and_start("execcg", &b)?;
    let dir = controller_dir(&cg, "pids")?.unwrap();
    std::fs::create_dir(dir.join("sub"))?;
    let (arg, missing, bad) = if is_v2()? {
        ("sub", "nope", "pids:sub,memory:other")
    } else {
        ("pids:sub", "pids:nope", "sub")
    };
    let out = h
        .exec_in(&id, &["--cgroup", arg], &["cat", "/proc/self/cgroup"])?
        .ok()?;
    let pids_line = out
        .stdout
        .lines()
        .find(|l| l.contains(":pids:") || l.starts_with("0::"))
        .unwrap_or_default()
        .to_string();
    assert!(pids_line.ends_with("/sub"), "{}", out.stdout);
    let pid = h.exec_detached(&id, &["--cgroup", arg], &["sleep", "600"])?;
    let procs = std::fs::read_to_string(dir.join("sub/cgroup.procs"))?;
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    for wrong in [missing, bad] {
        let out = h.exec_in(&id, &["--cgroup", wrong], &["true"])?;
        assert!(!out.success(), "--cgroup {wrong}: {out}");
        assert!(out.stderr.contains("cgroup"), "--cgroup {wrong}: {out}");
    }
    h.delete_force(&id)?;
    assert!(
        !dir.exists(),
        "the container's cgroup (and its sub-cgroup) must go"
    );
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// A veth pair made for a test, removed on drop if the container did not take it away.
struct Veth(String, String);

impl Veth {
    fn new(tag: &str) -> Result<Veth> {
        let v = Veth(format!("sk{tag}a"), format!("sk{tag}b"));
        let ip = |args: &[&str]| -> Result<()> {
            let st = std::process::Command::new("ip").args(args).status()?;
            anyhow::ensure!(st.success(), "ip {args:?} failed");
            Ok(())
        };
        ip(&["link", "add", &v.0, "type", "veth", "peer", "name", &v.1])?;
        ip(&["addr", "add", "10.77.0.5/24", "dev", &v.0])?;
        ip(&["link", "set", &v.0, "up"])?;
        Ok(v)
    }

    fn on_host(name: &str) -> bool {
        std::path::Path::new("/sys/class/net").join(name).exists()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        if Veth::on_host(&self.0) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .status();
        }
    }
}

/// `linux.netDevices` moves a host device into the container's network namespace under its new
/// name, up, with its permanent global address (runc 1.3); the namespace takes it away when the
/// container goes (a veth dies with it).
#[test]
fn net_devices_are_moved_into_the_container() -> Result<()> {
    let h = Harness::new()?;
    let tag = format!("{:x}", std::process::id() % 0xffff);
    let veth = Veth::new(&tag)?;
    let mut b = h.bundle()?;
    let host_name = veth.0.clone();
    b.edit(|c| c["linux"]["netDevices"] = json!({host_name.clone(): {"name": "eth7"}}))?;
    b.sh("ip -o link show eth7; ip -o -4 addr show eth7")?;
    let out = h.run_ok(&b)?;
    assert!(out.contains("eth7") && out.contains(",UP"), "{out}");
    assert!(out.contains("inet 10.77.0.5/24"), "{out}");
    assert!(!Veth::on_host(&veth.0), "the device is still on the host");
    // The peer goes with the container's namespace (asynchronously).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Veth::on_host(&veth.1) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !Veth::on_host(&veth.1),
        "the veth pair outlived the container"
    );
    Ok(())
}

#[test]
fn bad_net_devices_fail_create_and_leave_nothing() -> Result<()> {
    let h = Harness::new()?;
    let cases = [
        (json!({"sknosuchdev0": {}}), false),
        (json!({"lo": {"name": "a/b"}}), false),
        (json!({"lo": {"name": "eth0"}}), true),
    ];
    for (devices, drop_netns) in cases {
        let mut b = h.bundle()?;
        b.edit(|c| c["linux"]["netDevices"] = devices.clone())?;
        if drop_netns {
            b.remove_namespace("network")?;
        }
        b.args(&["true"])?;
        let id = h.id("badnetdev");
        let out = h.try_create(&id, &b, &[])?;
        assert_eq!(out.exit_code(), 1, "{devices}: {out}");
        assert!(out.stderr.contains("netDevices"), "{devices}: {out}");
        h.check_no_trace(&id, &b)?;
    }
    assert!(Veth::on_host("lo"));
    Ok(())
}
