//! `linux.seccomp`: the profile applies to the init and to exec'd processes; errno, kill, trap and
//! log actions; argument conditions; Docker's and containerd's default profile shape; notify refused.
//!
//! `fixtures/seccomp-default.json` is an allow-list profile in the shape containerd and Docker
//! generate for a container with the default capabilities on amd64: `defaultAction`
//! `SCMP_ACT_ERRNO` (EPERM), the default allow-list of syscall names (some of them unknown on
//! x86_64, such as `chown32`, which must be skipped), `personality` allowed for five argument
//! values, `clone` only without namespace flags (a masked comparison), `clone3` refused with ENOSYS
//! and `socket` refused for `AF_VSOCK`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use serde_json::{json, Value};
use skiff_integration::procfs::status_field;
use skiff_integration::{Bundle, Harness};

const DEFAULT_PROFILE: &str = include_str!("../fixtures/seccomp-default.json");

fn default_profile() -> Value {
    serde_json::from_str(DEFAULT_PROFILE).expect("the fixture is JSON")
}

/// The default profile without its `personality` rules, plus `extra` rules.
fn default_profile_with_personality(extra: Value) -> Value {
    let mut p = default_profile();
    let rules = p["syscalls"].as_array_mut().expect("syscalls");
    rules.retain(|r| r["names"] != json!(["personality"]));
    rules.push(extra);
    p
}

/// A bundle with a tmpfs on `/tmp` (so that file operations fail only because of the profile, not
/// because the root is read-only) and `profile`, if any, as `linux.seccomp`.
fn bundle_with(h: &Harness, profile: Option<Value>) -> Result<Bundle> {
    let mut b = h.bundle()?;
    b.add_mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))?;
    if let Some(profile) = profile {
        b.edit(|c| c["linux"]["seccomp"] = profile)?;
    }
    Ok(b)
}

/// mkdir and mkdirat fail with EDQUOT; everything else is allowed. The unknown name is skipped.
fn edquot_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["mkdir", "mkdirat", "skiff_no_such_syscall"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 122
        }]
    })
}

const MKDIR_SCRIPT: &str = "touch /tmp/file && echo touch-ok; mkdir /tmp/x; echo mkdir=$?";

#[test]
fn errno_rule_makes_mkdir_fail_in_the_init() -> Result<()> {
    let h = Harness::new()?;
    // Control: without the profile the same script makes the directory.
    let mut b = bundle_with(&h, None)?;
    b.sh(MKDIR_SCRIPT)?;
    assert_eq!(h.run_ok(&b)?, "touch-ok\nmkdir=0\n");

    let mut b = bundle_with(&h, Some(edquot_profile()))?;
    b.sh(MKDIR_SCRIPT)?;
    let id = h.id("edquot");
    let out = h.run(&id, &b, &[])?;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "touch-ok\nmkdir=1\n", "{out}");
    assert!(out.stderr.contains("Disk quota exceeded"), "{out}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn errno_rule_makes_mkdir_fail_in_an_exec_process() -> Result<()> {
    let h = Harness::new()?;
    let mut b = bundle_with(&h, Some(edquot_profile()))?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("edquot", &b)?;
    let out = h.exec_in(&id, &[], &["sh", "-c", MKDIR_SCRIPT])?;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "touch-ok\nmkdir=1\n", "{out}");
    assert!(out.stderr.contains("Disk quota exceeded"), "{out}");

    let out = h.exec_in(&id, &[], &["mkdir", "/tmp/y"])?;
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(out.stderr.contains("Disk quota exceeded"), "{out}");

    let out = h
        .exec_in(&id, &[], &["grep", "^Seccomp", "/proc/self/status"])?
        .ok()?;
    assert_eq!(status_field(&out.stdout, "Seccomp"), Some("2"), "{out}");
    Ok(())
}

#[test]
fn the_profile_applies_without_no_new_privileges_too() -> Result<()> {
    let h = Harness::new()?;
    // Without no_new_privs the filter must be loaded while the runtime still holds CAP_SYS_ADMIN
    // (kept effective across the identity change until the filter is in).
    let mut b = bundle_with(&h, Some(edquot_profile()))?;
    b.edit(|c| c["process"]["noNewPrivileges"] = json!(false))?;
    b.sh(&format!(
        "{MKDIR_SCRIPT}; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"
    ))?;
    let out = h.run_ok(&b)?;
    assert!(out.starts_with("touch-ok\nmkdir=1\n"), "{out}");
    assert_eq!(status_field(&out, "Seccomp"), Some("2"), "{out}");

    // The same with the default allow-list and a non-root user: only the capability sets and
    // execve follow the filter.
    let mut b = bundle_with(&h, Some(default_profile()))?;
    b.edit(|c| {
        c["process"]["noNewPrivileges"] = json!(false);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10]});
        c["process"]["cwd"] = json!("/tmp");
    })?;
    b.sh("id -u; pwd; grep ^Seccomp: /proc/self/status")?;
    let out = h.run_ok(&b)?;
    assert!(out.starts_with("1000\n/tmp\n"), "{out}");
    assert_eq!(status_field(&out, "Seccomp"), Some("2"), "{out}");
    Ok(())
}

/// An allow-list of what runc 1.1.5 calls after loading its filter (traced with strace for `run`
/// and `exec`, with and without no_new_privileges, a non-root user and a cwd) and what busybox
/// needs for [`STRICT_PROBE`]. It leaves out what runc never calls under its filter, such as
/// openat2, fchdir, close_range, poll, sendto and seccomp itself.
fn strict_profile() -> Value {
    let names = [
        "arch_prctl",
        "brk",
        "capget",
        "capset",
        "chdir",
        "clock_nanosleep",
        "clone",
        "close",
        "epoll_ctl",
        "epoll_pwait",
        "execve",
        "exit",
        "exit_group",
        "faccessat2",
        "fchown",
        "fcntl",
        "fstat",
        "fstatfs",
        "futex",
        "getcwd",
        "getdents64",
        "getegid",
        "geteuid",
        "getgid",
        "getpid",
        "getppid",
        "getrandom",
        "gettid",
        "getuid",
        "madvise",
        "mmap",
        "mprotect",
        "munmap",
        "nanosleep",
        "newfstatat",
        "openat",
        "prctl",
        "prlimit64",
        "read",
        "readlink",
        "rseq",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "sched_yield",
        "set_robust_list",
        "set_tid_address",
        "setgid",
        "setgroups",
        "setuid",
        "sigaltstack",
        "tgkill",
        "uname",
        "wait4",
        "write",
    ];
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": names.to_vec(), "action": "SCMP_ACT_ALLOW"}]
    })
}

const STRICT_PROBE: &str = "id -u; pwd; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status";

/// A bundle under [`strict_profile`] for user 1000 in /tmp, running `args`.
fn strict_bundle(h: &Harness, nnp: bool, args: &[&str]) -> Result<Bundle> {
    let mut b = h.bundle()?;
    b.edit(|c| {
        c["linux"]["seccomp"] = strict_profile();
        c["process"]["noNewPrivileges"] = json!(nnp);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["cwd"] = json!("/tmp");
    })?;
    b.args(args)?;
    Ok(b)
}

#[test]
fn a_strict_allow_list_that_runc_survives_runs_the_container_and_its_execs() -> Result<()> {
    // runc first: the profile must be one its own sequence survives.
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        for nnp in [false, true] {
            let want = format!("1000\n/tmp\nNoNewPrivs:\t{}\nSeccomp:\t2\n", nnp as u8);
            let b = strict_bundle(&h, nnp, &["sh", "-c", STRICT_PROBE])?;
            let id = h.id("strict");
            let out = h.run(&id, &b, &[])?;
            assert!(out.success(), "{who}, noNewPrivileges {nnp}: {out}");
            assert_eq!(out.stdout, want, "{who}, noNewPrivileges {nnp}: {out}");

            let b = strict_bundle(&h, false, &["sleep", "600"])?;
            let id = h.create_and_start("strict", &b)?;
            let flags: &[&str] = if nnp { &["--no-new-privs"] } else { &[] };
            let out = h.exec_in(&id, flags, &["sh", "-c", STRICT_PROBE])?;
            assert!(out.success(), "{who}, exec {flags:?}: {out}");
            assert_eq!(out.stdout, want, "{who}, exec {flags:?}: {out}");
            h.delete_force(&id)?;
        }
    }
    Ok(())
}

#[test]
fn kill_trap_and_log_actions() -> Result<()> {
    let h = Harness::new()?;
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["rmdir"], "action": "SCMP_ACT_TRAP"},
            {"names": ["link", "linkat"], "action": "SCMP_ACT_LOG"}
        ]
    });
    let mut b = bundle_with(&h, Some(profile))?;
    // Each command runs in a child shell: SIGSYS (31) kills it, the outer shell reports 128 + 31.
    b.sh("touch /tmp/a; ln /tmp/a /tmp/b && echo linked; \
          sh -c 'mkdir /tmp/d'; echo mkdir=$?; sh -c 'rmdir /tmp/a'; echo rmdir=$?")?;
    let out = h.run_ok(&b)?;
    assert_eq!(out, "linked\nmkdir=159\nrmdir=159\n");
    Ok(())
}

#[test]
fn docker_default_profile_runs_busybox() -> Result<()> {
    let h = Harness::new()?;
    let mut b = bundle_with(&h, Some(default_profile()))?;
    b.sh("ls /; mkdir /tmp/d && echo mkdir-ok; grep ^Seccomp /proc/self/status; echo ok")?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    for want in ["bin", "etc", "proc", "mkdir-ok", "ok"] {
        assert!(lines.contains(&want), "no {want:?} in:\n{out}");
    }
    assert_eq!(status_field(&out, "Seccomp"), Some("2"), "{out}");
    // One filter, as runc loads it (its ENOSYS rule for clone3 included).
    assert_eq!(status_field(&out, "Seccomp_filters"), Some("1"), "{out}");

    // Exec'd processes run under it too.
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("docker", &b)?;
    let out = h
        .exec_in(
            &id,
            &[],
            &[
                "sh",
                "-c",
                "ls / >/dev/null && echo exec-ok; grep ^Seccomp: /proc/self/status",
            ],
        )?
        .ok()?;
    assert!(out.stdout.starts_with("exec-ok\n"), "{out}");
    assert_eq!(status_field(&out.stdout, "Seccomp"), Some("2"), "{out}");
    Ok(())
}

#[test]
fn docker_default_profile_refuses_what_it_does_not_list() -> Result<()> {
    let h = Harness::new()?;
    // Control: unshare(CLONE_NEWUSER) needs no capability, so without a profile it works.
    let mut b = bundle_with(&h, None)?;
    b.sh("unshare -U true && echo unshared")?;
    assert_eq!(h.run_ok(&b)?, "unshared\n");

    let mut b = bundle_with(&h, Some(default_profile()))?;
    b.sh("unshare -U true; echo rc=$?")?;
    let id = h.id("docker");
    let out = h.run(&id, &b, &[])?;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "rc=1\n", "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    Ok(())
}

/// `linux64` calls personality(PER_LINUX = 0), `linux32` personality(PER_LINUX32 = 8).
const PERSONALITY_SCRIPT: &str = "linux64 true; echo linux64=$?; linux32 true; echo linux32=$?";

#[test]
fn personality_is_allowed_by_argument_value() -> Result<()> {
    let h = Harness::new()?;
    // The default profile allows 0 and 8 (separate rules for the same syscall).
    let mut b = bundle_with(&h, Some(default_profile()))?;
    b.sh(PERSONALITY_SCRIPT)?;
    assert_eq!(h.run_ok(&b)?, "linux64=0\nlinux32=0\n");

    // Only arg0 == 0: PER_LINUX32 falls to the default action.
    let only_zero = json!({
        "names": ["personality"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]
    });
    let mut b = bundle_with(&h, Some(default_profile_with_personality(only_zero)))?;
    b.sh(PERSONALITY_SCRIPT)?;
    let id = h.id("personality");
    let out = h.run(&id, &b, &[])?;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "linux64=0\nlinux32=1\n", "{out}");
    assert!(out.stderr.contains("personality"), "{out}");
    Ok(())
}

#[test]
fn masked_eq_compares_the_masked_argument_with_value_two() -> Result<()> {
    let h = Harness::new()?;
    // Refuse personality when (arg0 & 0xffff) == 8. With value and valueTwo swapped the rule would
    // ask (arg0 & 8) == 0xffff, which never holds, and linux32 would pass.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "args": [{"index": 0, "value": 0xffff, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]
        }]
    });
    let mut b = bundle_with(&h, Some(profile))?;
    b.sh(PERSONALITY_SCRIPT)?;
    let id = h.id("masked");
    let out = h.run(&id, &b, &[])?;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "linux64=0\nlinux32=1\n", "{out}");
    Ok(())
}

#[test]
fn comparison_operators() -> Result<()> {
    let h = Harness::new()?;
    // Each rule refuses exactly one of the two calls.
    for (op, value, want) in [
        ("SCMP_CMP_NE", 0, "linux64=0\nlinux32=1\n"),
        ("SCMP_CMP_GT", 0, "linux64=0\nlinux32=1\n"),
        ("SCMP_CMP_GE", 8, "linux64=0\nlinux32=1\n"),
        ("SCMP_CMP_LT", 8, "linux64=1\nlinux32=0\n"),
        ("SCMP_CMP_LE", 0, "linux64=1\nlinux32=0\n"),
    ] {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": value, "op": op}]
            }]
        });
        let mut b = bundle_with(&h, Some(profile))?;
        b.sh(PERSONALITY_SCRIPT)?;
        let id = h.id("cmp");
        let out = h.run(&id, &b, &[])?;
        assert!(out.success(), "{op} {value}: {out}");
        assert_eq!(out.stdout, want, "{op} {value}: {out}");
    }
    Ok(())
}

#[test]
fn conditions_on_the_same_argument_are_alternatives_as_in_runc() -> Result<()> {
    let h = Harness::new()?;
    // runc (libseccomp cannot AND two conditions on one argument) adds each as a rule of its own.
    let either = json!({
        "names": ["personality"],
        "action": "SCMP_ACT_ALLOW",
        "args": [
            {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}
        ]
    });
    let mut b = bundle_with(&h, Some(default_profile_with_personality(either)))?;
    b.sh(PERSONALITY_SCRIPT)?;
    assert_eq!(h.run_ok(&b)?, "linux64=0\nlinux32=0\n");
    Ok(())
}

fn assert_notify_refused(h: &Harness, profile: Value) -> Result<()> {
    let mut b = bundle_with(h, Some(profile))?;
    b.sh("echo must-not-run")?;
    let id = h.id("notify");
    let out = h.try_create(&id, &b, &[])?;
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(out.stderr.contains("seccomp"), "{out}");
    assert!(!h.stdout_of(&id)?.contains("must-not-run"));
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn notify_is_refused_and_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    assert_notify_refused(
        &h,
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }),
    )?;
    let listener = h.path("seccomp-agent.sock").display().to_string();
    assert_notify_refused(
        &h,
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": listener,
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }),
    )
}
