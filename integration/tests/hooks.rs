//! The six OCI hooks: when each runs, in which namespace, with the state on stdin; env, timeout and
//! a failing hook.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use skiff_integration::harness::Opts;
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

// ---------------------------------------------------------------------------------------------
// The same hooks under skiff and under runc (the oracle), compared.

const RUNC: &str = "/usr/sbin/runc";
const STAGES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Where skiff differs from runc 1.1.5 on purpose; each entry is masked out of the comparison
/// and skiff's own behaviour is asserted instead.
///
/// | stage | what | why |
/// | --- | --- | --- |
/// | poststart | when, status, cwd | runc 1.1.5 runs poststart at the end of `create` (status `created`, in the bundle, before startContainer); runtime-spec 1.2 (and runc 1.2) run it once the process started, by `start` (status `running`, the caller's cwd) |
/// | poststart | a failing hook | runc 1.1.5 fails `create` and kills the container; runtime-spec 1.2: a warning, the remaining hooks and the lifecycle go on |
/// | poststop | a failing hook | runc 1.1.5 logs it, exits 0 and skips the remaining poststop hooks; runtime-spec 1.2: the remaining hooks run |
/// | createContainer, startContainer | state `pid` | runc reports the pid inside the container's pid namespace (1); the spec asks for the host's view |
/// | all | env order | std's `Command` passes a hook's environment sorted by name; runc keeps the listed order |
/// | all | state `ociVersion` | the runtime-spec version the runtime implements: runc 1.1.5 was built with 1.0.2-dev, skiff implements 1.2.1 (as runc 1.3) |
const ACCEPTED: &[(&str, &str)] = &[
    ("poststart", "state.status"),
    ("poststart", "cwd"),
    ("createContainer", "state.pid"),
    ("startContainer", "state.pid"),
    ("prestart", "state.ociVersion"),
    ("createRuntime", "state.ociVersion"),
    ("createContainer", "state.ociVersion"),
    ("startContainer", "state.ociVersion"),
    ("poststart", "state.ociVersion"),
    ("poststop", "state.ociVersion"),
];

fn out_dir_for(stage: &str, host: &str) -> String {
    if stage == "startContainer" {
        "/hookout".to_string()
    } else {
        host.to_string()
    }
}

/// For each stage: three hooks that copy their own environment (`env` absent, `[]`, and given),
/// then one that saves its stdin and cwd and appends the stage to `order`.
fn add_probe_hooks(b: &mut skiff_integration::Bundle, host_dir: &str) -> Result<()> {
    for stage in STAGES {
        let d = out_dir_for(stage, host_dir);
        for (variant, env) in [
            ("absent", None),
            ("empty", Some(json!([]))),
            ("given", Some(json!(["HOOK_A=1", "HOOK_B=two"]))),
        ] {
            let mut hook = json!({
                "path": "/bin/cp",
                "args": ["cp", "/proc/self/environ", format!("{d}/{stage}.env-{variant}")]
            });
            if let Some(env) = env {
                hook["env"] = env;
            }
            b.add_hook(stage, hook)?;
        }
        b.add_hook(
            stage,
            json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
                "cat > {d}/{stage}.state; readlink /proc/self/cwd > {d}/{stage}.cwd; \
                 echo $(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1) \
                   $(readlink /proc/$$/fd/2) | sed 's/:[^ ]*//g' > {d}/{stage}.stdio; \
                 echo {stage} >> {d}/order")]}),
        )?;
    }
    Ok(())
}

/// What one runtime's hooks saw, normalised: `stage.what` → value.
struct Seen {
    facts: BTreeMap<String, Value>,
    order: Vec<String>,
}

fn normalise_env(raw: &[u8], h: &Harness) -> Value {
    let mut vars: Vec<String> = raw
        .split(|&c| c == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).replace(h.tag(), "TAG"))
        .collect();
    vars.sort();
    json!(vars)
}

/// Every member of a hook's state, the id, bundle and init pid named.
fn normalise_state(state: &Value, id: &str, bundle: &str, pid: i32) -> Value {
    let mut out = serde_json::Map::new();
    for (key, v) in state.as_object().into_iter().flatten() {
        let v = match key.as_str() {
            "id" if v == id => json!("ID"),
            "bundle" if v == bundle => json!("BUNDLE"),
            "pid" if v == pid => json!("PID"),
            _ => v.clone(),
        };
        out.insert(key.to_string(), v);
    }
    Value::Object(out)
}

/// create (from `/`), start (from `/usr`), wait, delete (from `/var`) with `bin`; what each hook
/// saw.
fn observe_hooks(bin: &str) -> Result<Seen> {
    let h = Harness::with_binary(bin.into())?;
    let out = h.dir("hookprobe")?;
    let host_dir = out.display().to_string();
    let mut b = h.bundle()?;
    b.bind(&out, "/hookout", false)?;
    b.edit(|c| {
        c["process"]["cwd"] = json!("/etc");
        c["annotations"] = json!({"org.example.hook": "seen"});
    })?;
    // HOME is the HOME item's business (runc adds it to the process's env); keep it out of here.
    b.add_env("HOME=/root")?;
    b.add_env("PROC_ONLY=1")?;
    add_probe_hooks(&mut b, &host_dir)?;
    b.sh("echo main > /hookout/main")?;
    let id = h.id("hookprobe");
    let bundle = b.path_str();
    let in_dir = |dir: &str| Opts {
        cwd: Some(dir.into()),
        ..Opts::default()
    };
    h.exec(&["create", "--bundle", &bundle, &id], in_dir("/"))?
        .ok()?;
    let pid = h.pid(&id)?;
    h.exec(&["start", &id], in_dir("/usr"))?.ok()?;
    h.wait_status(&id, "stopped")?;
    h.exec(&["delete", &id], in_dir("/var"))?.ok()?;
    wait_for_file(&out.join("poststop.cwd"), h.timeout())?;
    assert_eq!(fs::read_to_string(out.join("main"))?, "main\n", "{bin}");
    let mut facts = BTreeMap::new();
    for stage in STAGES {
        for variant in ["absent", "empty", "given"] {
            let raw = fs::read(out.join(format!("{stage}.env-{variant}")))?;
            facts.insert(format!("{stage}.env-{variant}"), normalise_env(&raw, &h));
        }
        let cwd = fs::read_to_string(out.join(format!("{stage}.cwd")))?;
        facts.insert(
            format!("{stage}.cwd"),
            json!(cwd.trim().replace(&bundle, "BUNDLE")),
        );
        let text = fs::read_to_string(out.join(format!("{stage}.state")))?;
        let state: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{bin} {stage}: state is not JSON ({e}): {text:?}"))?;
        let state = normalise_state(&state, &id, &bundle, pid);
        for (k, v) in state.as_object().into_iter().flatten() {
            facts.insert(format!("{stage}.state.{k}"), v.clone());
        }
        if state.get("pid").is_none() {
            facts.insert(format!("{stage}.state.pid"), json!("absent"));
        }
        // What the hook's stdin, stdout and stderr are (`pipe`, a path...).
        let stdio = fs::read_to_string(out.join(format!("{stage}.stdio")))?;
        facts.insert(format!("{stage}.stdio"), json!(stdio.trim()));
    }
    let order = fs::read_to_string(out.join("order"))?
        .lines()
        .map(str::to_string)
        .collect();
    h.check_no_trace(&id, &b)?;
    Ok(Seen { facts, order })
}

#[test]
fn hooks_see_the_env_cwd_state_and_order_runc_gives_them() -> Result<()> {
    let mut skiff = observe_hooks(
        &skiff_integration::harness::runtime_binary()
            .display()
            .to_string(),
    )?;
    let mut runc = observe_hooks(RUNC)?;
    // skiff's own answers where it differs on purpose (see ACCEPTED).
    let f = &skiff.facts;
    assert_eq!(f["poststart.state.status"], "running");
    assert_eq!(
        f["poststart.cwd"], "/usr",
        "poststart runs in `start`'s cwd"
    );
    assert_eq!(f["createContainer.state.pid"], "PID");
    assert_eq!(f["startContainer.state.pid"], "PID");
    for (stage, what) in ACCEPTED {
        let key = format!("{stage}.{what}");
        skiff.facts.remove(&key);
        runc.facts.remove(&key);
    }
    let diffs: Vec<String> = runc
        .facts
        .iter()
        .filter(|(k, v)| skiff.facts.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: runc {v}, skiff {}",
                skiff.facts.get(k).unwrap_or(&Value::Null)
            )
        })
        .chain(
            skiff
                .facts
                .keys()
                .filter(|k| !runc.facts.contains_key(*k))
                .map(|k| format!("{k}: only skiff has it")),
        )
        .collect();
    assert!(
        diffs.is_empty(),
        "hooks differ from runc:\n{}",
        diffs.join("\n")
    );
    // runc 1.1.5 runs poststart at create; skiff after the process started, before `start`
    // returns: the rest of the order is runc's.
    let pos = |o: &[String], s: &str| o.iter().position(|x| x == s);
    assert!(
        pos(&skiff.order, "poststart") > pos(&skiff.order, "startContainer"),
        "{:?}",
        skiff.order
    );
    skiff.order.retain(|s| s != "poststart");
    runc.order.retain(|s| s != "poststart");
    assert_eq!(skiff.order, runc.order);
    Ok(())
}

/// What happens around a failing hook of `stage` (followed by one that records it ran).
#[derive(Debug, PartialEq)]
struct FailureSeen {
    create_ok: bool,
    start_ok: bool,
    stopped_after_start: bool,
    delete_ok: bool,
    order: Vec<String>,
}

fn observe_failure(bin: &str, failing: &str) -> Result<FailureSeen> {
    let h = Harness::with_binary(bin.into())?;
    let out = h.dir("hookfail")?;
    let host_dir = out.display().to_string();
    let mut b = h.bundle()?;
    b.bind(&out, "/hookout", false)?;
    for stage in STAGES {
        let d = out_dir_for(stage, &host_dir);
        if stage == failing {
            b.add_hook(
                stage,
                json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
                    "echo {stage}-fails >> {d}/order; echo out; echo err >&2; exit 3")]}),
            )?;
        }
        b.add_hook(
            stage,
            json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {stage} >> {d}/order")]}),
        )?;
    }
    b.args(&["true"])?;
    let id = h.id("hookfail");
    let create_ok = h.try_create(&id, &b, &[])?.success();
    let mut start_ok = false;
    let mut stopped_after_start = false;
    if create_ok {
        start_ok = h.start(&id).is_ok();
        stopped_after_start = h.wait_status(&id, "stopped").is_ok();
    }
    let delete_ok = h.delete(&id).is_ok();
    let order = fs::read_to_string(out.join("order"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    h.check_no_trace(&id, &b)?;
    Ok(FailureSeen {
        create_ok,
        start_ok,
        stopped_after_start,
        delete_ok,
        order,
    })
}

#[test]
fn a_failing_hook_at_each_stage_ends_as_with_runc() -> Result<()> {
    let skiff_bin = skiff_integration::harness::runtime_binary()
        .display()
        .to_string();
    for stage in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
    ] {
        let skiff = observe_failure(&skiff_bin, stage)?;
        let mut runc = observe_failure(RUNC, stage)?;
        let mut skiff_order = skiff.order.clone();
        // runc 1.1.5 runs poststart at create (see ACCEPTED); where it ran, so did skiff's.
        if runc.order.contains(&"poststart".to_string()) {
            assert!(
                skiff_order.contains(&"poststart".to_string()),
                "{stage}: {skiff:?}"
            );
        }
        skiff_order.retain(|s| s != "poststart");
        runc.order.retain(|s| s != "poststart");
        assert_eq!(
            (
                skiff.create_ok,
                skiff.start_ok,
                skiff.stopped_after_start,
                skiff.delete_ok,
                skiff_order
            ),
            (
                runc.create_ok,
                runc.start_ok,
                runc.stopped_after_start,
                runc.delete_ok,
                runc.order
            ),
            "a failing {stage} hook: skiff (left) and runc (right) differ"
        );
    }
    Ok(())
}

/// runtime-spec 1.2: a failing poststart hook is a warning; the remaining poststart hooks run, the
/// process runs, `start` succeeds. (runc 1.1.5 fails `create` instead: see ACCEPTED.)
#[test]
fn a_failing_poststart_hook_warns_and_the_lifecycle_goes_on() -> Result<()> {
    let skiff_bin = skiff_integration::harness::runtime_binary()
        .display()
        .to_string();
    let seen = observe_failure(&skiff_bin, "poststart")?;
    assert_eq!(
        seen,
        FailureSeen {
            create_ok: true,
            start_ok: true,
            stopped_after_start: true,
            delete_ok: true,
            order: [
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer",
                "poststart-fails",
                "poststart",
                "poststop"
            ]
            .map(String::from)
            .to_vec(),
        }
    );
    // And `run` returns the process's exit code, with the warning on stderr.
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.add_hook(
        "poststart",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 7"]}),
    )?;
    b.sh("exit 3")?;
    let id = h.id("poststartrun");
    let out = h.run(&id, &b, &[])?;
    assert_eq!(out.exit_code(), 3, "{out}");
    assert!(out.stderr.contains("poststart hook #0"), "{out}");
    Ok(())
}

/// runtime-spec 1.2: a failing poststop hook is a warning; the others run and `delete` succeeds
/// (runc 1.1.5 also exits 0 but skips the remaining poststop hooks).
#[test]
fn a_failing_poststop_hook_warns_and_the_others_run() -> Result<()> {
    let skiff_bin = skiff_integration::harness::runtime_binary()
        .display()
        .to_string();
    let seen = observe_failure(&skiff_bin, "poststop")?;
    assert!(seen.delete_ok, "{seen:?}");
    assert_eq!(
        seen.order[seen.order.len() - 2..],
        ["poststop-fails".to_string(), "poststop".to_string()]
    );
    let runc = observe_failure(RUNC, "poststop")?;
    assert!(runc.delete_ok, "{runc:?}");
    Ok(())
}

/// `run` chdirs to the bundle as runc does: its poststart and poststop hooks run there.
#[test]
fn run_runs_poststart_and_poststop_in_the_bundle() -> Result<()> {
    let h = Harness::new()?;
    let out = h.dir("runcwd")?;
    let mut b = h.bundle()?;
    for stage in ["poststart", "poststop"] {
        b.add_hook(
            stage,
            json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
                "readlink /proc/self/cwd > {}/{stage}", out.display())]}),
        )?;
    }
    b.args(&["true"])?;
    let id = h.id("runcwd");
    let path = b.path_str();
    h.exec(
        &["run", "--bundle", &path, &id],
        Opts {
            cwd: Some("/usr".into()),
            ..Opts::default()
        },
    )?
    .ok()?;
    for stage in ["poststart", "poststop"] {
        assert_eq!(fs::read_to_string(out.join(stage))?.trim(), path, "{stage}");
    }
    Ok(())
}
