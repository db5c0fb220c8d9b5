//! The six OCI hooks: when each runs, in which namespace, with the state on stdin; env, timeout and
//! a failing hook.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use skiff_integration::host::host_namespace;
use skiff_integration::{wait_for_content, wait_for_file, Harness};

/// A hook that saves its stdin (the state) to `DIR/KIND.json`, then its mount namespace to
/// `DIR/KIND.mntns` (written last: its presence means the hook finished).
fn recording_hook(kind: &str, dir: &str) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!(
            "cat > {dir}/{kind}.json; readlink /proc/self/ns/mnt > {dir}/{kind}.mntns.tmp; \
             mv {dir}/{kind}.mntns.tmp {dir}/{kind}.mntns")]
    })
}

struct Record {
    state: Value,
    mntns: String,
}

fn read_record(dir: &Path, kind: &str, timeout: Duration) -> Result<Record> {
    let mntns = wait_for_content(&dir.join(format!("{kind}.mntns")), timeout)?;
    let text = fs::read_to_string(dir.join(format!("{kind}.json")))?;
    let state = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{kind} hook got no JSON state ({e}): {text:?}"))?;
    Ok(Record {
        state,
        mntns: mntns.trim().to_string(),
    })
}

#[test]
fn hooks_run_at_their_points_with_the_state_on_stdin() -> Result<()> {
    let h = Harness::new()?;
    let out = h.dir("hooks")?;
    let host_dir = out.display().to_string();
    let mut b = h.bundle()?;
    b.bind(&out, "/hookout", false)?;
    b.edit(|c| c["hostname"] = json!("hooked"))?;
    // These run in the runtime's namespaces, or (createContainer) with paths resolved there: the
    // host directory is reachable under its host path.
    for kind in ["prestart", "createRuntime", "createContainer", "poststop"] {
        b.add_hook(kind, recording_hook(kind, &host_dir))?;
    }
    // startContainer runs inside the container: its path and the output dir are the container's.
    b.add_hook(
        "startContainer",
        recording_hook("startContainer", "/hookout"),
    )?;
    b.add_hook(
        "startContainer",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "hostname > /hookout/startContainer.hostname"]}),
    )?;
    b.sh("echo main > /hookout/main")?;
    let id = h.id("hooks");
    let host_mnt = host_namespace("mnt")?;

    h.create(&id, &b)?;
    let pid = h.pid(&id)?;
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let r = read_record(&out, kind, Duration::from_secs(1))?;
        assert_eq!(r.state["id"], id.as_str(), "{kind}: {}", r.state);
        if kind == "createContainer" {
            // The spec wants the host's view of the pid; runc 1.1 hands this hook the pid as seen
            // from inside the container's pid namespace (1). Either identifies the init.
            assert!(
                r.state["pid"] == pid || r.state["pid"] == 1,
                "{kind}: {}",
                r.state
            );
        } else {
            assert_eq!(r.state["pid"], pid, "{kind}: {}", r.state);
        }
        assert_eq!(r.state["bundle"], b.path_str().as_str(), "{kind}");
        assert_eq!(r.state["status"], "creating", "{kind}: {}", r.state);
    }
    for kind in ["startContainer", "poststop"] {
        assert!(
            !out.join(format!("{kind}.json")).exists(),
            "{kind} ran at create"
        );
    }
    assert!(!out.join("main").exists(), "process ran before start");
    assert_eq!(
        read_record(&out, "prestart", Duration::ZERO)?.mntns,
        host_mnt
    );
    assert_eq!(
        read_record(&out, "createRuntime", Duration::ZERO)?.mntns,
        host_mnt
    );
    assert_ne!(
        read_record(&out, "createContainer", Duration::ZERO)?.mntns,
        host_mnt,
        "createContainer must run in the container's mount namespace"
    );

    h.start(&id)?;
    let start = read_record(&out, "startContainer", h.timeout())?;
    assert_eq!(start.state["id"], id.as_str(), "{}", start.state);
    // As for createContainer, runc 1.1 reports the in-namespace pid (1) here.
    assert!(
        start.state["pid"] == pid || start.state["pid"] == 1,
        "{}",
        start.state
    );
    assert_eq!(start.state["status"], "created", "{}", start.state);
    assert_ne!(start.mntns, host_mnt);
    let hostname = wait_for_content(&out.join("startContainer.hostname"), h.timeout())?;
    assert_eq!(
        hostname.trim(),
        "hooked",
        "startContainer not in the container"
    );

    h.wait_status(&id, "stopped")?;
    assert_eq!(fs::read_to_string(out.join("main"))?, "main\n");
    assert!(
        !out.join("poststop.json").exists(),
        "poststop before delete"
    );
    h.delete(&id)?;
    let stop = read_record(&out, "poststop", Duration::from_secs(1))?;
    assert_eq!(stop.state["id"], id.as_str(), "{}", stop.state);
    assert_eq!(stop.mntns, host_mnt);
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// poststart runs after the user process has started, by `start`, before `start` returns.
/// (runc before 1.2 runs it at the end of `create` instead.)
#[test]
fn poststart_runs_when_the_process_has_started() -> Result<()> {
    let h = Harness::new()?;
    let out = h.dir("poststart")?;
    let mut b = h.bundle()?;
    b.bind(&out, "/hookout", false)?;
    b.add_hook(
        "poststart",
        recording_hook("poststart", &out.display().to_string()),
    )?;
    b.sh("touch /hookout/main; sleep 60")?;
    let id = h.id("poststart");
    h.create(&id, &b)?;
    let pid = h.pid(&id)?;
    assert!(
        !out.join("poststart.json").exists(),
        "poststart ran at create, before the process started"
    );
    h.start(&id)?;
    // By the time `start` returns the hook has run.
    let post = read_record(&out, "poststart", Duration::ZERO)?;
    assert_eq!(post.state["id"], id.as_str(), "{}", post.state);
    assert_eq!(post.state["pid"], pid, "{}", post.state);
    assert_eq!(post.state["status"], "running", "{}", post.state);
    assert_eq!(post.mntns, host_namespace("mnt")?);
    wait_for_file(&out.join("main"), h.timeout())?;
    Ok(())
}

#[test]
fn hooks_get_their_env_and_args() -> Result<()> {
    let h = Harness::new()?;
    let out = h.dir("hookenv")?;
    let file = out.join("env");
    let mut b = h.bundle()?;
    b.add_hook(
        "createRuntime",
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo \"$HOOK_VAR $0 $1\" > {}", file.display()), "zero", "one"],
            "env": ["HOOK_VAR=from-the-hook-env"]
        }),
    )?;
    b.args(&["true"])?;
    h.run_ok(&b)?;
    assert_eq!(fs::read_to_string(&file)?, "from-the-hook-env zero one\n");
    Ok(())
}

#[test]
fn a_failing_create_runtime_hook_fails_create_and_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.add_hook(
        "createRuntime",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 5"]}),
    )?;
    b.args(&["true"])?;
    let id = h.id("badhook");
    let out = h.try_create(&id, &b, &[])?;
    assert!(
        !out.success(),
        "create with a failing hook succeeded: {out}"
    );
    assert!(!h.cmd(&["state", &id])?.success());
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn a_hook_past_its_timeout_fails_create() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.add_hook(
        "createRuntime",
        json!({"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}),
    )?;
    b.args(&["true"])?;
    let id = h.id("slowhook");
    let started = Instant::now();
    let out = h.try_create(&id, &b, &[])?;
    let took = started.elapsed();
    assert!(!out.success(), "create with a hung hook succeeded: {out}");
    assert!(
        took < Duration::from_secs(15),
        "timeout not enforced: {took:?}"
    );
    h.check_no_trace(&id, &b)?;
    Ok(())
}
