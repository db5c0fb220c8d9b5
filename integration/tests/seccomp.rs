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

#[test]
fn notify_is_refused_where_runc_refuses_it_and_leaves_nothing() -> Result<()> {
    for (h, skiff) in [(Harness::runc()?, false), (Harness::new()?, true)] {
        let who = h.bin().display().to_string();
        let nobody = h.path("nobody-listens.sock").display().to_string();
        let agent = skiff_integration::seccomp_agent::SeccompAgent::start(
            &h.path("agent.sock"),
            skiff_integration::seccomp_agent::Reply::Continue,
        )?;
        let listener = agent.path().display().to_string();
        let notify = |names: &[&str]| json!([{"names": names, "action": "SCMP_ACT_NOTIFY"}]);
        for (what, profile) in [
            (
                "no listenerPath",
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": notify(&["mkdir"])}),
            ),
            (
                "notify on write",
                json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": listener,
                       "syscalls": notify(&["mkdir", "write"])}),
            ),
            (
                "notify as the default",
                json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": listener}),
            ),
            (
                "nobody listening",
                json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": nobody,
                       "syscalls": notify(&["mkdir"])}),
            ),
        ] {
            let mut b = bundle_with(&h, Some(profile))?;
            b.sh("echo must-not-run")?;
            let id = h.id("notify");
            let out = h.try_create(&id, &b, &[])?;
            assert!(!out.success(), "{who}, {what}: {out}");
            assert!(!h.stdout_of(&id)?.contains("must-not-run"), "{who}, {what}");
            if skiff {
                assert_eq!(out.exit_code(), 1, "{what}: {out}");
                assert!(out.stderr.contains("seccomp"), "{what}: {out}");
                h.check_no_trace(&id, &b)?;
            } else {
                h.delete_force(&id)?;
            }
        }
        // None of them reached the agent.
        assert!(agent.finish()?.is_empty(), "{who}");
    }
    Ok(())
}

/// How a test program makes its one `mkdir("/tmp/d", 0755)`.
#[derive(Clone, Copy, Debug)]
enum Abi {
    /// `int $0x80` with i386 number 39.
    I386,
    /// `syscall` with the x32 number `0x40000000 | 83`.
    X32,
    /// `syscall` with the x86_64 number 83.
    X86_64,
}

/// A static x86_64 ELF that makes one `mkdir("/tmp/d", 0755)` through `abi` and exits (through
/// x86_64 `exit`) with the call's errno, or 0. Written byte by byte so that the test needs no
/// 32-bit toolchain; it is loaded below 4 GiB, where an `int $0x80` pointer argument can point.
fn mkdir_program(abi: Abi) -> Vec<u8> {
    const BASE: u32 = 0x40_0000;
    const HEADERS: u32 = 64 + 56;
    const CODE_LEN: u32 = 64;
    let path = BASE + HEADERS + CODE_LEN;
    let le = |v: u32| v.to_le_bytes();
    let mut code: Vec<u8> = Vec::new();
    let (nr, gate, arg1, arg2): (u32, &[u8], u8, u8) = match abi {
        // mov eax, nr; mov ebx, path; mov ecx, mode; int 0x80
        Abi::I386 => (39, &[0xcd, 0x80], 0xbb, 0xb9),
        // mov eax, nr; mov edi, path; mov esi, mode; syscall
        Abi::X32 => (0x4000_0053, &[0x0f, 0x05], 0xbf, 0xbe),
        Abi::X86_64 => (83, &[0x0f, 0x05], 0xbf, 0xbe),
    };
    code.push(0xb8);
    code.extend(le(nr));
    code.push(arg1);
    code.extend(le(path));
    code.push(arg2);
    code.extend(le(0o755));
    code.extend(gate);
    // neg eax; mov edi, eax; mov eax, 60 (exit); syscall
    code.extend([0xf7, 0xd8, 0x89, 0xc7, 0xb8, 60, 0, 0, 0, 0x0f, 0x05]);
    code.resize(CODE_LEN as usize, 0x90);
    code.extend(b"/tmp/d\0");
    let total = u64::from(HEADERS) + code.len() as u64;
    let mut elf: Vec<u8> = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(16, 0);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend(u64::from(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend(64u64.to_le_bytes()); // program headers
    elf.extend(0u64.to_le_bytes()); // no section headers
    elf.extend(0u32.to_le_bytes());
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend(half.to_le_bytes());
    }
    // PT_LOAD, R+X, the whole file at BASE.
    elf.extend(1u32.to_le_bytes());
    elf.extend(5u32.to_le_bytes());
    elf.extend(0u64.to_le_bytes());
    elf.extend(u64::from(BASE).to_le_bytes());
    elf.extend(u64::from(BASE).to_le_bytes());
    elf.extend(total.to_le_bytes());
    elf.extend(total.to_le_bytes());
    elf.extend(0x1000u64.to_le_bytes());
    elf.extend(code);
    elf
}

/// A bundle with the three programs as `/mk-<abi>` and `profile`, running `/mk-<abi>` and then
/// reporting its exit code and whether `/tmp/d` exists.
fn abi_bundle(h: &Harness, profile: Value, abi: Abi) -> Result<Bundle> {
    use std::os::unix::fs::PermissionsExt;
    let mut b = bundle_with(h, Some(profile))?;
    let prog = b.rootfs().join("mk");
    std::fs::write(&prog, mkdir_program(abi))?;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755))?;
    b.sh("/mk; echo rc=$?; if test -d /tmp/d; then echo made; fi")?;
    Ok(b)
}

fn mkdir_errno_profile(archs: &[&str]) -> Value {
    let mut p = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]
    });
    if !archs.is_empty() {
        p["architectures"] = json!(archs);
    }
    p
}

#[test]
fn i386_and_x32_calls_are_matched_against_the_listed_architectures_as_in_runc() -> Result<()> {
    const ALL: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
    // (architectures, ABI, what the container prints): an ABI the profile lists gets the
    // profile's rule for its own mkdir number; any other is killed with SIGSYS (128 + 31), as
    // libseccomp's bad-arch action does under runc.
    let cases: &[(&[&str], Abi, &str)] = &[
        (ALL, Abi::I386, "rc=122\n"),
        (ALL, Abi::X32, "rc=122\n"),
        (ALL, Abi::X86_64, "rc=122\n"),
        (&["SCMP_ARCH_X86_64"], Abi::I386, "rc=159\n"),
        (&["SCMP_ARCH_X86_64"], Abi::X32, "rc=159\n"),
        (&[], Abi::I386, "rc=159\n"),
        (
            &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            Abi::I386,
            "rc=122\n",
        ),
        (&["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], Abi::X32, "rc=159\n"),
    ];
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        for (archs, abi, want) in cases {
            let b = abi_bundle(&h, mkdir_errno_profile(archs), *abi)?;
            let out = h.run(&h.id("abi"), &b, &[])?;
            assert!(out.success(), "{who} {archs:?} {abi:?}: {out}");
            assert_eq!(out.stdout, *want, "{who} {archs:?} {abi:?}: {out}");
        }
    }
    Ok(())
}

#[test]
fn docker_default_profile_allows_and_refuses_i386_calls_by_its_list() -> Result<()> {
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        // The allow-list has mkdir: allowed through int $0x80 too.
        let b = abi_bundle(&h, default_profile(), Abi::I386)?;
        let out = h.run(&h.id("docker32"), &b, &[])?;
        assert_eq!(out.stdout, "rc=0\nmade\n", "{who}: {out}");
        // Without mkdir in the list: the default action (EPERM), not a kill.
        let mut p = default_profile();
        for rule in p["syscalls"].as_array_mut().expect("syscalls") {
            if let Some(names) = rule["names"].as_array_mut() {
                names.retain(|n| n != "mkdir");
            }
        }
        let b = abi_bundle(&h, p, Abi::I386)?;
        let out = h.run(&h.id("docker32"), &b, &[])?;
        assert_eq!(out.stdout, "rc=1\n", "{who}: {out}");
    }
    Ok(())
}

const ENOMEDIUM: i32 = 123;

/// mkdir and mkdirat on every x86 ABI go to the agent at `listener`.
fn notify_profile(listener: &std::path::Path) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener,
        "listenerMetadata": "skiff-test-metadata",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    })
}

/// The process state an agent got, checked against runtime-spec's `ContainerProcessState`.
fn check_process_state(got: &Value, id: &str, b: &Bundle, status: &str) {
    assert!(
        got["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{got}"
    );
    assert_eq!(got["fds"], json!(["seccompFd"]), "{got}");
    assert_eq!(got["metadata"], "skiff-test-metadata", "{got}");
    assert!(got["pid"].as_i64().is_some_and(|p| p > 0), "{got}");
    let state = &got["state"];
    assert_eq!(state["id"], id, "{got}");
    assert_eq!(state["status"], status, "{got}");
    assert_eq!(state["bundle"], b.path_str(), "{got}");
    assert!(state["ociVersion"].as_str().is_some(), "{got}");
}

#[test]
fn notify_sends_the_listener_to_the_agent_which_answers_mkdir() -> Result<()> {
    use skiff_integration::seccomp_agent::{Reply, SeccompAgent};
    let mkdirs = [libc::SYS_mkdir as i32, libc::SYS_mkdirat as i32];
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        // The agent refuses: the container sees its errno.
        let agent = SeccompAgent::start(&h.path("agent.sock"), Reply::Errno(ENOMEDIUM))?;
        let mut b = bundle_with(&h, Some(notify_profile(agent.path())))?;
        b.sh("mkdir /tmp/d; echo rc=$?; if test -e /tmp/d; then echo made; fi")?;
        let id = h.id("notify");
        let out = h.run(&id, &b, &[])?;
        assert_eq!(out.stdout, "rc=1\n", "{who}: {out}");
        assert!(out.stderr.contains("No medium found"), "{who}: {out}");
        let got = agent.finish()?;
        assert_eq!(got.len(), 1, "{who}: {got:?}");
        check_process_state(&got[0].state, &id, &b, "creating");
        assert_eq!(got[0].state["pid"], got[0].state["state"]["pid"], "{who}");
        assert!(!got[0].calls.is_empty(), "{who}: {got:?}");
        assert!(
            got[0].calls.iter().all(|c| mkdirs.contains(c)),
            "{who}: {got:?}"
        );

        // The agent lets the call through; without no_new_privileges too (the filter then goes in
        // with CAP_SYS_ADMIN kept for it). The listener does not stay open in the container.
        for nnp in [true, false] {
            let agent = SeccompAgent::start(&h.path("agent.sock"), Reply::Continue)?;
            let mut b = bundle_with(&h, Some(notify_profile(agent.path())))?;
            b.edit(|c| c["process"]["noNewPrivileges"] = json!(nnp))?;
            b.sh(
                "mkdir /tmp/d; echo rc=$?; if test -e /tmp/d; then echo made; fi; \
                  ls /proc/self/fd | tr '\\n' ' '",
            )?;
            let out = h.run(&h.id("notify"), &b, &[])?;
            assert_eq!(out.stdout, "rc=0\nmade\n0 1 2 3 ", "{who} nnp {nnp}: {out}");
            let got = agent.finish()?;
            assert_eq!(got.len(), 1, "{who}: {got:?}");
            assert!(!got[0].calls.is_empty(), "{who}: {got:?}");
        }
    }
    Ok(())
}

#[test]
fn notify_in_an_exec_process_sends_its_own_listener() -> Result<()> {
    use skiff_integration::seccomp_agent::{Reply, SeccompAgent};
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        let agent = SeccompAgent::start(&h.path("agent.sock"), Reply::Errno(ENOMEDIUM))?;
        let mut b = bundle_with(&h, Some(notify_profile(agent.path())))?;
        b.args(&["sleep", "600"])?;
        let id = h.create_and_start("notify", &b)?;
        let out = h.exec_in(&id, &[], &["mkdir", "/tmp/e"])?;
        assert_eq!(out.exit_code(), 1, "{who}: {out}");
        assert!(out.stderr.contains("No medium found"), "{who}: {out}");
        let init = h.pid(&id)?;
        h.delete_force(&id)?;
        let got = agent.finish()?;
        assert_eq!(got.len(), 2, "{who}: {got:?}");
        check_process_state(&got[0].state, &id, &b, "creating");
        check_process_state(&got[1].state, &id, &b, "running");
        // The exec'd process is the one filtered; the state is the container's.
        assert_eq!(got[1].state["state"]["pid"], init, "{who}");
        assert_ne!(got[1].state["pid"], init, "{who}");
        assert!(got[0].calls.is_empty(), "{who}: {got:?}");
        assert!(!got[1].calls.is_empty(), "{who}: {got:?}");
    }
    Ok(())
}

#[test]
fn notify_on_the_calls_the_runtime_makes_under_the_filter_is_served_as_in_runc() -> Result<()> {
    use skiff_integration::seccomp_agent::{Reply, SeccompAgent};
    // runc writes the listener's number to its parent with write(2) (refused as a notify rule)
    // and then reads; skiff does the same, so a profile notifying everything else it calls there
    // (the agent not yet having the descriptor when they are made would hang the create) works.
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        let agent = SeccompAgent::start(&h.path("agent.sock"), Reply::Continue)?;
        let mut profile = notify_profile(agent.path());
        profile["syscalls"][0]["names"] = json!([
            "mkdir", "sendto", "sendmsg", "recvfrom", "recvmsg", "read", "close", "poll", "ppoll"
        ]);
        let mut b = bundle_with(&h, Some(profile))?;
        b.sh("mkdir /tmp/d && echo made")?;
        let out = h.run(&h.id("notify"), &b, &[])?;
        assert_eq!(out.stdout, "made\n", "{who}: {out}");
        let got = agent.finish()?;
        assert_eq!(got.len(), 1, "{who}: {got:?}");
        assert!(
            got[0].calls.contains(&(libc::SYS_mkdir as i32)),
            "{who}: {got:?}"
        );
    }
    Ok(())
}
