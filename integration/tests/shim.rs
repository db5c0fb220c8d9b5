//! containerd-shim-skiff-v2 through a real containerd (Debian's 1.6) driven with `ctr`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use anyhow::Result;
use skiff_integration::containerd::{Containerd, IMAGE, SKIFF_RUNTIME};

fn containerd() -> Result<Containerd> {
    let c = Containerd::start()?;
    c.import_busybox()?;
    Ok(c)
}

#[test]
fn run_rm_prints_output_and_exits_with_the_container_code() -> Result<()> {
    let c = containerd()?;
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "rm1",
        "sh",
        "-c",
        "echo hello from skiff; echo to stderr >&2; exit 3",
    ])?;
    assert_eq!(out.exit_code(), 3, "{out}\n{}", c.log_tail());
    assert!(out.stdout.contains("hello from skiff"), "{out}");
    assert!(out.stderr.contains("to stderr"), "{out}");
    assert!(c.tasks()?.is_empty());
    assert!(
        c.wait_until(Duration::from_secs(5), || c.skiff_shim_pids().is_empty()),
        "shim still running: {:?}",
        c.skiff_shim_pids()
    );
    assert_no_leftovers(&c, "rm1", None)?;
    Ok(())
}

/// The server socket named in the bundle of running container `id`.
fn socket_of(c: &Containerd, id: &str) -> Result<std::path::PathBuf> {
    let address = std::fs::read_to_string(c.bundle(id).join("address"))?;
    Ok(address.trim_start_matches("unix://").into())
}

/// Nothing of container `id` is left: mounts, cgroups, runtime state, the server's socket.
fn assert_no_leftovers(c: &Containerd, id: &str, socket: Option<&std::path::Path>) -> Result<()> {
    let bundle = c.bundle(id);
    let mounts = skiff_integration::host::mountinfo_lines_containing(&bundle)?;
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let cgroups = skiff_integration::containerd::leftover_cgroups(c.namespace(), id);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let state = std::path::Path::new("/run/containerd/skiff")
        .join(c.namespace())
        .join(id);
    assert!(!state.exists(), "runtime state left: {}", state.display());
    if let Some(socket) = socket {
        assert!(!socket.exists(), "socket left: {}", socket.display());
    }
    Ok(())
}

/// Whether the skiff under test has `cmd` (exec, pause, ...): `skiff CMD --help` succeeds.
fn skiff_has(cmd: &str) -> bool {
    std::process::Command::new(skiff_integration::harness::runtime_binary())
        .args([cmd, "--help"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A `--runtime-config-path` TOML naming `binary` with state under the instance dir.
fn runtime_config(c: &Containerd, name: &str, binary: &str) -> Result<String> {
    let root = c.dir().join(format!("{name}-root"));
    let path = c.dir().join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "# our shim, another runtime\nBinaryName = \"{binary}\"\nRoot = \"{}\"\n",
            root.display()
        ),
    )?;
    Ok(path.display().to_string())
}

/// The runtime flags for tests that need `cmds` from the runtime: skiff when it has them all,
/// else runc through our shim (the shim's code path is the same).
fn runtime_flags_for(c: &Containerd, cmds: &[&str]) -> Result<Vec<String>> {
    let mut flags = vec!["--runtime".to_string(), SKIFF_RUNTIME.to_string()];
    if !cmds.iter().all(|cmd| skiff_has(cmd)) {
        eprintln!("skiff lacks one of {cmds:?}: driving runc through the shim");
        flags.push("--runtime-config-path".into());
        flags.push(runtime_config(c, "runc", "/usr/sbin/runc")?);
    }
    Ok(flags)
}

fn args<'a>(flags: &'a [String], rest: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    let (head, tail) = rest.split_at(2);
    v.extend_from_slice(head);
    v.extend(flags.iter().map(String::as_str));
    v.extend_from_slice(tail);
    v
}

#[test]
fn detached_task_exec_ps_pause_resume_metrics_kill_delete() -> Result<()> {
    let c = containerd()?;
    let flags = runtime_flags_for(&c, &["exec", "pause", "resume"])?;
    c.ctr_ok(&args(&flags, &["run", "-d", IMAGE, "det", "sleep", "300"]))?;
    assert_eq!(c.task_status("det")?.as_deref(), Some("RUNNING"));
    let shims = c.skiff_shim_pids();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");
    let socket = socket_of(&c, "det")?;

    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "det",
        "sh",
        "-c",
        "echo in-exec $$; exit 5",
    ])?;
    assert_eq!(out.exit_code(), 5, "{out}\n{}", c.log_tail());
    assert!(out.stdout.contains("in-exec"), "{out}");

    let ps = c.ctr_ok(&["task", "ps", "det"])?;
    let pids: Vec<&str> = ps.stdout.lines().skip(1).collect();
    assert!(!pids.is_empty(), "{ps}");

    c.ctr_ok(&["task", "pause", "det"])?;
    assert_eq!(c.task_status("det")?.as_deref(), Some("PAUSED"));
    c.ctr_ok(&["task", "resume", "det"])?;
    assert_eq!(c.task_status("det")?.as_deref(), Some("RUNNING"));

    let metrics = c.ctr_ok(&["task", "metrics", "det"])?;
    assert!(
        metrics.stdout.contains("memory.usage_in_bytes") || metrics.stdout.contains("memory.usage"),
        "{metrics}"
    );

    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "det"])?;
    assert!(
        c.wait_until(Duration::from_secs(10), || c
            .task_status("det")
            .ok()
            .flatten()
            .as_deref()
            == Some("STOPPED")),
        "{:?}",
        c.tasks()
    );
    c.ctr_ok(&["task", "delete", "det"])?;
    c.ctr_ok(&["container", "delete", "det"])?;
    assert!(c.tasks()?.is_empty());
    assert!(
        c.wait_until(Duration::from_secs(5), || c.skiff_shim_pids().is_empty()),
        "shim still running after delete"
    );
    assert_no_leftovers(&c, "det", Some(&socket))?;
    Ok(())
}

/// The topics `ctr events` printed, in order, for events about `id` (`<time> <ns> <topic> <json>`).
fn topics_for(events: &str, id: &str) -> Vec<String> {
    events
        .lines()
        .filter(|l| {
            l.contains(&format!("\"{id}\"")) || l.contains(&format!("container_id\":\"{id}"))
        })
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("/tasks/"))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn events_arrive_in_containerd_order() -> Result<()> {
    let c = containerd()?;
    let mut events = c.ctr_spawn("events", &["events"])?;
    std::thread::sleep(Duration::from_millis(300));
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "ev",
        "sleep",
        "300",
    ])?;
    let out = c.ctr(&["task", "exec", "--exec-id", "x1", "ev", "true"])?;
    assert_eq!(out.exit_code(), 0, "{out}");
    c.ctr_ok(&["task", "pause", "ev"])?;
    c.ctr_ok(&["task", "resume", "ev"])?;
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "ev"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("ev").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "ev"])?;
    let want = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ];
    let mut got = Vec::new();
    c.wait_until(Duration::from_secs(5), || {
        got = topics_for(&events.output(), "ev");
        got.len() >= want.len()
    });
    events.wait(Duration::from_millis(1))?;
    assert_eq!(got, want, "events:\n{}", events.output());
    Ok(())
}

#[test]
fn memory_limit_exceeded_gives_task_oom_before_exit() -> Result<()> {
    let c = containerd()?;
    let mut events = c.ctr_spawn("events", &["events"])?;
    std::thread::sleep(Duration::from_millis(300));
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        SKIFF_RUNTIME,
        "--memory-limit",
        "16777216",
        IMAGE,
        "oom",
        "tail",
        "/dev/zero",
    ])?;
    assert_eq!(out.exit_code(), 137, "{out}\n{}", c.log_tail());
    let mut got = Vec::new();
    c.wait_until(Duration::from_secs(5), || {
        got = topics_for(&events.output(), "oom");
        got.iter().any(|t| t == "/tasks/delete")
    });
    events.wait(Duration::from_millis(1))?;
    let oom = got.iter().position(|t| t == "/tasks/oom");
    let exit = got.iter().position(|t| t == "/tasks/exit");
    assert!(
        oom.is_some() && oom < exit,
        "want /tasks/oom before /tasks/exit: {got:?}\n{}",
        events.output()
    );
    Ok(())
}

#[test]
fn our_shim_drives_runc() -> Result<()> {
    let c = containerd()?;
    let config = runtime_config(&c, "runc", "/usr/sbin/runc")?;
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        SKIFF_RUNTIME,
        "--runtime-config-path",
        &config,
        IMAGE,
        "viarunc",
        "sh",
        "-c",
        "echo runc says hi; exit 4",
    ])?;
    assert_eq!(out.exit_code(), 4, "{out}\n{}", c.log_tail());
    assert!(out.stdout.contains("runc says hi"), "{out}");

    // While it runs, runc (not skiff) holds its state in the configured root.
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        "--runtime-config-path",
        &config,
        IMAGE,
        "viarunc2",
        "sleep",
        "300",
    ])?;
    let root = c.dir().join("runc-root").join(c.namespace());
    let list = std::process::Command::new("/usr/sbin/runc")
        .arg("--root")
        .arg(&root)
        .arg("list")
        .output()?;
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("viarunc2") && listed.contains("running"),
        "runc list: {listed}"
    );
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "viarunc2"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("viarunc2").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "viarunc2"])?;
    Ok(())
}

#[test]
fn containerds_runc_shim_drives_skiff() -> Result<()> {
    let c = containerd()?;
    let skiff = skiff_integration::harness::runtime_binary()
        .display()
        .to_string();
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        &skiff,
        IMAGE,
        "viaskiff",
        "sh",
        "-c",
        "echo skiff under runc shim; exit 6",
    ])?;
    assert_eq!(out.exit_code(), 6, "{out}\n{}", c.log_tail());
    assert!(out.stdout.contains("skiff under runc shim"), "{out}");

    c.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        &skiff,
        IMAGE,
        "viaskiff2",
        "sleep",
        "300",
    ])?;
    // The runc shim keeps its runtime's state in /run/containerd/runc/<ns>: skiff can read it.
    let root = format!("/run/containerd/runc/{}", c.namespace());
    let state = std::process::Command::new(&skiff)
        .args(["--root", &root, "state", "viaskiff2"])
        .output()?;
    let state = String::from_utf8_lossy(&state.stdout);
    assert!(state.contains("\"running\""), "skiff state: {state}");
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e",
        "viaskiff2",
        "sh",
        "-c",
        "echo exec ok",
    ])?;
    assert_eq!(out.exit_code(), 0, "{out}");
    assert!(out.stdout.contains("exec ok"), "{out}");
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "viaskiff2"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("viaskiff2").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "viaskiff2"])?;
    Ok(())
}

#[test]
fn containers_of_one_pod_share_a_shim_that_exits_after_the_last() -> Result<()> {
    let c = containerd()?;
    let group = "io.kubernetes.cri.sandbox-id=pod-a";
    for id in ["p1", "p2"] {
        c.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            SKIFF_RUNTIME,
            "--annotation",
            group,
            IMAGE,
            id,
            "sleep",
            "300",
        ])?;
    }
    let shims = c.skiff_shim_pids();
    assert_eq!(shims.len(), 1, "want one shim for the pod: {shims:?}");
    let a1 = std::fs::read_to_string(c.bundle("p1").join("address"))?;
    let a2 = std::fs::read_to_string(c.bundle("p2").join("address"))?;
    assert_eq!(a1, a2);

    for (i, id) in ["p1", "p2"].iter().enumerate() {
        c.ctr_ok(&["task", "kill", "-s", "SIGKILL", id])?;
        assert!(c.wait_until(Duration::from_secs(10), || {
            c.task_status(id).ok().flatten().as_deref() == Some("STOPPED")
        }));
        c.ctr_ok(&["task", "delete", id])?;
        if i == 0 {
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                c.skiff_shim_pids(),
                shims,
                "the shim must serve the remaining container"
            );
            assert_eq!(c.task_status("p2")?.as_deref(), Some("RUNNING"));
        }
    }
    assert!(
        c.wait_until(Duration::from_secs(5), || c.skiff_shim_pids().is_empty()),
        "shim still running after the pod's last container"
    );
    Ok(())
}

#[test]
fn killed_shim_is_cleaned_up_by_containerd() -> Result<()> {
    let c = containerd()?;
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "k9",
        "sleep",
        "300",
    ])?;
    let tasks = c.tasks()?;
    let pid: i32 = tasks.iter().find(|t| t.0 == "k9").unwrap().1.parse()?;
    let shims = c.skiff_shim_pids();
    assert_eq!(shims.len(), 1);
    let socket = socket_of(&c, "k9")?;
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(shims[0], libc::SIGKILL) };
    assert!(
        c.wait_until(Duration::from_secs(15), || {
            !skiff_integration::host::process_alive(pid)
        }),
        "container init {pid} survived its shim"
    );
    assert!(
        c.wait_until(Duration::from_secs(10), || c
            .task_status("k9")
            .ok()
            .flatten()
            .is_none()),
        "task still listed: {:?}\n{}",
        c.tasks(),
        c.log_tail()
    );
    c.ctr_ok(&["container", "delete", "k9"])?;
    assert_no_leftovers(&c, "k9", Some(&socket))?;
    Ok(())
}

#[test]
fn containers_survive_a_containerd_restart() -> Result<()> {
    let mut c = containerd()?;
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "rs",
        "sleep",
        "300",
    ])?;
    let shims = c.skiff_shim_pids();
    c.restart()?;
    assert_eq!(
        c.task_status("rs")?.as_deref(),
        Some("RUNNING"),
        "{}",
        c.log_tail()
    );
    assert_eq!(
        c.skiff_shim_pids(),
        shims,
        "the same shim must serve after the restart"
    );
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        "rs",
        "sh",
        "-c",
        "echo still here",
    ])?;
    assert!(out.stdout.contains("still here"), "{out}");
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "rs"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("rs").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "rs"])?;
    Ok(())
}

#[test]
fn stdin_reaches_the_container_and_closes() -> Result<()> {
    let c = containerd()?;
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!(
        "printf 'line one\\nline two\\n' | ctr --address {} --namespace {} run --rm --runtime {SKIFF_RUNTIME} {IMAGE} in1 sh -c 'cat; echo done'",
        c.socket().display(),
        c.namespace()
    ));
    let out = skiff_integration::containerd::run_with_timeout(&mut cmd, Duration::from_secs(30))?;
    assert_eq!(out.exit_code(), 0, "{out}\n{}", c.log_tail());
    assert!(out.stdout.contains("line one\nline two\ndone"), "{out}");
    Ok(())
}

#[test]
fn file_and_binary_loggers() -> Result<()> {
    let c = containerd()?;
    let log = c.dir().join("file.log");
    let uri = format!("file://{}", log.display());
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        "--log-uri",
        &uri,
        IMAGE,
        "lf",
        "sh",
        "-c",
        "echo to a file",
    ])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("to a file")
    }));

    let logger = c.dir().join("logger.sh");
    let captured = c.dir().join("captured");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nexec 5>&-\ncat <&3 > {}.out &\ncat <&4 > {}.err\nwait\n",
            captured.display(),
            captured.display()
        ),
    )?;
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&logger)?.permissions(),
        0o755,
    );
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let uri = format!("binary://{}", logger.display());
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        "--log-uri",
        &uri,
        IMAGE,
        "lb",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ])?;
    let out_file = c.dir().join("captured.out");
    let err_file = c.dir().join("captured.err");
    assert!(
        c.wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&out_file)
                .unwrap_or_default()
                .contains("out")
                && std::fs::read_to_string(&err_file)
                    .unwrap_or_default()
                    .contains("err")
        }),
        "logger saw: {:?} {:?}",
        std::fs::read_to_string(&out_file),
        std::fs::read_to_string(&err_file)
    );
    for id in ["lf", "lb"] {
        assert!(c.wait_until(Duration::from_secs(10), || {
            c.task_status(id).ok().flatten().as_deref() == Some("STOPPED")
        }));
        c.ctr_ok(&["task", "delete", id])?;
    }
    Ok(())
}

/// Run a shell command line under `script`, which gives it a terminal.
fn in_terminal(line: &str) -> Result<skiff_integration::Output> {
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qefc", line, "/dev/null"]);
    skiff_integration::containerd::run_with_timeout(&mut cmd, Duration::from_secs(30))
}

#[test]
fn terminals_for_run_and_exec() -> Result<()> {
    let c = containerd()?;
    let ctr = format!(
        "ctr --address {} --namespace {}",
        c.socket().display(),
        c.namespace()
    );
    let out = in_terminal(&format!(
        "{ctr} run --rm -t --runtime {SKIFF_RUNTIME} {IMAGE} tty1 sh -c 'tty; exit 7'"
    ))?;
    assert!(out.stdout.contains("/dev/pts/"), "{out}\n{}", c.log_tail());
    assert_eq!(out.exit_code(), 7, "{out}");

    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "tty2",
        "sleep",
        "300",
    ])?;
    let out = in_terminal(&format!(
        "{ctr} task exec -t --exec-id t tty2 sh -c 'tty; exit 2'"
    ))?;
    assert!(out.stdout.contains("/dev/pts/"), "{out}\n{}", c.log_tail());
    assert_eq!(out.exit_code(), 2, "{out}");
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "tty2"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("tty2").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "tty2"])?;
    Ok(())
}

#[test]
fn runtime_errors_reach_ctr() -> Result<()> {
    let c = containerd()?;
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "bad",
        "/no/such/binary",
    ])?;
    assert_ne!(out.exit_code(), 0, "{out}");
    assert!(
        out.stderr.contains("/no/such/binary"),
        "the runtime's error must reach ctr: {out}"
    );
    c.ctr(&["container", "delete", "bad"])?;
    assert!(c.tasks()?.is_empty());
    assert!(
        c.wait_until(Duration::from_secs(5), || c.skiff_shim_pids().is_empty()),
        "the shim of a failed create must exit"
    );
    Ok(())
}

/// A ttrpc client on the shim serving container `id` (the v3 service name, as containerd 2.x
/// calls it; containerd 1.6 exercises the v2 name in every other test).
fn task_client(c: &Containerd, id: &str) -> Result<skiff_proto::protos::shim_sync::TaskClient> {
    let address = std::fs::read_to_string(c.bundle(id).join("address"))?;
    let client = skiff_proto::ttrpc::Client::connect(&address)?;
    Ok(skiff_proto::protos::shim_sync::TaskClient::new(client))
}

#[test]
fn task_api_v3_update_state_connect_checkpoint() -> Result<()> {
    use skiff_proto::api::{
        CheckpointTaskRequest, ConnectRequest, StateRequest, UpdateTaskRequest,
    };
    use skiff_proto::protobuf::well_known_types::any::Any;
    use skiff_proto::ttrpc::context;

    let c = containerd()?;
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "v3",
        "sleep",
        "300",
    ])?;
    let client = task_client(&c, "v3")?;
    let ctx = || context::with_timeout(10_000_000_000);

    let mut req = StateRequest::new();
    req.id = "v3".into();
    let state = client.state(ctx(), &req)?;
    assert_eq!(
        state.status.value(),
        skiff_proto::api::Status::RUNNING as i32
    );
    assert!(state.pid > 0);

    let mut req = ConnectRequest::new();
    req.id = "v3".into();
    let conn = client.connect(ctx(), &req)?;
    assert_eq!(conn.task_pid, state.pid);
    assert!(c.skiff_shim_pids().contains(&(conn.shim_pid as i32)));

    // containerd sends LinuxResources as JSON in an Any.
    let mut resources = Any::new();
    resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    resources.value = br#"{"memory":{"limit":67108864}}"#.to_vec();
    let mut req = UpdateTaskRequest::new();
    req.id = "v3".into();
    req.resources = Some(resources).into();
    client.update(ctx(), &req)?;
    let limit = skiff_integration::containerd::cgroup_file(
        c.namespace(),
        "v3",
        "memory",
        "memory.limit_in_bytes",
    )
    .or_else(|| skiff_integration::containerd::cgroup_file(c.namespace(), "v3", "", "memory.max"));
    assert_eq!(limit.as_deref().map(str::trim), Some("67108864"));

    let mut req = CheckpointTaskRequest::new();
    req.id = "v3".into();
    match client.checkpoint(ctx(), &req) {
        Err(skiff_proto::ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), skiff_proto::ttrpc::Code::UNIMPLEMENTED, "{s:?}")
        }
        other => panic!("checkpoint: {other:?}"),
    }
    let mut req = StateRequest::new();
    req.id = "nope".into();
    match client.state(ctx(), &req) {
        Err(skiff_proto::ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), skiff_proto::ttrpc::Code::NOT_FOUND, "{s:?}")
        }
        other => panic!("state of an unknown task: {other:?}"),
    }
    drop(client);

    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "v3"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("v3").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "v3"])?;
    Ok(())
}

#[test]
fn init_exit_is_reported_after_its_execs() -> Result<()> {
    let c = containerd()?;
    let mut events = c.ctr_spawn("events", &["events"])?;
    std::thread::sleep(Duration::from_millis(300));
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "ord",
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 0.05; done",
    ])?;
    c.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "sleeper",
        "ord",
        "sleep",
        "300",
    ])?;
    let out = c.ctr(&["task", "exec", "--exec-id", "go", "ord", "touch", "/tmp/go"])?;
    assert_eq!(out.exit_code(), 0, "{out}");
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("ord").ok().flatten().as_deref() == Some("STOPPED")
    }));
    // Exits in the order containerd got them, as the `id` of each TaskExit.
    let mut exits: Vec<String> = Vec::new();
    c.wait_until(Duration::from_secs(5), || {
        exits = events
            .output()
            .lines()
            .filter(|l| l.contains("/tasks/exit") && l.contains("\"ord\""))
            .filter_map(|l| {
                let json = &l[l.find('{')?..];
                let v: serde_json::Value = serde_json::from_str(json).ok()?;
                Some(v["id"].as_str()?.to_string())
            })
            .collect();
        exits.len() >= 3
    });
    events.wait(Duration::from_millis(1))?;
    // The init's exit comes last. The execs' own order is the kernel's: `touch` may still be exiting
    // when the init sees its file and the sleeper is killed, and the shim reaps whichever is a zombie
    // first (seen under emulation in the VM).
    let mut execs = exits;
    let last = execs.pop();
    execs.sort();
    assert_eq!(
        (last.as_deref(), execs),
        (Some("ord"), vec!["go".to_string(), "sleeper".to_string()]),
        "{}",
        events.output()
    );
    c.ctr_ok(&["task", "delete", "ord"])?;
    Ok(())
}

/// A shim started by hand (no containerd), killed with its container if the test fails.
struct StandaloneShim {
    bundle: std::path::PathBuf,
    root: std::path::PathBuf,
    id: String,
    address: String,
}

impl Drop for StandaloneShim {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.bundle.join("shim.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill takes plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::process::Command::new(skiff_integration::harness::runtime_binary())
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .output();
        let rootfs =
            std::ffi::CString::new(self.bundle.join("rootfs").display().to_string()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(rootfs.as_ptr(), libc::MNT_DETACH) };
        if let Some(socket) = self.address.strip_prefix("unix://") {
            let _ = std::fs::remove_file(socket);
        }
    }
}

#[test]
fn standalone_shim_mounts_rootfs_logs_to_a_file_and_publishes_through_the_binary() -> Result<()> {
    use skiff_proto::api::{
        CreateTaskRequest, DeleteRequest, Mount, ShutdownRequest, StartRequest, WaitRequest,
    };
    use skiff_proto::protobuf::Message;
    use skiff_proto::ttrpc::context;

    let h = skiff_integration::Harness::new()?;
    let id = h.id("standalone");
    // The image: a complete bundle whose rootfs the shim bind-mounts into a second, empty bundle.
    let mut image = skiff_integration::Bundle::with_default_spec(&h.path("image"))?;
    image.args(&["sh", "-c", "echo standalone says hi; exit 9"])?;
    let bundle = h.dir("bundle")?;
    std::fs::create_dir_all(bundle.join("rootfs"))?;
    std::fs::copy(image.path().join("config.json"), bundle.join("config.json"))?;
    let events = h.path("events.log");
    let publisher = h.path("publish.sh");
    std::fs::write(
        &publisher,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\ncat > /dev/null\n",
            events.display()
        ),
    )?;
    std::fs::set_permissions(
        &publisher,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let root = h.dir("shim-root")?;

    let out = std::process::Command::new(skiff_integration::containerd::shim_binary())
        .args([
            "-namespace",
            "standalone",
            "-address",
            "/nonexistent/containerd.sock",
        ])
        .arg("-publish-binary")
        .arg(&publisher)
        .args(["-id", &id, "start"])
        .current_dir(&bundle)
        .env_remove("TTRPC_ADDRESS")
        .output()?;
    let address = String::from_utf8(out.stdout)?;
    let mut guard = StandaloneShim {
        bundle: bundle.clone(),
        root: root.join("standalone"),
        id: id.clone(),
        address: address.clone(),
    };
    assert!(
        out.status.success() && address.starts_with("unix://"),
        "{address:?} {:?}",
        out.status
    );
    assert_eq!(std::fs::read_to_string(bundle.join("address"))?, address);

    let client = skiff_proto::protos::shim_sync::TaskClient::new(
        skiff_proto::ttrpc::Client::connect(&address)?,
    );
    let ctx = || context::with_timeout(30_000_000_000);

    // containerd's runc options, naming skiff and a private root.
    let mut opts = skiff_proto::protos::shim::oci::Options::new();
    opts.binary_name = skiff_integration::harness::runtime_binary()
        .display()
        .to_string();
    opts.root = root.display().to_string();
    let mut any = skiff_proto::protobuf::well_known_types::any::Any::new();
    any.type_url = "containerd.runc.v1.Options".into();
    any.value = opts.write_to_bytes()?;

    let log = h.path("container.log");
    let mut mount = Mount::new();
    mount.type_ = "bind".into();
    mount.source = image.rootfs().display().to_string();
    mount.options = vec!["rbind".into(), "ro".into()];
    let mut req = CreateTaskRequest::new();
    req.id = id.clone();
    req.bundle = bundle.display().to_string();
    req.rootfs = vec![mount];
    req.stdout = format!("file://{}", log.display());
    req.options = Some(any).into();
    let created = client.create(ctx(), &req)?;
    assert!(created.pid > 0);
    assert!(
        bundle.join("rootfs/bin/busybox").exists(),
        "rootfs not mounted"
    );
    assert!(
        root.join("standalone").join(&id).exists(),
        "skiff state not under the Root option"
    );

    let mut req = StartRequest::new();
    req.id = id.clone();
    client.start(ctx(), &req)?;
    let mut req = WaitRequest::new();
    req.id = id.clone();
    let waited = client.wait(ctx(), &req)?;
    assert_eq!(waited.exit_status, 9);
    assert!(waited.exited_at.seconds > 0);
    assert!(std::fs::read_to_string(&log)?.contains("standalone says hi"));

    let mut req = DeleteRequest::new();
    req.id = id.clone();
    let deleted = client.delete(ctx(), &req)?;
    assert_eq!(deleted.exit_status, 9);
    assert!(
        !bundle.join("rootfs/bin/busybox").exists(),
        "rootfs still mounted after delete"
    );
    let mut req = ShutdownRequest::new();
    req.id = id.clone();
    let _ = client.shutdown(ctx(), &req);
    drop(client);

    let socket = std::path::PathBuf::from(address.trim_start_matches("unix://"));
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !socket.exists()
    });
    assert!(
        gone,
        "the shim did not exit and remove {}",
        socket.display()
    );
    let published = std::fs::read_to_string(&events).unwrap_or_default();
    let topics: Vec<&str> = published
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "--topic").nth(1))
        .collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{published}"
    );
    assert!(published.contains("--namespace standalone"), "{published}");
    guard.address.clear();
    Ok(())
}
