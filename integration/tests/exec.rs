//! `exec`: a new process in a running container, seen from inside (output, exit code, env, cwd,
//! user, groups, capabilities, descriptors, terminal) and from the host (namespaces, cgroup, root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use skiff_integration::console::read_terminal;
use skiff_integration::host::{check_in_cgroup, process_alive, thaw_cgroup};
use skiff_integration::procfs::{fd_listing, status_field};
use skiff_integration::spec::DEFAULT_CAPS;
use skiff_integration::{caps, exec_args, Bundle, Harness, Opts};

/// A bundle whose init sleeps, created and started: something to exec into.
fn sleeper(h: &Harness) -> Result<(Bundle, String)> {
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("exec", &b)?;
    Ok((b, id))
}

/// The exit code of a runtime whose `exec` itself fails (the process never ran): 255, as runc's.
fn exec_failure_code() -> i32 {
    255
}

fn field(status: &str, name: &str) -> String {
    status_field(status, name)
        .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
        .to_string()
}

#[test]
fn exec_relays_output_and_exits_with_the_process_status() -> Result<()> {
    let h = Harness::new()?;
    let (b, id) = sleeper(&h)?;
    let out = h.exec_in(
        &id,
        &[],
        &["sh", "-c", "echo x; echo to-stderr >&2; exit 3"],
    )?;
    assert_eq!(out.exit_code(), 3, "{out}");
    assert_eq!(out.stdout, "x\n", "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");

    let out = h.exec_in(&id, &[], &["true"])?;
    assert_eq!(out.exit_code(), 0, "{out}");
    // Killed by a signal: 128 + the signal, as a shell reports it.
    let out = h.exec_in(&id, &[], &["sh", "-c", "kill -9 $$"])?;
    assert_eq!(out.exit_code(), 137, "{out}");

    // The container is untouched by what its exec'd processes did.
    assert_eq!(h.status(&id)?, "running");
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn exec_without_overrides_takes_the_containers_process() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    b.add_env("FROM_SPEC=yes")?;
    b.edit(|c| c["process"]["cwd"] = json!("/tmp"))?;
    let id = h.create_and_start("exec", &b)?;
    let out = h
        .exec_in(
            &id,
            &[],
            &["sh", "-c", "echo spec=$FROM_SPEC; pwd; id -u; id -g"],
        )?
        .ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["spec=yes", "/tmp", "0", "0"], "{out}");
    Ok(())
}

#[test]
fn exec_env_cwd_user_and_additional_gids_override_the_spec() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    b.add_env("KEEP=kept")?;
    b.add_env("REPLACE=old")?;
    let id = h.create_and_start("exec", &b)?;
    let script = "echo \"new=$NEW\"; echo keep=$KEEP; echo replace=$REPLACE; \
                  env | grep -c '^REPLACE='; pwd; grep -E '^(Uid|Gid|Groups):' /proc/self/status";
    // The same overrides with the long and the short flags (runc refuses a mix of both forms).
    let long = [
        "--env",
        "NEW=new value",
        "--env",
        "REPLACE=new",
        "--cwd",
        "/etc",
        "--user",
        "1000:1001",
        "--additional-gids",
        "10",
        "--additional-gids",
        "20",
    ];
    let short = [
        "-e",
        "NEW=new value",
        "-e",
        "REPLACE=new",
        "--cwd",
        "/etc",
        "-u",
        "1000:1001",
        "-g",
        "10",
        "-g",
        "20",
    ];
    for flags in [long, short] {
        let out = h.exec_in(&id, &flags, &["sh", "-c", script])?.ok()?;
        let text = &out.stdout;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..5],
            ["new=new value", "keep=kept", "replace=new", "1", "/etc"],
            "{out}"
        );
        let ids = |name: &str| -> Vec<String> {
            field(text, name)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        assert_eq!(ids("Uid"), ["1000"; 4], "{out}");
        assert_eq!(ids("Gid"), ["1001"; 4], "{out}");
        let groups: BTreeSet<String> = ids("Groups").into_iter().collect();
        assert_eq!(
            groups,
            BTreeSet::from(["10".to_string(), "20".to_string()]),
            "{out}"
        );
    }
    Ok(())
}

#[test]
fn exec_cap_adds_to_the_effective_set() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    let default = caps::mask(&DEFAULT_CAPS)?;

    let out = h
        .exec_in(&id, &[], &["grep", "^Cap", "/proc/self/status"])?
        .ok()?;
    let plain = caps::parse_status(&out.stdout)?;
    assert_eq!(plain.effective, default, "{out}");

    let out = h
        .exec_in(
            &id,
            &["-c", "CAP_SYS_ADMIN", "-c", "CAP_NET_RAW"],
            &["grep", "^Cap", "/proc/self/status"],
        )?
        .ok()?;
    let got = caps::parse_status(&out.stdout)?;
    let added = caps::mask(&["CAP_SYS_ADMIN", "CAP_NET_RAW"])?;
    assert_eq!(got.effective, default | added, "{got:x?}\n{out}");
    assert_eq!(got.permitted & added, added, "{got:x?}\n{out}");
    assert_eq!(got.bounding & added, added, "{got:x?}\n{out}");
    // The init keeps its own set.
    let init = fs::read_to_string(format!("/proc/{}/status", h.pid(&id)?))?;
    assert_eq!(caps::parse_status(&init)?.effective, default);
    Ok(())
}

#[test]
fn exec_process_lives_in_the_containers_pid_namespace() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    let init = h.pid(&id)?;
    let out = h
        .exec_in(
            &id,
            &[],
            &[
                "sh",
                "-c",
                "echo $$; readlink /proc/self/ns/pid; cat /proc/1/comm",
            ],
        )?
        .ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let pid: i32 = lines[0].parse()?;
    // Numbered in the container's namespace, where the init is 1: a small number, not a host pid.
    assert!(
        pid > 1 && pid < 100,
        "exec'd pid {pid} is not a container pid\n{out}"
    );
    let init_ns = fs::read_link(format!("/proc/{init}/ns/pid"))?;
    assert_eq!(lines[1], init_ns.display().to_string(), "{out}");
    assert_eq!(lines[2], "sleep", "pid 1 inside is not the init\n{out}");
    Ok(())
}

#[test]
fn exec_detach_pid_file_names_a_live_process_rooted_in_the_container() -> Result<()> {
    let h = Harness::new()?;
    let (b, id) = sleeper(&h)?;
    let init = h.pid(&id)?;
    let pid = h.exec_detached(&id, &[], &["sleep", "600"])?;
    assert!(process_alive(pid), "exec'd pid {pid} is not alive");
    assert_ne!(pid, init);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))?;
    assert!(
        cmdline.starts_with(b"sleep\x00600"),
        "pid {pid} runs {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // Its root is the container's rootfs (same directory, whatever path the host prints).
    let root = fs::metadata(format!("/proc/{pid}/root"))?;
    let rootfs = fs::metadata(b.rootfs())?;
    assert_eq!(
        (root.dev(), root.ino()),
        (rootfs.dev(), rootfs.ino()),
        "/proc/{pid}/root is not {}",
        b.rootfs().display()
    );
    // Every namespace is the init's.
    for kind in ["pid", "net", "ipc", "uts", "mnt", "cgroup", "user"] {
        let want = fs::read_link(format!("/proc/{init}/ns/{kind}"))?;
        let got = fs::read_link(format!("/proc/{pid}/ns/{kind}"))?;
        assert_eq!(got, want, "{kind} namespace of exec'd pid {pid}");
    }
    h.delete_force(&id)?;
    assert!(
        !process_alive(pid),
        "exec'd pid {pid} survived delete --force"
    );
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn exec_process_is_in_the_containers_cgroup() -> Result<()> {
    let h = Harness::new()?;
    let (b, id) = sleeper(&h)?;
    let pid = h.exec_detached(&id, &[], &["sleep", "600"])?;
    let cgroup = b
        .cgroups_path()
        .expect("harness bundles have a cgroups path");
    check_in_cgroup(pid, &cgroup)?;
    Ok(())
}

#[test]
fn exec_process_json_describes_the_process() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    let file = h.path("process.json");
    fs::write(
        &file,
        serde_json::to_string(&json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 1002, "additionalGids": [30]},
            "args": ["sh", "-c", "echo from=$FROM; pwd; id -u; id -g; id -G"],
            "env": ["PATH=/bin:/usr/bin", "FROM=process-json"],
            "cwd": "/tmp",
            "capabilities": {"bounding": [], "effective": [], "permitted": []}
        }))?,
    )?;
    let path = file.display().to_string();
    let out = h.exec_in(&id, &["--process", &path], &[])?.ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["from=process-json", "/tmp", "1000", "1002", "1002 30"],
        "{out}"
    );
    Ok(())
}

#[test]
fn exec_tty_goes_through_the_console_socket() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    let console = h.console_socket()?;
    let socket = console.path().display().to_string();
    let out = h.exec_in(
        &id,
        &["--tty", "--detach", "--console-socket", &socket],
        &[
            "sh",
            "-c",
            "echo hello-exec-tty; tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-stdio-are-ttys",
        ],
    )?;
    assert!(out.success(), "{out}");
    let capture = console.wait()?;
    let text = capture.output;
    assert!(text.contains("hello-exec-tty"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("all-stdio-are-ttys"), "{text:?}");
    Ok(())
}

#[test]
fn exec_tty_in_the_foreground_uses_the_callers_terminal() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    let pty = nix::pty::openpty(None, None)?;
    let args = exec_args(
        &id,
        &["-t"],
        &[
            "sh",
            "-c",
            "echo hello-fg-exec; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-stdio-are-ttys; exit 4",
        ],
    );
    let mut run = h.spawn(
        &args,
        Opts {
            terminal: Some(File::from(pty.slave)),
            ..Opts::default()
        },
    )?;
    let text = read_terminal(File::from(pty.master), &mut run, h.timeout())?;
    let out = run.wait()?;
    assert_eq!(out.exit_code(), 4, "{out}\nterminal: {text:?}");
    assert!(text.contains("hello-fg-exec"), "{text:?}");
    assert!(text.contains("all-stdio-are-ttys"), "{text:?}");
    Ok(())
}

#[test]
fn exec_into_a_stopped_container_fails() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["true"])?;
    let id = h.create_and_start("stopped", &b)?;
    h.wait_status(&id, "stopped")?;
    let out = h.exec_in(&id, &[], &["sh", "-c", "echo must-not-run"])?;
    assert_eq!(out.exit_code(), exec_failure_code(), "{out}");
    assert!(!out.stdout.contains("must-not-run"), "{out}");
    assert!(out.stderr.contains("stopped"), "{out}");
    Ok(())
}

/// Thaws a container's cgroup when dropped, so that a runtime stuck on a paused container leaves
/// no frozen process behind (frozen processes cannot even be killed).
struct ThawOnDrop(String);

impl Drop for ThawOnDrop {
    fn drop(&mut self) {
        let _ = thaw_cgroup(&self.0);
    }
}

#[test]
fn exec_into_a_paused_container_needs_ignore_paused() -> Result<()> {
    let h = Harness::new()?;
    let (b, id) = sleeper(&h)?;
    let _thaw = ThawOnDrop(
        b.cgroups_path()
            .expect("harness bundles have a cgroups path"),
    );
    h.cmd(&["pause", &id])?.ok()?;
    let out = h.exec_in(&id, &[], &["sh", "-c", "echo must-not-run"])?;
    assert_eq!(out.exit_code(), exec_failure_code(), "{out}");
    assert!(!out.stdout.contains("must-not-run"), "{out}");
    assert!(out.stderr.contains("paused"), "{out}");

    // With --ignore-paused the exec goes ahead; its process, in the frozen cgroup, runs once the
    // container is resumed. Meanwhile the container must stay manageable: `resume` must not wait
    // for the pending exec.
    let args = exec_args(
        &id,
        &["--ignore-paused"],
        &["sh", "-c", "echo ran-after-resume"],
    );
    let exec = h.spawn(&args, Opts::default())?;
    sleep(Duration::from_millis(300));
    let resume = h.exec(
        &["resume", &id],
        Opts {
            timeout: Some(Duration::from_secs(10)),
            ..Opts::default()
        },
    );
    let resume = resume.context("resume while an --ignore-paused exec is pending")?;
    assert!(resume.success(), "{resume}");
    let out = exec.wait()?;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "ran-after-resume\n", "{out}");
    Ok(())
}

#[test]
fn exec_no_new_privs_sets_the_flag() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    b.edit(|c| c["process"]["noNewPrivileges"] = json!(false))?;
    let id = h.create_and_start("nnp", &b)?;
    let host = fs::read_to_string("/proc/self/status")?;
    let inherited = field(&host, "NoNewPrivs");

    let out = h
        .exec_in(&id, &[], &["grep", "NoNewPrivs", "/proc/self/status"])?
        .ok()?;
    assert_eq!(field(&out.stdout, "NoNewPrivs"), inherited, "{out}");
    let out = h
        .exec_in(
            &id,
            &["--no-new-privs"],
            &["grep", "NoNewPrivs", "/proc/self/status"],
        )?
        .ok()?;
    assert_eq!(field(&out.stdout, "NoNewPrivs"), "1", "{out}");
    Ok(())
}

#[test]
fn exec_of_a_missing_binary_fails_with_a_message() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    let out = h.exec_in(&id, &[], &["/no/such/binary", "arg"])?;
    assert_eq!(out.exit_code(), exec_failure_code(), "{out}");
    assert!(out.stderr.contains("/no/such/binary"), "{out}");
    // Nothing of the failed exec is left in the container: only the init runs there.
    let ps = h.exec_in(&id, &[], &["ls", "/proc"])?.ok()?;
    let pids: Vec<&str> = ps
        .stdout
        .split_whitespace()
        .filter(|e| e.parse::<u32>().is_ok())
        .collect();
    assert_eq!(pids.len(), 2, "init and ls only: {ps}");
    assert_eq!(h.status(&id)?, "running");
    Ok(())
}

#[test]
fn exec_process_gets_only_stdio_descriptors() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    let out = h.exec_in(&id, &[], &["ls", "-l", "/proc/self/fd"])?.ok()?;
    let fds = fd_listing(&out.stdout)?;
    assert_eq!(
        fds.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "descriptors beyond stdio reached the exec'd process:\n{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn exec_preserve_fds_passes_fd_3() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    let target = h.path("fd3.txt");
    let args = exec_args(
        &id,
        &["--preserve-fds", "1"],
        &["sh", "-c", "echo through-fd-3 >&3; ls -l /proc/self/fd"],
    );
    let out = h
        .exec(
            &args,
            Opts {
                fd3: Some(File::create(&target)?),
                ..Opts::default()
            },
        )?
        .ok()?;
    let fds = fd_listing(&out.stdout)?;
    assert_eq!(
        fds.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "{}",
        out.stdout
    );
    assert_eq!(fs::read_to_string(&target)?, "through-fd-3\n");
    Ok(())
}

#[test]
fn exec_refuses_an_lsm_label_the_host_cannot_apply() -> Result<()> {
    let h = Harness::new()?;
    let (_b, id) = sleeper(&h)?;
    for (flag, word) in [("--apparmor", "apparmor"), ("--process-label", "selinux")] {
        // Skip the check on a host that has the LSM: there the label would be applied.
        let lsms = fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
        if lsms.split(',').any(|l| l.trim() == word) {
            continue;
        }
        let out = h.exec_in(
            &id,
            &[flag, "some-label"],
            &["sh", "-c", "echo must-not-run"],
        )?;
        assert_eq!(out.exit_code(), exec_failure_code(), "{out}");
        assert!(!out.stdout.contains("must-not-run"), "{out}");
        assert!(out.stderr.to_lowercase().contains(word), "{out}");
    }
    assert_eq!(h.status(&id)?, "running");
    Ok(())
}
