//! runc as the oracle: a matrix of `config.json` variants, each run on the same bundle by runc
//! (`/usr/sbin/runc`, 1.1.5) and by skiff, comparing what a user of the runtime sees.
//!
//! # What is compared
//!
//! For every variant the bundle is built once (busybox rootfs, the default spec of
//! `skiff_integration::spec`, the variant's edits) and run by each runtime in turn, each with its own
//! `--root` under its own temp dir, the same container id and the same `linux.cgroupsPath`. The
//! rootfs is rebuilt between the two runs (a runtime may create mount points or device nodes in
//! it). Each run yields named *sections* of lines, and the two runs' sections must be equal:
//!
//! - `exit`: the exit status of `run` (or of `create`, `start`, `exec` in exec-mode variants).
//! - `stderr`: the runtime's stderr. A runc-style log line (`time="…" level=L msg="…"`) is reduced
//!   to its level and the phrases clients parse from it (Docker's CLI maps `executable file not
//!   found` and `no such file or directory` to exit 127, `permission denied` to 126); the text of an
//!   error message is the runtime's own and not compared. Any other line is compared verbatim.
//! - `probe:*`: the stdout of a probe script run as the container process (`sh /parity-probe`):
//!   `/proc/self/status` fields (Uid/Gid/Groups, Cap*, NoNewPrivs, Seccomp, Seccomp_filters,
//!   SigIgn/SigBlk, Umask, allowed CPUs and memory nodes, speculation mitigation), `id`, `umask`,
//!   the cwd, hostname and domainname, the environment, `/proc/self/limits`, `oom_score_adj`,
//!   personality, which namespaces are the host's, the open descriptors, mountinfo, sysctls, the
//!   process's cgroups and the cgroup files it sees under `/sys/fs/cgroup`, `/dev` (type, numbers,
//!   mode, owner, whether it opens), network interfaces, which directories are writable, masked
//!   paths, plus the variant's own lines (`probe:extra`).
//! - `hooks:*`: per hook kind, its argv-visible cwd, sorted environment, open descriptors and the
//!   state JSON it got on stdin; and the order in which the hooks ran.
//! - `host:*`: the host afterwards: the state directories left under `--root`, the cgroup
//!   directories of the container's cgroups path left in any hierarchy, processes of the test left
//!   alive, mounts under the test's temp dirs (the bundle, bind sources) that were not there before
//!   the run, and, for variants that run alone (`exclusive`), any new mount anywhere on the host
//!   outside the temp dir.
//!
//! # Normalisation (what is legitimately random)
//!
//! - Paths: the bundle harness's temp dir becomes `$B`, the runtime harness's `$RT`; the tags in
//!   them (`$TAG`, `$RTTAG`) likewise. Longer strings are replaced first.
//! - mountinfo: mount ids are renumbered in order of appearance (a parent outside the listing is
//!   `ext`); anonymous device numbers (`0:N`) become `0:*`; peer group numbers of `shared:N`,
//!   `master:N`, `propagate_from:N` are renumbered in order of appearance. Lines for mount points
//!   under the temp dir that belong to other tests (other helpers run containers on this host) and
//!   under `/run/docker`, `/run/containerd`, `/var/lib/docker`, `/var/lib/containerd`, `/run/netns`
//!   are dropped (they only show in variants without a mount namespace).
//! - Namespaces: `type:[inode]` becomes `type:host` when it is the test process's, else `type:new`.
//! - The shell's pid (`$$`) stays when it is 1, else becomes `N`.
//! - Descriptor targets: pipe and socket inode numbers become `pipe:[*]` / `socket:[*]`, and
//!   `/dev/null (deleted)` is `/dev/null` (the host's node may be recreated during a run).
//! - Hook state JSON: one `key=value` line per member, in key order; the `pid` becomes 0, a
//!   `created` time `T`.
//! - Process leftovers are listed by command line, not pid.
//!
//! A difference fails the test unless [`KNOWN`] lists it: a variant name (or a prefix ending in `*`),
//! a section, a substring of the differing line, the host kinds it applies to, and why. An entry that
//! explains nothing on this host fails the test too (it is stale: remove it), except when
//! `PARITY_FILTER` runs only some variants.
//!
//! Knobs: `PARITY_FILTER` (run the variants whose name contains one of its comma-separated words), `PARITY_JOBS` (variants in
//! parallel, default 3), `PARITY_RUNC` (the oracle, default `/usr/sbin/runc`), `PARITY_VERBOSE=1`
//! (print every variant's sections), `PARITY_EXPLAIN=1` (print what each [`KNOWN`] entry explains),
//! `PARITY_ALL=1` (on cgroup v2 run every variant, not just
//! [`V2_SUBSET`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use skiff_integration::bundle::build_rootfs;
use skiff_integration::harness::{default_timeout, exec_args, runtime_binary, Opts, Output};
use skiff_integration::host::{self, CgroupMode};
use skiff_integration::{Bundle, Harness};

const DEFAULT_RUNC: &str = "/usr/sbin/runc";
const SECCOMP_DEFAULT: &str = include_str!("../fixtures/seccomp-default.json");

/// Which hosts a [`Known`] entry applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Any,
    /// cgroup v1 (or hybrid) hosts
    V1,
    /// hosts where the test runs with a soft RLIMIT_NOFILE below the hard one (the busybox guest
    /// of scripts/vm-test.sh; its systemd guest's service sets both alike)
    NofileSoftBelowHard,
}

/// One documented difference between skiff and runc.
#[derive(Debug)]
struct Known {
    /// the variant's name, or a prefix ending in `*` (`*` alone: every variant)
    variant: &'static str,
    /// the section (`exit`, `stderr`, `probe:env`, `host:mounts`, ...), or a prefix ending in `*`
    section: &'static str,
    /// patterns ([`glob`]: `*` wildcards, `^`/`$` anchors, else a substring): a differing line
    /// matching any of them is explained. A line starts with its side: `runc:  ` or `skiff: `.
    lines: &'static [&'static str],
    on: On,
    /// why: a runc bug, a host limit, a deliberate difference, or a fix in progress
    why: &'static str,
}

/// The variants run on a cgroup v2 host: the VM of scripts/vm-test.sh emulates its CPU and is
/// about five times slower, so it runs what the cgroup version, the kernel or the VM's setup can
/// change (cgroup mounts and files, resources, devices, namespaces, user namespaces, seccomp,
/// propagation, hooks, exec) and leaves the rest, which those do not touch, to the host.
const V2_SUBSET: &[&str] = &[
    "baseline",
    "caps-missing",
    "user-1000",
    "rlimits-none",
    "ns-all-new",
    "ns-cgroup",
    "ns-no-mount",
    "userns-basic",
    "mnt-cgroup-rw",
    "mnt-no-cgroup",
    "mnt-rbind-rro",
    "masked-file-and-dir",
    "propagation-rslave",
    "propagation-unbindable",
    "dev-*",
    "res-*",
    "seccomp-default",
    "seccomp-strict-nnp-false",
    "hooks-all",
    "hooks-prestart-fails",
    "apparmor-profile",
    "cgroups-path-nested",
    "combo-docker-like",
    "combo-resources-user-nnp",
    "exec-default",
    "exec-userns",
];

/// THE table of accepted differences. Everything else that differs fails the test.
///
/// Reasons: `being fixed: issue 11 item N` (remove the entry when the fix lands), `new:` (found
/// by this test, reported, not yet fixed), `runc bug`, `runc 1.1.5 lacks` (skiff implements a
/// newer runtime-spec field deliberately), `host`.
const KNOWN: &[Known] = &[
    // ---- in every variant -------------------------------------------------------------------
    Known {
        variant: "*",
        section: "*:status",
        lines: &["SigIgn:\t0000000080000000", "SigIgn:\t0000000000000000"],
        on: On::Any,
        why: "runc quirk: runc's (Go) init leaves signal 32 ignored across execve, so every runc \
              process has SigIgn bit 31 set; skiff resets every signal to its default (item 7)",
    },
    Known {
        variant: "oom-out-of-range",
        section: "stderr",
        lines: &[
            "^runc:  log level=fatal mentions=[]$",
            "^skiff: log level=error mentions=[]$",
        ],
        on: On::Any,
        why: "both refuse the out-of-range oomScoreAdj; runc logs it at level fatal, skiff at \
              level error",
    },
    // ---- issue 11 items, per variant ------------------------------------------------------
    Known {
        variant: "ns-no*",
        section: "host:mounts",
        lines: &[
            "^runc:  * on $B/bundle-0/rootfs ",
            "^runc:  * on $B/bundle-0/rootfs/",
        ],
        on: On::Any,
        why: "runc bug: without a mount namespace runc bind-mounts the rootfs on itself in the \
              host's namespace, mounts the config's mounts under it, and never unmounts them",
    },
    Known {
        variant: "*",
        section: "hooks:*.stdin",
        lines: &[
            "^runc:  ociVersion=\"1.0.2-dev\"$",
            "^skiff: ociVersion=\"1.2.1\"$",
        ],
        on: On::Any,
        why: "version: a hook's state names the runtime-spec version the runtime implements \
              (runc 1.1.5 was built with 1.0.2-dev; skiff, like runc 1.3, implements 1.2.1)",
    },
    Known {
        variant: "*",
        section: "hooks:poststart.stdin",
        lines: &["^runc:  status=\"created\"$", "^skiff: status=\"running\"$"],
        on: On::Any,
        why: "runc bug (runc issue 4347, fixed by runc PR 5186): runc 1.1.5 runs the poststart \
              hooks in `create`, before `start` and the startContainer hooks, so they see \
              `created`; the runtime-spec runs them once the process has started (skiff, crun)",
    },
    Known {
        variant: "*",
        section: "hooks:order",
        lines: &["order differs"],
        on: On::Any,
        why: "runc bug: runc 1.1.5 runs poststart before startContainer (see the poststart \
              state entry); every other hook runs in the same order",
    },
    Known {
        variant: "hooks-post*-fails",
        section: "*",
        lines: &["*"],
        on: On::Any,
        why: "deliberate (runtime-spec 1.2: warn and go on): runc 1.1.5 fails `run` when a \
              poststart hook fails and logs a failing poststop hook as an error; skiff warns",
    },
    Known {
        variant: "mnt-over-proc-sub",
        section: "stderr",
        lines: &[
            "^skiff: log level=error mentions=[]$",
            "^runc:  log level=error mentions=",
        ],
        on: On::Any,
        why: "deliberate: skiff refuses a mount over a child of /proc by runc 1.2+'s \
              checkProcMount rules (only proc itself and the lxcfs files may be mounted there); \
              runc 1.1.5 lets a tmpfs through and fails creating the mount point",
    },
    // ---- new: found by this test ----------------------------------------------------------
    Known {
        variant: "dev-redefine-null",
        section: "*",
        lines: &["*"],
        on: On::Any,
        why: "runc bug: redefining /dev/null in linux.devices (mode 0600) makes runc fail \
              `error reopening /dev/null inside container: operation not permitted`; skiff runs",
    },
    // ---- cgroup v2 (the VM) -------------------------------------------------------------------
    Known {
        variant: "rlimits-none",
        section: "probe:limits",
        lines: &["Max open files"],
        on: On::NofileSoftBelowHard,
        why: "runc quirk: runc 1.1.5 (Go 1.19) raises its own soft RLIMIT_NOFILE to the hard \
              limit, and with no process.rlimits the container inherits that; skiff passes its \
              caller's soft limit (visible where the two differ)",
    },
    // ---- runc 1.1.5 lacks what skiff implements (newer runtime-spec) ------------------------
    Known {
        variant: "ns-time",
        section: "*",
        lines: &["*"],
        on: On::Any,
        why: "runc 1.1.5 lacks the time namespace (runc 1.2 has it); skiff implements it",
    },
    Known {
        variant: "seccomp-archs-flags",
        section: "*",
        lines: &["*"],
        on: On::Any,
        why: "runc 1.1.5 lacks seccomp flags (`seccomp flags are not yet supported by runc`); \
              skiff implements them",
    },
    Known {
        variant: "personality-linux32",
        section: "probe:personality",
        lines: &["*"],
        on: On::Any,
        why: "runc 1.1.5 ignores linux.personality (runc 1.2 has it); skiff applies it",
    },
    Known {
        variant: "scheduler",
        section: "probe:extra",
        lines: &["*"],
        on: On::Any,
        why: "runc 1.1.5 ignores process.scheduler (runc 1.2 has it); skiff applies it",
    },
    Known {
        variant: "io-priority",
        section: "probe:extra",
        lines: &["*"],
        on: On::Any,
        why: "runc 1.1.5 ignores process.ioPriority (runc 1.2 has it); skiff applies it",
    },
    Known {
        variant: "domainname",
        section: "probe:*",
        lines: &["parity.domain", "(none)"],
        on: On::Any,
        why: "runc 1.1.5 ignores `domainname`; skiff sets it (runtime-spec 1.1)",
    },
    // ---- runc bugs ----------------------------------------------------------------------------
    Known {
        variant: "res-cpuset-invalid",
        section: "stderr",
        lines: &["^runc:  log level=warning"],
        on: On::V1,
        why: "runc's noise: failing to set cpuset.cpus it also warns `unable to get oom kill \
              count` (memory.oom_control is gone)",
    },
];

// ---------------------------------------------------------------------------------------------
// Config editing helpers

/// Set the value at a JSON pointer, creating objects on the way.
fn set(c: &mut Value, ptr: &str, val: Value) {
    let (parent, last) = ptr.rsplit_once('/').expect("pointer has a /");
    let mut cur = c;
    for p in parent.split('/').filter(|p| !p.is_empty()) {
        if !cur[p].is_object() {
            cur[p] = json!({});
        }
        cur = &mut cur[p];
    }
    cur[last] = val;
}

/// Remove the member at a JSON pointer, if there.
fn del(c: &mut Value, ptr: &str) {
    let (parent, last) = ptr.rsplit_once('/').expect("pointer has a /");
    if let Some(obj) = c.pointer_mut(parent).and_then(Value::as_object_mut) {
        obj.remove(last);
    }
}

/// Append to the array at a JSON pointer, creating it.
fn push(c: &mut Value, ptr: &str, val: Value) {
    if !c.pointer(ptr).is_some_and(Value::is_array) {
        set(c, ptr, json!([]));
    }
    c.pointer_mut(ptr)
        .and_then(Value::as_array_mut)
        .expect("array")
        .push(val);
}

fn mnt(dest: &str, kind: &str, src: &str, opts: &[&str]) -> Value {
    json!({"destination": dest, "type": kind, "source": src, "options": opts})
}

fn remove_ns(c: &mut Value, kind: &str) {
    if let Some(list) = c["linux"]["namespaces"].as_array_mut() {
        list.retain(|ns| ns["type"] != kind);
    }
}

fn caps(c: &mut Value, list: &[&str]) {
    for set_name in ["bounding", "effective", "permitted", "ambient"] {
        c["process"]["capabilities"][set_name] = json!(list);
    }
}

/// Every capability, in bit order.
const ALL_CAPS: [&str; 41] = skiff_integration::caps::CAPABILITIES;

/// The capabilities of [`ALL_CAPS`] in the test process's bounding set (a sandbox may lack some,
/// e.g. `CAP_SYS_RESOURCE`, and no runtime can grant those).
fn host_caps() -> Vec<&'static str> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Docker's default capability set.
const DOCKER_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn seccomp_default() -> Value {
    serde_json::from_str(SECCOMP_DEFAULT).expect("the fixture is JSON")
}

/// The default profile without `openat2` (issue 11 item 1: real allowlists lack it).
fn seccomp_strict() -> Value {
    let mut p = seccomp_default();
    for rule in p["syscalls"].as_array_mut().expect("syscalls") {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| n != "openat2");
        }
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Variants

/// What a variant's setup may use: the harness that owns the bundle (for host dirs, mounts,
/// namespaces) and the bundle's paths.
struct Ctx<'a> {
    h: &'a Harness,
    bundle: PathBuf,
    hooks: PathBuf,
}

impl Ctx<'_> {
    /// A host directory with a file and a tmpfs submount (`sub`, holding a file of its own).
    fn dir_with_submount(&self) -> Result<PathBuf> {
        self.submount_dir(false)
    }

    /// [`Ctx::dir_with_submount`] made a shared mount of its own first (the submount inside it, so
    /// that the harness can unmount both).
    fn shared_dir_with_submount(&self) -> Result<PathBuf> {
        self.submount_dir(true)
    }

    fn submount_dir(&self, shared: bool) -> Result<PathBuf> {
        let dir = self.h.dir("src")?;
        if shared {
            self.h.make_shared_mount(&dir)?;
        }
        fs::write(dir.join("file"), "host file\n")?;
        fs::create_dir(dir.join("sub"))?;
        self.h.mount_tmpfs(&dir.join("sub"))?;
        fs::write(dir.join("sub/inner"), "inner\n")?;
        Ok(dir)
    }

    /// A hook of `kind` recording its cwd, environment, descriptors and stdin under the hooks dir
    /// (`/hooks` inside the container for `startContainer`, which runs there).
    fn hook(&self, kind: &str, env: bool) -> Value {
        let dir = if kind == "startContainer" {
            "/hooks".to_string()
        } else {
            self.hooks.display().to_string()
        };
        let bb = "/bin/busybox";
        let script = format!(
            "d={dir}; echo {kind} >> $d/order; {bb} pwd > $d/{kind}.cwd; \
             {bb} env | {bb} sort > $d/{kind}.env; \
             for f in /proc/$$/fd/*; do echo \"${{f##*/}} $({bb} readlink $f)\"; done > $d/{kind}.fds; \
             {bb} cat > $d/{kind}.stdin"
        );
        let mut hook = json!({"path": bb, "args": ["busybox", "sh", "-c", script]});
        if env {
            hook["env"] = json!(["PATH=/bin:/usr/bin", "HOOK_ENV=set"]);
        }
        hook
    }

    /// Every hook kind recording, with `/hooks` bound into the container for `startContainer`.
    fn all_hooks(&self, c: &mut Value, env: bool) {
        for kind in [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ] {
            push(c, &format!("/hooks/{kind}"), self.hook(kind, env));
        }
        let src = self.hooks.display().to_string();
        push(c, "/mounts", mnt("/hooks", "bind", &src, &["rbind", "rw"]));
    }
}

type Setup = Arc<dyn Fn(&Ctx, &mut Value) -> Result<()> + Send + Sync>;
type Prep = Arc<dyn Fn(&Path) -> Result<()> + Send + Sync>;

#[derive(Clone)]
enum Mode {
    /// `run` in the foreground with the probe as the process
    Run,
    /// `create` + `start` of `sleep 600`, then `exec [flags] ID sh /parity-probe`
    Exec(Vec<String>),
}

#[derive(Clone)]
struct Variant {
    name: String,
    setup: Setup,
    /// run on each (re)built rootfs: files the variant needs in it
    prep: Option<Prep>,
    extra_probe: String,
    mode: Mode,
    /// signals the runtime command starts with ignored
    ignore: Vec<i32>,
    /// run alone: its effects on the host's mounts are checked host-wide
    exclusive: bool,
    /// how long each runtime command may take
    timeout: Duration,
}

fn v(
    name: &str,
    setup: impl Fn(&Ctx, &mut Value) -> Result<()> + Send + Sync + 'static,
) -> Variant {
    Variant {
        name: name.to_string(),
        setup: Arc::new(setup),
        prep: None,
        extra_probe: String::new(),
        mode: Mode::Run,
        ignore: Vec::new(),
        exclusive: false,
        // The harness's (30 s, or $SKIFF_IT_TIMEOUT: the emulated VM sets 120 s).
        timeout: default_timeout(),
    }
}

/// A variant that only edits the config.
fn cfg(name: &str, edit: impl Fn(&mut Value) + Send + Sync + 'static) -> Variant {
    v(name, move |_, c| {
        edit(c);
        Ok(())
    })
}

impl Variant {
    fn probe(mut self, extra: &str) -> Self {
        self.extra_probe = extra.to_string();
        self
    }
    fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }
    fn exec(mut self, flags: &[&str]) -> Self {
        self.mode = Mode::Exec(flags.iter().map(|s| s.to_string()).collect());
        self
    }
    fn ignoring(mut self, signals: &[i32]) -> Self {
        self.ignore = signals.to_vec();
        self
    }
    fn prep(mut self, f: impl Fn(&Path) -> Result<()> + Send + Sync + 'static) -> Self {
        self.prep = Some(Arc::new(f));
        self
    }
}

fn variants() -> Vec<Variant> {
    let mut list = Vec::new();
    list.extend(process_variants());
    list.extend(user_variants());
    list.extend(namespace_variants());
    list.extend(mount_variants());
    list.extend(propagation_variants());
    list.extend(device_and_resource_variants());
    list.extend(seccomp_variants());
    list.extend(hook_variants());
    list.extend(misc_variants());
    list.extend(combination_variants());
    list.extend(exec_variants());
    list
}

fn process_variants() -> Vec<Variant> {
    vec![
        cfg("baseline", |_| {}),
        cfg("args-exit-3", |c| {
            c["process"]["args"] = json!(["sh", "-c", "exit 3"])
        }),
        cfg("args-killed", |c| {
            c["process"]["args"] = json!(["sh", "-c", "kill -9 $$"])
        }),
        cfg("args-stderr", |c| {
            c["process"]["args"] = json!(["sh", "-c", "echo out; echo err >&2"])
        }),
        cfg("args-missing-abs", |c| {
            c["process"]["args"] = json!(["/nonexistent"])
        }),
        cfg("args-missing-path", |c| {
            c["process"]["args"] = json!(["nonexistent-cmd"])
        }),
        cfg("args-not-executable", |c| {
            c["process"]["args"] = json!(["/etc/passwd"])
        }),
        cfg("args-directory", |c| c["process"]["args"] = json!(["/tmp"])),
        cfg("args-empty", |c| c["process"]["args"] = json!([])),
        cfg("args-relative", |c| {
            c["process"]["args"] = json!(["bin/sh", "/parity-probe"])
        }),
        cfg("env-empty", |c| c["process"]["env"] = json!([])),
        cfg("env-no-path", |c| {
            c["process"]["env"] = json!(["TERM=xterm", "A=1"]);
        }),
        cfg("env-dup", |c| {
            push(c, "/process/env", json!("DUP=1"));
            push(c, "/process/env", json!("DUP=2"));
        }),
        cfg("env-home-set", |c| {
            push(c, "/process/env", json!("HOME=/custom"))
        }),
        cfg("env-odd-values", |c| {
            push(c, "/process/env", json!("X=a=b"));
            push(c, "/process/env", json!("EMPTY="));
            push(c, "/process/env", json!("SPACE=a b"));
        }),
        cfg("env-no-equals", |c| {
            push(c, "/process/env", json!("NOEQUALS"))
        }),
        cfg("env-empty-name", |c| push(c, "/process/env", json!("=x"))),
        cfg("cwd-tmp", |c| c["process"]["cwd"] = json!("/tmp")),
        cfg("cwd-missing-ro", |c| {
            c["process"]["cwd"] = json!("/does/not/exist")
        }),
        cfg("cwd-missing-rw", |c| {
            c["process"]["cwd"] = json!("/does/not/exist");
            c["root"]["readonly"] = json!(false);
        }),
        cfg("cwd-relative", |c| c["process"]["cwd"] = json!("tmp")),
        cfg("cwd-file", |c| c["process"]["cwd"] = json!("/etc/passwd")),
        cfg("umask-077", |c| c["process"]["user"]["umask"] = json!(0o77)),
        cfg("umask-0", |c| c["process"]["user"]["umask"] = json!(0)),
        cfg("rlimits-many", |c| {
            c["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NOFILE", "soft": 4096, "hard": 8192},
                {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": u64::MAX},
                {"type": "RLIMIT_STACK", "soft": 4194304, "hard": 8388608},
                {"type": "RLIMIT_MEMLOCK", "soft": 65536, "hard": 65536},
                {"type": "RLIMIT_MSGQUEUE", "soft": 1000, "hard": 1000}
            ])
        }),
        cfg("rlimits-none", |c| c["process"]["rlimits"] = json!([])),
        cfg("rlimits-unknown", |c| {
            c["process"]["rlimits"] = json!([{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}])
        }),
        cfg(
            "rlimits-soft-above-hard",
            |c| {
                c["process"]["rlimits"] =
                    json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}])
            },
        ),
        cfg("rlimits-dup", |c| {
            push(
                c,
                "/process/rlimits",
                json!({"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}),
            )
        }),
        cfg("caps-none", |c| caps(c, &[])),
        cfg("caps-all", |c| caps(c, &host_caps())),
        cfg("caps-beyond-host", |c| caps(c, &ALL_CAPS)),
        cfg("caps-docker", |c| caps(c, &DOCKER_CAPS)),
        cfg("caps-unknown", |c| caps(c, &["CAP_KILL", "CAP_FOO"])),
        cfg("caps-bounding-only", |c| {
            caps(c, &[]);
            c["process"]["capabilities"]["bounding"] = json!(["CAP_SYS_ADMIN", "CAP_KILL"]);
        }),
        cfg("caps-effective-not-permitted", |c| {
            c["process"]["capabilities"]["effective"] = json!(["CAP_SYS_ADMIN"]);
        }),
        cfg("caps-ambient-not-inheritable", |c| {
            c["process"]["capabilities"]["ambient"] = json!(["CAP_KILL"]);
            c["process"]["capabilities"]["inheritable"] = json!([]);
        }),
        cfg("caps-inheritable", |c| {
            c["process"]["capabilities"]["inheritable"] = json!(["CAP_KILL", "CAP_CHOWN"]);
        }),
        cfg("caps-missing", |c| del(c, "/process/capabilities")),
        cfg("nnp-false", |c| {
            c["process"]["noNewPrivileges"] = json!(false)
        }),
        cfg("oom-0", |c| c["process"]["oomScoreAdj"] = json!(0)),
        cfg("oom-500", |c| c["process"]["oomScoreAdj"] = json!(500)),
        cfg("oom-1000", |c| c["process"]["oomScoreAdj"] = json!(1000)),
        cfg("oom-out-of-range", |c| {
            c["process"]["oomScoreAdj"] = json!(1001)
        }),
        cfg("signals-caller-ignores", |_| {}).ignoring(&[libc::SIGHUP, libc::SIGINT]),
    ]
}

fn user_variants() -> Vec<Variant> {
    vec![
        cfg("user-1000", |c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000})
        }),
        cfg("user-nobody", |c| {
            c["process"]["user"] = json!({"uid": 65534, "gid": 65534})
        }),
        cfg(
            "user-additional-gids",
            |c| {
                c["process"]["user"] = json!({"uid": 0, "gid": 0, "additionalGids": [10, 20, 1000]})
            },
        ),
        cfg(
            "user-1000-additional-gids",
            |c| {
                c["process"]["user"] =
                    json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 5]})
            },
        ),
        cfg("user-1000-all-caps", |c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            caps(c, &host_caps());
        }),
        cfg("user-1000-umask", |c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "umask": 0o27})
        }),
        cfg("user-gid-only", |c| {
            c["process"]["user"] = json!({"uid": 0, "gid": 1000})
        }),
    ]
}

fn userns(c: &mut Value) {
    push(c, "/linux/namespaces", json!({"type": "user"}));
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
}

/// The mounts of a variant without a mount namespace: /proc only, and no masked or read-only
/// paths (runc refuses those without a mount namespace).
fn no_mount_ns_mounts(c: &mut Value) {
    c["linux"]["maskedPaths"] = json!([]);
    c["linux"]["readonlyPaths"] = json!([]);
    c["mounts"] = json!([mnt("/proc", "proc", "proc", &[])]);
    c["root"]["readonly"] = json!(false);
}

/// A config without any namespace the host's processes share nothing with is not safe to run
/// (it would work on the host's own mounts): these keep a mount namespace unless they say so.
fn namespace_variants() -> Vec<Variant> {
    vec![
        cfg("ns-all-new", |c| {
            push(c, "/linux/namespaces", json!({"type": "cgroup"}));
            userns(c);
        }),
        cfg("ns-cgroup", |c| {
            push(c, "/linux/namespaces", json!({"type": "cgroup"}))
        }),
        cfg("ns-mount-only", |c| {
            c["linux"]["namespaces"] = json!([{"type": "mount"}]);
            del(c, "/hostname");
        }),
        cfg("ns-no-pid", |c| remove_ns(c, "pid")),
        cfg("ns-no-net", |c| remove_ns(c, "network")),
        cfg("ns-no-ipc", |c| remove_ns(c, "ipc")),
        cfg("ns-no-uts-hostname", |c| remove_ns(c, "uts")),
        cfg("ns-no-uts", |c| {
            remove_ns(c, "uts");
            del(c, "/hostname");
        }),
        // runc refuses masked and read-only paths without a mount namespace
        cfg("ns-no-mount-masked", |c| remove_ns(c, "mount")),
        // Without a mount namespace both runtimes build the rootfs in the host's namespace and
        // chroot into it (the probe is at /parity-probe as everywhere); /proc is the only mount
        // (runc 1.1.5's init needs /proc/self/fd to close its descriptors before the execve).
        cfg("ns-no-mount", |c| {
            remove_ns(c, "mount");
            no_mount_ns_mounts(c);
        }),
        cfg("ns-none", |c| {
            c["linux"]["namespaces"] = json!([]);
            no_mount_ns_mounts(c);
            del(c, "/hostname");
        }),
        v("ns-net-path", |ctx, c| {
            let ns = ctx.h.netns()?;
            remove_ns(c, "network");
            push(
                c,
                "/linux/namespaces",
                json!({"type": "network", "path": ns.display().to_string()}),
            );
            Ok(())
        }),
        cfg("ns-path-missing", |c| {
            remove_ns(c, "network");
            push(
                c,
                "/linux/namespaces",
                json!({"type": "network", "path": "/nonexistent/netns"}),
            );
        }),
        cfg("ns-unknown-type", |c| {
            push(c, "/linux/namespaces", json!({"type": "foo"}))
        }),
        cfg("ns-duplicate", |c| {
            push(c, "/linux/namespaces", json!({"type": "pid"}))
        }),
        cfg("ns-time", |c| {
            push(c, "/linux/namespaces", json!({"type": "time"}))
        }),
        cfg("userns-basic", userns),
        cfg("userns-user-1000", |c| {
            userns(c);
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        }),
        cfg("userns-multi-range", |c| {
            push(c, "/linux/namespaces", json!({"type": "user"}));
            c["linux"]["uidMappings"] = json!([
                {"containerID": 0, "hostID": 100000, "size": 1000},
                {"containerID": 1000, "hostID": 201000, "size": 64536}
            ]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        }),
        cfg("userns-no-mappings", |c| {
            push(c, "/linux/namespaces", json!({"type": "user"}))
        }),
        cfg("userns-mappings-without-ns", |c| {
            c["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        }),
        cfg(
            "sysctl-net",
            |c| {
                c["linux"]["sysctl"] =
                    json!({"net.ipv4.ip_forward": "1", "net.core.somaxconn": "512"})
            },
        ),
        cfg("sysctl-ipc", |c| {
            c["linux"]["sysctl"] = json!({"kernel.shmmax": "1048576", "kernel.msgmax": "4096"})
        }),
        cfg("sysctl-domainname", |c| {
            c["linux"]["sysctl"] = json!({"kernel.domainname": "parity.example"})
        }),
        cfg("sysctl-net-host-netns", |c| {
            remove_ns(c, "network");
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        }),
        cfg("sysctl-unknown", |c| {
            c["linux"]["sysctl"] = json!({"net.ipv4.no_such_knob": "1"})
        }),
        cfg("sysctl-not-namespaced", |c| {
            c["linux"]["sysctl"] = json!({"vm.swappiness": "10"})
        }),
        cfg("sysctl-bad-value", |c| {
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "x"})
        }),
        cfg("sysctl-slash-form", |c| {
            c["linux"]["sysctl"] = json!({"net/ipv4/ip_forward": "1"})
        }),
    ]
}

const MNT_PROBE: &str = "for p in /m /m/sub /m/file /m/sub/inner; do \
    if [ -e $p ]; then echo \"$p $(stat -c '%F %a %u:%g' $p) $(cat $p 2>/dev/null | head -c 20)\"; \
    else echo \"$p missing\"; fi; done; \
    touch /m/w 2>/dev/null && echo m-writable && rm -f /m/w || echo m-read-only; \
    touch /m/sub/w 2>/dev/null && echo sub-writable && rm -f /m/sub/w || echo sub-read-only";

/// A variant binding a host directory with a tmpfs submount at `/m`.
fn bind_variant(name: &str, kind: &'static str, opts: &'static [&'static str]) -> Variant {
    v(name, move |ctx, c| {
        let src = ctx.dir_with_submount()?;
        push(
            c,
            "/mounts",
            mnt("/m", kind, &src.display().to_string(), opts),
        );
        Ok(())
    })
    .probe(MNT_PROBE)
}

fn mount_variants() -> Vec<Variant> {
    vec![
        cfg("mnt-tmpfs-options", |c| {
            push(
                c,
                "/mounts",
                mnt(
                    "/scratch",
                    "tmpfs",
                    "tmpfs",
                    &[
                        "size=1m",
                        "mode=700",
                        "nr_inodes=100",
                        "uid=1000",
                        "gid=1000",
                    ],
                ),
            )
        })
        .probe("stat -c '%a %u:%g' /scratch; df -k /scratch | tail -n 1 | awk '{print $2}'"),
        cfg("mnt-tmpfs-plain", |c| {
            push(
                c,
                "/mounts",
                json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}),
            )
        }),
        cfg("mnt-tmpfs-flags", |c| {
            push(
                c,
                "/mounts",
                mnt(
                    "/scratch",
                    "tmpfs",
                    "tmpfs",
                    &["ro", "nosuid", "nodev", "noexec", "noatime"],
                ),
            )
        }),
        cfg("mnt-tmpfs-bad-option", |c| {
            push(
                c,
                "/mounts",
                mnt("/scratch", "tmpfs", "tmpfs", &["foo=bar"]),
            )
        }),
        cfg("mnt-tmpcopyup", |c| {
            push(c, "/mounts", mnt("/etc", "tmpfs", "tmpfs", &["tmpcopyup"]))
        })
        .probe("ls /etc; cat /etc/group"),
        bind_variant("mnt-rbind-rw", "bind", &["rbind", "rw"]),
        bind_variant("mnt-bind-nonrecursive", "bind", &["bind"]),
        bind_variant("mnt-rbind-ro", "bind", &["rbind", "ro"]),
        bind_variant("mnt-rbind-rro", "bind", &["rbind", "rro"]),
        bind_variant("mnt-bind-rro", "bind", &["bind", "rro"]),
        bind_variant(
            "mnt-rbind-rattrs",
            "bind",
            &[
                "rbind",
                "rnosuid",
                "rnodev",
                "rnoexec",
                "rnoatime",
                "rnosymfollow",
            ],
        ),
        bind_variant(
            "mnt-rbind-rattrs-clear",
            "bind",
            &[
                "rbind",
                "rrw",
                "rsuid",
                "rdev",
                "rexec",
                "rstrictatime",
                "rsymfollow",
            ],
        ),
        bind_variant(
            "mnt-rbind-rdiratime",
            "bind",
            &["rbind", "rnodiratime", "rrelatime"],
        ),
        bind_variant(
            "mnt-rbind-flags",
            "bind",
            &["rbind", "nosuid", "nodev", "noexec", "noatime"],
        ),
        bind_variant("mnt-bind-typeless", "none", &["rbind", "ro"]),
        v("mnt-bind-file", |ctx, c| {
            let dir = ctx.h.dir("file")?;
            fs::write(dir.join("f"), "bound file\n")?;
            let src = dir.join("f").display().to_string();
            push(
                c,
                "/mounts",
                mnt("/etc/bound", "bind", &src, &["bind", "ro"]),
            );
            Ok(())
        })
        .probe("cat /etc/bound; stat -c '%F' /etc/bound"),
        cfg("mnt-bind-missing-source", |c| {
            push(
                c,
                "/mounts",
                mnt("/m", "bind", "/nonexistent/src", &["rbind"]),
            )
        }),
        cfg("mnt-dest-nested", |c| {
            push(c, "/mounts", mnt("/a/b/c", "tmpfs", "tmpfs", &[]))
        }),
        cfg("mnt-dest-relative", |c| {
            push(c, "/mounts", mnt("rel", "tmpfs", "tmpfs", &[]))
        }),
        cfg("mnt-proc-elsewhere", |c| {
            push(c, "/mounts", mnt("/proc2", "proc", "proc", &[]))
        }),
        cfg("mnt-sysfs-rw", |c| {
            for m in c["mounts"].as_array_mut().expect("mounts") {
                if m["destination"] == "/sys" {
                    m["options"] = json!(["nosuid", "noexec", "nodev"]);
                }
            }
        }),
        cfg("mnt-cgroup-rw", |c| {
            for m in c["mounts"].as_array_mut().expect("mounts") {
                if m["destination"] == "/sys/fs/cgroup" {
                    m["options"] = json!(["nosuid", "noexec", "nodev", "relatime"]);
                }
            }
        }),
        cfg("mnt-no-cgroup", |c| {
            c["mounts"]
                .as_array_mut()
                .expect("mounts")
                .retain(|m| m["destination"] != "/sys/fs/cgroup");
        }),
        cfg("mnt-no-dev", |c| {
            c["mounts"]
                .as_array_mut()
                .expect("mounts")
                .retain(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"));
        }),
        cfg("mnt-symlink-dest", |c| {
            push(c, "/mounts", mnt("/sl/inside", "tmpfs", "tmpfs", &[]))
        })
        .prep(|rootfs| {
            symlink("/tmp", rootfs.join("sl"))?;
            Ok(())
        })
        .probe("ls -la /tmp | grep -c inside"),
        cfg("mnt-mqueue-devpts-extra", |c| {
            push(c, "/mounts", mnt("/mq2", "mqueue", "mqueue", &["nosuid"]));
        }),
        cfg("mnt-over-proc-sub", |c| {
            push(c, "/mounts", mnt("/proc/scsi", "tmpfs", "tmpfs", &["ro"]))
        }),
        cfg("root-rw", |c| c["root"]["readonly"] = json!(false)),
        cfg("masked-file-and-dir", |c| {
            push(c, "/linux/maskedPaths", json!("/etc/passwd"));
            push(c, "/linux/maskedPaths", json!("/root"));
            push(c, "/linux/maskedPaths", json!("/nonexistent"));
        })
        .probe("wc -c < /etc/passwd; ls -la /root | wc -l"),
        cfg("masked-relative", |c| {
            push(c, "/linux/maskedPaths", json!("etc/group"));
        }),
        cfg("readonly-extra", |c| {
            c["root"]["readonly"] = json!(false);
            push(c, "/linux/readonlyPaths", json!("/tmp"));
            push(c, "/linux/readonlyPaths", json!("/nonexistent"));
        }),
        cfg("readonly-relative", |c| {
            c["root"]["readonly"] = json!(false);
            push(c, "/linux/readonlyPaths", json!("tmp"));
        }),
        cfg("masked-none", |c| {
            c["linux"]["maskedPaths"] = json!([]);
            c["linux"]["readonlyPaths"] = json!([]);
        }),
    ]
}

/// Each `rootfsPropagation` mode, with a shared host directory (and its submount) bound in:
/// these run alone so that any mount leaking into the host's namespace is seen.
fn propagation_variants() -> Vec<Variant> {
    let mut list = Vec::new();
    for mode in [
        "shared",
        "rshared",
        "slave",
        "rslave",
        "private",
        "rprivate",
        "unbindable",
        "runbindable",
    ] {
        list.push(
            v(&format!("propagation-{mode}"), move |ctx, c| {
                let src = ctx.shared_dir_with_submount()?;
                c["linux"]["rootfsPropagation"] = json!(mode);
                push(
                    c,
                    "/mounts",
                    mnt("/m", "bind", &src.display().to_string(), &["rbind"]),
                );
                Ok(())
            })
            .exclusive(),
        );
    }
    for opt in [
        "rshared",
        "rslave",
        "rprivate",
        "shared",
        "slave",
        "private",
        "unbindable",
    ] {
        list.push(
            v(&format!("mnt-propagation-{opt}"), move |ctx, c| {
                let src = ctx.shared_dir_with_submount()?;
                push(
                    c,
                    "/mounts",
                    mnt("/m", "bind", &src.display().to_string(), &["rbind", opt]),
                );
                Ok(())
            })
            .exclusive(),
        );
    }
    list
}

fn device_and_resource_variants() -> Vec<Variant> {
    vec![
        cfg("dev-fuse-allowed", |c| {
            push(
                c,
                "/linux/devices",
                json!({"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0}),
            );
            push(
                c,
                "/linux/resources/devices",
                json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}),
            );
        }),
        cfg("dev-fuse-not-allowed", |c| {
            push(
                c,
                "/linux/devices",
                json!({"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}),
            );
        }),
        cfg("dev-owner-mode", |c| {
            push(
                c,
                "/linux/devices",
                json!({"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200, "fileMode": 384, "uid": 1000, "gid": 1000}),
            );
            push(
                c,
                "/linux/resources/devices",
                json!({"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"}),
            );
        }),
        cfg("dev-block", |c| {
            push(
                c,
                "/linux/devices",
                json!({"path": "/dev/loopx", "type": "b", "major": 7, "minor": 0}),
            );
            push(
                c,
                "/linux/resources/devices",
                json!({"allow": true, "type": "b", "major": 7, "minor": 0, "access": "r"}),
            );
        }),
        cfg("dev-redefine-null", |c| {
            push(
                c,
                "/linux/devices",
                json!({"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 384}),
            );
        }),
        cfg("dev-allow-all", |c| {
            c["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        }),
        cfg("dev-deny-null", |c| {
            push(
                c,
                "/linux/resources/devices",
                json!({"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}),
            );
        }),
        cfg("dev-bad-type", |c| {
            push(
                c,
                "/linux/devices",
                json!({"path": "/dev/bad", "type": "x", "major": 1, "minor": 3}),
            );
        }),
        cfg("res-memory", |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 67108864, "reservation": 33554432});
        }),
        cfg("res-memory-swap", |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 67108864, "swap": 134217728});
        }),
        cfg("res-memory-swappiness", |c| {
            c["linux"]["resources"]["memory"] = json!({"swappiness": 10});
        }),
        cfg("res-memory-swappiness-out-of-range", |c| {
            c["linux"]["resources"]["memory"] = json!({"swappiness": 101});
        }),
        cfg("res-memory-oom-killer-disabled", |c| {
            c["linux"]["resources"]["memory"] =
                json!({"limit": 67108864, "disableOOMKiller": true});
        }),
        cfg("res-memory-use-hierarchy-off", |c| {
            c["linux"]["resources"]["memory"] = json!({"useHierarchy": false});
        }),
        cfg("res-memory-kernel", |c| {
            c["linux"]["resources"]["memory"] =
                json!({"limit": 67108864, "kernel": 33554432, "kernelTCP": 16777216});
        }),
        cfg("res-pids", |c| {
            c["linux"]["resources"]["pids"] = json!({"limit": 50})
        }),
        cfg("res-cpu", |c| {
            c["linux"]["resources"]["cpu"] =
                json!({"shares": 512, "quota": 50000, "period": 100000});
        }),
        cfg("res-cpu-shares-min", |c| {
            c["linux"]["resources"]["cpu"] = json!({"shares": 1});
        }),
        cfg("res-cpuset", |c| {
            c["linux"]["resources"]["cpu"] = json!({"cpus": "0", "mems": "0"});
        }),
        cfg("res-cpuset-invalid", |c| {
            c["linux"]["resources"]["cpu"] = json!({"cpus": "99"});
        }),
        cfg("res-unified", |c| {
            c["linux"]["resources"]["unified"] = json!({"pids.max": "42"});
        }),
        cfg("res-network", |c| {
            c["linux"]["resources"]["network"] = json!({"classID": 1048577});
        }),
        cfg("res-all", |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 134217728});
            c["linux"]["resources"]["pids"] = json!({"limit": 100});
            c["linux"]["resources"]["cpu"] =
                json!({"shares": 256, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"});
        }),
    ]
}

fn seccomp_variants() -> Vec<Variant> {
    vec![
        cfg("seccomp-default", |c| c["linux"]["seccomp"] = seccomp_default()),
        cfg("seccomp-default-nnp-false", |c| {
            c["linux"]["seccomp"] = seccomp_default();
            c["process"]["noNewPrivileges"] = json!(false);
        }),
        cfg("seccomp-strict-nnp-false", |c| {
            c["linux"]["seccomp"] = seccomp_strict();
            c["process"]["noNewPrivileges"] = json!(false);
        }),
        cfg("seccomp-strict-nnp-true", |c| c["linux"]["seccomp"] = seccomp_strict()),
        cfg("seccomp-strict-cwd-tmp", |c| {
            c["linux"]["seccomp"] = seccomp_strict();
            c["process"]["noNewPrivileges"] = json!(false);
            c["process"]["cwd"] = json!("/tmp");
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [5]});
        }),
        cfg("seccomp-errno-mkdir", |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]
            });
            c["process"]["noNewPrivileges"] = json!(false);
        })
        .probe("mkdir /tmp/x; echo mkdir=$?"),
        cfg("seccomp-log", |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_LOG"}]
            });
        }),
        cfg("seccomp-unknown-names", |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["no_such_syscall", "mkdir"], "action": "SCMP_ACT_ERRNO"}]
            });
        }),
        cfg("seccomp-archs-flags", |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
            });
        }),
        cfg("seccomp-default-errno-ret", |c| {
            let mut p = seccomp_strict();
            p["defaultErrnoRet"] = json!(38);
            c["linux"]["seccomp"] = p;
        }),
        // (Not here: defaultAction SCMP_ACT_KILL with a tiny allowlist. runc 1.1.5's `run` was
        // seen to hang on it until killed, which costs the matrix its timeout.)
        cfg("seccomp-notify-no-listener", |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
            });
        }),
        cfg("seccomp-bad-action", |c| {
            c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_FOO"});
        }),
    ]
}

fn hook_variants() -> Vec<Variant> {
    vec![
        v("hooks-all", |ctx, c| {
            ctx.all_hooks(c, true);
            c["annotations"] = json!({"org.example.key": "value", "parity": "yes"});
            Ok(())
        }),
        v("hooks-no-env", |ctx, c| {
            ctx.all_hooks(c, false);
            Ok(())
        }),
        v("hooks-prestart-fails", |ctx, c| {
            ctx.all_hooks(c, true);
            c["hooks"]["prestart"] = json!([{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]);
            Ok(())
        }),
        v("hooks-createRuntime-fails", |ctx, c| {
            ctx.all_hooks(c, true);
            push(c, "/hooks/createRuntime", json!({"path": "/bin/false"}));
            Ok(())
        }),
        v("hooks-poststart-fails", |ctx, c| {
            ctx.all_hooks(c, true);
            let rest = c["hooks"]["poststart"].clone();
            c["hooks"]["poststart"] = json!([{"path": "/bin/false"}]);
            for hook in rest.as_array().expect("hooks") {
                push(c, "/hooks/poststart", hook.clone());
            }
            Ok(())
        }),
        v("hooks-poststop-fails", |ctx, c| {
            ctx.all_hooks(c, true);
            c["hooks"]["poststop"] = json!([{"path": "/bin/false"}]);
            Ok(())
        }),
        v("hooks-missing-path", |ctx, c| {
            ctx.all_hooks(c, true);
            c["hooks"]["createRuntime"] = json!([{"path": "/nonexistent/hook"}]);
            Ok(())
        }),
        v("hooks-timeout", |ctx, c| {
            ctx.all_hooks(c, true);
            c["hooks"]["createRuntime"] =
                json!([{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]);
            Ok(())
        }),
    ]
}

fn misc_variants() -> Vec<Variant> {
    vec![
        cfg("hostname-custom", |c| c["hostname"] = json!("parity-host")),
        cfg("hostname-empty", |c| c["hostname"] = json!("")),
        cfg("hostname-too-long", |c| {
            c["hostname"] = json!("h".repeat(65))
        }),
        cfg("domainname", |c| c["domainname"] = json!("parity.domain")),
        cfg("annotations", |c| {
            c["annotations"] = json!({"org.opencontainers.image.ref.name": "x", "a": "b"})
        }),
        cfg("oci-version-1.1", |c| c["ociVersion"] = json!("1.1.0")),
        v("root-absolute", |ctx, c| {
            c["root"]["path"] = json!(ctx.bundle.join("rootfs").display().to_string());
            Ok(())
        }),
        cfg("root-missing", |c| {
            c["root"]["path"] = json!("no-such-rootfs")
        }),
        cfg("personality-linux32", |c| {
            c["linux"]["personality"] = json!({"domain": "LINUX32"})
        }),
        cfg("io-priority", |c| {
            c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0})
        })
        .probe("cat /proc/self/io 2>/dev/null | head -n 0; ionice -p $$ 2>&1"),
        cfg("scheduler", |c| {
            c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5})
        })
        .probe("nice; cat /proc/$$/stat | cut -d' ' -f19,41"),
        cfg("apparmor-profile", |c| {
            c["process"]["apparmorProfile"] = json!("unconfined")
        })
        .probe("cat /proc/self/attr/current 2>&1"),
        cfg("selinux-label", |c| {
            c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0")
        }),
        cfg("mount-label", |c| {
            c["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0")
        }),
        cfg("cgroups-path-nested", |c| {
            let p = c["linux"]["cgroupsPath"]
                .as_str()
                .expect("cgroupsPath")
                .to_string();
            c["linux"]["cgroupsPath"] = json!(format!("{p}/inner"));
        }),
    ]
}

fn combination_variants() -> Vec<Variant> {
    vec![
        // what Docker generates for `docker run --user 1000 busybox`, near enough
        cfg("combo-docker-like", |c| {
            c["linux"]["seccomp"] = seccomp_default();
            c["process"]["noNewPrivileges"] = json!(false);
            caps(c, &DOCKER_CAPS);
            c["process"]["capabilities"]["ambient"] = json!([]);
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10]});
            c["root"]["readonly"] = json!(false);
            c["hostname"] = json!("0123456789ab");
            c["process"]["oomScoreAdj"] = json!(0);
            c["linux"]["resources"]["pids"] = json!({"limit": 200});
            c["linux"]["resources"]["memory"] = json!({"limit": 134217728});
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_unprivileged_port_start": "0"});
        }),
        cfg("combo-userns-mounts", |c| {
            userns(c);
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
            push(
                c,
                "/mounts",
                mnt("/scratch", "tmpfs", "tmpfs", &["size=2m", "mode=1777"]),
            );
            c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}]);
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        }),
        v("combo-propagation-rro-hooks", |ctx, c| {
            let src = ctx.shared_dir_with_submount()?;
            c["linux"]["rootfsPropagation"] = json!("rslave");
            push(
                c,
                "/mounts",
                mnt("/m", "bind", &src.display().to_string(), &["rbind", "rro"]),
            );
            ctx.all_hooks(c, true);
            Ok(())
        })
        .probe(MNT_PROBE)
        .exclusive(),
        cfg("combo-resources-user-nnp", |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 100663296});
            c["linux"]["resources"]["pids"] = json!({"limit": 64});
            c["linux"]["resources"]["cpu"] = json!({"shares": 1024, "cpus": "0"});
            c["process"]["user"] = json!({"uid": 65534, "gid": 65534});
            c["process"]["noNewPrivileges"] = json!(true);
            c["process"]["oomScoreAdj"] = json!(300);
        }),
        cfg("combo-strict-seccomp-all-ns", |c| {
            c["linux"]["seccomp"] = seccomp_strict();
            c["process"]["noNewPrivileges"] = json!(false);
            push(c, "/linux/namespaces", json!({"type": "cgroup"}));
            c["process"]["user"]["umask"] = json!(0o77);
        }),
    ]
}

fn exec_variants() -> Vec<Variant> {
    vec![
        cfg("exec-default", |_| {}).exec(&[]),
        cfg("exec-user", |_| {}).exec(&["--user", "1000:1000", "--additional-gids", "5"]),
        cfg("exec-env-cwd", |_| {}).exec(&["--env", "EXTRA=1", "--cwd", "/tmp"]),
        cfg("exec-caps", |_| {}).exec(&["--cap", "CAP_SYS_ADMIN"]),
        cfg("exec-nnp", |c| {
            c["process"]["noNewPrivileges"] = json!(false)
        })
        .exec(&["--no-new-privs"]),
        cfg("exec-caller-ignores", |_| {})
            .exec(&[])
            .ignoring(&[libc::SIGHUP, libc::SIGINT]),
        cfg("exec-strict-seccomp", |c| {
            c["linux"]["seccomp"] = seccomp_strict();
            c["process"]["noNewPrivileges"] = json!(false);
        })
        .exec(&[]),
        cfg("exec-userns", userns).exec(&[]),
        cfg("exec-missing", |_| {}).exec(&["--", "/nonexistent"]),
    ]
}

// ---------------------------------------------------------------------------------------------
// The probe

const CGROUP_FILES: &[&str] = &[
    "memory/memory.limit_in_bytes",
    "memory/memory.soft_limit_in_bytes",
    "memory/memory.memsw.limit_in_bytes",
    "memory/memory.swappiness",
    "memory/memory.oom_control",
    "memory/memory.use_hierarchy",
    "memory/memory.kmem.limit_in_bytes",
    "memory/memory.kmem.tcp.limit_in_bytes",
    "pids/pids.max",
    "cpu/cpu.shares",
    "cpu/cpu.cfs_quota_us",
    "cpu/cpu.cfs_period_us",
    "cpuset/cpuset.cpus",
    "cpuset/cpuset.mems",
    "devices/devices.list",
    "freezer/freezer.state",
    "net_cls/net_cls.classid",
    "memory.max",
    "memory.low",
    "memory.high",
    "memory.swap.max",
    "pids.max",
    "cpu.weight",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "cgroup.controllers",
    "cgroup.subtree_control",
    "cgroup.type",
];

fn probe_script(extra: &str) -> String {
    let cgroup_files = CGROUP_FILES.join(" ");
    let mut s = String::from(
        r#"exec 2>&1
echo "== pid"; echo $$
echo "== status"; grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs|Seccomp|Seccomp_filters|SigIgn|SigBlk|Umask|Cpus_allowed_list|Mems_allowed_list|Speculation_Store_Bypass):' /proc/self/status
echo "== id"; id
echo "== umask"; umask
echo "== cwd"; pwd
echo "== hostname"; hostname; cat /proc/sys/kernel/domainname
echo "== env"; env | sort
echo "== limits"; cat /proc/self/limits
echo "== oom"; cat /proc/self/oom_score_adj
echo "== personality"; cat /proc/self/personality
echo "== ns"; for n in cgroup ipc mnt net pid pid_for_children time user uts; do echo "$n $(readlink /proc/$$/ns/$n)"; done
echo "== fds"; for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink $f)"; done
echo "== mountinfo"; cat /proc/self/mountinfo
echo "== sysctl"; for k in kernel/hostname kernel/domainname kernel/shmmax kernel/msgmax net/ipv4/ip_forward net/core/somaxconn net/ipv4/ip_unprivileged_port_start vm/swappiness; do echo "$k $(cat /proc/sys/$k 2>&1)"; done
echo "== cgroup"; cat /proc/self/cgroup
echo "== cgroupfs"; echo $(ls /sys/fs/cgroup 2>&1)
"#,
    );
    s.push_str(&format!(
        "for f in {cgroup_files}; do if [ -e /sys/fs/cgroup/$f ]; then echo \"$f: $(cat /sys/fs/cgroup/$f 2>&1 | sort | tr '\\n' ' ')\"; fi; done\n"
    ));
    s.push_str(
        r#"echo "== devices"
for f in /dev/* /dev/*/*; do
  case "$f" in /dev/fd/*|/dev/pts/*) continue;; esac
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ ! -L "$f" ] && { [ -c "$f" ] || [ -b "$f" ]; }; then
    if (true <> "$f") 2>/dev/null; then o=rw-ok; elif (true < "$f") 2>/dev/null; then o=r-ok; else o=no-open; fi
  else o=-; fi
  echo "$(stat -c '%N %F %t:%T %a %u:%g' "$f") $o"
done
echo "== net"; echo $(ls /sys/class/net 2>&1)
echo "== writable"; for p in / /tmp /dev /dev/shm /root; do if touch $p/.parity 2>/dev/null; then echo "$p writable"; rm -f $p/.parity; else echo "$p read-only"; fi; done
echo "== masked"; for p in /proc/kcore /proc/keys /proc/timer_list /proc/acpi /proc/scsi /sys/firmware /proc/sys/kernel/hostname /proc/sysrq-trigger; do echo "$p $(ls -ld $p 2>&1 | cut -c1-10) $(head -c 16 $p 2>/dev/null | wc -c)"; done
"#,
    );
    if !extra.is_empty() {
        s.push_str("echo \"== extra\"\n");
        s.push_str(extra);
        s.push('\n');
    }
    s.push_str("exit 0\n");
    s
}

// ---------------------------------------------------------------------------------------------
// Running one variant with one runtime

type Sections = BTreeMap<String, Vec<String>>;

/// What the normaliser needs to know about the host and the run.
struct Norm {
    /// (from, to), longest `from` first
    replace: Vec<(String, String)>,
    host_ns: BTreeMap<String, String>,
    /// our temp dirs: mounts under other parts of the temp dir belong to other tests
    ours: Vec<String>,
}

impl Norm {
    fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (from, to) in &self.replace {
            out = out.replace(from, to);
        }
        out
    }

    /// Whether a mount point is another test's (or a container daemon's) and so not compared.
    fn foreign_mount(&self, point: &str) -> bool {
        let tmp = std::env::temp_dir().display().to_string();
        if point.starts_with(&format!("{}/", tmp.trim_end_matches('/'))) {
            return !self.ours.iter().any(|o| Path::new(point).starts_with(o));
        }
        [
            "/run/docker",
            "/run/containerd",
            "/var/lib/docker",
            "/var/lib/containerd",
            "/run/netns",
        ]
        .iter()
        .any(|p| point.starts_with(p))
    }

    fn mountinfo(&self, lines: &[String]) -> Vec<String> {
        // Mount ids are random: a mount is named by its mount point, its parent by the parent's.
        let kept: Vec<Vec<&str>> = lines
            .iter()
            .map(|l| l.split(' ').collect::<Vec<&str>>())
            .filter(|f| f.len() >= 10 && !self.foreign_mount(f[4]))
            .collect();
        let points: BTreeMap<&str, &str> = kept.iter().map(|f| (f[0], f[4])).collect();
        let mut groups: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for f in kept {
            let parent = points.get(f[1]).copied().unwrap_or("(outside)");
            let dev = if f[2].starts_with("0:") { "0:*" } else { f[2] };
            let mut rest = Vec::new();
            let mut after_dash = false;
            for field in &f[6..] {
                if *field == "-" {
                    after_dash = true;
                }
                let field = if after_dash {
                    field.to_string()
                } else if let Some((tag, num)) = field.split_once(':') {
                    let n = groups.len() + 1;
                    let g = *groups.entry(num.to_string()).or_insert(n);
                    format!("{tag}:g{g}")
                } else {
                    field.to_string()
                };
                rest.push(field);
            }
            out.push(self.text(&format!(
                "{} in {parent} dev={dev} root={} {} {}",
                f[4],
                f[3],
                f[5],
                rest.join(" ")
            )));
        }
        out
    }

    fn ns_line(&self, line: &str) -> String {
        match line.split_once(' ') {
            Some((kind, link)) if !link.is_empty() => {
                let host = self.host_ns.get(kind).map(String::as_str);
                let which = if host == Some(link) { "host" } else { "new" };
                format!("{kind} {which}")
            }
            _ => line.to_string(),
        }
    }

    fn fd_target(&self, line: &str) -> String {
        // (Something on a shared host may recreate /dev/null while a run holds the old one.)
        let mut s = self.text(line).replace("/dev/null (deleted)", "/dev/null");
        for kind in ["pipe:[", "socket:[", "anon_inode:["] {
            if let Some(i) = s.find(kind) {
                let start = i + kind.len();
                if let Some(end) = s[start..].find(']') {
                    s.replace_range(start..start + end, "*");
                }
            }
        }
        s
    }

    /// Split probe stdout into `probe:<section>` sections and normalise each.
    fn probe(&self, prefix: &str, stdout: &str, out: &mut Sections) {
        let mut current = "stdout".to_string();
        let mut raw: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in stdout.lines() {
            if let Some(name) = line.strip_prefix("== ") {
                current = name.to_string();
                raw.entry(current.clone()).or_default();
                continue;
            }
            raw.entry(current.clone())
                .or_default()
                .push(line.to_string());
        }
        for (name, lines) in raw {
            let lines = match name.as_str() {
                "mountinfo" => self.mountinfo(&lines),
                "ns" => lines.iter().map(|l| self.ns_line(l)).collect(),
                "fds" => lines.iter().map(|l| self.fd_target(l)).collect(),
                "pid" => lines
                    .iter()
                    .map(|l| if l == "1" { l.clone() } else { "N".into() })
                    .collect(),
                "cgroupfs" => lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| match i {
                        0 => cgroup_listing(&self.text(l)),
                        _ => self.text(l),
                    })
                    .collect(),
                _ => lines.iter().map(|l| self.text(l)).collect(),
            };
            out.insert(format!("{prefix}:{name}"), lines);
        }
    }

    /// The runtime's stderr: log lines reduced to level and client-parsed phrases.
    fn stderr(&self, text: &str) -> Vec<String> {
        text.lines()
            .map(|l| match parse_log_line(l) {
                Some((level, msg)) => {
                    let phrases: Vec<&str> = [
                        "executable file not found",
                        "no such file or directory",
                        "permission denied",
                    ]
                    .into_iter()
                    .filter(|p| msg.contains(p))
                    .collect();
                    format!("log level={level} mentions={phrases:?}")
                }
                None => self.text(l),
            })
            .collect()
    }
}

/// The listing of the container's `/sys/fs/cgroup` without other tests' cgroups: without a cgroup
/// namespace a cgroup2 mount shows the host's root, where the cgroups of the variants running
/// alongside (`skiff-it-<their tag>-N`) and of other tests come and go. Ours carry `$TAG`.
fn cgroup_listing(line: &str) -> String {
    // Another variant's cgroup, removed between ls's readdir and its stat of the entry
    // (variants run side by side), leaves `ls: /sys/fs/cgroup/<name>: No such file or
    // directory`: not this container's business.
    let mut line = line.to_string();
    const GONE: &str = ": No such file or directory";
    while let Some(at) = line.find("ls: /sys/fs/cgroup/") {
        let name_at = at + "ls: /sys/fs/cgroup/".len();
        let Some(end) = line[name_at..].find(GONE) else {
            break;
        };
        let name = &line[name_at..name_at + end];
        if name.contains(['$', ' ', '/'])
            || !(name.starts_with("skiff") || name.starts_with("runc"))
        {
            break;
        }
        line.replace_range(at..name_at + end + GONE.len(), "");
    }
    line.split(' ')
        .filter(|w| !w.is_empty())
        .filter(|w| w.contains('$') || !(w.starts_with("skiff") || w.starts_with("runc")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `time="…" level=L msg="…"` → (L, msg).
fn parse_log_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("time=\"")?;
    let (_, rest) = rest.split_once("\" level=")?;
    let (level, rest) = rest.split_once(' ')?;
    let msg = rest.strip_prefix("msg=")?;
    Some((level.to_string(), msg.to_string()))
}

fn exit_line(what: &str, out: &Result<Output>) -> String {
    match out {
        Ok(o) => format!("{what} exit={}", o.exit_code()),
        Err(e) if format!("{e:#}").contains("timed out") => format!("{what} timed out"),
        Err(e) => format!("{what} error: {e:#}"),
    }
}

/// Mount lines (mount point, type, source) on the host under any of `dirs`.
fn host_mounts_under(dirs: &[&Path]) -> BTreeSet<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|l| {
            // The dir itself or below it (`…x1` must not match `…x12`).
            dirs.iter().any(|d| {
                let d = d.display().to_string();
                l.contains(&format!("{d}/")) || l.contains(&format!("{d} "))
            })
        })
        .map(mount_key)
        .collect()
}

/// All mount points of the host (mount point, type, source).
fn host_mounts_all() -> BTreeSet<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().map(mount_key).collect()
}

fn mount_key(line: &str) -> String {
    let f: Vec<&str> = line.split(' ').collect();
    let dash = f.iter().position(|x| *x == "-").unwrap_or(f.len());
    format!(
        "{} {} on {} ({})",
        f.get(dash + 1).unwrap_or(&"?"),
        f.get(dash + 2).unwrap_or(&"?"),
        f.get(4).unwrap_or(&"?"),
        f.get(3).unwrap_or(&"?"),
    )
}

fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .replace('\0', " ")
        .trim()
        .to_string()
}

struct RunCtx<'a> {
    variant: &'a Variant,
    hb: &'a Harness,
    bundle: &'a Bundle,
    id: &'a str,
    cgroup: Option<String>,
    hooks: &'a Path,
    host_ns: &'a BTreeMap<String, String>,
}

/// One runtime's run of a variant, as sections.
fn run_with(rc: &RunCtx, bin: &Path) -> Result<Sections> {
    let rt = Harness::with_runtime(bin)?;
    rt.register_id(rc.id);
    let mut replace = vec![
        (rc.hb.tmp().display().to_string(), "$B".to_string()),
        (rt.tmp().display().to_string(), "$RT".to_string()),
        (rc.hb.tag().to_string(), "$TAG".to_string()),
        (rt.tag().to_string(), "$RTTAG".to_string()),
    ];
    replace.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    let norm = Norm {
        replace,
        host_ns: rc.host_ns.clone(),
        ours: vec![
            rc.hb.tmp().display().to_string(),
            rt.tmp().display().to_string(),
        ],
    };
    let dirs = [rc.hb.tmp(), rt.tmp()];
    let mounts_before = host_mounts_under(&dirs);
    let global_before = rc.variant.exclusive.then(host_mounts_all);
    let mut out = Sections::new();
    let timeout = Some(rc.variant.timeout);
    let bpath = rc.bundle.path_str();
    match &rc.variant.mode {
        Mode::Run => {
            let res = rt
                .spawn(
                    &["run", "--bundle", &bpath, rc.id],
                    Opts {
                        stdout: Some(rt.stdout_path(rc.id)),
                        stderr: Some(rt.stderr_path(rc.id)),
                        timeout,
                        ignore_signals: rc.variant.ignore.clone(),
                        ..Opts::default()
                    },
                )
                .and_then(|s| s.wait());
            out.insert("exit".into(), vec![exit_line("run", &res)]);
            let stdout = fs::read_to_string(rt.stdout_path(rc.id)).unwrap_or_default();
            let stderr = fs::read_to_string(rt.stderr_path(rc.id)).unwrap_or_default();
            norm.probe("probe", &stdout, &mut out);
            verbose_stderr(&rc.variant.name, bin, &stderr);
            out.insert("stderr".into(), norm.stderr(&stderr));
        }
        Mode::Exec(flags) => {
            let created = rt.try_create(rc.id, rc.bundle, &[]);
            let mut exits = vec![exit_line("create", &created)];
            let mut stderr = created.map(|o| o.stderr).unwrap_or_default();
            let started = rt.cmd(&["start", rc.id]);
            exits.push(exit_line("start", &started));
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let (flags, args): (&[&str], Vec<&str>) = match flags.iter().position(|f| *f == "--") {
                Some(i) => (&flags[..i], flags[i + 1..].to_vec()),
                None => (&flags[..], vec!["sh", "/parity-probe"]),
            };
            let execd = rt.exec(
                &exec_args(rc.id, flags, &args),
                Opts {
                    timeout,
                    ignore_signals: rc.variant.ignore.clone(),
                    ..Opts::default()
                },
            );
            exits.push(exit_line("exec", &execd));
            if let Ok(o) = &execd {
                norm.probe("exec", &o.stdout, &mut out);
                stderr.push_str(&o.stderr);
            }
            let deleted = rt.cmd(&["delete", "--force", rc.id]);
            exits.push(exit_line("delete --force", &deleted));
            out.insert("exit".into(), exits);
            verbose_stderr(&rc.variant.name, bin, &stderr);
            out.insert("stderr".into(), norm.stderr(&stderr));
        }
    }
    collect_hooks(rc.hooks, &norm, &mut out)?;
    host_after(
        rc,
        &rt,
        &norm,
        &mounts_before,
        global_before.as_ref(),
        &mut out,
    )?;
    scrub(rc, &rt, &mounts_before)?;
    Ok(out)
}

/// With `PARITY_VERBOSE=1`, the runtime's stderr as it was (the comparison reduces log lines).
fn verbose_stderr(variant: &str, bin: &Path, stderr: &str) {
    if std::env::var("PARITY_VERBOSE").is_ok_and(|v| v == "1") && !stderr.is_empty() {
        eprintln!("[{variant}] {} stderr:\n{stderr}", bin.display());
    }
}

/// The hooks' records, then an empty hooks dir for the next run.
fn collect_hooks(dir: &Path, norm: &Norm, out: &mut Sections) -> Result<()> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = if name.ends_with(".stdin") {
            match serde_json::from_str::<Value>(&text) {
                // One line per member, so that a difference names its key.
                Ok(Value::Object(state)) => state
                    .iter()
                    .map(|(key, value)| {
                        let value = match key.as_str() {
                            "pid" => json!(0),
                            "created" => json!("T"),
                            _ => value.clone(),
                        };
                        norm.text(&format!("{key}={value}"))
                    })
                    .collect(),
                Ok(other) => vec![format!("not an object: {}", norm.text(&other.to_string()))],
                Err(_) => vec![format!("not JSON: {}", norm.text(&text))],
            }
        } else if name.ends_with(".fds") {
            text.lines().map(|l| norm.fd_target(l)).collect()
        } else {
            text.lines().map(|l| norm.text(l)).collect()
        };
        if name.ends_with(".stdin") {
            lines.sort();
        }
        out.insert(format!("hooks:{name}"), lines);
        fs::remove_file(&path)?;
    }
    Ok(())
}

/// What is left on the host after the run.
fn host_after(
    rc: &RunCtx,
    rt: &Harness,
    norm: &Norm,
    mounts_before: &BTreeSet<String>,
    global_before: Option<&BTreeSet<String>>,
    out: &mut Sections,
) -> Result<()> {
    let mut state: Vec<String> = fs::read_dir(rt.root())?
        .filter_map(|e| e.ok())
        .map(|e| norm.text(&e.file_name().to_string_lossy()))
        .collect();
    state.sort();
    out.insert("host:state".into(), state);
    if let Some(cgroup) = &rc.cgroup {
        let dirs = host::existing_cgroup_dirs(cgroup)?
            .iter()
            .map(|d| norm.text(&d.display().to_string()))
            .collect();
        out.insert("host:cgroups".into(), dirs);
    }
    // Processes being killed by the runtime may take a moment to go.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pids;
    loop {
        pids = rc.hb.tagged_pids();
        pids.extend(rt.tagged_pids());
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    let mut procs: Vec<String> = pids.iter().map(|p| norm.text(&cmdline(*p))).collect();
    // Also whatever is still in the container's cgroup, zombies included (they carry no
    // environment to find them by).
    if let Some(cgroup) = &rc.cgroup {
        for pid in cgroup_members(cgroup) {
            procs.push(format!("in the cgroup: {}", proc_summary(pid)));
        }
    }
    procs.sort();
    out.insert("host:procs".into(), procs);
    let now = host_mounts_under(&[rc.hb.tmp(), rt.tmp()]);
    let new: Vec<String> = now
        .difference(mounts_before)
        .map(|l| norm.text(l))
        .collect();
    out.insert("host:mounts".into(), new);
    if let Some(before) = global_before {
        let new: Vec<String> = host_mounts_all()
            .difference(before)
            .filter(|l| {
                let point = l.split(" on ").nth(1).unwrap_or("");
                let point = point.split(' ').next().unwrap_or("");
                !norm.foreign_mount(point)
                    && !norm.ours.iter().any(|o| Path::new(point).starts_with(o))
            })
            .map(|l| norm.text(l))
            .collect();
        out.insert("host:global-mounts".into(), new);
    }
    Ok(())
}

/// Remove whatever the run left, so that the other runtime starts from the same host.
fn scrub(rc: &RunCtx, rt: &Harness, mounts_before: &BTreeSet<String>) -> Result<()> {
    if rt.root().join(rc.id).exists() {
        let _ = rt.cmd(&["delete", "--force", rc.id]);
    }
    for _ in 0..3 {
        let mut pids = rc.hb.tagged_pids();
        pids.extend(rt.tagged_pids());
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions; these carry our tags.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        sleep(Duration::from_millis(200));
    }
    let before_points: BTreeSet<String> = mounts_before
        .iter()
        .filter_map(|l| {
            l.split(" on ")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_string)
        })
        .collect();
    for dir in [rc.hb.tmp(), rt.tmp()] {
        for point in host::mount_points_under(dir)? {
            if !before_points.contains(&point.display().to_string()) {
                let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    if let Some(cgroup) = &rc.cgroup {
        reap_cgroup(cgroup);
        for base in [format!("{cgroup}/inner"), cgroup.clone()] {
            for dir in host::existing_cgroup_dirs(&base)? {
                let _ = fs::remove_dir(&dir);
            }
        }
    }
    Ok(())
}

/// Pids listed in `cgroup.procs` of the cgroup (and its `inner` child) in any hierarchy.
fn cgroup_members(cgroup: &str) -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    for base in [format!("{cgroup}/inner"), cgroup.to_string()] {
        for dir in host::existing_cgroup_dirs(&base).unwrap_or_default() {
            let text = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids
}

/// `name state` of a process, from /proc/<pid>/stat.
fn proc_summary(pid: i32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match (stat.find('('), stat.rfind(')')) {
        (Some(a), Some(b)) if a < b => {
            let state = stat[b + 1..].split_whitespace().next().unwrap_or("?");
            format!("{} {state}", &stat[a + 1..b])
        }
        _ => "gone".to_string(),
    }
}

/// Kill what is left in the container's cgroup and reap the zombies that were reparented to
/// this process (the test is a child subreaper: a runtime that dies or forgets its child leaves
/// a zombie that nobody else would reap here, and it would pin the cgroup).
fn reap_cgroup(cgroup: &str) {
    for _ in 0..20 {
        let pids = cgroup_members(cgroup);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) and waitpid(2) with a plain pid; the pid is in our container's
            // cgroup, and waitpid only reaps it if it is our (reparented) child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(pid, &mut status, libc::WNOHANG);
            }
        }
        sleep(Duration::from_millis(50));
    }
}

/// (Re)build the bundle's rootfs with the probe and the variant's files.
fn fresh_rootfs(bundle: &Bundle, variant: &Variant) -> Result<()> {
    let rootfs = bundle.path().join("rootfs");
    if rootfs.exists() {
        let left = host::mount_points_under(&rootfs)?;
        if !left.is_empty() {
            bail!("mounts left in the rootfs, not removing it: {left:?}");
        }
        fs::remove_dir_all(&rootfs)?;
    }
    build_rootfs(&rootfs)?;
    finish_rootfs(bundle, variant)
}

/// The probe and the variant's own files in the bundle's rootfs.
fn finish_rootfs(bundle: &Bundle, variant: &Variant) -> Result<()> {
    let rootfs = bundle.path().join("rootfs");
    fs::write(
        rootfs.join("parity-probe"),
        probe_script(&variant.extra_probe),
    )?;
    if let Some(prep) = &variant.prep {
        prep(&rootfs)?;
    }
    Ok(())
}

struct Pair {
    name: String,
    took: Duration,
    runc: Sections,
    skiff: Sections,
}

fn run_variant(
    variant: &Variant,
    skiff: &Path,
    runc: &Path,
    host_ns: &BTreeMap<String, String>,
) -> Result<Pair> {
    let started = Instant::now();
    let hb = Harness::with_runtime(skiff)?;
    let mut bundle = hb.bundle()?;
    let hooks = hb.dir("hooks")?;
    let ctx = Ctx {
        h: &hb,
        bundle: bundle.path().to_path_buf(),
        hooks: hooks.clone(),
    };
    let mut config = bundle.config().clone();
    config["process"]["args"] = json!(["sh", "/parity-probe"]);
    (variant.setup)(&ctx, &mut config)
        .with_context(|| format!("setting up variant {}", variant.name))?;
    if let Mode::Exec(_) = variant.mode {
        config["process"]["args"] = json!(["sleep", "600"]);
    }
    bundle.edit(|c| *c = config)?;
    let id = hb.id(&variant.name);
    let rc = RunCtx {
        variant,
        hb: &hb,
        bundle: &bundle,
        id: &id,
        cgroup: bundle.cgroups_path(),
        hooks: &hooks,
        host_ns,
    };
    // The harness built the rootfs; the second runtime gets a fresh one.
    finish_rootfs(&bundle, variant)?;
    let runc_out = run_with(&rc, runc)?;
    fresh_rootfs(&bundle, variant)?;
    let skiff_out = run_with(&rc, skiff)?;
    Ok(Pair {
        name: variant.name.clone(),
        took: started.elapsed(),
        runc: runc_out,
        skiff: skiff_out,
    })
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// A difference: (variant, section, side, line).
#[derive(Debug, Clone)]
struct Diff {
    variant: String,
    section: String,
    line: String,
}

fn compare(pair: &Pair) -> Vec<Diff> {
    let mut diffs = Vec::new();
    let sections: BTreeSet<&String> = pair.runc.keys().chain(pair.skiff.keys()).collect();
    let empty = Vec::new();
    for section in sections {
        let a = pair.runc.get(section).unwrap_or(&empty);
        let b = pair.skiff.get(section).unwrap_or(&empty);
        if a == b {
            continue;
        }
        let count = |v: &Vec<String>| {
            let mut m: BTreeMap<String, i32> = BTreeMap::new();
            for l in v {
                *m.entry(l.clone()).or_default() += 1;
            }
            m
        };
        let (ca, cb) = (count(a), count(b));
        let mut any = false;
        for (line, n) in &ca {
            for _ in 0..(n - cb.get(line).copied().unwrap_or(0)).max(0) {
                diffs.push(Diff {
                    variant: pair.name.clone(),
                    section: section.clone(),
                    line: format!("runc:  {line}"),
                });
                any = true;
            }
        }
        for (line, n) in &cb {
            for _ in 0..(n - ca.get(line).copied().unwrap_or(0)).max(0) {
                diffs.push(Diff {
                    variant: pair.name.clone(),
                    section: section.clone(),
                    line: format!("skiff: {line}"),
                });
                any = true;
            }
        }
        if !any {
            diffs.push(Diff {
                variant: pair.name.clone(),
                section: section.clone(),
                line: "order differs".into(),
            });
        }
    }
    diffs
}

/// `*` matches any run of characters; the whole name must match.
fn variant_matches(pattern: &str, name: &str) -> bool {
    glob(&format!("^{pattern}$"), name)
}

/// Whether `text` contains the parts of `pattern` (split at `*`) in order; a leading `^` anchors
/// the first part to the start, a trailing `$` the last to the end.
fn glob(pattern: &str, text: &str) -> bool {
    let (start, pattern) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (end, pattern) = match pattern.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if i == 0 && start {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
            if last && end {
                return rest.is_empty();
            }
            continue;
        }
        if last && end {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// What decides whether a [`Known`] entry applies here.
#[derive(Debug, Clone, Copy)]
struct HostFacts {
    v2: bool,
    nofile_soft_below_hard: bool,
}

impl HostFacts {
    fn here(v2: bool) -> HostFacts {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        HostFacts {
            v2,
            nofile_soft_below_hard: ok && lim.rlim_cur < lim.rlim_max,
        }
    }
}

fn applies(k: &Known, host: HostFacts) -> bool {
    match k.on {
        On::Any => true,
        On::V1 => !host.v2,
        On::NofileSoftBelowHard => host.nofile_soft_below_hard,
    }
}

fn render(pair: &Pair) -> String {
    let mut s = format!("### {}\n", pair.name);
    for (side, secs) in [("runc", &pair.runc), ("skiff", &pair.skiff)] {
        for (name, lines) in secs {
            s.push_str(&format!("[{side}] {name}:\n"));
            for l in lines {
                s.push_str(&format!("    {l}\n"));
            }
        }
    }
    s
}

#[test]
fn skiff_matches_runc_across_the_config_matrix() -> Result<()> {
    let skiff = runtime_binary();
    let runc = PathBuf::from(std::env::var("PARITY_RUNC").unwrap_or_else(|_| DEFAULT_RUNC.into()));
    if !runc.is_file() {
        bail!(
            "the oracle {} is missing: install Debian's runc (scripts/setup.sh)",
            runc.display()
        );
    }
    if fs::canonicalize(&skiff).ok() == fs::canonicalize(&runc).ok() {
        eprintln!("SKIPPED: the runtime under test is runc itself; nothing to compare");
        return Ok(());
    }
    let v2 = matches!(host::cgroup_mode()?, CgroupMode::V2 { .. });
    let facts = HostFacts::here(v2);
    // Orphans of the runtimes (a runtime that dies or does not wait for its child) come to us
    // rather than to pid 1, which may not reap them: see `reap_cgroup`.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    let mut host_ns = BTreeMap::new();
    for kind in [
        "cgroup",
        "ipc",
        "mnt",
        "net",
        "pid",
        "pid_for_children",
        "time",
        "user",
        "uts",
    ] {
        host_ns.insert(kind.to_string(), host::host_namespace(kind)?);
    }
    let filter = std::env::var("PARITY_FILTER").ok();
    let all = variants();
    let names: BTreeSet<&String> = all.iter().map(|v| &v.name).collect();
    assert_eq!(names.len(), all.len(), "variant names must be unique");
    // On cgroup v2 (the emulated VM, ~5x slower) only what the cgroup version or the kernel
    // can change runs, unless PARITY_ALL=1.
    let subset = v2 && std::env::var("PARITY_ALL").map_or(true, |a| a != "1");
    let chosen: Vec<Variant> = all
        .into_iter()
        .filter(|v| {
            filter
                .as_deref()
                .is_none_or(|f| f.split(',').any(|f| v.name.contains(f)))
        })
        .filter(|v| !subset || V2_SUBSET.iter().any(|p| variant_matches(p, &v.name)))
        .collect();
    let chosen_names: Vec<String> = chosen.iter().map(|v| v.name.clone()).collect();
    let jobs: usize = std::env::var("PARITY_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(3);
    let started = Instant::now();
    let queue = Arc::new(Mutex::new(chosen.into_iter().collect::<VecDeque<_>>()));
    let gate = Arc::new(RwLock::new(()));
    let results: Arc<Mutex<Vec<Result<Pair>>>> = Arc::new(Mutex::new(Vec::new()));
    let host_ns = Arc::new(host_ns);
    let mut workers = Vec::new();
    for _ in 0..jobs.max(1) {
        let (queue, gate, results, host_ns) = (
            queue.clone(),
            gate.clone(),
            results.clone(),
            host_ns.clone(),
        );
        let (skiff, runc) = (skiff.clone(), runc.clone());
        workers.push(thread::spawn(move || loop {
            let Some(variant) = queue.lock().unwrap().pop_front() else {
                break;
            };
            let res = if variant.exclusive {
                let _alone = gate.write().unwrap();
                run_variant(&variant, &skiff, &runc, &host_ns)
            } else {
                let _shared = gate.read().unwrap();
                run_variant(&variant, &skiff, &runc, &host_ns)
            };
            let res = res.with_context(|| format!("variant {}", variant.name));
            results.lock().unwrap().push(res);
        }));
    }
    for w in workers {
        w.join().expect("worker panicked");
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    let verbose = std::env::var("PARITY_VERBOSE").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut unexplained = Vec::new();
    let mut used = vec![false; KNOWN.len()];
    // PARITY_EXPLAIN=1: what each entry explains (to narrow the table).
    let explain = std::env::var_os("PARITY_EXPLAIN").is_some();
    let mut explains: Vec<BTreeMap<(String, String), Vec<String>>> =
        vec![BTreeMap::new(); KNOWN.len()];
    let mut explained = 0;
    let mut pairs = Vec::new();
    for res in results {
        match res {
            Ok(pair) => pairs.push(pair),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    pairs.sort_by_key(|p| std::cmp::Reverse(p.took));
    let slowest: Vec<String> = pairs
        .iter()
        .take(5)
        .map(|p| format!("{} {:.1}s", p.name, p.took.as_secs_f64()))
        .collect();
    eprintln!("parity: slowest variants: {}", slowest.join(", "));
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    for pair in &pairs {
        if verbose {
            eprintln!("{}", render(pair));
        }
        for d in compare(pair) {
            // Every entry that explains the line counts as used (a general entry may cover
            // a specific one that outlives it).
            let mut hit = false;
            for (i, k) in KNOWN.iter().enumerate() {
                if applies(k, facts)
                    && variant_matches(k.variant, &d.variant)
                    && variant_matches(k.section, &d.section)
                    && k.lines.iter().any(|l| glob(l, &d.line))
                {
                    used[i] = true;
                    hit = true;
                    if explain {
                        explains[i]
                            .entry((d.section.clone(), d.line.clone()))
                            .or_default()
                            .push(d.variant.clone());
                    }
                }
            }
            if hit {
                explained += 1;
            } else {
                unexplained.push(d);
            }
        }
    }
    for (k, lines) in KNOWN.iter().zip(&explains).filter(|_| explain) {
        eprintln!(
            "parity: KNOWN {} [{}] {:?} explains:",
            k.variant, k.section, k.lines
        );
        for ((section, line), names) in lines {
            eprintln!("    [{section}] {line}    in: {}", names.join(", "));
        }
    }
    eprintln!(
        "parity: {} variants in {:.1}s, {explained} known differences, {} unexplained, {} errors",
        pairs.len(),
        started.elapsed().as_secs_f64(),
        unexplained.len(),
        failures.len()
    );
    // One entry per differing (section, line), with every variant that shows it: one cause
    // usually shows in many variants.
    let mut grouped: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for d in &unexplained {
        grouped
            .entry((d.section.clone(), d.line.clone()))
            .or_default()
            .push(d.variant.clone());
    }
    let mut report = String::new();
    for ((section, line), names) in &grouped {
        let names = if names.len() > 8 {
            format!("{} and {} more", names[..8].join(", "), names.len() - 8)
        } else {
            names.join(", ")
        };
        report.push_str(&format!("[{section}] {line}\n        in: {names}\n"));
    }
    let stale: Vec<String> = KNOWN
        .iter()
        .zip(&used)
        // (an entry for variants that did not run here is not stale)
        .filter(|(k, u)| {
            !**u && applies(k, facts) && chosen_names.iter().any(|n| variant_matches(k.variant, n))
        })
        .map(|(k, _)| format!("{} [{}] {:?} ({})", k.variant, k.section, k.lines, k.why))
        .collect();
    let mut problems = Vec::new();
    if !failures.is_empty() {
        problems.push(format!(
            "variants that could not run:\n{}",
            failures.join("\n")
        ));
    }
    if !unexplained.is_empty() {
        problems.push(format!("differences not in KNOWN:\n{report}"));
    }
    if filter.is_none() && !stale.is_empty() {
        problems.push(format!(
            "stale KNOWN entries (nothing differs; remove them):\n{}",
            stale.join("\n")
        ));
    }
    if !problems.is_empty() {
        panic!("{}", problems.join("\n\n"));
    }
    Ok(())
}

/// The comparison's own logic, without root or runtimes.
mod logic {
    use super::*;

    fn norm() -> Norm {
        let tmp = std::env::temp_dir().display().to_string();
        let tmp = tmp.trim_end_matches('/');
        Norm {
            replace: vec![
                (format!("{tmp}/skiff-it-1x12"), "$RT".into()),
                (format!("{tmp}/skiff-it-1x1"), "$B".into()),
            ],
            host_ns: BTreeMap::from([("net".to_string(), "net:[1]".to_string())]),
            ours: vec![
                format!("{tmp}/skiff-it-1x1"),
                format!("{tmp}/skiff-it-1x12"),
            ],
        }
    }

    #[test]
    fn glob_has_wildcards_anchors_and_substrings() {
        assert!(glob("^runc:  * pipe:[*]$", "runc:  0 pipe:[*]"));
        assert!(!glob("^runc:  * pipe:[*]$", "skiff: 0 pipe:[*]"));
        assert!(!glob("^runc:  * pipe:[*]$", "runc:  0 pipe:[*] x"));
        assert!(glob("HOME=", "runc:  HOME=/root"));
        assert!(glob("tmpfs ro$", "skiff: - tmpfs tmpfs ro"));
        assert!(!glob("tmpfs ro$", "skiff: - tmpfs tmpfs ro,size=0k"));
        assert!(variant_matches("*strict-seccomp*", "exec-strict-seccomp"));
        assert!(variant_matches("hooks:*.env", "hooks:poststop.env"));
        assert!(!variant_matches("ns-none", "ns-none-x"));
        assert!(!variant_matches(
            "propagation-*shared",
            "mnt-propagation-shared"
        ));
        assert!(variant_matches("*", "anything"));
    }

    #[test]
    fn mountinfo_names_mounts_by_path_and_hides_what_is_random() {
        let tmp = std::env::temp_dir().display().to_string();
        let tmp = tmp.trim_end_matches('/');
        let lines = [
            format!(
                "100 50 254:0 {tmp}/skiff-it-1x1/bundle-0/rootfs / ro,relatime - ext4 /dev/vda rw"
            ),
            "101 100 0:45 / /proc rw,relatime shared:7 - proc proc rw".to_string(),
            format!("102 100 0:46 / {tmp}/another-test rw - tmpfs tmpfs rw"),
            "103 101 0:47 / /proc/acpi ro master:9 - tmpfs tmpfs ro".to_string(),
        ];
        assert_eq!(
            norm().mountinfo(&lines),
            [
                "/ in (outside) dev=254:0 root=$B/bundle-0/rootfs ro,relatime - ext4 /dev/vda rw",
                "/proc in / dev=0:* root=/ rw,relatime shared:g1 - proc proc rw",
                "/proc/acpi in /proc dev=0:* root=/ ro master:g2 - tmpfs tmpfs ro",
            ]
        );
    }

    #[test]
    fn a_cgroup_root_listing_keeps_only_our_cgroups() {
        let n = Norm {
            replace: vec![("1x1".into(), "$TAG".into())],
            host_ns: BTreeMap::new(),
            ours: Vec::new(),
        };
        let mut out = Sections::new();
        n.probe(
            "probe",
            "== cgroupfs\ncgroup.controllers init.scope runc skiff-it-9x3-1 skiff-it-1x1-4 \
             skiff-podman-it-7 system.slice\nmemory.max: max\n",
            &mut out,
        );
        assert_eq!(
            out["probe:cgroupfs"],
            [
                "cgroup.controllers init.scope skiff-it-$TAG-4 system.slice",
                "memory.max: max"
            ]
        );
        // Another variant's cgroup that vanished while ls listed the root.
        let mut out = Sections::new();
        n.probe(
            "probe",
            "== cgroupfs\nls: /sys/fs/cgroup/skiff-it-9x3-1: No such file or directory \
             cgroup.controllers skiff-it-1x1-4 system.slice\n",
            &mut out,
        );
        assert_eq!(
            out["probe:cgroupfs"],
            ["cgroup.controllers skiff-it-$TAG-4 system.slice"]
        );
        // Anything else ls says stays.
        let mut out = Sections::new();
        n.probe(
            "probe",
            "== cgroupfs\nls: /sys/fs/cgroup: Permission denied\n",
            &mut out,
        );
        assert_eq!(
            out["probe:cgroupfs"],
            ["ls: /sys/fs/cgroup: Permission denied"]
        );
    }

    #[test]
    fn stderr_keeps_a_log_lines_level_and_the_phrases_clients_parse() {
        let text = "time=\"2026-01-01T00:00:00Z\" level=error msg=\"exec: \\\"/x\\\": stat /x: \
                    no such file or directory\"\nsh: oops";
        assert_eq!(
            norm().stderr(text),
            [
                "log level=error mentions=[\"no such file or directory\"]",
                "sh: oops"
            ]
        );
    }

    #[test]
    fn namespaces_descriptors_and_paths_are_normalised() {
        let n = norm();
        assert_eq!(n.ns_line("net net:[1]"), "net host");
        assert_eq!(n.ns_line("pid pid:[2]"), "pid new");
        assert_eq!(n.fd_target("1 pipe:[1234]"), "1 pipe:[*]");
        let tmp = std::env::temp_dir().display().to_string();
        let tmp = tmp.trim_end_matches('/');
        assert_eq!(
            n.text(&format!("{tmp}/skiff-it-1x12/a {tmp}/skiff-it-1x1/b")),
            "$RT/a $B/b"
        );
    }

    #[test]
    fn compare_reports_lines_on_either_side_and_order() {
        let sections = |v: &[&str]| -> Sections {
            BTreeMap::from([(
                "probe:env".to_string(),
                v.iter().map(|s| s.to_string()).collect(),
            )])
        };
        let pair = Pair {
            name: "v".into(),
            took: Duration::ZERO,
            runc: sections(&["A=1", "HOME=/root"]),
            skiff: sections(&["A=1", "B=2"]),
        };
        let lines: Vec<String> = compare(&pair).into_iter().map(|d| d.line).collect();
        assert_eq!(lines, ["runc:  HOME=/root", "skiff: B=2"]);
        let pair = Pair {
            name: "v".into(),
            took: Duration::ZERO,
            runc: sections(&["A=1", "B=2"]),
            skiff: sections(&["B=2", "A=1"]),
        };
        let lines: Vec<String> = compare(&pair).into_iter().map(|d| d.line).collect();
        assert_eq!(lines, ["order differs"]);
    }
}
