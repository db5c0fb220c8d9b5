//! The systemd cgroup driver (`--systemd-cgroup`): the container's init in a transient scope
//! `prefix-name.scope` under the slice of cgroupsPath `slice:prefix:name`, made over D-Bus with
//! the resources as unit properties and in the files; exec, update, pause/resume, ps, events,
//! kill --all and delete on it; compared with runc 1.1.5's scope for the same bundle.
//!
//! Needs systemd as pid 1 (its private socket, /run/systemd/private) on cgroup v2:
//! `scripts/vm-test.sh` boots such a guest (`SKIFF_VM_TESTS=systemd_cgroup`). Elsewhere the tests
//! that need it say so and pass without running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{bail, Context, Result};
use serde_json::json;
use skiff_integration::{Bundle, Harness};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const PRIVATE: &str = "/run/systemd/private";

/// Whether systemd (pid 1) is there to talk to; says why not when it is not.
fn have_systemd(test: &str) -> bool {
    if Path::new(PRIVATE).exists() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return true;
    }
    eprintln!(
        "{test}: skipped: needs systemd as pid 1 on cgroup v2 (no {PRIVATE} or no unified \
         /sys/fs/cgroup); scripts/vm-test.sh runs it (SKIFF_VM_TESTS=systemd_cgroup)"
    );
    false
}

/// `systemctl show UNIT -p ...` as a map.
fn show(unit: &str, props: &[&str]) -> Result<HashMap<String, String>> {
    let mut cmd = Command::new("systemctl");
    cmd.args(["show", unit]);
    for p in props {
        cmd.args(["-p", p]);
    }
    let out = cmd.output().context("systemctl show")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Whether systemd still lists the unit, in any state.
fn listed(unit: &str) -> Result<bool> {
    let out = Command::new("systemctl")
        .args(["list-units", "--all", "--no-legend", "--plain", unit])
        .output()
        .context("systemctl list-units")?;
    Ok(String::from_utf8_lossy(&out.stdout).contains(unit))
}

/// The v2 cgroup of a process, from /proc/PID/cgroup.
fn cgroup_of(pid: i32) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .context("no 0:: line")
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Stops a slice the test made (systemd keeps a transient slice after its last scope).
struct StopSlice(String);

impl Drop for StopSlice {
    fn drop(&mut self) {
        let _ = Command::new("systemctl").args(["stop", &self.0]).status();
    }
}

/// A bundle running `sleep` with resources systemd knows and cgroupsPath `slice:prefix:name`.
fn bundle(h: &Harness, cgroups_path: &str) -> Result<Bundle> {
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    b.edit(|c| {
        c["linux"]["cgroupsPath"] = json!(cgroups_path);
        c["linux"]["resources"] = json!({
            "memory": {"limit": 104857600, "reservation": 52428800},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0"},
            "pids": {"limit": 99},
            "unified": {"memory.high": "94371840"}
        });
    })?;
    Ok(b)
}

const PROPS: &[&str] = &[
    "Slice",
    "Delegate",
    "MemoryMax",
    "MemoryLow",
    "MemoryHigh",
    "CPUWeight",
    "CPUQuotaPerSecUSec",
    "CPUQuotaPeriodUSec",
    "AllowedCPUs",
    "TasksMax",
    "ActiveState",
    "ControlGroup",
];

#[test]
fn a_container_lives_in_a_scope_under_its_nested_slice() -> Result<()> {
    if !have_systemd("a_container_lives_in_a_scope_under_its_nested_slice") {
        return Ok(());
    }
    let h = Harness::new()?;
    let id = h.id("sd");
    let slice = format!("skiffit-pod{}.slice", h.tag().replace('-', "_"));
    let _stop = StopSlice(slice.clone());
    let b = bundle(&h, &format!("{slice}:skiff-it:{id}"))?;
    h.cmd(&["--systemd-cgroup", "create", "--bundle", &b.path_str(), &id])?
        .ok()?;
    let unit = format!("skiff-it-{id}.scope");
    let want = format!("/skiffit.slice/{slice}/{unit}");
    let pid = h.pid(&id)?;
    assert_eq!(cgroup_of(pid)?, want, "the init is in the scope");
    let p = show(&unit, PROPS)?;
    assert_eq!(p["Slice"], slice);
    assert_eq!(p["Delegate"], "yes");
    assert_eq!(p["ActiveState"], "active");
    assert_eq!(p["ControlGroup"], want);
    assert_eq!(p["MemoryMax"], "104857600");
    assert_eq!(p["MemoryLow"], "52428800");
    assert_eq!(p["MemoryHigh"], "94371840");
    assert_eq!(p["CPUWeight"], "39");
    assert_eq!(p["CPUQuotaPerSecUSec"], "500ms");
    assert_eq!(p["CPUQuotaPeriodUSec"], "100ms");
    assert_eq!(p["AllowedCPUs"], "0");
    assert_eq!(p["TasksMax"], "99");
    let dir = PathBuf::from("/sys/fs/cgroup").join(want.trim_start_matches('/'));
    assert_eq!(read(&dir, "memory.max"), "104857600");
    assert_eq!(read(&dir, "memory.low"), "52428800");
    assert_eq!(read(&dir, "memory.high"), "94371840");
    assert_eq!(read(&dir, "cpu.weight"), "39");
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");
    assert_eq!(read(&dir, "cpuset.cpus"), "0");
    assert_eq!(read(&dir, "pids.max"), "99");

    h.start(&id)?;
    // exec lands in the scope's cgroup.
    let out = h.exec_in(&id, &[], &["cat", "/proc/self/cgroup"])?.ok()?;
    assert!(
        out.stdout.lines().any(|l| l == format!("0::{want}")),
        "exec not in {want}: {}",
        out.stdout
    );

    // update changes the unit's properties and the files.
    h.cmd(&["update", "--memory", "200m", "--pids-limit", "50", &id])?
        .ok()?;
    let p = show(&unit, &["MemoryMax", "TasksMax"])?;
    assert_eq!(p["MemoryMax"], "209715200");
    assert_eq!(p["TasksMax"], "50");
    assert_eq!(read(&dir, "memory.max"), "209715200");
    assert_eq!(read(&dir, "pids.max"), "50");

    // pause/resume freeze the scope's cgroup; ps and events read it.
    h.cmd(&["pause", &id])?.ok()?;
    assert_eq!(h.status(&id)?, "paused");
    assert_eq!(read(&dir, "cgroup.freeze"), "1");
    h.cmd(&["resume", &id])?.ok()?;
    assert_eq!(h.status(&id)?, "running");
    let ps = h.cmd(&["ps", "--format", "json", &id])?.ok()?;
    assert!(ps.stdout.contains(&pid.to_string()), "ps: {}", ps.stdout);
    let ev = h.cmd(&["events", "--stats", &id])?.ok()?;
    let ev: serde_json::Value = serde_json::from_str(&ev.stdout)?;
    assert_eq!(ev["data"]["pids"]["limit"], 50, "events: {ev}");

    h.cmd(&["kill", "--all", &id, "KILL"])?.ok()?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    assert!(!listed(&unit)?, "{unit} still listed after delete");
    assert!(!dir.exists(), "{} left", dir.display());
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// delete --force of a running container stops the unit; nothing is listed afterwards.
#[test]
fn delete_force_stops_the_unit() -> Result<()> {
    if !have_systemd("delete_force_stops_the_unit") {
        return Ok(());
    }
    let h = Harness::new()?;
    let id = h.id("sdf");
    let b = bundle(&h, &format!("system.slice:skiff-it:{id}"))?;
    h.cmd(&[
        "--systemd-cgroup",
        "run",
        "-d",
        "--bundle",
        &b.path_str(),
        &id,
    ])?
    .ok()?;
    let unit = format!("skiff-it-{id}.scope");
    assert!(listed(&unit)?);
    h.delete_force(&id)?;
    assert!(!listed(&unit)?, "{unit} still listed after delete --force");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// runc 1.1.5 and skiff put the same bundle in the same place with the same properties; only the
/// default prefix (each runtime's name) and the description differ.
#[test]
fn the_scope_matches_runcs() -> Result<()> {
    if !have_systemd("the_scope_matches_runcs") {
        return Ok(());
    }
    let mut seen = Vec::new();
    for h in [Harness::new()?, Harness::runc()?] {
        let id = h.id("sdr");
        let slice = "skiffit-cmp.slice";
        let _stop = StopSlice(slice.into());
        let b = bundle(&h, &format!("{slice}:it:{id}"))?;
        h.cmd(&["--systemd-cgroup", "create", "--bundle", &b.path_str(), &id])?
            .ok()?;
        let unit = format!("it-{id}.scope");
        let mut p = show(&unit, PROPS)?;
        let cg = p.remove("ControlGroup").unwrap_or_default();
        assert_eq!(
            cg,
            format!("/skiffit.slice/{slice}/{unit}"),
            "{}",
            h.bin().display()
        );
        let dir = PathBuf::from("/sys/fs/cgroup").join(cg.trim_start_matches('/'));
        let files: Vec<String> = [
            "memory.max",
            "memory.low",
            "memory.high",
            "cpu.weight",
            "cpu.max",
            "cpuset.cpus",
            "pids.max",
        ]
        .iter()
        .map(|f| format!("{f}={}", read(&dir, f)))
        .collect();
        h.cmd(&["--systemd-cgroup", "delete", "--force", &id])?
            .ok()?;
        if listed(&unit)? {
            bail!("{}: {unit} listed after delete", h.bin().display());
        }
        seen.push((p, files));
    }
    assert_eq!(seen[0].0, seen[1].0, "unit properties: skiff, then runc");
    assert_eq!(seen[0].1, seen[1].1, "cgroup files: skiff, then runc");
    Ok(())
}

/// Without a cgroupsPath the scope is `skiff-<id>.scope` in system.slice (runc: `runc-<id>.scope`).
#[test]
fn the_default_is_a_scope_in_system_slice() -> Result<()> {
    if !have_systemd("the_default_is_a_scope_in_system_slice") {
        return Ok(());
    }
    let h = Harness::new()?;
    let id = h.id("sdd");
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    b.edit(|c| {
        c["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    })?;
    h.cmd(&["--systemd-cgroup", "create", "--bundle", &b.path_str(), &id])?
        .ok()?;
    let pid = h.pid(&id)?;
    assert_eq!(cgroup_of(pid)?, format!("/system.slice/skiff-{id}.scope"));
    h.delete_force(&id)?;
    assert!(!listed(&format!("skiff-{id}.scope"))?);
    Ok(())
}

/// A cgroupsPath that is not `slice:prefix:name` is refused, naming the field, and leaves nothing
/// (decided before systemd is asked, so this runs everywhere).
#[test]
fn a_bad_systemd_cgroups_path_is_refused() -> Result<()> {
    let h = Harness::new()?;
    for bad in [
        "/plain/path",
        "a.slice:prefix",
        "notaslice:p:n",
        "a--b.slice:p:n",
        "a.slice:p:x/y",
    ] {
        let id = h.id("sdbad");
        let mut b = h.bundle()?;
        b.edit(|c| c["linux"]["cgroupsPath"] = json!(bad))?;
        let out = h.cmd(&["--systemd-cgroup", "create", "--bundle", &b.path_str(), &id])?;
        assert_eq!(out.exit_code(), 1, "{bad}: {out:?}");
        assert!(
            out.stderr.contains("linux.cgroupsPath") && out.stderr.contains(bad),
            "{bad}: {}",
            out.stderr
        );
        h.check_no_trace(&id, &b)?;
    }
    Ok(())
}

/// runc's `org.systemd.property.<Name>` annotations set the scope's unit properties (GVariant
/// text values; `...Sec` names as their `...USec` property in microseconds), for skiff as for
/// runc 1.1.5 on the same bundle.
#[test]
fn systemd_property_annotations_set_the_units_properties_as_in_runc() -> Result<()> {
    if !have_systemd("systemd_property_annotations_set_the_units_properties_as_in_runc") {
        return Ok(());
    }
    let mut seen = Vec::new();
    for h in [Harness::new()?, Harness::runc()?] {
        let id = h.id("sdann");
        let mut b = bundle(&h, &format!("system.slice:it:{id}"))?;
        b.edit(|c| {
            c["annotations"] = json!({
                "org.systemd.property.CollectMode": "'inactive-or-failed'",
                "org.systemd.property.TimeoutStopSec": "uint64 17",
                "org.systemd.property.RuntimeMaxSec": "3600.5",
                "org.systemd.property.TasksMax": "uint64 55",
                "org.systemd.property.Wants": "['skiffit-wanted.service']",
            });
        })?;
        h.cmd(&["--systemd-cgroup", "create", "--bundle", &b.path_str(), &id])?
            .ok()?;
        let unit = format!("it-{id}.scope");
        let p = show(
            &unit,
            &[
                "CollectMode",
                "TimeoutStopUSec",
                "RuntimeMaxUSec",
                "TasksMax",
                "Wants",
            ],
        )?;
        h.cmd(&["--systemd-cgroup", "delete", "--force", &id])?
            .ok()?;
        if listed(&unit)? {
            bail!("{}: {unit} listed after delete", h.bin().display());
        }
        seen.push(p);
    }
    let skiff = &seen[0];
    assert_eq!(
        skiff.get("CollectMode").map(String::as_str),
        Some("inactive-or-failed")
    );
    assert_eq!(
        skiff.get("TimeoutStopUSec").map(String::as_str),
        Some("17s")
    );
    assert_eq!(
        skiff.get("RuntimeMaxUSec").map(String::as_str),
        Some("1h 500ms")
    );
    // As in runc, the resources (pids.limit 99) win over an annotation naming the same property.
    assert_eq!(skiff.get("TasksMax").map(String::as_str), Some("99"));
    assert_eq!(skiff, &seen[1], "unit properties: skiff, then runc");
    Ok(())
}

/// A bad `org.systemd.property.` annotation is refused with the systemd driver, naming the
/// annotation, before systemd is asked (so this runs everywhere), and leaves nothing; as runc.
/// Without the driver such annotations mean nothing and are not looked at (as in runc).
#[test]
fn bad_systemd_property_annotations_are_refused_as_runc_does() -> Result<()> {
    for (key, value) in [
        ("org.systemd.property.Mem_Max", "1"),
        ("org.systemd.property.TasksMax", "uint64 x"),
        ("org.systemd.property.TimeoutStopSec", "'ten'"),
        ("org.systemd.property.Wants", "[]"),
    ] {
        for h in [Harness::new()?, Harness::runc()?] {
            let id = h.id("sdannbad");
            let mut b = h.bundle()?;
            b.edit(|c| {
                c["linux"]["cgroupsPath"] = json!(format!("system.slice:it:{id}"));
                c["annotations"] = json!({ key: value });
            })?;
            let out = h.cmd(&["--systemd-cgroup", "create", "--bundle", &b.path_str(), &id])?;
            assert_eq!(
                out.exit_code(),
                1,
                "{}: {key}={value}: {out:?}",
                h.bin().display()
            );
            assert!(
                out.stderr.contains(key),
                "{}: {}",
                h.bin().display(),
                out.stderr
            );
            h.check_no_trace(&id, &b)?;
        }
    }
    // Without --systemd-cgroup the same annotation is not an error.
    let h = Harness::new()?;
    let id = h.id("sdannoff");
    let mut b = h.bundle()?;
    b.args(&["true"])?;
    b.edit(|c| c["annotations"] = json!({"org.systemd.property.Mem_Max": "1"}))?;
    h.cmd(&["run", "--bundle", &b.path_str(), &id])?.ok()?;
    h.delete_force(&id)?;
    Ok(())
}

/// Whether systemd (pid 1) runs on a legacy or hybrid cgroup tree; says why not when it does not.
fn have_systemd_v1(test: &str) -> bool {
    if Path::new(PRIVATE).exists() && Path::new("/sys/fs/cgroup/memory").is_dir() {
        return true;
    }
    eprintln!(
        "{test}: skipped: needs systemd as pid 1 on cgroup v1 (no {PRIVATE} or no \
         /sys/fs/cgroup/memory); SKIFF_VM_CGROUP=hybrid scripts/vm-test.sh runs it \
         (SKIFF_VM_TESTS=systemd_cgroup)"
    );
    false
}

/// The systemd driver on a cgroup v1 (hybrid) host, as runc 1.1.5 does it: the scope is made
/// with the v1 resource properties systemd knows (MemoryLimit, CPUShares, CPUQuotaPerSecUSec,
/// TasksMax), the init is in the scope's directory of every hierarchy (systemd's and the ones
/// the runtime makes: cpuset, freezer, devices...), the files hold the limits; exec joins it,
/// pause freezes it, and delete leaves no unit and no directory. Compared with runc's scope for
/// the same bundle.
#[test]
fn the_scope_on_cgroup_v1_matches_runcs() -> Result<()> {
    if !have_systemd_v1("the_scope_on_cgroup_v1_matches_runcs") {
        return Ok(());
    }
    let mut seen = Vec::new();
    for h in [Harness::new()?, Harness::runc()?] {
        let id = h.id("sdv1");
        let slice = "skiffit-v1.slice";
        let _stop = StopSlice(slice.into());
        let mut b = h.bundle()?;
        b.args(&["sleep", "600"])?;
        b.edit(|c| {
            c["linux"]["cgroupsPath"] = json!(format!("{slice}:it:{id}"));
            c["linux"]["resources"] = json!({
                "memory": {"limit": 104857600},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
                "pids": {"limit": 99}
            });
        })?;
        let bin = h.bin().display().to_string();
        h.cmd(&[
            "--systemd-cgroup",
            "run",
            "-d",
            "--bundle",
            &b.path_str(),
            &id,
        ])?
        .ok()?;
        let unit = format!("it-{id}.scope");
        let path = format!("/skiffit.slice/{slice}/{unit}");
        let props = show(
            &unit,
            &[
                "Slice",
                "MemoryLimit",
                "CPUShares",
                "CPUQuotaPerSecUSec",
                "TasksMax",
                "ActiveState",
                "ControlGroup",
            ],
        )?;
        let mut props = props;
        assert_eq!(
            props.remove("ControlGroup").as_deref(),
            Some(path.as_str()),
            "{bin}"
        );
        let pid = h.pid(&id)?;
        // Every hierarchy of the init is the scope's path.
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        for line in cgroups.lines() {
            let (_, rest) = line.split_once(':').context("cgroup line")?;
            let (ctrls, p) = rest.split_once(':').context("cgroup line")?;
            if ctrls.is_empty() || ctrls == "misc" || ctrls == "rdma" {
                continue; // the unified hierarchy and what neither runtime joins
            }
            // runc 1.1.5 leaves its init in the slice's devices cgroup (systemd's device
            // policy, from the DeviceAllow properties it sends, governs it); skiff's is in the
            // scope's, where it writes the container's rules itself (README, systemd driver).
            if ctrls == "devices" && bin.ends_with("runc") {
                continue;
            }
            assert_eq!(p, path, "{bin}: {line}\n{cgroups}");
        }
        let v1 = |ctrl: &str, file: &str| {
            read(
                &Path::new("/sys/fs/cgroup")
                    .join(ctrl)
                    .join(path.trim_start_matches('/')),
                file,
            )
        };
        let files = vec![
            format!(
                "memory.limit_in_bytes={}",
                v1("memory", "memory.limit_in_bytes")
            ),
            format!("cpu.shares={}", v1("cpu,cpuacct", "cpu.shares")),
            format!("cpu.cfs_quota_us={}", v1("cpu,cpuacct", "cpu.cfs_quota_us")),
            format!("pids.max={}", v1("pids", "pids.max")),
            format!("cpuset.cpus={}", v1("cpuset", "cpuset.cpus")),
        ];
        // exec joins it; pause freezes it.
        let out = h.cmd(&["exec", &id, "cat", "/proc/self/cgroup"])?.ok()?;
        assert!(
            out.stdout.contains(&format!("memory:{path}")),
            "{bin}: {}",
            out.stdout
        );
        h.cmd(&["pause", &id])?.ok()?;
        assert_eq!(v1("freezer", "freezer.state"), "FROZEN", "{bin}");
        h.cmd(&["resume", &id])?.ok()?;
        h.cmd(&["--systemd-cgroup", "delete", "--force", &id])?
            .ok()?;
        if listed(&unit)? {
            bail!("{bin}: {unit} listed after delete");
        }
        for ctrl in ["memory", "cpuset", "freezer", "devices", "pids"] {
            let d = Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(path.trim_start_matches('/'));
            assert!(!d.exists(), "{bin}: {} left after delete", d.display());
        }
        seen.push((props, files));
    }
    let (props, files) = &seen[0];
    assert_eq!(
        props.get("MemoryLimit").map(String::as_str),
        Some("104857600")
    );
    assert_eq!(props.get("CPUShares").map(String::as_str), Some("512"));
    assert_eq!(props.get("TasksMax").map(String::as_str), Some("99"));
    assert_eq!(files[0], "memory.limit_in_bytes=104857600");
    assert_eq!(
        seen[0], seen[1],
        "unit properties and files: skiff, then runc"
    );
    Ok(())
}

/// Without systemd the driver says so instead of failing somewhere deeper.
#[test]
fn without_systemd_the_error_says_so() -> Result<()> {
    if Path::new(PRIVATE).exists() {
        eprintln!("without_systemd_the_error_says_so: skipped: systemd is running here");
        return Ok(());
    }
    let h = Harness::new()?;
    let id = h.id("sdnone");
    let b = bundle(&h, &format!("system.slice:skiff-it:{id}"))?;
    let out = h.cmd(&["--systemd-cgroup", "create", "--bundle", &b.path_str(), &id])?;
    assert_eq!(out.exit_code(), 1);
    assert!(
        out.stderr.contains("--systemd-cgroup") && out.stderr.contains(PRIVATE)
            || out.stderr.contains("only cgroup v2"),
        "{}",
        out.stderr
    );
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// Kubernetes with the systemd cgroup driver: a CRI pod whose parent is kubelet's
/// `kubepods-burstable-pod<uid>.slice`, through our shim with `SystemdCgroup = true`, on
/// containerd 1.6 and (where its tarball is) 2.4. The sandbox and the app are scopes under the
/// expanded slice, the app's limits are its unit's properties, exec and stats work, and removing
/// the pod leaves no unit.
#[test]
fn a_cri_pod_with_systemd_cgroup() -> Result<()> {
    use skiff_integration::cri::CriNode;
    if !have_systemd("a_cri_pod_with_systemd_cgroup") {
        return Ok(());
    }
    if let Some(why) = skiff_integration::cri::unsupported_reason() {
        eprintln!("a_cri_pod_with_systemd_cgroup: skipped: {why}");
        return Ok(());
    }
    cri_pod_with_systemd_cgroup(&CriNode::start()?, "sd")?;
    match CriNode::start_v2()? {
        Some(node) => cri_pod_with_systemd_cgroup(&node, "sd2"),
        None => {
            eprintln!(
                "a_cri_pod_with_systemd_cgroup: containerd 2.4 not found: only 1.6 is tested"
            );
            Ok(())
        }
    }
}

/// [`a_cri_pod_with_systemd_cgroup`] on `node`, the pod's uid starting with `tag`.
fn cri_pod_with_systemd_cgroup(node: &skiff_integration::cri::CriNode, tag: &str) -> Result<()> {
    use skiff_integration::containerd::IMAGE;
    use skiff_integration::cri::{
        container_config, kubelet_resources, CriNode, SKIFF_SYSTEMD_HANDLER,
    };
    let cri = node.cri();
    // kubelet's systemd driver: the pod uid's dashes become underscores in the slice name.
    let uid = format!("{tag}_{}", std::process::id());
    let parent = format!("kubepods-burstable-pod{uid}.slice");
    let _stop = StopSlice(parent.clone());
    let pod_cfg = node.pod_config("sdweb", &uid, &parent);
    std::fs::create_dir_all(node.pod_log_dir("sdweb", &uid))?;
    let pod = cri.run_pod_sandbox(&pod_cfg, SKIFF_SYSTEMD_HANDLER)?;
    let slice_dir = format!("/kubepods.slice/kubepods-burstable.slice/{parent}");
    let status = cri.pod_sandbox_status(&pod)?;
    let pause_pid = CriNode::info_pid(&status.info)?;
    let sandbox_unit = format!("cri-containerd-{pod}.scope");
    assert_eq!(cgroup_of(pause_pid)?, format!("{slice_dir}/{sandbox_unit}"));
    if node.containerd().version() == skiff_integration::containerd::Version::V2_4 {
        let needle = format!("connecting to shim {pod}");
        let log = node.containerd().log();
        let line = log
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_default();
        assert!(
            line.contains("version=3"),
            "containerd 2.4 and the shim: {line:?}"
        );
    }

    let mib = 1024 * 1024;
    let mut app_cfg = container_config(
        "app",
        IMAGE,
        &["sleep", "600"],
        Some(kubelet_resources(250, 500, 64 * mib, 900)),
    );
    // Where AppArmor is on (the VM), containerd would ask for its default profile, which skiff does
    // not apply yet; this test is about cgroups.
    if let Some(sc) = app_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.apparmor_profile = "unconfined".into();
    }
    let app = cri.create_container(&pod, &app_cfg, &pod_cfg)?;
    cri.start_container(&app)?;
    let st = cri.container_status(&app)?;
    let app_pid = CriNode::info_pid(&st.info)?;
    let unit = format!("cri-containerd-{app}.scope");
    assert_eq!(cgroup_of(app_pid)?, format!("{slice_dir}/{unit}"));
    let p = show(
        &unit,
        &["Slice", "MemoryMax", "CPUQuotaPerSecUSec", "Delegate"],
    )?;
    assert_eq!(p["Slice"], parent);
    assert_eq!(p["MemoryMax"], (64 * mib).to_string());
    assert_eq!(p["CPUQuotaPerSecUSec"], "500ms");
    assert_eq!(p["Delegate"], "yes");

    let out = cri.exec_sync(&app, &["cat", "/proc/self/cgroup"], 10)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // CRI gives the container a cgroup namespace on v2: its root is the scope.
    assert_eq!(text.trim(), "0::/", "exec's cgroup: {text}");
    let stats = cri.container_stats(&app)?;
    let memory = stats.memory.clone().unwrap_or_default();
    assert!(
        memory.working_set_bytes.unwrap_or_default().value > 0,
        "{stats:?}"
    );

    cri.stop_container(&app, 0)?;
    cri.remove_container(&app)?;
    cri.stop_pod_sandbox(&pod)?;
    cri.remove_pod_sandbox(&pod)?;
    for u in [&unit, &sandbox_unit] {
        assert!(!listed(u)?, "{u} still listed after the pod was removed");
    }
    let dir = PathBuf::from("/sys/fs/cgroup").join(slice_dir.trim_start_matches('/'));
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "cgroups left under the pod slice: {left:?}"
    );
    Ok(())
}

/// `ctr run` with the systemd cgroup driver through containerd 1.6 and, where present, 2.x: our
/// shim with `SystemdCgroup = true` in its runtime options, and containerd's runc shim driving
/// skiff with `--runc-systemd-cgroup`. The task is in its scope, reports metrics, and is gone
/// with its unit after kill and delete.
#[test]
fn ctr_runs_through_both_shims_with_systemd_cgroup() -> Result<()> {
    use skiff_integration::containerd::{Containerd, IMAGE, SKIFF_RUNTIME};
    use std::time::Duration;
    if !have_systemd("ctr_runs_through_both_shims_with_systemd_cgroup") {
        return Ok(());
    }
    let skiff = skiff_integration::harness::runtime_binary()
        .display()
        .to_string();
    let mut daemons = vec![Containerd::start()?];
    match Containerd::start_v2()? {
        Some(c) => daemons.push(c),
        None => eprintln!("containerd 2.x not found: only 1.6 is tested"),
    }
    for c in &daemons {
        c.import_busybox()?;
        let toml = c.dir().join("skiff-systemd.toml");
        std::fs::write(
            &toml,
            format!(
                "BinaryName = \"{skiff}\"\nRoot = \"{}\"\nSystemdCgroup = true\n",
                c.dir().join("skiff-systemd-root").display()
            ),
        )?;
        let toml = toml.display().to_string();
        let ours = [
            "--runtime",
            SKIFF_RUNTIME,
            "--runtime-config-path",
            toml.as_str(),
        ];
        let runc_shim = [
            "--runtime",
            "io.containerd.runc.v2",
            "--runc-binary",
            skiff.as_str(),
            "--runc-systemd-cgroup",
        ];
        for (n, flags) in [&ours[..], &runc_shim[..]].into_iter().enumerate() {
            let what = format!("{:?} {flags:?}", c.version());
            let id = format!("sdctr{n}-{}", std::process::id());
            let cgroup = format!("system.slice:skiffit:{id}");
            let unit = format!("skiffit-{id}.scope");
            let mut args = vec!["run", "-d", "--cgroup", cgroup.as_str()];
            args.extend_from_slice(flags);
            args.extend([IMAGE, id.as_str(), "sleep", "300"]);
            c.ctr_ok(&args)?;
            let p = show(&unit, &["ActiveState", "ControlGroup"])?;
            assert_eq!(p["ActiveState"], "active", "{what}");
            assert_eq!(p["ControlGroup"], format!("/system.slice/{unit}"), "{what}");
            c.ctr_ok(&["task", "metrics", &id])?;
            c.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id])?;
            assert!(
                c.wait_until(Duration::from_secs(10), || {
                    c.task_status(&id).ok().flatten().as_deref() == Some("STOPPED")
                }),
                "{what}: task not stopped"
            );
            c.ctr_ok(&["task", "delete", &id])?;
            c.ctr_ok(&["container", "delete", &id])?;
            assert!(!listed(&unit)?, "{what}: {unit} listed after delete");
        }
    }
    Ok(())
}
