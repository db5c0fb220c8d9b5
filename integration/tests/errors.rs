//! Bad bundles and configs: exit status 1, a one-line error naming the field, nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use anyhow::Result;
use serde_json::json;
use skiff_integration::{Bundle, Harness, Output};

/// The non-empty lines of stderr.
fn error_lines(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// `create` must fail with status 1 and a single stderr line mentioning one of `words`
/// (case-insensitive), and leave nothing behind.
fn assert_rejected(h: &Harness, b: &Bundle, id: &str, words: &[&str]) -> Result<()> {
    assert_rejected_with(h, b, id, &[], words)
}

/// [`assert_rejected`] for `create` with `extra` flags.
fn assert_rejected_with(
    h: &Harness,
    b: &Bundle,
    id: &str,
    extra: &[&str],
    words: &[&str],
) -> Result<()> {
    let out = h.try_create(id, b, extra)?;
    assert_eq!(out.exit_code(), 1, "{out}");
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "want a one-line error: {out}");
    let line = lines[0].to_lowercase();
    assert!(
        words.iter().any(|w| line.contains(&w.to_lowercase())),
        "error does not mention any of {words:?}: {}",
        lines[0]
    );
    assert!(!line.contains("panicked"), "{out}");
    assert!(
        !h.cmd(&["state", id])?.success(),
        "state of a failed create"
    );
    h.check_no_trace(id, b)?;
    Ok(())
}

#[test]
fn missing_config_json() -> Result<()> {
    let h = Harness::new()?;
    let b = h.bundle()?;
    fs::remove_file(b.path().join("config.json"))?;
    assert_rejected(&h, &b, &h.id("noconfig"), &["config.json"])
}

#[test]
fn invalid_json() -> Result<()> {
    let h = Harness::new()?;
    let b = h.bundle()?;
    fs::write(
        b.path().join("config.json"),
        "{ \"ociVersion\": \"1.0.2\", oops }",
    )?;
    assert_rejected(&h, &b, &h.id("badjson"), &["json", "config"])
}

#[test]
fn unknown_namespace_type() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.set_namespace("bogus", None)?;
    assert_rejected(&h, &b, &h.id("badns"), &["namespace"])
}

#[test]
fn missing_process() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        c.as_object_mut().unwrap().remove("process");
    })?;
    assert_rejected(&h, &b, &h.id("noproc"), &["process"])
}

#[test]
fn missing_rootfs() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| c["root"]["path"] = json!("no-such-rootfs"))?;
    let id = h.id("noroot");
    let out = h.try_create(&id, &b, &[])?;
    assert_eq!(out.exit_code(), 1, "{out}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn ids_with_slashes_or_dot_dot_are_refused() -> Result<()> {
    let h = Harness::new()?;
    let b = h.bundle()?;
    for id in ["a/b", "..", "../escape", "."] {
        let out = h.try_create(id, &b, &[])?;
        assert_eq!(out.exit_code(), 1, "id {id:?}: {out}");
        let lines = error_lines(&out);
        assert_eq!(lines.len(), 1, "want a one-line error: {out}");
        assert!(
            lines[0].contains(id) || lines[0].to_lowercase().contains(" id"),
            "error does not name the id: {}",
            lines[0]
        );
        // Nothing was written outside (or inside) the root.
        assert!(!h.root().join("a").exists());
        assert!(!h.root().join("../escape").exists());
        h.check_no_trace(id, &b)?;
    }
    assert_eq!(fs::read_dir(h.root())?.count(), 0, "root not empty");
    Ok(())
}

/// Without a mount namespace runc runs a config (see namespaces.rs), but not one with masked or
/// read-only paths ("unable to restrict sys entries without a private MNT namespace").
#[test]
fn masked_paths_without_a_mount_namespace_are_refused_before_touching_the_host() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.remove_namespace("mount")?;
    let before = fs::read_to_string("/proc/self/mountinfo")?.lines().count();
    assert_rejected(
        &h,
        &b,
        &h.id("nomnt"),
        &["mount namespace", "MNT namespace"],
    )?;
    let after = fs::read_to_string("/proc/self/mountinfo")?.lines().count();
    assert_eq!(before, after, "the host's mount table changed");
    Ok(())
}

#[test]
fn hostname_without_a_uts_namespace_is_refused() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.remove_namespace("uts")?;
    b.edit(|c| c["hostname"] = json!("not-the-host"))?;
    let host = fs::read_to_string("/proc/sys/kernel/hostname")?;
    assert_rejected(&h, &b, &h.id("nouts"), &["hostname"])?;
    assert_eq!(fs::read_to_string("/proc/sys/kernel/hostname")?, host);
    Ok(())
}

/// The form of one stderr line.
#[derive(Debug, PartialEq, Eq)]
enum Form {
    /// logrus's text line: `time="…" level=error msg="…"`.
    Text,
    /// logrus's JSON line with `level`, `msg` and `time`.
    Json,
    /// Anything else (a bare message).
    Plain,
}

fn form(line: &str) -> Form {
    if line.starts_with("time=\"") && line.contains("\" level=error msg=\"") && line.ends_with('"')
    {
        return Form::Text;
    }
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v["level"] == "error" && v["msg"].is_string() && v["time"].is_string() => {
            Form::Json
        }
        _ => Form::Plain,
    }
}

/// What a client parses from a failed command: the exit code, the form of each stderr line, and
/// the text.
fn failure(h: &Harness, args: &[&str]) -> Result<(i32, Vec<Form>, String)> {
    let out = h.cmd(args)?;
    let forms = error_lines(&out).into_iter().map(form).collect();
    Ok((out.exit_code(), forms, out.stderr.clone()))
}

/// Error cases, `ID` standing for a running container: the command line, the exit code runc gives,
/// and words its message holds (those clients match on).
const CASES: &[(&[&str], i32, &[&str])] = &[
    (&["state", "nope"], 1, &["does not exist"]),
    (&["start", "nope"], 1, &["does not exist"]),
    (&["kill", "nope"], 1, &["does not exist"]),
    (&["delete", "nope"], 1, &["does not exist"]),
    (&["pause", "nope"], 1, &["does not exist"]),
    (&["resume", "nope"], 1, &["does not exist"]),
    (&["ps", "nope"], 1, &["does not exist"]),
    (&["exec", "nope", "true"], 255, &["does not exist"]),
    (&["create"], 1, &[]),
    (&["kill"], 1, &[]),
    (&["bogus"], 3, &[]),
    (&["--bogus", "list"], 1, &[]),
    (&["list", "--format", "bad"], 1, &[]),
    (
        &["--log-format", "json", "state", "nope"],
        1,
        &["does not exist"],
    ),
    (
        &["exec", "ID", "/nonexistent"],
        255,
        &["no such file or directory"],
    ),
    (
        &["exec", "ID", "nonexistent"],
        255,
        &["executable file not found in $PATH"],
    ),
    (&["exec", "ID", "/etc/passwd"], 255, &["permission denied"]),
    (&["exec", "ID", "/etc"], 255, &["permission denied"]),
    (
        &["exec", "--cwd", "/nonexistent", "ID", "true"],
        255,
        &["no such file or directory"],
    ),
    (&["exec", "-d", "-t", "ID", "true"], 255, &["console"]),
    (&["exec", "ID"], 255, &[]),
    (&["exec", "ID", "sh", "-c", "exit 3"], 3, &[]),
    (&["start", "ID"], 1, &["running"]),
    (&["delete", "ID"], 1, &["running"]),
];

/// Runs every case against a runtime.
fn all_failures(h: &Harness) -> Result<Vec<(i32, Vec<Form>, String)>> {
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("errors", &b)?;
    let mut seen = Vec::new();
    for (args, _, _) in CASES {
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "ID" { id.as_str() } else { a })
            .collect();
        seen.push(failure(h, &args)?);
    }
    h.delete_force(&id)?;
    Ok(seen)
}

#[test]
fn every_error_has_runcs_exit_code_stderr_form_and_wording() -> Result<()> {
    let runc = all_failures(&Harness::runc()?)?;
    let ours = all_failures(&Harness::new()?)?;
    for (((args, code, words), theirs), mine) in CASES.iter().zip(&runc).zip(&ours) {
        assert_eq!(theirs.0, *code, "runc {args:?}: {}", theirs.2);
        assert_eq!(mine.0, *code, "{args:?}: {}", mine.2);
        assert_eq!(
            mine.1, theirs.1,
            "{args:?}: stderr\n{}\nrunc's\n{}",
            mine.2, theirs.2
        );
        for w in *words {
            assert!(theirs.2.contains(w), "runc {args:?}: {}", theirs.2);
            assert!(mine.2.contains(w), "{args:?}: no {w:?} in {}", mine.2);
        }
        assert!(!mine.2.contains("(os error"), "{args:?}: {}", mine.2);
    }
    Ok(())
}

#[test]
fn with_a_log_file_stderr_has_the_bare_message_as_in_runc() -> Result<()> {
    for h in [Harness::runc()?, Harness::new()?] {
        let log = h.path("runtime.log");
        let log_arg = log.display().to_string();
        let out = h.cmd(&["--log", &log_arg, "state", "nope"])?;
        assert_eq!(out.exit_code(), 1, "{out}");
        let lines = error_lines(&out);
        assert_eq!(lines.len(), 1, "{out}");
        assert_eq!(form(lines[0]), Form::Plain, "{out}");
        assert!(lines[0].contains("does not exist"), "{out}");
        let text = fs::read_to_string(&log)?;
        let last = text.lines().next_back().unwrap_or_default();
        assert_eq!(form(last), Form::Text, "{text}");
        // The same message, bare.
        let quoted = last.split_once(" msg=").map(|(_, m)| m).unwrap_or_default();
        let msg: String = serde_json::from_str(quoted)?;
        assert_eq!(lines[0], msg, "{text}");
    }
    Ok(())
}

#[test]
fn run_with_a_missing_or_non_executable_program_fails_as_in_runc() -> Result<()> {
    let cases: [(&str, &str); 3] = [
        ("nonexistent", "executable file not found in $PATH"),
        ("/nonexistent", "no such file or directory"),
        ("/etc/passwd", "permission denied"),
    ];
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        for (program, words) in cases {
            let mut b = h.bundle()?;
            b.args(&[program])?;
            let id = h.id("noexe");
            let out = h.run(&id, &b, &[])?;
            assert_eq!(out.exit_code(), 1, "{who}: {out}");
            let lines = error_lines(&out);
            assert_eq!(
                lines.iter().map(|l| form(l)).collect::<Vec<_>>(),
                [Form::Text],
                "{who}: {out}"
            );
            assert!(lines[0].contains(words), "{who}: {out}");
            h.check_no_trace(&id, &b)?;
        }
    }
    Ok(())
}

/// runc refuses rootfsPropagation [r]private with --no-pivot ("not safe without pivot_root").
#[test]
fn private_root_propagation_without_pivot_root_is_refused() -> Result<()> {
    let h = Harness::new()?;
    for mode in ["rprivate", "private"] {
        let mut b = h.bundle()?;
        b.edit(|c| c["linux"]["rootfsPropagation"] = json!(mode))?;
        assert_rejected_with(&h, &b, &h.id("nopivot"), &["--no-pivot"], &["pivot_root"])?;
    }
    Ok(())
}

/// A harness bundle whose cgroup sits two levels below a top cgroup that does not exist yet.
fn nested_cgroup(b: &mut Bundle) -> Result<String> {
    let top = b.cgroups_path().expect("harness bundles have a cgroup");
    let path = format!("{top}/p/c");
    b.edit(|c| c["linux"]["cgroupsPath"] = json!(path))?;
    Ok(top)
}

/// A `config.json` that is a FIFO is refused at once (runc 1.1.5 blocks on it for ever), as is a
/// directory.
#[test]
fn a_config_json_that_is_not_a_regular_file_is_refused_at_once() -> Result<()> {
    let h = Harness::new()?;
    let b = h.bundle()?;
    let config = b.path().join("config.json");
    fs::remove_file(&config)?;
    nix::unistd::mkfifo(&config, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    let started = std::time::Instant::now();
    assert_rejected(&h, &b, &h.id("fifo"), &["regular file"])?;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    fs::remove_file(&config)?;
    fs::create_dir(&config)?;
    assert_rejected(&h, &b, &h.id("dir"), &["regular file", "directory"])?;
    Ok(())
}

/// `delete --force` (and `state`) of an id that is not a plain name is an error, as in runc
/// ("invalid container ID format", status 1), not a silent success.
#[test]
fn delete_force_of_an_invalid_id_is_an_error() -> Result<()> {
    let h = Harness::new()?;
    for id in ["../x", "", "x/y"] {
        for cmd in [&["delete", "--force", id][..], &["state", id]] {
            let out = h.cmd(cmd)?;
            assert_eq!(out.exit_code(), 1, "{cmd:?}: {out}");
            assert_eq!(error_lines(&out).len(), 1, "{cmd:?}: {out}");
            assert!(!out.stderr.contains("does not exist"), "{cmd:?}: {out}");
        }
    }
    Ok(())
}

/// A pid file that cannot be written fails `create`, `run -d` and `exec` (detached or not) and
/// leaves nothing: no container, no cgroup (the parents create made included), no process.
#[test]
fn a_failing_pid_file_leaves_nothing_behind() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let top = nested_cgroup(&mut b)?;
    let bad = h.path("no-such-dir").join("pid");
    let bad = bad.display().to_string();
    let id = h.id("pidfile");
    let path = b.path_str();
    for cmd in [&["create"][..], &["run", "-d"]] {
        let mut args = cmd.to_vec();
        args.extend([
            "--bundle",
            path.as_str(),
            "--pid-file",
            bad.as_str(),
            id.as_str(),
        ]);
        let out = h.cmd(&args)?;
        assert_eq!(out.exit_code(), 1, "{args:?}: {out}");
        assert!(out.stderr.contains("pid"), "{out}");
        h.check_no_trace(&id, &b)?;
        let left = skiff_integration::host::existing_cgroup_dirs(&top)?;
        assert!(left.is_empty(), "{args:?}: cgroups left: {left:?}");
    }
    h.try_create(&id, &b, &[])?.ok()?;
    h.start(&id)?;
    let procs = skiff_integration::host::required_cgroup_dirs(&format!("{top}/p/c"))?[0]
        .join("cgroup.procs");
    for detach in [true, false] {
        let mut flags = vec!["--pid-file", bad.as_str()];
        if detach {
            flags.push("-d");
        }
        let out = h.exec_in(&id, &flags, &["sleep", "61"])?;
        assert_ne!(out.exit_code(), 0, "{out}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let n = fs::read_to_string(&procs)?.lines().count();
            if n == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "exec -d={detach}: the exec'd process is left ({n} processes in the cgroup)"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// Configs of any size: 1 MiB of annotations (reported whole by `state`) and 100,000 environment
/// entries (all seen by the process). The parent/init channel once capped a message at 64 KiB.
#[test]
fn configs_of_any_size_work() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let big = "a".repeat(1 << 20);
    b.edit(|c| c["annotations"] = json!({ "big": big }))?;
    b.args(&["sleep", "60"])?;
    let id = h.id("big");
    h.try_create(&id, &b, &[])?.ok()?;
    let state = h.state(&id)?;
    assert_eq!(
        state["annotations"]["big"].as_str().map(str::len),
        Some(1 << 20)
    );
    h.start(&id)?;
    h.delete_force(&id)?;

    // Entries short enough that 100,000 of them (with their pointers) fit execve's limit of a
    // quarter of the 8 MiB stack; `env` is a busybox applet run directly (a shell would take
    // minutes to import them).
    let mut b = h.bundle()?;
    b.edit(|c| {
        let env = c["process"]["env"].as_array_mut().expect("env");
        env.extend((0..100_000).map(|i| json!(format!("E{i:05}=1"))));
    })?;
    b.args(&["env"])?;
    let out = h.run_ok(&b)?;
    let n = out.lines().filter(|l| l.starts_with('E')).count();
    assert_eq!(n, 100_000, "entries seen by the process");
    assert!(out.lines().any(|l| l == "E99999=1"));
    Ok(())
}
