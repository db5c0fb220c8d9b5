//! The container lifecycle through the runtime's commands: create, start, state, kill, delete, run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use skiff_integration::host::{existing_cgroup_dirs, process_alive};
use skiff_integration::{wait_for_file, Bundle, Harness};

/// A script that writes `ready` to the bind-mounted `/gate`, then waits until the host creates
/// `/gate/go`.
const WAIT_FOR_GO: &str = "touch /gate/ready; while [ ! -e /gate/go ]; do sleep 0.02; done";

/// Bind a fresh host directory at `/gate` and return it.
fn gate(h: &Harness, bundle: &mut Bundle) -> Result<std::path::PathBuf> {
    let dir = h.dir("gate")?;
    bundle.bind(&dir, "/gate", false)?;
    Ok(dir)
}

fn open_gate(dir: &Path) -> Result<()> {
    fs::write(dir.join("go"), "")?;
    Ok(())
}

#[test]
fn create_leaves_a_created_container_with_a_pid_and_pid_file() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "30"])?;
    let id = h.id("create");
    let pid_file = h.path("pid");
    let pid_arg = pid_file.display().to_string();
    h.try_create(&id, &b, &["--pid-file", &pid_arg])?.ok()?;

    let state = h.state(&id)?;
    assert_eq!(state["status"], "created", "{state}");
    let pid = state["pid"].as_i64().expect("pid in state") as i32;
    assert!(pid > 0, "{state}");
    assert!(process_alive(pid), "init {pid} is not running");
    assert_eq!(fs::read_to_string(&pid_file)?.trim(), pid.to_string());
    // The user process has not been executed yet: the init waits for `start`.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))?;
    assert!(
        !cmdline.starts_with(b"sleep"),
        "user process already running before start: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(h.root().join(&id).is_dir(), "no state dir under --root");
    Ok(())
}

#[test]
fn start_runs_the_process_which_is_running_then_stopped() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let gate = gate(&h, &mut b)?;
    b.sh(&format!("echo hello-from-start; {WAIT_FOR_GO}"))?;
    let id = h.id("start");
    h.create(&id, &b)?;
    let created_pid = h.pid(&id)?;
    h.start(&id)?;
    wait_for_file(&gate.join("ready"), h.timeout())?;

    let state = h.state(&id)?;
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(state["pid"], created_pid, "pid changed across start");

    open_gate(&gate)?;
    let state = h.wait_status(&id, "stopped")?;
    assert_eq!(state["id"], id.as_str());
    assert!(h.stdout_of(&id)?.contains("hello-from-start"));
    Ok(())
}

#[test]
fn state_reports_oci_and_runc_fields() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["true"])?;
    b.edit(|c| c["annotations"] = json!({"org.skiff.test": "yes", "purpose": "state"}))?;
    let id = h.id("state");
    let before = std::time::SystemTime::now();
    h.create(&id, &b)?;
    let state = h.state(&id)?;

    let oci = state["ociVersion"].as_str().expect("ociVersion");
    assert!(oci.starts_with("1."), "{state}");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["status"], "created");
    assert!(state["pid"].as_i64().unwrap_or(0) > 0, "{state}");
    assert_eq!(state["bundle"], b.path_str().as_str(), "{state}");
    assert_eq!(
        state["rootfs"],
        b.rootfs().display().to_string().as_str(),
        "{state}"
    );
    assert_eq!(
        state["annotations"],
        json!({"org.skiff.test": "yes", "purpose": "state"}),
        "{state}"
    );
    assert!(state["owner"].is_string(), "owner missing: {state}");
    // `created` is an RFC 3339 time, from this test's run.
    let created = state["created"].as_str().expect("created");
    let year = created.get(..4).and_then(|y| y.parse::<u64>().ok());
    assert!(
        created.contains('T') && year.is_some(),
        "created: {created}"
    );
    let secs = before.duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let this_year = 1970 + secs / 31_556_952;
    assert!(
        year.unwrap() + 1 >= this_year,
        "created {created} is not recent"
    );
    Ok(())
}

#[test]
fn run_in_the_foreground_returns_the_exit_code_and_deletes() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("echo out-line; echo err-line >&2; exit 3")?;
    let id = h.id("run");
    let out = h.run(&id, &b, &[])?;
    assert_eq!(out.exit_code(), 3, "{out}");
    assert!(out.stdout.contains("out-line"), "{out}");
    assert!(out.stderr.contains("err-line"), "{out}");
    // A foreground run deletes the container when it exits.
    assert!(!h.cmd(&["state", &id])?.success());
    h.check_no_trace(&id, &b)?;

    b.args(&["true"])?;
    let out = h.run(&h.id("run0"), &b, &[])?;
    assert_eq!(out.exit_code(), 0, "{out}");
    Ok(())
}

#[test]
fn run_killed_by_a_signal_exits_128_plus_the_signal() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let id = h.id("runkill");
    let run = h.spawn_run(&id, &b, &[])?;
    h.wait_status(&id, "running")?;
    h.kill(&id, Some("KILL"))?;
    let out = run.wait()?;
    assert_eq!(out.exit_code(), 128 + 9, "{out}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn run_in_the_foreground_relays_signals_to_the_container() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let gate = gate(&h, &mut b)?;
    b.sh("trap 'exit 7' TERM; touch /gate/ready; while true; do sleep 0.02; done")?;
    let id = h.id("relay");
    let run = h.spawn_run(&id, &b, &[])?;
    wait_for_file(&gate.join("ready"), h.timeout())?;
    run.signal(libc::SIGTERM)?;
    let out = run.wait()?;
    assert_eq!(out.exit_code(), 7, "{out}");
    Ok(())
}

#[test]
fn run_detach_returns_with_the_container_running() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let gate = gate(&h, &mut b)?;
    b.sh(&format!("echo detached-output; {WAIT_FOR_GO}"))?;
    let id = h.id("detach");
    let out = h.run(&id, &b, &["--detach"])?;
    assert!(out.success(), "{out}");
    wait_for_file(&gate.join("ready"), h.timeout())?;
    assert_eq!(h.status(&id)?, "running");
    open_gate(&gate)?;
    h.wait_status(&id, "stopped")?;
    assert!(h.stdout_of(&id)?.contains("detached-output"));
    h.delete(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// Wait until the signal log the container keeps lists `want` as its last line.
fn wait_for_signal_line(log: &Path, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.lines().last() == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("signal log never ended with {want:?}: {text:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kill_by_default_name_and_number() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let gate = gate(&h, &mut b)?;
    b.sh("trap 'echo TERM >> /gate/signals' TERM; \
         trap 'echo USR1 >> /gate/signals' USR1; \
         trap 'echo USR2 >> /gate/signals' USR2; \
         touch /gate/ready; while true; do sleep 0.02; done")?;
    let id = h.id("kill");
    h.create(&id, &b)?;
    h.start(&id)?;
    wait_for_file(&gate.join("ready"), h.timeout())?;
    let log = gate.join("signals");

    h.kill(&id, None)?; // default: SIGTERM
    wait_for_signal_line(&log, "TERM")?;
    h.kill(&id, Some("10"))?; // SIGUSR1 by number
    wait_for_signal_line(&log, "USR1")?;
    h.kill(&id, Some("SIGUSR2"))?; // by name with the SIG prefix
    wait_for_signal_line(&log, "USR2")?;
    h.kill(&id, Some("USR1"))?; // by name without it
    wait_for_signal_line(&log, "USR1")?;
    assert_eq!(h.status(&id)?, "running");

    h.kill(&id, Some("KILL"))?;
    h.wait_status(&id, "stopped")?;
    assert_eq!(
        fs::read_to_string(&log)?.lines().collect::<Vec<_>>(),
        ["TERM", "USR1", "USR2", "USR1"]
    );
    Ok(())
}

#[test]
fn kill_all_signals_every_process_of_the_container() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    // Without a pid namespace, killing the init alone would leave its child running.
    b.remove_namespace("pid")?;
    let gate = gate(&h, &mut b)?;
    b.sh("sleep 60 & echo $! > /gate/child; touch /gate/ready; wait")?;
    let id = h.id("killall");
    h.create(&id, &b)?;
    h.start(&id)?;
    wait_for_file(&gate.join("ready"), h.timeout())?;
    let child: i32 = fs::read_to_string(gate.join("child"))?.trim().parse()?;
    assert!(process_alive(child));

    let out = h.cmd(&["kill", "--all", &id, "KILL"])?;
    assert!(out.success(), "{out}");
    h.wait_status(&id, "stopped")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_alive(child), "child {child} survived kill --all");
    Ok(())
}

#[test]
fn delete_removes_a_stopped_container_and_everything_it_made() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["true"])?;
    let id = h.id("delete");
    h.create(&id, &b)?;
    h.start(&id)?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    assert!(!h.cmd(&["state", &id])?.success(), "state after delete");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn delete_of_a_created_container_removes_it() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["true"])?;
    let id = h.id("delcreated");
    h.create(&id, &b)?;
    let pid = h.pid(&id)?;
    h.delete(&id)?;
    assert!(!process_alive(pid), "init {pid} still alive");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn delete_refuses_a_running_container_unless_forced() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let id = h.id("delforce");
    h.create(&id, &b)?;
    h.start(&id)?;
    let pid = h.pid(&id)?;

    let out = h.cmd(&["delete", &id])?;
    assert!(
        !out.success(),
        "delete of a running container succeeded: {out}"
    );
    assert_eq!(h.status(&id)?, "running");
    assert!(process_alive(pid));

    h.delete_force(&id)?;
    assert!(
        !process_alive(pid),
        "init {pid} still alive after delete --force"
    );
    assert!(!h.cmd(&["state", &id])?.success());
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn a_second_create_with_the_same_id_fails_with_already_exists() -> Result<()> {
    let h = Harness::new()?;
    let mut first = h.bundle()?;
    first.args(&["sleep", "30"])?;
    let mut second = h.bundle()?;
    second.args(&["sleep", "30"])?;
    let id = h.id("dup");
    h.create(&id, &first)?;
    let pid = h.pid(&id)?;

    let out = h.try_create(&id, &second, &[])?;
    assert!(!out.success(), "second create succeeded: {out}");
    assert!(
        out.stderr.to_lowercase().contains("exist"),
        "no 'already exists': {out}"
    );
    // The first container is untouched, the second left nothing.
    assert_eq!(h.status(&id)?, "created");
    assert_eq!(h.pid(&id)?, pid);
    assert_eq!(
        h.state(&id)?["bundle"],
        first.path_str().as_str(),
        "state now points at the second bundle"
    );
    let cgroup = second.cgroups_path().unwrap();
    assert!(existing_cgroup_dirs(&cgroup)?.is_empty());
    Ok(())
}

#[test]
fn concurrent_creates_with_the_same_id_let_exactly_one_win() -> Result<()> {
    let h = Harness::new()?;
    let mut a = h.bundle()?;
    a.args(&["sleep", "30"])?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "30"])?;
    let id = h.id("race");
    let spawn = |bundle: &Bundle| {
        h.spawn(
            &["create", "--bundle", &bundle.path_str(), &id],
            skiff_integration::Opts::default(),
        )
    };
    let (ra, rb) = (spawn(&a)?, spawn(&b)?);
    let (oa, ob) = (ra.wait()?, rb.wait()?);
    assert!(
        oa.success() != ob.success(),
        "want exactly one success:\n{oa}\n{ob}"
    );
    let (winner, loser) = if oa.success() { (&a, &b) } else { (&b, &a) };
    assert_eq!(h.status(&id)?, "created");
    assert_eq!(h.state(&id)?["bundle"], winner.path_str().as_str());
    let loser_cgroup = loser.cgroups_path().unwrap();
    assert!(existing_cgroup_dirs(&loser_cgroup)?.is_empty());
    Ok(())
}

/// Rounds of many creates of one id at once (as a soak found): each round has exactly one winner,
/// the record is the winner's, and nothing of a loser is left. A fresh state directory that is not
/// locked yet must never look like debris to another create of the id.
#[test]
fn many_concurrent_creates_of_one_id_never_make_two_owners() -> Result<()> {
    const CREATORS: usize = 8;
    const ROUNDS: usize = 6;
    let h = Harness::new()?;
    let mut bundles = Vec::new();
    for _ in 0..CREATORS {
        let mut b = h.bundle()?;
        b.args(&["sleep", "30"])?;
        bundles.push(b);
    }
    for round in 0..ROUNDS {
        let id = h.id(&format!("herd{round}"));
        let runs = bundles
            .iter()
            .map(|b| {
                h.spawn(
                    &["create", "--bundle", &b.path_str(), &id],
                    skiff_integration::Opts::default(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let outs = runs
            .into_iter()
            .map(|r| r.wait())
            .collect::<Result<Vec<_>>>()?;
        let winners: Vec<usize> = (0..CREATORS).filter(|&i| outs[i].success()).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: want exactly one winner:\n{}",
            outs.iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let winner = &bundles[winners[0]];
        assert_eq!(h.status(&id)?, "created", "round {round}");
        assert_eq!(h.state(&id)?["bundle"], winner.path_str().as_str());
        for (i, b) in bundles.iter().enumerate() {
            if i != winners[0] {
                let cgroup = b.cgroups_path().unwrap();
                assert!(
                    existing_cgroup_dirs(&cgroup)?.is_empty(),
                    "round {round}: loser {i}"
                );
            }
        }
        h.delete_force(&id)?;
        h.check_no_trace(&id, winner)?;
    }
    Ok(())
}

/// The window a soak found, held open: a create that has made the id's directory but not yet
/// locked it is paused (strace delays its mkdir's return), and a second create of the id comes in
/// meanwhile. Before the fix the second took the fresh directory for debris, removed it and made
/// its own; the first then locked that one, and both creates succeeded, the first overwriting the
/// second's record.
#[test]
fn a_create_paused_after_its_mkdir_keeps_its_directory() -> Result<()> {
    if !Path::new("/usr/bin/strace").exists() {
        eprintln!("SKIPPED: strace is not installed (scripts/setup.sh installs it)");
        return Ok(());
    }
    let h = Harness::new()?;
    let mut a = h.bundle()?;
    a.args(&["sleep", "30"])?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "30"])?;
    let id = h.id("paused");
    let slow_log = h.dir("paused-create")?.join("stderr");
    // The first two mkdir calls of the runtime: the state root's (which exists) and the id's.
    let slow = std::process::Command::new("/usr/bin/strace")
        .args(["-o", "/dev/null", "-e", "trace=mkdir,mkdirat"])
        .args(["-e", "inject=mkdir,mkdirat:delay_exit=400000:when=1..2"])
        .arg(skiff_integration::harness::runtime_binary())
        .arg("--root")
        .arg(h.root())
        .args(["create", "--bundle", &a.path_str(), &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // A file, not a pipe: a winning create's init keeps its stderr open.
        .stderr(fs::File::create(&slow_log)?)
        .spawn()?;
    std::thread::sleep(Duration::from_millis(600));
    let fast = h.cmd(&["create", "--bundle", &b.path_str(), &id])?;
    let slow = slow.wait_with_output()?;
    let slow_err = fs::read_to_string(&slow_log)?;
    assert_eq!(
        u8::from(fast.success()) + u8::from(slow.status.success()),
        1,
        "want exactly one winner:\npaused create: {}: {slow_err}\nsecond create: {fast}",
        slow.status
    );
    let winner = if slow.status.success() { &a } else { &b };
    assert_eq!(h.state(&id)?["bundle"], winner.path_str().as_str());
    h.delete_force(&id)?;
    h.check_no_trace(&id, winner)?;
    for loser in [&a, &b] {
        assert!(existing_cgroup_dirs(&loser.cgroups_path().unwrap())?.is_empty());
    }
    Ok(())
}

#[test]
fn status_is_stopped_once_the_init_is_gone() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let id = h.id("derived");
    h.create(&id, &b)?;
    h.start(&id)?;
    let pid = h.pid(&id)?;
    assert_eq!(h.status(&id)?, "running");
    // Kill the container's init behind the runtime's back: the recorded status must not be trusted.
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is this test's container.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn start_fails_on_a_stopped_container() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["true"])?;
    let id = h.id("restart");
    h.create(&id, &b)?;
    h.start(&id)?;
    h.wait_status(&id, "stopped")?;
    let out = h.cmd(&["start", &id])?;
    assert!(!out.success(), "second start succeeded: {out}");
    assert_eq!(h.status(&id)?, "stopped");
    Ok(())
}

#[test]
fn kill_of_a_stopped_container_fails_unless_all() -> Result<()> {
    // As runc: `kill` of a stopped container is an error, `kill --all` is not (containerd's runc
    // shim sends it before deleting every exited task).
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["true"])?;
    let id = h.id("killstopped");
    h.create(&id, &b)?;
    h.start(&id)?;
    h.wait_status(&id, "stopped")?;
    let out = h.cmd(&["kill", &id, "KILL"])?;
    assert!(!out.success(), "{out}");
    let out = h.cmd(&["kill", "--all", &id, "KILL"])?;
    assert!(out.success(), "{out}");
    assert_eq!(h.status(&id)?, "stopped");
    Ok(())
}

#[test]
fn commands_on_an_unknown_container_fail() -> Result<()> {
    let h = Harness::new()?;
    let id = format!("missing-{}", h.tag());
    for args in [
        vec!["state", id.as_str()],
        vec!["start", id.as_str()],
        vec!["kill", id.as_str()],
        vec!["delete", id.as_str()],
    ] {
        let out = h.cmd(&args)?;
        assert_eq!(out.exit_code(), 1, "{out}");
        assert!(!out.stderr.trim().is_empty(), "no error message: {out}");
    }
    Ok(())
}

#[test]
fn a_missing_state_root_is_made_private_as_in_runc() -> Result<()> {
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        let top = h.tmp().join("fresh-root");
        let root = top.join("a/b");
        let root_arg = root.display().to_string();
        let mut b = h.bundle()?;
        b.args(&["true"])?;
        let id = h.id("root");
        let path = b.path_str();
        let opts = || skiff_integration::Opts {
            no_root: true,
            ..Default::default()
        };
        let out = h.exec(
            &["--root", &root_arg, "create", "--bundle", &path, &id],
            opts(),
        )?;
        let modes: Vec<u32> = [&top, &top.join("a"), &root]
            .iter()
            .map(|d| {
                fs::metadata(d)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            })
            .collect::<std::io::Result<_>>()?;
        h.exec(&["--root", &root_arg, "delete", "--force", &id], opts())?
            .ok()?;
        out.ok()?;
        assert_eq!(modes, [0o700, 0o700, 0o700], "{who}");
        fs::remove_dir_all(&top)?;
    }
    Ok(())
}
