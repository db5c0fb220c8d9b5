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
    // containerd drops the task from its list before its cleanup of the dead shim (`shim
    // delete`, which removes the socket) has finished: waited for, then checked.
    let _ = c.wait_until(Duration::from_secs(10), || !socket.exists());
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

/// The pid `ctr task ls` shows for task `id`.
fn task_pid(c: &Containerd, id: &str) -> Result<i32> {
    let tasks = c.tasks()?;
    let row = tasks
        .iter()
        .find(|t| t.0 == id)
        .ok_or_else(|| anyhow::anyhow!("task {id} not listed: {tasks:?}"))?;
    Ok(row.1.parse()?)
}

/// Start task `id` with `runtime`, crash containerd, kill the task's init while containerd is down
/// (the shim must stay meanwhile) and start containerd again. Returns containerd's log offset at
/// the restart.
fn crash_and_kill_the_init(c: &mut Containerd, runtime: &str, id: &str) -> Result<usize> {
    c.ctr_ok(&["run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "300"])?;
    let pid = task_pid(c, id)?;
    let shims = c.shim_pids();
    c.crash()?;
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Long enough for the shim to try (and fail) to publish the exit several times.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        c.shim_pids(),
        shims,
        "{runtime}: the shim must stay while its task is not deleted"
    );
    let log_start = c.log().len();
    c.relaunch()?;
    Ok(log_start)
}

/// [`crash_and_kill_the_init`], then (containerd 1.6) the task must be listed STOPPED and delete
/// with status 137. Returns containerd's log from the restart on.
fn exit_while_containerd_is_down(c: &mut Containerd, runtime: &str, id: &str) -> Result<String> {
    let log_start = crash_and_kill_the_init(c, runtime, id)?;
    assert!(
        c.wait_until(Duration::from_secs(10), || {
            c.task_status(id).ok().flatten().as_deref() == Some("STOPPED")
        }),
        "{runtime}: {:?}\n{}",
        c.tasks(),
        c.log_tail()
    );
    // ctr warns with the deleted task's exit status.
    let out = c.ctr_ok(&["task", "delete", id])?;
    assert!(
        out.stderr.contains("non-zero exit code 137"),
        "{runtime}: {out}\n{}",
        c.log_tail()
    );
    c.ctr_ok(&["container", "delete", id])?;
    assert!(
        c.wait_until(Duration::from_secs(5), || c.shim_pids().is_empty()),
        "{runtime}: shim still running after its last task was deleted"
    );
    Ok(c.log()[log_start..].to_string())
}

#[test]
fn an_exit_while_containerd_is_down_is_kept_until_the_task_is_deleted() -> Result<()> {
    let mut c = containerd()?;
    // containerd's runc shim with runc is the oracle.
    exit_while_containerd_is_down(&mut c, "io.containerd.runc.v2", "down-runc")?;
    let log = exit_while_containerd_is_down(&mut c, SKIFF_RUNTIME, "down-skiff")?;
    // The exit that containerd missed is delivered to the containerd that came back.
    assert!(
        log.lines()
            .any(|l| l.contains("event forwarded") && l.contains("topic=/tasks/exit")),
        "no TaskExit after the restart:\n{log}"
    );
    assert_no_leftovers(&c, "down-skiff", None)?;
    Ok(())
}

/// containerd 2.x does otherwise on its restart: a task shim with no process left (`Pids` empty)
/// is taken for a leak and cleaned up, the task with it. The skiff shim must be found and cleaned
/// up the same way as containerd's runc shim, leaving nothing.
#[test]
fn an_exit_while_containerd_2_is_down_is_cleaned_up_as_with_runc() -> Result<()> {
    let Some(mut c) = Containerd::start_v2()? else {
        return Ok(());
    };
    for (runtime, id) in [
        ("io.containerd.runc.v2", "down2-runc"),
        (SKIFF_RUNTIME, "down2-skiff"),
    ] {
        crash_and_kill_the_init(&mut c, runtime, id)?;
        assert!(
            c.wait_until(Duration::from_secs(10), || {
                c.task_status(id).ok().flatten().is_none() && c.shim_pids().is_empty()
            }),
            "{runtime}: {:?} {:?}\n{}",
            c.tasks(),
            c.shim_pids(),
            c.log_tail()
        );
        c.ctr_ok(&["container", "delete", id])?;
    }
    assert_no_leftovers(&c, "down2-skiff", None)?;
    Ok(())
}

#[test]
fn a_hung_create_leaves_the_pods_other_containers_answering() -> Result<()> {
    use skiff_proto::api::{KillRequest, StateRequest, Status, WaitRequest};
    use skiff_proto::ttrpc::context;

    let c = containerd()?;
    let skiff = skiff_integration::harness::runtime_binary();
    // A runtime that hangs in `create` of the container `hang-me` and is skiff otherwise.
    let hang_pid = c.dir().join("hang.pid");
    let wrapper = c.dir().join("hanging-runtime");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" create \"*\" hang-me \"*) echo $$ > {}; exec sleep 50;; esac\nexec {} \"$@\"\n",
            hang_pid.display(),
            skiff.display()
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let config = runtime_config(&c, "hanging", &wrapper.display().to_string())?;
    let pod = "io.containerd.runc.v2.group=hung-pod";
    let run = |id: &'static str| {
        [
            "run",
            "-d",
            "--runtime",
            SKIFF_RUNTIME,
            "--runtime-config-path",
            &config,
            "--annotation",
            pod,
            IMAGE,
            id,
            "sleep",
            "300",
        ]
        .map(str::to_string)
    };
    let fine = run("fine");
    c.ctr_ok(&fine.iter().map(String::as_str).collect::<Vec<_>>())?;
    let hung = run("hang-me");
    let _hung_ctr = c.ctr_spawn("hung", &hung.iter().map(String::as_str).collect::<Vec<_>>())?;
    assert!(
        c.wait_until(Duration::from_secs(10), || hang_pid.exists()),
        "the runtime's create never started"
    );
    std::thread::sleep(Duration::from_millis(300));

    // The other container of the pod is served at once: State, then Wait answered by a Kill.
    let ctx = || context::with_timeout(3_000_000_000);
    let client = task_client(&c, "fine")?;
    let mut req = StateRequest::new();
    req.id = "fine".into();
    let state = client.state(ctx(), &req)?;
    assert_eq!(state.status.value(), Status::RUNNING as i32);
    let waiter = task_client(&c, "fine")?;
    let wait = std::thread::spawn(move || {
        let mut req = WaitRequest::new();
        req.id = "fine".into();
        waiter.wait(context::with_timeout(5_000_000_000), &req)
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut req = KillRequest::new();
    req.id = "fine".into();
    req.signal = libc::SIGKILL as u32;
    client.kill(ctx(), &req)?;
    let waited = wait.join().map_err(|_| anyhow::anyhow!("wait thread"))??;
    assert_eq!(waited.exit_status, 137);

    let pid: i32 = std::fs::read_to_string(&hang_pid)?.trim().parse()?;
    // SAFETY: kill takes plain integers; the pid is the hanging runtime's.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    Ok(())
}

#[test]
fn output_held_open_by_one_process_does_not_delay_other_exits() -> Result<()> {
    use skiff_proto::api::{KillRequest, WaitRequest};
    use skiff_proto::ttrpc::context;

    let c = containerd()?;
    let pod = "io.containerd.runc.v2.group=slow-output";
    for id in ["holder", "other"] {
        c.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            SKIFF_RUNTIME,
            "--annotation",
            pod,
            IMAGE,
            id,
            "sleep",
            "300",
        ])?;
    }
    // Execs that exit at once while a child keeps their stdout open: each exit waits for its
    // output up to the grace period.
    let mut execs = Vec::new();
    for i in 0..3 {
        let exec_id = format!("held{i}");
        execs.push(c.ctr_spawn(
            &exec_id,
            &[
                "task",
                "exec",
                "--exec-id",
                &exec_id,
                "holder",
                "sh",
                "-c",
                "sleep 30 & exit 0",
            ],
        )?);
    }
    std::thread::sleep(Duration::from_millis(700));
    let waiter = task_client(&c, "other")?;
    let wait = std::thread::spawn(move || {
        let mut req = WaitRequest::new();
        req.id = "other".into();
        let r = waiter.wait(context::with_timeout(20_000_000_000), &req);
        (r, std::time::Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200));
    let client = task_client(&c, "other")?;
    let mut req = KillRequest::new();
    req.id = "other".into();
    req.signal = libc::SIGKILL as u32;
    let killed = std::time::Instant::now();
    client.kill(context::with_timeout(5_000_000_000), &req)?;
    let (waited, at) = wait.join().map_err(|_| anyhow::anyhow!("wait thread"))?;
    assert_eq!(waited?.exit_status, 137);
    let took = at.duration_since(killed);
    assert!(
        took < Duration::from_millis(1500),
        "the exit of `other` took {took:?}, behind the execs' output"
    );
    drop(execs);
    Ok(())
}

#[test]
fn a_create_the_shim_cannot_finish_is_removed_from_the_runtime() -> Result<()> {
    use skiff_proto::api::CreateTaskRequest;
    use skiff_proto::protobuf::Message;
    use skiff_proto::ttrpc::context;

    let c = containerd()?;
    let h = skiff_integration::Harness::new()?;
    let skiff = skiff_integration::harness::runtime_binary();
    // A runtime whose `create` succeeds but loses the pid file the shim reads.
    let wrapper = c.dir().join("pidless-runtime");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{} \"$@\"; rc=$?\ncase \" $* \" in *\" create \"*) prev=; for a; do [ \"$prev\" = --pid-file ] && rm -f \"$a\"; prev=$a; done;; esac\nexit $rc\n",
            skiff.display()
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    // A shim to talk to directly (through containerd, its own cleanup would hide the leak).
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "host",
        "sleep",
        "300",
    ])?;
    let root = c.dir().join("pidless-root");
    let mut opts = skiff_proto::protos::shim::oci::Options::new();
    opts.binary_name = wrapper.display().to_string();
    opts.root = root.display().to_string();
    let mut any = skiff_proto::protobuf::well_known_types::any::Any::new();
    any.type_url = "containerd.runc.v1.Options".into();
    any.value = opts.write_to_bytes()?;
    let mut bundle = skiff_integration::Bundle::with_default_spec(&h.path("bundle"))?;
    bundle.args(&["sleep", "300"])?;
    let id = h.id("pidless");
    let mut req = CreateTaskRequest::new();
    req.id = id.clone();
    req.bundle = bundle.path().display().to_string();
    req.options = Some(any).into();
    let client = task_client(&c, "host")?;
    let created = client.create(context::with_timeout(30_000_000_000), &req);
    assert!(
        matches!(&created, Err(e) if e.to_string().contains("pid file")),
        "{created:?}"
    );
    let list = std::process::Command::new(&skiff)
        .arg("--root")
        .arg(root.join(c.namespace()))
        .args(["list", "-q"])
        .output()?;
    let listed = String::from_utf8_lossy(&list.stdout);
    // Whatever the outcome, leave nothing behind.
    let _ = std::process::Command::new(&skiff)
        .arg("--root")
        .arg(root.join(c.namespace()))
        .args(["delete", "--force", &id])
        .output();
    assert!(!listed.contains(&id), "left in the runtime: {listed}");
    Ok(())
}

#[test]
fn runtime_calls_do_not_inherit_the_server_socket_which_only_root_can_reach() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let c = containerd()?;
    let skiff = skiff_integration::harness::runtime_binary();
    // A runtime that records what its fd 3 is, then runs skiff.
    let seen = c.dir().join("fd3");
    let wrapper = c.dir().join("fd-runtime");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nreadlink /proc/$$/fd/3 >> {} 2>/dev/null || echo none >> {}\nexec {} \"$@\"\n",
            seen.display(),
            seen.display(),
            skiff.display()
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let config = runtime_config(&c, "fd", &wrapper.display().to_string())?;
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        "--runtime-config-path",
        &config,
        IMAGE,
        "fd3",
        "sleep",
        "300",
    ])?;
    let fds = std::fs::read_to_string(&seen)?;
    assert!(!fds.is_empty());
    assert!(
        fds.lines().all(|l| !l.starts_with("socket:")),
        "a runtime command inherited a socket as fd 3: {fds}"
    );
    let socket = socket_of(&c, "fd3")?;
    let mode = |p: &std::path::Path| -> Result<u32> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
    };
    assert_eq!(mode(&socket)?, 0o600, "{}", socket.display());
    assert_eq!(mode(socket.parent().unwrap())?, 0o700);
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "fd3"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("fd3").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "fd3"])?;
    Ok(())
}

#[test]
fn racing_starts_of_one_pod_make_one_server() -> Result<()> {
    let h = skiff_integration::Harness::new()?;
    let bundle = h.dir("bundle")?;
    // A containerd address of its own, so the socket and the servers are this test's.
    let address = h.path("no-containerd.sock").display().to_string();
    let id = h.id("race");
    let starts: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(skiff_integration::containerd::shim_binary())
                .args([
                    "-namespace",
                    "race",
                    "-address",
                    &address,
                    "-id",
                    &id,
                    "start",
                ])
                .current_dir(&bundle)
                .env_remove("TTRPC_ADDRESS")
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut printed = Vec::new();
    for s in starts {
        let out = s.wait_with_output()?;
        assert!(out.status.success(), "{out:?}");
        printed.push(String::from_utf8(out.stdout)?);
    }
    std::thread::sleep(Duration::from_millis(300));
    let servers = skiff_integration::containerd::processes_with_args(&["-address", &address]);
    let socket = printed[0].trim_start_matches("unix://").to_string();
    for pid in &servers {
        // SAFETY: kill takes plain integers; these are the servers this test started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(&socket);
    assert!(printed.iter().all(|a| *a == printed[0]), "{printed:?}");
    assert_eq!(servers.len(), 1, "servers: {servers:?}");
    Ok(())
}

#[test]
fn an_overlay_with_more_layers_than_a_page_of_options_holds_mounts() -> Result<()> {
    use skiff_proto::api::{CreateTaskRequest, DeleteRequest, KillRequest, Mount, WaitRequest};
    use skiff_proto::ttrpc::context;

    let c = containerd()?;
    let h = skiff_integration::Harness::new()?;
    // A shim to talk to directly.
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "ovl-host",
        "sleep",
        "300",
    ])?;
    // 40 layers in a directory with a long path, above the busybox image: `lowerdir=` far over
    // a page, as an image with many layers in containerd's snapshotter gives.
    let image = skiff_integration::Bundle::with_default_spec(&h.path("image"))?;
    let deep = h.dir("layers")?.join("d".repeat(120)).join("e".repeat(120));
    let mut lower = Vec::new();
    for i in 0..40 {
        let dir = deep.join(format!("{i:02}"));
        std::fs::create_dir_all(&dir)?;
        lower.push(dir.display().to_string());
    }
    std::fs::write(deep.join("00/top-marker"), "top")?;
    skiff_integration::bundle::build_rootfs(&deep.join("base"))?;
    lower.push(deep.join("base").display().to_string());
    let upper = h.dir("upper")?;
    let work = h.dir("work")?;
    let mut mount = Mount::new();
    mount.type_ = "overlay".into();
    mount.source = "overlay".into();
    mount.options = vec![
        format!("workdir={}", work.display()),
        format!("upperdir={}", upper.display()),
        format!("lowerdir={}", lower.join(":")),
    ];
    assert!(mount.options.join(",").len() > 4096);
    let bundle = h.dir("bundle")?;
    std::fs::create_dir_all(bundle.join("rootfs"))?;
    std::fs::copy(image.path().join("config.json"), bundle.join("config.json"))?;
    let id = h.id("ovl");
    let mut req = CreateTaskRequest::new();
    req.id = id.clone();
    req.bundle = bundle.display().to_string();
    req.rootfs = vec![mount];
    let client = task_client(&c, "ovl-host")?;
    let ctx = || context::with_timeout(30_000_000_000);
    let created = client.create(ctx(), &req);
    let mounted = bundle.join("rootfs/top-marker").exists() && bundle.join("rootfs/bin").exists();
    if created.is_ok() {
        let mut kill = KillRequest::new();
        kill.id = id.clone();
        kill.signal = libc::SIGKILL as u32;
        let _ = client.kill(ctx(), &kill);
        let mut wait = WaitRequest::new();
        wait.id = id.clone();
        let _ = client.wait(ctx(), &wait);
        let mut del = DeleteRequest::new();
        del.id = id.clone();
        client.delete(ctx(), &del)?;
    }
    for _ in skiff_integration::host::mountinfo_lines_containing(&bundle)? {
        let _ = nix_umount(&bundle.join("rootfs"));
    }
    assert!(created.is_ok(), "{created:?}");
    assert!(mounted, "the layers were not mounted on the rootfs");
    Ok(())
}

/// Lazily unmount `path` (cleanup after a failed assertion).
fn nix_umount(path: &std::path::Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    match unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[test]
fn a_server_out_of_descriptors_serves_its_open_connections_on() -> Result<()> {
    use skiff_proto::api::StateRequest;
    use skiff_proto::ttrpc::context;

    let h = skiff_integration::Harness::new()?;
    let bundle = h.dir("bundle")?;
    let address = h.path("no-containerd.sock").display().to_string();
    let id = h.id("emfile");
    let out = std::process::Command::new(skiff_integration::containerd::shim_binary())
        .args([
            "-namespace",
            "emfile",
            "-address",
            &address,
            "-id",
            &id,
            "start",
        ])
        .current_dir(&bundle)
        .env_remove("TTRPC_ADDRESS")
        .output()?;
    let socket = String::from_utf8(out.stdout)?;
    let servers = skiff_integration::containerd::processes_with_args(&["-address", &address]);
    let result = (|| -> Result<Duration> {
        anyhow::ensure!(servers.len() == 1, "servers: {servers:?}");
        let client = skiff_proto::protos::shim_sync::TaskClient::new(
            skiff_proto::ttrpc::Client::connect(&socket)?,
        );
        let mut req = StateRequest::new();
        req.id = "none".into();
        let ctx = || context::with_timeout(10_000_000_000);
        let _ = client.state(ctx(), &req);
        // No descriptor left for another connection: accept fails with EMFILE.
        let open = std::fs::read_dir(format!("/proc/{}/fd", servers[0]))?.count();
        let limit = format!("--nofile={open}:{open}");
        let status = std::process::Command::new("prlimit")
            .arg(&limit)
            .arg("--pid")
            .arg(servers[0].to_string())
            .status()?;
        anyhow::ensure!(status.success(), "prlimit failed");
        let _waiting: Vec<_> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(socket.trim_start_matches("unix://")))
            .collect::<std::io::Result<_>>()?;
        std::thread::sleep(Duration::from_millis(100));
        let started = std::time::Instant::now();
        for _ in 0..20 {
            let _ = client.state(ctx(), &req);
        }
        Ok(started.elapsed())
    })();
    for pid in &servers {
        // SAFETY: kill takes plain integers; this is the server this test started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(socket.trim_start_matches("unix://"));
    let took = result?;
    assert!(
        took < Duration::from_millis(1000),
        "20 calls on an open connection took {took:?} while accept failed"
    );
    Ok(())
}

#[test]
fn processes_that_exit_at_once_are_reported() -> Result<()> {
    let c = containerd()?;
    // An init that exits while `start` runs, and execs that exit before their pid is recorded:
    // each exit is reported (a lost one hangs ctr until its timeout).
    for i in 0..3 {
        let id = format!("quick{i}");
        let out = c.ctr(&[
            "run",
            "--rm",
            "--runtime",
            SKIFF_RUNTIME,
            IMAGE,
            &id,
            "sh",
            "-c",
            "exit 4",
        ])?;
        assert_eq!(out.exit_code(), 4, "{out}\n{}", c.log_tail());
    }
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "quickexec",
        "sleep",
        "300",
    ])?;
    for i in 0..10 {
        let exec_id = format!("e{i}");
        let out = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            "quickexec",
            "sh",
            "-c",
            "exit 5",
        ])?;
        assert_eq!(out.exit_code(), 5, "{out}\n{}", c.log_tail());
    }
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "quickexec"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("quickexec").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "quickexec"])?;
    Ok(())
}

#[test]
fn a_runtime_command_that_leaves_a_process_holding_its_output_does_not_hang_the_call() -> Result<()>
{
    let c = containerd()?;
    let skiff = skiff_integration::harness::runtime_binary();
    // A runtime whose `kill` leaves a process behind with its stdout and stderr.
    let holder = c.dir().join("holder.pid");
    let wrapper = c.dir().join("leaky-runtime");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{} \"$@\"; rc=$?\ncase \" $* \" in *\" kill \"*) sleep 20 & echo $! > {};; esac\nexit $rc\n",
            skiff.display(),
            holder.display()
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let config = runtime_config(&c, "leaky", &wrapper.display().to_string())?;
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        "--runtime-config-path",
        &config,
        IMAGE,
        "leaky",
        "sleep",
        "300",
    ])?;
    let started = std::time::Instant::now();
    let out = c.ctr(&["task", "kill", "-s", "SIGKILL", "leaky"]);
    let took = started.elapsed();
    if let Ok(pid) = std::fs::read_to_string(&holder) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: kill takes plain integers; the pid is the wrapper's background sleep.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    assert!(out?.success());
    assert!(took < Duration::from_secs(5), "Kill took {took:?}");
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("leaky").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "leaky"])?;
    Ok(())
}

#[test]
fn a_binary_logger_that_never_signals_ready_fails_the_create_in_time() -> Result<()> {
    let c = containerd()?;
    // A logger that keeps fd 5 (its ready signal) open and never closes it.
    let logger = c.dir().join("mute-logger.sh");
    let pid_file = c.dir().join("mute-logger.pid");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 40\n",
            pid_file.display()
        ),
    )?;
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let uri = format!("binary://{}", logger.display());
    let started = std::time::Instant::now();
    let out = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        "--log-uri",
        &uri,
        IMAGE,
        "mute",
        "true",
    ]);
    let took = started.elapsed();
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: kill takes plain integers; the pid is the test's logger.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let out = out?;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("did not signal ready"), "{out}");
    assert!(took < Duration::from_secs(20), "Create took {took:?}");
    Ok(())
}

/// The `execve`s the shim and everything it started made while `during` ran, as strace -f
/// (attached to all of the shim's threads) recorded them.
fn execs_of_shim_during(c: &Containerd, during: impl FnOnce() -> Result<()>) -> Result<String> {
    let shims = c.skiff_shim_pids();
    let [shim] = shims[..] else {
        anyhow::bail!("one shim expected: {shims:?}");
    };
    let trace = c.dir().join(format!("strace-{shim}.log"));
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-s", "256", "-e", "trace=execve", "-o"])
        .arg(&trace)
        .args(["-p", &shim.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let traced = || {
        std::fs::read_to_string(format!("/proc/{shim}/status"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
    };
    assert!(
        c.wait_until(Duration::from_secs(10), traced),
        "strace did not attach"
    );
    let r = during();
    // SIGINT: strace detaches and writes what it has.
    // SAFETY: kill of our own child.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    strace.wait()?;
    r?;
    Ok(std::fs::read_to_string(&trace)?)
}

/// Probes are execs: the shim serves those of skiff's containers itself, without the runtime
/// binary (no `skiff exec` is started), and they behave as the runtime's: output, exit status,
/// a missing program's error; `kill` and `delete` run the runtime's code in a forked child,
/// without executing the binary either. With `SKIFF_SHIM_EXEC=runtime` the runtime binary serves
/// them all, which shows the checks below can fail.
#[test]
fn execs_are_served_without_starting_the_runtime_binary() -> Result<()> {
    for mode in ["shim", "runtime"] {
        let mut opts = skiff_integration::containerd::StartOptions::default();
        if mode == "runtime" {
            opts.env.push(("SKIFF_SHIM_EXEC".into(), "runtime".into()));
        }
        let c = Containerd::start_with(opts)?;
        c.import_busybox()?;
        c.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            SKIFF_RUNTIME,
            IMAGE,
            "dx",
            "sleep",
            "300",
        ])?;
        let mut bad_stderr = String::new();
        let log = execs_of_shim_during(&c, || {
            let out = c.ctr(&[
                "task",
                "exec",
                "--exec-id",
                "x1",
                "dx",
                "sh",
                "-c",
                "echo in-exec; exit 3",
            ])?;
            assert_eq!(out.exit_code(), 3, "{mode}: {out}\n{}", c.log_tail());
            assert_eq!(out.stdout.trim(), "in-exec", "{mode}: {out}");
            let bad = c.ctr(&["task", "exec", "--exec-id", "x2", "dx", "/nonexistent"])?;
            assert!(!bad.success(), "{mode}: {bad}");
            bad_stderr = bad.stderr.clone();
            Ok(())
        })?;
        assert!(
            bad_stderr.contains("/nonexistent") && bad_stderr.contains("no such file or directory"),
            "{mode}: {bad_stderr}"
        );
        let runtime_execs: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("execve(") && l.contains("\"--process\""))
            .collect();
        let process_execs = log
            .lines()
            .filter(|l| l.contains("execve(\"/bin/sh\"") && l.contains("in-exec"))
            .count();
        assert_eq!(
            process_execs, 1,
            "{mode}: the exec'd process not seen:\n{log}"
        );
        match mode {
            "shim" => assert!(runtime_execs.is_empty(), "{mode}: {runtime_execs:?}"),
            _ => assert_eq!(runtime_execs.len(), 2, "{mode}:\n{log}"),
        }
        // The rest of the lifecycle (kill, delete) is a call into the runtime's code too.
        let log = execs_of_shim_during(&c, || {
            c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "dx"])?;
            assert!(c.wait_until(Duration::from_secs(10), || {
                c.task_status("dx").ok().flatten().as_deref() == Some("STOPPED")
            }));
            c.ctr_ok(&["task", "delete", "dx"])?;
            Ok(())
        })?;
        let verbs: Vec<&str> = ["\"kill\"", "\"delete\""]
            .into_iter()
            .filter(|v| log.lines().any(|l| l.contains("execve(") && l.contains(v)))
            .collect();
        match mode {
            "shim" => assert!(
                verbs.is_empty(),
                "{mode}: the runtime ran {verbs:?}:\n{log}"
            ),
            _ => assert_eq!(verbs.len(), 2, "{mode}:\n{log}"),
        }
        assert!(
            c.task_status("dx")?.is_none(),
            "{mode}: the task is still there"
        );
        c.ctr_ok(&["container", "delete", "dx"])?;
    }
    Ok(())
}

/// The process an exec starts is the shim's image until it execs, so the shim's server runs from
/// a sealed view of its binary, as the runtime does: through `/proc/<shim>/exe` (where a
/// privileged container's process could reach it) the binary can be neither written nor run.
#[test]
fn the_shim_runs_from_a_view_of_its_binary_that_cannot_be_written_or_run() -> Result<()> {
    let c = containerd()?;
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "sealed",
        "sleep",
        "300",
    ])?;
    let shims = c.skiff_shim_pids();
    let [shim] = shims[..] else {
        anyhow::bail!("one shim expected: {shims:?}");
    };
    let exe = format!("/proc/{shim}/exe");
    let write = std::fs::OpenOptions::new().write(true).open(&exe);
    assert_eq!(
        write.as_ref().err().and_then(std::io::Error::raw_os_error),
        Some(libc::EROFS),
        "open {exe} for writing: {write:?}"
    );
    let run = std::process::Command::new(&exe).arg("-v").output();
    assert_eq!(
        run.as_ref().err().and_then(std::io::Error::raw_os_error),
        Some(libc::EACCES),
        "run {exe}: {run:?}"
    );
    // The installed binary itself is untouched and still runs.
    let installed = skiff_integration::containerd::shim_binary();
    assert!(std::process::Command::new(&installed)
        .arg("-v")
        .output()?
        .status
        .success());
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "sealed"])?;
    assert!(c.wait_until(Duration::from_secs(10), || {
        c.task_status("sealed").ok().flatten().as_deref() == Some("STOPPED")
    }));
    c.ctr_ok(&["task", "delete", "sealed"])?;
    c.ctr_ok(&["container", "delete", "sealed"])?;
    Ok(())
}

/// A shim killed between attaching a user-namespaced pod's idmapped layer copies
/// (`<bundle>/.idmapped-layers-<i>/<n>`) and detaching them leaves them mounted in the bundle.
/// The `delete` command containerd runs after a shim died detaches and removes them, so that
/// containerd's recursive removal of the bundle never walks into an image layer; the layer's files
/// are untouched.
#[test]
fn the_delete_command_removes_idmapped_layer_copies_a_killed_shim_left() -> Result<()> {
    let h = skiff_integration::harness::Harness::new()?;
    let layer = h.dir("idmap-layer")?;
    std::fs::write(layer.join("image-file"), "from the image")?;
    let bundle = h.dir("idmap-bundle")?;
    let copy = bundle.join(".idmapped-layers-0/0");
    std::fs::create_dir_all(&copy)?;
    nix::mount::mount(
        Some(&layer),
        &copy,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )?;
    let mounted = |p: &std::path::Path| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&p.display().to_string()))
    };
    assert!(mounted(&copy), "the stand-in copy is not mounted");
    let out = std::process::Command::new(skiff_integration::containerd::shim_binary())
        .args([
            "-namespace",
            "skiff-it-idmap",
            "-address",
            "/nonexistent.sock",
        ])
        .args(["-id", "idmap-left"])
        .arg("-bundle")
        .arg(&bundle)
        .arg("delete")
        .output()?;
    let still = mounted(&copy);
    if still {
        let _ = nix::mount::umount2(&copy, nix::mount::MntFlags::MNT_DETACH);
    }
    assert!(out.status.success(), "{out:?}");
    assert!(!still, "the layer copy is still mounted after delete");
    assert!(!bundle.join(".idmapped-layers-0").exists());
    assert_eq!(
        std::fs::read_to_string(layer.join("image-file"))?,
        "from the image"
    );
    Ok(())
}
