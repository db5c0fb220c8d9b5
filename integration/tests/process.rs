//! `process` in config.json, seen from inside the container: args, env, cwd, user, umask,
//! capabilities, rlimits, noNewPrivileges, oomScoreAdj.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use anyhow::Result;
use serde_json::json;
use skiff_integration::caps::{self, CapSets};
use skiff_integration::spec::DEFAULT_CAPS;
use skiff_integration::Harness;

/// The value of a `Name:` line of a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
}

#[test]
fn args_env_and_cwd_reach_the_process() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&[
        "sh",
        "-c",
        "echo \"foo=$FOO\"; echo \"argc=$#\"; echo \"args=$1,$2\"; echo \"cwd=$(pwd)\"",
        "arg0",
        "first",
        "second arg",
    ])?;
    b.add_env("FOO=bar baz")?;
    b.edit(|c| c["process"]["cwd"] = json!("/etc"))?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["foo=bar baz", "argc=2", "args=first,second arg", "cwd=/etc"],
        "{out}"
    );
    Ok(())
}

#[test]
fn a_missing_cwd_is_created_even_in_a_read_only_rootfs() -> Result<()> {
    // runc creates process.cwd (root-owned, 0755) after pivot_root, before the rootfs becomes
    // read-only; the process as a non-root user still starts there.
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        c["root"]["readonly"] = json!(true);
        c["process"]["cwd"] = json!("/does/not/exist");
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    })?;
    b.sh("pwd; stat -c '%a %u:%g' .")?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["/does/not/exist", "755 0:0"], "{out}");
    Ok(())
}

#[test]
fn no_path_is_added_to_an_environment_without_one() -> Result<()> {
    // As runc: the process gets exactly process.env (no PATH), and a bare program name is then
    // not found (the error clients map to exit 127).
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| c["process"]["env"] = json!(["A=1"]))?;
    b.args(&["/usr/bin/env"])?;
    let out = h.run_ok(&b)?;
    assert!(!out.lines().any(|l| l.starts_with("PATH=")), "{out}");
    assert!(out.lines().any(|l| l == "A=1"), "{out}");

    b.args(&["env"])?;
    let id = h.id("nopath");
    let out = h.run(&id, &b, &[])?;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("executable file not found"), "{out}");
    Ok(())
}

#[test]
fn an_unknown_capability_name_is_ignored_with_a_warning() -> Result<()> {
    // As runc: a warning naming it, and the process runs with the known ones.
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = json!(["CAP_KILL", "CAP_FOO"]);
        }
    })?;
    b.args(&["grep", "^CapEff", "/proc/self/status"])?;
    let id = h.id("unknowncap");
    let out = h.run(&id, &b, &[])?;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout.trim(), "CapEff:\t0000000000000020", "{out}");
    assert!(
        out.stderr.contains("level=warning")
            && out
                .stderr
                .contains("ignoring unknown or unavailable capabilities: [CAP_FOO]"),
        "{out}"
    );
    Ok(())
}

#[test]
fn env_is_exactly_the_configured_environment() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["env"])?;
    b.add_env("ONLY_HERE=1")?;
    let out = h.run_ok(&b)?;
    let vars: Vec<&str> = out.lines().collect();
    assert!(vars.contains(&"ONLY_HERE=1"), "{out}");
    assert!(vars.contains(&"TERM=xterm"), "{out}");
    assert!(
        vars.iter().any(|v| v.starts_with("PATH=/usr/local/sbin")),
        "{out}"
    );
    // Nothing leaks from the runtime's own environment.
    assert!(
        !vars.iter().any(|v| v.starts_with("CARGO")),
        "runtime env leaked: {out}"
    );
    Ok(())
}

const ECHO_HOME: &str = "echo \"HOME=${HOME-unset}\"";

/// What `HOME` the process sees in each case, for run and for exec.
fn homes(h: &Harness) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    let cases: [(u32, bool, Option<&str>); 5] = [
        (0, true, None),
        (65534, true, None),
        (1000, true, None),
        (0, false, None),
        (0, true, Some("HOME=/custom")),
    ];
    for (uid, passwd, env) in cases {
        let mut b = h.bundle()?;
        b.sh(ECHO_HOME)?;
        b.edit(|c| c["process"]["user"] = json!({"uid": uid, "gid": uid}))?;
        if let Some(var) = env {
            b.add_env(var)?;
        }
        if !passwd {
            fs::remove_file(b.rootfs().join("etc/passwd"))?;
        }
        let out = h.run_ok(&b)?;
        seen.push(format!(
            "run uid {uid} passwd {passwd} env {env:?}: {}",
            out.trim()
        ));
    }
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("home", &b)?;
    for flags in [
        &[][..],
        &["-u", "65534"],
        &["-u", "1000"],
        &["--env", "HOME=/x"],
    ] {
        let out = h.exec_in(&id, flags, &["sh", "-c", ECHO_HOME])?.ok()?;
        seen.push(format!("exec {flags:?}: {}", out.stdout.trim()));
    }
    Ok(seen)
}

#[test]
fn home_comes_from_the_containers_passwd_as_in_runc() -> Result<()> {
    let ours = homes(&Harness::new()?)?;
    let runc = homes(&Harness::runc()?)?;
    assert_eq!(ours, runc);
    let values: Vec<&str> = ours
        .iter()
        .filter_map(|l| l.rsplit_once(": "))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        values,
        [
            "HOME=/root",
            "HOME=/nonexistent",
            "HOME=/",
            "HOME=/",
            "HOME=/custom",
            "HOME=/root",
            "HOME=/nonexistent",
            "HOME=/",
            "HOME=/x"
        ]
    );
    Ok(())
}

#[test]
fn user_uid_gid_and_additional_gids_apply() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("id; grep -E '^(Uid|Gid|Groups):' /proc/self/status")?;
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [10, 20]})
    })?;
    let out = h.run_ok(&b)?;
    assert!(out.contains("uid=1000"), "{out}");
    assert!(out.contains("gid=1001"), "{out}");
    let uids: Vec<&str> = status_field(&out, "Uid").split_whitespace().collect();
    assert_eq!(uids, ["1000"; 4], "{out}");
    let gids: Vec<&str> = status_field(&out, "Gid").split_whitespace().collect();
    assert_eq!(gids, ["1001"; 4], "{out}");
    let mut groups: Vec<&str> = status_field(&out, "Groups").split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["10", "20"], "{out}");
    Ok(())
}

#[test]
fn umask_applies_to_the_process_and_new_files() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.add_mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))?;
    b.sh("umask; touch /tmp/f; mkdir /tmp/d; stat -c '%a' /tmp/f /tmp/d")?;
    b.edit(|c| c["process"]["user"]["umask"] = json!(0o027))?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["0027", "640", "750"], "{out}");
    Ok(())
}

fn caps_inside(h: &Harness, b: &skiff_integration::Bundle) -> Result<CapSets> {
    let mut b_out = h.run_ok(b)?;
    b_out.push('\n');
    caps::parse_status(&b_out)
}

#[test]
fn default_capabilities_are_the_specs() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("grep Cap /proc/self/status")?;
    let got = caps_inside(&h, &b)?;
    let want = caps::mask(&DEFAULT_CAPS)?;
    assert_eq!(got.bounding, want, "{got:x?}");
    assert_eq!(got.permitted, want, "{got:x?}");
    assert_eq!(got.effective, want, "{got:x?}");
    assert_eq!(got.inheritable, 0, "{got:x?}");
    Ok(())
}

#[test]
fn all_five_capability_sets_apply_to_a_non_root_user() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("grep Cap /proc/self/status")?;
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"]
        });
    })?;
    let got = caps_inside(&h, &b)?;
    // After execve a non-root process keeps only its ambient set (no file capabilities on busybox).
    let nbs = caps::mask(&["CAP_NET_BIND_SERVICE"])?;
    let want = CapSets {
        inheritable: nbs,
        permitted: nbs,
        effective: nbs,
        bounding: caps::mask(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"])?,
        ambient: nbs,
    };
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn rlimits_apply() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("ulimit -n; ulimit -Hn; grep -E '^Max (open files|core file size)' /proc/self/limits")?;
    // Values at or below the current hard limits: lowering needs no privilege.
    b.edit(|c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 800},
            {"type": "RLIMIT_CORE", "soft": 1024, "hard": 4096}
        ])
    })?;
    let out = h.run_ok(&b)?;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["512"], "{out}");
    assert_eq!(lines[1], ["800"], "{out}");
    let core = lines
        .iter()
        .find(|l| l.starts_with(&["Max", "core"]))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(core[4..6], ["1024", "4096"], "{out}");
    Ok(())
}

#[test]
fn no_new_privileges_is_set_only_when_asked() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("grep NoNewPrivs /proc/self/status")?;
    let out = h.run_ok(&b)?;
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");

    b.edit(|c| c["process"]["noNewPrivileges"] = json!(false))?;
    let out = h.run_ok(&b)?;
    // Without it the flag is whatever the caller had (it is inherited and cannot be cleared).
    let host = fs::read_to_string("/proc/self/status")?;
    assert_eq!(
        status_field(&out, "NoNewPrivs"),
        status_field(&host, "NoNewPrivs"),
        "{out}"
    );
    Ok(())
}

#[test]
fn oom_score_adj_applies() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["cat", "/proc/self/oom_score_adj"])?;
    b.edit(|c| c["process"]["oomScoreAdj"] = json!(500))?;
    assert_eq!(h.run_ok(&b)?.trim(), "500");
    Ok(())
}

#[test]
fn sigpipe_is_not_ignored_and_ends_a_writer() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    // An ignored SIGPIPE inherited from the runtime would make `yes` spin
    // forever after `head` exits; the harness timeout would then fail this.
    b.sh("grep SigIgn /proc/self/status; yes | head -n 1")?;
    let out = h.run_ok(&b)?;
    let ignored = out
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("SigIgn line");
    assert_eq!(
        ignored & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE ignored: {out}"
    );
    assert!(out.ends_with("y\n"), "{out}");
    Ok(())
}

/// Runs `RUNTIME --root R args...` from a shell that ignores SIGHUP and SIGINT, as under `nohup` or
/// `trap '' HUP INT`; the ignored dispositions are inherited by the runtime.
fn run_ignoring_hup_and_int(h: &Harness, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' HUP INT; exec \"$@\"")
        .arg("sh")
        .arg(h.bin())
        .arg("--root")
        .arg(h.root())
        .args(args)
        .env(skiff_integration::harness::TAG_VAR, h.tag())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "{args:?}: {status}");
    Ok(())
}

/// SigIgn of a host pid, as a bit mask.
fn ignored_signals(pid: i32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(u64::from_str_radix(status_field(&status, "SigIgn"), 16)?)
}

/// Waits until `pid` is gone (or a zombie).
fn wait_gone(pid: i32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if !skiff_integration::host::process_alive(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// The signals a process must not have ignored: the caller's HUP and INT, and PIPE.
const MUST_NOT_IGNORE: u64 =
    1 << (libc::SIGHUP - 1) | 1 << (libc::SIGINT - 1) | 1 << (libc::SIGPIPE - 1);

/// Signals the runtime's caller ignores are not ignored in the container or its execs (runc resets
/// every disposition but the C library's own 32 and 33): SIGHUP ends the process. Returns the
/// init's and the exec'd process's SigIgn.
fn signals_reset(h: &Harness) -> Result<(u64, u64)> {
    let who = h.bin().display().to_string();
    // No pid namespace, so the init is not a namespace's pid 1 (which only gets the signals it
    // has handlers for) and a SIGHUP with the default disposition ends it.
    let mut b = h.bundle()?;
    b.remove_namespace("pid")?;
    b.args(&["sleep", "600"])?;
    let id = h.id("sigign");
    let bundle = b.path_str();
    run_ignoring_hup_and_int(h, &["run", "-d", "--bundle", &bundle, &id])?;
    let init_ignored = ignored_signals(h.pid(&id)?)?;
    assert_eq!(
        init_ignored & MUST_NOT_IGNORE,
        0,
        "{who}: init's SigIgn {init_ignored:x}"
    );

    let pid_file = h.path("exec.pid");
    let pid_arg = pid_file.display().to_string();
    run_ignoring_hup_and_int(
        h,
        &["exec", "-d", "--pid-file", &pid_arg, &id, "sleep", "600"],
    )?;
    let exec_pid: i32 = fs::read_to_string(&pid_file)?.trim().parse()?;
    let exec_ignored = ignored_signals(exec_pid)?;
    assert_eq!(
        exec_ignored & MUST_NOT_IGNORE,
        0,
        "{who}: exec's SigIgn {exec_ignored:x}"
    );
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(exec_pid, libc::SIGHUP) }, 0);
    assert!(
        wait_gone(exec_pid),
        "{who}: SIGHUP did not end the exec'd process"
    );

    h.kill(&id, Some("HUP"))?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    Ok((init_ignored, exec_ignored))
}

#[test]
fn signals_ignored_by_the_caller_are_reset_as_in_runc() -> Result<()> {
    let (runc_init, runc_exec) = signals_reset(&Harness::runc()?)?;
    let ours = signals_reset(&Harness::new()?)?;
    // Every disposition is the default; runc differs only in signal 32 (SIGCANCEL to the C library),
    // which its Go runtime leaves as the caller had it (ignored when the caller was started with
    // posix_spawn from a threaded program, as this test's commands are).
    assert_eq!(ours, (0, 0));
    let sig32 = 1 << (32 - 1);
    assert_eq!((runc_init & !sig32, runc_exec & !sig32), ours);
    Ok(())
}

/// Runs `RUNTIME --root R args...` with `input` on its stdin (a pipe, then end of file) and its
/// stdout and stderr in files, read as soon as it has exited. Returns (exit code, stdout,
/// stderr).
fn foreground(h: &Harness, args: &[&str], input: &[u8]) -> Result<(i32, Vec<u8>, String)> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let n = h.id("fgio");
    let (out_path, err_path) = (h.path(&format!("{n}.out")), h.path(&format!("{n}.err")));
    let mut child = Command::new(h.bin())
        .arg("--root")
        .arg(h.root())
        .args(args)
        .env(skiff_integration::harness::TAG_VAR, h.tag())
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(&err_path)?)
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let deadline = std::time::Instant::now() + h.timeout();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("{args:?} did not finish in {:?}", h.timeout());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let out = fs::read(&out_path)?;
    let err = fs::read_to_string(&err_path)?;
    feeder.join().unwrap();
    Ok((status.code().unwrap_or(-1), out, err))
}

/// The process's script: what its fds 0-2 are, its stdin to its end of file echoed, a line on stderr, a large
/// output (more than any pipe holds), a line written by a child after the process has exited
/// (`late`: `exec` waits for it, as runc; in `run` the pid namespace takes the child with the
/// init), and an exit status of its own.
const STDIO_SCRIPT: &str = "for f in 0 1 2; do readlink /proc/$$/fd/$f | cut -d: -f1; done; \
    echo \"stdin=$(cat)\"; echo to-stderr >&2; \
    head -c 1000000 /dev/zero | tr '\\0' x; echo; \
    (sleep 0.3; echo late) & exit 7";

/// What a command gave: exit code, stdout lines (the large output measured), stderr lines.
type Seen = (i32, Vec<String>, Vec<String>);

/// What one runtime's foreground `run` and `exec` (without a terminal) gave.
fn foreground_stdio(bin: &std::path::Path) -> Result<Vec<Seen>> {
    let h = Harness::with_binary(bin.to_path_buf())?;
    let mut b = h.bundle()?;
    b.args(&["sh", "-c", STDIO_SCRIPT])?;
    let summary = |(code, out, err): (i32, Vec<u8>, String)| {
        let out = String::from_utf8_lossy(&out).into_owned();
        let lines = out
            .lines()
            .map(|l| match l.len() {
                n if n > 100 && l.bytes().all(|c| c == b'x') => format!("{n} x"),
                _ => l.to_string(),
            })
            .collect();
        let err = err
            .lines()
            .filter(|l| !l.contains("level=warning"))
            .map(str::to_string)
            .collect();
        (code, lines, err)
    };
    let id = h.id("fgrun");
    let run = summary(foreground(
        &h,
        &["run", "--bundle", &b.path_str(), &id],
        b"hello\n",
    )?);
    let mut sleeper = h.bundle()?;
    sleeper.args(&["sleep", "600"])?;
    let id = h.create_and_start("fgexec", &sleeper)?;
    let exec = summary(foreground(
        &h,
        &["exec", &id, "sh", "-c", STDIO_SCRIPT],
        b"from exec\n",
    )?);
    h.delete_force(&id)?;
    Ok(vec![run, exec])
}

/// runc's foreground `run` and `exec` without a terminal give the process pipes (never the
/// caller's descriptors: here files) and copy them to and from their own stdio; they exit once
/// the output has reached its end, with the process's exit status. skiff does the same.
#[test]
fn foreground_stdio_is_pipes_copied_to_the_end_as_in_runc() -> Result<()> {
    let got = foreground_stdio(&skiff_integration::harness::runtime_binary())?;
    let pipes = ["pipe", "pipe", "pipe"];
    let (code, out, err) = &got[0];
    assert_eq!(*code, 7, "run: {out:?} {err:?}");
    assert_eq!(out[..3], pipes, "run: the process's fds 0-2");
    assert_eq!(out[3..], ["stdin=hello", "1000000 x"], "run");
    assert_eq!(*err, ["to-stderr"], "run");
    let (code, out, err) = &got[1];
    assert_eq!(*code, 7, "exec: {out:?} {err:?}");
    assert_eq!(out[..3], pipes, "exec: the process's fds 0-2");
    assert_eq!(out[3..], ["stdin=from exec", "1000000 x", "late"], "exec");
    assert_eq!(*err, ["to-stderr"], "exec");
    let runc = std::path::Path::new(skiff_integration::harness::RUNC);
    if runc.is_file() {
        assert_eq!(got, foreground_stdio(runc)?, "skiff, then runc");
    }
    Ok(())
}
