//! Kubernetes' path: CRI over gRPC to a private containerd 1.6 whose `skiff` runtime handler is our
//! shim, as a RuntimeClass with `handler: skiff` would reach it; the `_on_containerd_2` tests do
//! the same on containerd 2.4 (config version 3, Task v3 with the shim) and skip with a message
//! when its tarball is absent. The tests run with the `skiff`
//! handler and with containerd's default `runc` handler, so that a difference is visible (and
//! ours to explain); the pod lifecycle also with containerd's runc shim driving skiff. Needs root,
//! containerd, containernetworking-plugins and a built workspace; where CNI cannot work (the
//! cgroup v2 VM's read-only `/var/lib`) the tests say why and pass as skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::Duration;

use anyhow::{anyhow, Result};
use skiff_integration::containerd::{Version, IMAGE};
use skiff_integration::cri::api::{self, ContainerState, PodSandboxState};
use skiff_integration::cri::{
    container_config, kubelet_resources, pod_namespaces, CriNode, BROKEN_HANDLER, RUNC_HANDLER,
    RUNC_SHIM_SKIFF_HANDLER, SKIFF_HANDLER, SKIFF_USERNS_HANDLER,
};
use skiff_integration::host::{cgroup_mode, check_in_cgroup, process_alive, CgroupMode};

const MIB: i64 = 1024 * 1024;

/// The node on containerd `version`, or `None` (after saying why) when this machine cannot run
/// CRI pods or containerd 2.4 is absent.
fn node_on(version: Version) -> Result<Option<CriNode>> {
    if let Some(why) = skiff_integration::cri::unsupported_reason() {
        eprintln!("SKIPPED: {why}");
        return Ok(None);
    }
    match version {
        Version::Debian => CriNode::start().map(Some),
        Version::V2_4 => {
            let node = CriNode::start_v2()?;
            if node.is_none() {
                eprintln!("SKIPPED: containerd 2.4 not found");
            }
            Ok(node)
        }
    }
}

/// A fresh pod uid, unique across test processes and runs.
fn pod_uid(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{nanos:08x}", std::process::id())
}

fn ns_of(pid: i32, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The value of a cgroup file of `cgroup` (v1: in `controller`'s hierarchy; v2: `v2_file`).
fn cgroup_value(cgroup: &str, controller: &str, v1_file: &str, v2_file: &str) -> Result<String> {
    let rel = cgroup.trim_start_matches('/');
    let path = match cgroup_mode()? {
        CgroupMode::V2 { root } => root.join(rel).join(v2_file),
        CgroupMode::V1 { controllers, .. } => controllers
            .get(controller)
            .ok_or_else(|| anyhow!("no {controller} hierarchy"))?
            .join(rel)
            .join(v1_file),
    };
    Ok(fs::read_to_string(&path)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?
        .trim()
        .to_string())
}

/// The CPU quota, CPU period and memory limit of `cgroup` as numbers (v1 files, or v2's
/// `cpu.max` and `memory.max`).
fn limits(cgroup: &str) -> Result<(i64, i64, i64)> {
    if matches!(cgroup_mode()?, CgroupMode::V2 { .. }) {
        let max = cgroup_value(cgroup, "cpu", "", "cpu.max")?;
        let mut it = max.split_whitespace();
        let quota = it.next().unwrap_or("max").parse().unwrap_or(-1);
        let period = it.next().unwrap_or("0").parse()?;
        let memory = cgroup_value(cgroup, "memory", "", "memory.max")?.parse()?;
        return Ok((quota, period, memory));
    }
    Ok((
        cgroup_value(cgroup, "cpu", "cpu.cfs_quota_us", "")?.parse()?,
        cgroup_value(cgroup, "cpu", "cpu.cfs_period_us", "")?.parse()?,
        cgroup_value(cgroup, "memory", "memory.limit_in_bytes", "")?.parse()?,
    ))
}

fn exec_out(node: &CriNode, id: &str, cmd: &[&str]) -> Result<api::ExecSyncResponse> {
    Ok(node.cri().exec_sync(id, cmd, 20)?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ps`-like lines for `pids`, for messages.
fn describe(pids: &[i32]) -> String {
    pids.iter()
        .map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid} (parent {:?}): {}",
                skiff_integration::containerd::parent_pid(*pid),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The node's shims are exactly `want` (the pod's one).
fn assert_same_shims(node: &CriNode, want: &[i32], what: &str) {
    let now = node.shim_pids();
    assert_eq!(now, want, "{what}:\n{}", describe(&now));
}

/// After the pod is gone: no shim, mount, cgroup, runtime state, network link, CNI cache entry or
/// address allocation is left.
fn assert_pod_left_nothing(node: &CriNode, handler: &str, pod: &str, cgroup: &str) -> Result<()> {
    let err = node.cri().pod_sandbox_status(pod).unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(node.cri().list_pod_sandbox()?.is_empty());
    assert!(node.cri().list_containers()?.is_empty());
    assert!(
        node.containerd()
            .wait_until(Duration::from_secs(10), || node.shim_pids().is_empty()),
        "shims left: {:?}",
        node.shim_pids()
    );
    assert_eq!(
        node.mounts(),
        Vec::<std::path::PathBuf>::new(),
        "mounts left"
    );
    assert_eq!(
        node.cgroup_children(cgroup),
        Vec::<std::path::PathBuf>::new(),
        "cgroups left under the pod cgroup"
    );
    assert_eq!(
        node.runtime_state_entries(handler),
        Vec::<String>::new(),
        "runtime state left in {}",
        node.runtime_root(handler).display()
    );
    assert_eq!(
        node.node_interfaces()?,
        ["lo"],
        "links left on the node side"
    );
    assert_eq!(
        CriNode::cni_cache_entries(pod),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        node.ipam_allocations(),
        Vec::<String>::new(),
        "addresses left"
    );
    Ok(())
}

/// The whole life of a two-container pod, with every CRI call kubelet makes along the way. The app
/// container is the one of scripts/k8s/pod.yaml (command, requests and limits).
fn pod_lifecycle(handler: &str, version: Version) -> Result<()> {
    let Some(node) = node_on(version)? else {
        return Ok(());
    };
    let cri = node.cri();
    let answer = cri.version()?;
    assert_eq!(answer.runtime_name, "containerd");
    assert_eq!(answer.runtime_api_version, "v1");
    let release = match version {
        Version::Debian => "1.6.",
        Version::V2_4 => "v2.4.",
    };
    assert!(
        answer.runtime_version.starts_with(release),
        "{}",
        answer.runtime_version
    );

    // kubelet: the pod cgroup first, then the sandbox in it.
    let uid = pod_uid("life");
    let parent = node.pod_cgroup("burstable", &uid, 512)?;
    let pod_cfg = node.pod_config("web", &uid, &parent);
    fs::create_dir_all(node.pod_log_dir("web", &uid))?;
    let pod = cri.run_pod_sandbox(&pod_cfg, handler)?;

    let status = cri.pod_sandbox_status(&pod)?;
    let sandbox = status.status.clone().unwrap();
    assert_eq!(sandbox.state(), PodSandboxState::SandboxReady);
    assert_eq!(sandbox.runtime_handler, handler);
    let ip = sandbox.network.clone().unwrap_or_default().ip;
    assert!(ip.starts_with("10.88.0."), "pod ip {ip:?}");
    let pause_pid = CriNode::info_pid(&status.info)?;
    check_in_cgroup(pause_pid, &format!("{parent}/{pod}"))?;
    let shims = node.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the sandbox: {shims:?}");
    if version == Version::V2_4 {
        // containerd 2.x speaks Task v3 with the pod's shim (ours and its runc shim alike).
        let needle = format!("connecting to shim {pod}");
        let log = node.containerd().log();
        let line = log
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_default();
        assert!(line.contains("version=3"), "{handler}: {line:?}");
    }

    // The app: logs to both streams, ends cleanly on SIGTERM.
    let app_cfg = container_config(
        "app",
        IMAGE,
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo started; echo oops >&2; \
             while true; do sleep 1; done",
        ],
        Some(kubelet_resources(250, 500, 64 * MIB, 900)),
    );
    let app = cri.create_container(&pod, &app_cfg, &pod_cfg)?;
    let created = cri.container_status(&app)?.status.unwrap();
    assert_eq!(created.state(), ContainerState::ContainerCreated);
    cri.start_container(&app)?;
    let status = cri.container_status(&app)?;
    let st = status.status.clone().unwrap();
    assert_eq!(st.state(), ContainerState::ContainerRunning);
    assert!(st.started_at >= st.created_at && st.started_at > 0);
    let app_pid = CriNode::info_pid(&status.info)?;
    let spec = CriNode::info_spec(&status.info)?;
    let app_cgroup = format!("{parent}/{app}");
    assert_eq!(spec["linux"]["cgroupsPath"], app_cgroup.as_str());

    // One shim serves the pod.
    assert_same_shims(&node, &shims, "the app must use the sandbox's shim");

    // Namespaces: the pod's network, IPC and UTS; a PID namespace of its own.
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(ns_of(app_pid, kind), ns_of(pause_pid, kind), "{kind}");
    }
    assert_ne!(ns_of(app_pid, "pid"), ns_of(pause_pid, "pid"));
    assert_ne!(
        ns_of(app_pid, "net"),
        ns_of(std::process::id() as i32, "net")
    );

    // Cgroups as kubelet asked: under the pod cgroup, with the container's resources.
    check_in_cgroup(app_pid, &app_cgroup)?;
    assert_eq!(limits(&app_cgroup)?, (50_000, 100_000, 64 * MIB));
    if !matches!(cgroup_mode()?, CgroupMode::V2 { .. }) {
        assert_eq!(cgroup_value(&app_cgroup, "cpu", "cpu.shares", "")?, "256");
    }
    assert_eq!(
        fs::read_to_string(format!("/proc/{app_pid}/oom_score_adj"))?.trim(),
        "900"
    );

    // ExecSync: output, exit code, and what CRI set up for the pod.
    let out = exec_out(&node, &app, &["sh", "-c", "echo out; echo err >&2; exit 3"])?;
    assert_eq!(
        (
            text(&out.stdout).as_str(),
            text(&out.stderr).as_str(),
            out.exit_code
        ),
        ("out\n", "err\n", 3)
    );
    let out = exec_out(&node, &app, &["hostname"])?;
    assert_eq!(text(&out.stdout).trim(), "web");
    let out = exec_out(&node, &app, &["cat", "/etc/resolv.conf"])?;
    assert!(
        text(&out.stdout).contains("search default.svc.cluster.local"),
        "{}",
        text(&out.stdout)
    );
    let out = exec_out(&node, &app, &["ip", "-4", "-o", "addr", "show", "eth0"])?;
    assert!(
        text(&out.stdout).contains(&format!("inet {ip}/")),
        "{out:?}"
    );
    let out = exec_out(&node, &app, &["sh", "-c", "echo $POD_CONTAINER"])?;
    assert_eq!(text(&out.stdout), "app\n");

    // The log, in the CRI format, both streams.
    let log = node.pod_log_dir("web", &uid).join("app/0.log");
    assert_eq!(st.log_path, log.display().to_string());
    let lines = CriNode::wait_for_log(&log, "oops", Duration::from_secs(10))?;
    assert!(lines
        .iter()
        .any(|l| l.stream == "stdout" && l.content == "started" && !l.partial));
    assert!(lines
        .iter()
        .any(|l| l.stream == "stderr" && l.content == "oops"));

    // Log rotation: kubelet renames the file and asks for a reopen.
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated)?;
    cri.reopen_container_log(&app)?;
    assert!(
        log.exists(),
        "ReopenContainerLog did not create {}",
        log.display()
    );
    let out = exec_out(
        &node,
        &app,
        &["sh", "-c", "echo after-reopen > /proc/1/fd/1"],
    )?;
    assert_eq!(out.exit_code, 0, "{out:?}");
    CriNode::wait_for_log(&log, "after-reopen", Duration::from_secs(10))?;
    assert!(!fs::read_to_string(&rotated)?.contains("after-reopen"));

    // UpdateContainerResources reaches the cgroup.
    cri.update_container_resources(&app, &kubelet_resources(250, 250, 96 * MIB, 900))?;
    assert_eq!(limits(&app_cgroup)?, (25_000, 100_000, 96 * MIB));

    // ContainerStats.
    let stats = cri.container_stats(&app)?;
    assert_eq!(stats.attributes.clone().unwrap_or_default().id, app);
    let cpu = stats.cpu.clone().unwrap_or_default();
    assert!(
        cpu.usage_core_nano_seconds.unwrap_or_default().value > 0,
        "{stats:?}"
    );
    let memory = stats.memory.clone().unwrap_or_default();
    assert!(
        memory.working_set_bytes.unwrap_or_default().value > 0,
        "{stats:?}"
    );

    // A second container that exits by itself: exit code and logs through CRI.
    let job = cri.create_container(
        &pod,
        &container_config(
            "job",
            IMAGE,
            &["sh", "-c", "echo job out; echo job err >&2; exit 7"],
            None,
        ),
        &pod_cfg,
    )?;
    cri.start_container(&job)?;
    assert_same_shims(&node, &shims, "the pod's containers share one shim");
    let done = node.wait_exited(&job, Duration::from_secs(20))?;
    assert_eq!(done.exit_code, 7, "{done:?}");
    assert!(done.finished_at > 0, "{done:?}");
    let job_log = node.pod_log_dir("web", &uid).join("job/0.log");
    let lines = CriNode::wait_for_log(&job_log, "job err", Duration::from_secs(10))?;
    assert!(lines
        .iter()
        .any(|l| l.stream == "stdout" && l.content == "job out"));

    // StopContainer: SIGTERM, the trap runs, exit code 0.
    cri.stop_container(&app, 10)?;
    let stopped = node.wait_exited(&app, Duration::from_secs(5))?;
    assert_eq!(stopped.exit_code, 0, "{stopped:?}");
    assert!(!process_alive(app_pid));
    CriNode::wait_for_log(&log, "bye", Duration::from_secs(5))?;

    for id in [&job, &app] {
        cri.remove_container(id)?;
        assert_eq!(
            cri.container_status(id).unwrap_err().code(),
            tonic::Code::NotFound
        );
    }
    // The sandbox is alone in the shim, in its cgroup.
    assert_same_shims(&node, &shims, "the sandbox keeps its shim");
    let children = node.cgroup_children(&parent);
    assert!(
        children.iter().all(|c| c.ends_with(&pod)),
        "only the sandbox's cgroup should be left: {children:?}"
    );

    cri.stop_pod_sandbox(&pod)?;
    let stopped = cri.pod_sandbox_status(&pod)?.status.unwrap();
    assert_eq!(stopped.state(), PodSandboxState::SandboxNotready);
    assert!(!process_alive(pause_pid));
    cri.remove_pod_sandbox(&pod)?;
    assert_pod_left_nothing(&node, handler, &pod, &parent)
}

#[test]
fn pod_lifecycle_with_skiff() -> Result<()> {
    pod_lifecycle(SKIFF_HANDLER, Version::Debian)
}

#[test]
fn pod_lifecycle_with_runc() -> Result<()> {
    pod_lifecycle(RUNC_HANDLER, Version::Debian)
}

#[test]
fn pod_lifecycle_with_containerds_runc_shim_driving_skiff() -> Result<()> {
    pod_lifecycle(RUNC_SHIM_SKIFF_HANDLER, Version::Debian)
}

#[test]
fn pod_lifecycle_with_skiff_on_containerd_2() -> Result<()> {
    pod_lifecycle(SKIFF_HANDLER, Version::V2_4)
}

#[test]
fn pod_lifecycle_with_runc_on_containerd_2() -> Result<()> {
    pod_lifecycle(RUNC_HANDLER, Version::V2_4)
}

#[test]
fn pod_lifecycle_with_containerds_runc_shim_driving_skiff_on_containerd_2() -> Result<()> {
    pod_lifecycle(RUNC_SHIM_SKIFF_HANDLER, Version::V2_4)
}

/// A container whose image lacks its command: StartContainer fails with the runtime's error, the
/// container is left exited, and nothing of it remains in the shim, the mounts or the cgroups.
fn missing_command(handler: &str, version: Version) -> Result<()> {
    let Some(node) = node_on(version)? else {
        return Ok(());
    };
    let cri = node.cri();
    let uid = pod_uid("nocmd");
    let parent = node.pod_cgroup("besteffort", &uid, 2)?;
    let pod_cfg = node.pod_config("nocmd", &uid, &parent);
    let pod = cri.run_pod_sandbox(&pod_cfg, handler)?;
    let shims = node.shim_pids();
    assert_eq!(shims.len(), 1);

    let cfg = container_config("ghost", IMAGE, &["/no/such/binary", "arg"], None);
    // runc and skiff both check the command at create, so CRI's StartContainer (which creates the
    // task) fails; CreateContainer only records the container.
    let err = match cri.create_container(&pod, &cfg, &pod_cfg) {
        Err(e) => e,
        Ok(id) => cri
            .start_container(&id)
            .expect_err("a missing command must fail"),
    };
    eprintln!("{handler}: {err}");
    assert!(
        err.message().contains("/no/such/binary"),
        "the error names the command: {err}"
    );
    // CRI keeps the container, exited with the reason StartError.
    let containers = cri.list_containers()?;
    let ghost = containers
        .iter()
        .find(|c| c.metadata.clone().unwrap_or_default().name == "ghost")
        .ok_or_else(|| anyhow!("CRI lost the container: {containers:?}"))?;
    let status = cri.container_status(&ghost.id)?.status.unwrap();
    assert_eq!(
        status.state(),
        ContainerState::ContainerExited,
        "{status:?}"
    );
    assert_eq!(status.reason, "StartError", "{status:?}");
    // Nothing of it is left but CRI's record: no runtime state, leaf cgroup or rootfs mount.
    assert_eq!(
        node.runtime_state_entries(handler),
        std::slice::from_ref(&pod)
    );
    assert!(node
        .cgroup_children(&parent)
        .iter()
        .all(|c| c.ends_with(&pod)));
    assert!(
        node.mounts()
            .iter()
            .all(|m| !m.to_string_lossy().contains(&ghost.id)),
        "{:?}",
        node.mounts()
    );
    assert_same_shims(&node, &shims, "the sandbox keeps its shim");
    cri.remove_container(&ghost.id)?;
    cri.stop_pod_sandbox(&pod)?;
    cri.remove_pod_sandbox(&pod)?;
    assert_pod_left_nothing(&node, handler, &pod, &parent)
}

#[test]
fn missing_command_fails_and_leaves_nothing_with_skiff() -> Result<()> {
    missing_command(SKIFF_HANDLER, Version::Debian)
}

#[test]
fn missing_command_fails_and_leaves_nothing_with_runc() -> Result<()> {
    missing_command(RUNC_HANDLER, Version::Debian)
}

#[test]
fn missing_command_fails_and_leaves_nothing_with_skiff_on_containerd_2() -> Result<()> {
    missing_command(SKIFF_HANDLER, Version::V2_4)
}

#[test]
fn missing_command_fails_and_leaves_nothing_with_runc_on_containerd_2() -> Result<()> {
    missing_command(RUNC_HANDLER, Version::V2_4)
}

#[test]
fn failed_sandboxes_are_errors_and_leave_nothing() -> Result<()> {
    failed_sandboxes(Version::Debian)
}

#[test]
fn failed_sandboxes_are_errors_and_leave_nothing_on_containerd_2() -> Result<()> {
    failed_sandboxes(Version::V2_4)
}

/// Sandboxes that cannot start: an unknown handler, and a handler whose runtime binary is missing.
fn failed_sandboxes(version: Version) -> Result<()> {
    let Some(node) = node_on(version)? else {
        return Ok(());
    };
    let cri = node.cri();
    let uid = pod_uid("fail");
    let parent = node.pod_cgroup("besteffort", &uid, 2)?;
    let pod_cfg = node.pod_config("fail", &uid, &parent);

    let err = cri
        .run_pod_sandbox(&pod_cfg, "no-such-handler")
        .unwrap_err();
    eprintln!("unknown handler: {err}");
    assert!(err.message().contains("no-such-handler"), "{err}");

    let err = cri.run_pod_sandbox(&pod_cfg, BROKEN_HANDLER).unwrap_err();
    eprintln!("broken handler: {err}");
    assert!(err.message().contains("no-such-runtime"), "{err}");
    // The shim's failed spawns (Create's, and `delete`'s after it) do not panic it.
    let log = node.containerd().log();
    assert!(!log.contains("panicked"), "a shim panicked:\n{log}");

    assert!(cri.list_pod_sandbox()?.is_empty());
    assert!(
        node.containerd()
            .wait_until(Duration::from_secs(10), || node.shim_pids().is_empty()),
        "shims left: {:?}",
        node.shim_pids()
    );
    assert_eq!(node.mounts(), Vec::<std::path::PathBuf>::new());
    assert_eq!(
        node.cgroup_children(&parent),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(node.node_interfaces()?, ["lo"]);
    assert_eq!(node.ipam_allocations(), Vec::<String>::new());
    assert_eq!(
        node.runtime_state_entries(BROKEN_HANDLER),
        Vec::<String>::new()
    );
    // Afterwards the node still runs pods.
    let pod = cri.run_pod_sandbox(&pod_cfg, SKIFF_HANDLER)?;
    cri.stop_pod_sandbox(&pod)?;
    cri.remove_pod_sandbox(&pod)?;
    assert_pod_left_nothing(&node, SKIFF_HANDLER, &pod, &parent)?;
    Ok(())
}

/// A container whose security context names `localhost/<profile>`: the label its process reports
/// (the profile denies nothing it does), from an exec into it.
fn apparmor_localhost(handler: &str) -> Result<()> {
    let on = fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
        && std::path::Path::new("/sys/kernel/security/apparmor").exists();
    if !on {
        eprintln!("skipped: AppArmor is not enabled on this kernel (run it in scripts/vm-test.sh)");
        return Ok(());
    }
    let Some(node) = node_on(Version::Debian)? else {
        return Ok(());
    };
    let name = format!("skiff-cri-{}-{handler}", std::process::id());
    let file = std::env::temp_dir().join(format!("{name}.profile"));
    fs::write(
        &file,
        format!(
            "profile {name} flags=(attach_disconnected,mediate_deleted) {{\n  file,\n  capability,\n  \
             network,\n  signal,\n  ptrace,\n  unix,\n  mount,\n  umount,\n  pivot_root,\n}}\n"
        ),
    )?;
    let load = std::process::Command::new("apparmor_parser")
        .arg("-r")
        .arg(&file)
        .output()?;
    assert!(load.status.success(), "{load:?}");
    let cri = node.cri();
    let uid = pod_uid("aa");
    let parent = node.pod_cgroup("besteffort", &uid, 2)?;
    let pod_cfg = node.pod_config("aa", &uid, &parent);
    let pod = cri.run_pod_sandbox(&pod_cfg, handler)?;
    let mut cfg = container_config("confined", IMAGE, &["sleep", "300"], None);
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.apparmor_profile = format!("localhost/{name}");
    }
    let id = cri.create_container(&pod, &cfg, &pod_cfg)?;
    cri.start_container(&id)?;
    let out = exec_out(&node, &id, &["cat", "/proc/self/attr/current"])?;
    let label = text(&out.stdout).replace('\0', "");
    cri.stop_container(&id, 0)?;
    cri.remove_container(&id)?;
    cri.stop_pod_sandbox(&pod)?;
    cri.remove_pod_sandbox(&pod)?;
    let _ = std::process::Command::new("apparmor_parser")
        .arg("-R")
        .arg(&file)
        .output();
    assert_eq!(label, format!("{name} (enforce)\n"), "{handler}");
    assert_pod_left_nothing(&node, handler, &pod, &parent)
}

#[test]
fn a_localhost_apparmor_profile_confines_the_container_with_skiff() -> Result<()> {
    apparmor_localhost(SKIFF_HANDLER)
}

#[test]
fn a_localhost_apparmor_profile_confines_the_container_with_runc() -> Result<()> {
    apparmor_localhost(RUNC_HANDLER)
}

/// A pod with its own user namespace on containerd 2.4, as kubelet asks for one with
/// `hostUsers: false`: the sandbox's and the container's `userns_options` in mode POD with the
/// pod's mappings, and a volume carrying the same mappings (kubelet's idmapped volumes). The
/// sandbox makes the user namespace; the container joins it by path with namespaces of its own
/// (skiff's first stage), and its volume is an idmapped mount. Through `SKIFF_USERNS_HANDLER`
/// (our shim declared as a runc-type runtime, which is what containerd 2.4 accepts for such pods;
/// runc 1.1.5 cannot run them).
/// Whether `dir` is on a tmpfs of a kernel older than 6.3, which cannot idmap tmpfs.
fn cannot_idmap_tmpfs(dir: &std::path::Path) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    let tmpfs = nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    tmpfs && version < (6, 3)
}

#[test]
fn user_namespaced_pod_with_skiff_on_containerd_2() -> Result<()> {
    const HOST: u32 = 5 * 65_536;
    let Some(node) = node_on(Version::V2_4)? else {
        return Ok(());
    };
    let cri = node.cri();
    let mapping = vec![api::IdMapping {
        host_id: HOST,
        container_id: 0,
        length: 65_536,
    }];
    let userns = api::UserNamespace {
        mode: api::NamespaceMode::Pod as i32,
        uids: mapping.clone(),
        gids: mapping.clone(),
    };
    let uid = pod_uid("userns");
    let parent = node.pod_cgroup("besteffort", &uid, 2)?;
    let mut pod_cfg = node.pod_config("isolated", &uid, &parent);
    if let Some(ctx) = pod_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        ctx.namespace_options = Some(api::NamespaceOption {
            userns_options: Some(userns.clone()),
            ..pod_namespaces()
        });
    }
    fs::create_dir_all(node.pod_log_dir("isolated", &uid))?;
    let pod = match cri.run_pod_sandbox(&pod_cfg, SKIFF_USERNS_HANDLER) {
        Ok(pod) => pod,
        Err(e) if cannot_idmap_tmpfs(node.dir()) && e.message().contains("uidmap/gidmap") => {
            // containerd's uidmap/gidmap overlay needs its layers idmapped: tmpfs can be from
            // Linux 6.3 on, so in the VM (6.1, containerd's root on the guest's /tmp) the kernel
            // refuses it.
            eprintln!(
                "SKIPPED: this kernel cannot idmap tmpfs, where containerd's layers are: {e}"
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let status = cri.pod_sandbox_status(&pod)?;
    let pause_pid = CriNode::info_pid(&status.info)?;
    let uid_map = fs::read_to_string(format!("/proc/{pause_pid}/uid_map"))?;
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", &HOST.to_string(), "65536"],
        "{uid_map}"
    );

    // A volume: a file of the host's root and one of uid 1000, as on disk.
    let volume = node.dir().join(format!("volume-{uid}"));
    fs::create_dir_all(&volume)?;
    fs::write(volume.join("root-file"), "r")?;
    fs::write(volume.join("user-file"), "u")?;
    std::os::unix::fs::lchown(volume.join("user-file"), Some(1000), Some(1000))?;
    let mut app_cfg = container_config(
        "app",
        IMAGE,
        &["sleep", "3600"],
        Some(kubelet_resources(100, 200, 64 * MIB, 900)),
    );
    if let Some(ctx) = app_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        ctx.namespace_options = Some(api::NamespaceOption {
            userns_options: Some(userns),
            ..pod_namespaces()
        });
    }
    app_cfg.mounts = vec![api::Mount {
        container_path: "/vol".into(),
        host_path: volume.display().to_string(),
        readonly: false,
        uid_mappings: mapping.clone(),
        gid_mappings: mapping,
    }];
    let app = cri.create_container(&pod, &app_cfg, &pod_cfg)?;
    cri.start_container(&app)?;
    let status = cri.container_status(&app)?;
    let app_pid = CriNode::info_pid(&status.info)?;

    // The pod's user namespace, joined; namespaces of the pod's and of its own.
    assert_eq!(ns_of(app_pid, "user"), ns_of(pause_pid, "user"));
    assert_ne!(
        ns_of(app_pid, "user"),
        ns_of(std::process::id() as i32, "user")
    );
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(ns_of(app_pid, kind), ns_of(pause_pid, kind), "{kind}");
    }
    assert_ne!(ns_of(app_pid, "pid"), ns_of(pause_pid, "pid"));
    assert_ne!(ns_of(app_pid, "mnt"), ns_of(pause_pid, "mnt"));
    let proc_status = fs::read_to_string(format!("/proc/{app_pid}/status"))?;
    let uid_line = proc_status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        [HOST.to_string().as_str(); 4],
        "the host sees the mapped uid: {uid_line}"
    );

    // Kubelet's oom_score_adj, for the init and for what exec runs (the host's privileges are
    // needed to set it for a process in a user namespace).
    assert_eq!(
        fs::read_to_string(format!("/proc/{app_pid}/oom_score_adj"))?.trim(),
        "900"
    );
    let out = exec_out(&node, &app, &["cat", "/proc/self/oom_score_adj"])?;
    assert_eq!(text(&out.stdout).trim(), "900", "{}", text(&out.stderr));

    // Inside: root, and the volume's files owned through the idmapped mount (the host's root's
    // file is the container's root's, not 65534).
    let out = exec_out(
        &node,
        &app,
        &[
            "sh",
            "-c",
            "id -u; stat -c '%u:%g' /vol/root-file /vol/user-file",
        ],
    )?;
    assert_eq!(
        (text(&out.stdout).as_str(), out.exit_code),
        ("0\n0:0\n1000:1000\n", 0),
        "{}",
        text(&out.stderr)
    );
    // What the container's root writes there is the host's root's on disk.
    let out = exec_out(&node, &app, &["touch", "/vol/made-inside"])?;
    assert_eq!(out.exit_code, 0, "{}", text(&out.stderr));
    let meta = fs::metadata(volume.join("made-inside"))?;
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (0, 0)
    );
    let stats = cri.container_stats(&app)?;
    assert_eq!(stats.attributes.clone().unwrap_or_default().id, app);

    cri.stop_container(&app, 1)?;
    node.wait_exited(&app, Duration::from_secs(10))?;
    cri.remove_container(&app)?;
    cri.stop_pod_sandbox(&pod)?;
    cri.remove_pod_sandbox(&pod)?;
    assert!(!process_alive(app_pid) && !process_alive(pause_pid));
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let shown = volume.display().to_string();
    assert!(
        !info.lines().any(|l| l.contains(&shown)),
        "the volume is left mounted"
    );
    assert_pod_left_nothing(&node, SKIFF_USERNS_HANDLER, &pod, &parent)
}
