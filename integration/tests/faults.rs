//! Faults: the runtime SIGKILLed at each system call of its paths in turn (ptrace, see
//! `skiff_integration::ptrace`). After each kill, `state` answers (the container or "does not
//! exist"), `delete --force` leaves nothing (no state directory, no cgroup directory in any
//! hierarchy, parents included, no process, no mount of the bundle) and the id can be created
//! again.
//!
//! `create` is killed at every one of its system calls; `start`, `run -d`, `exec` and `delete` at a
//! stride (their paths share create's, or are short). `SKIFF_FAULT_STRIDE` (default 1) thins the
//! create sweep for a quick run; `SKIFF_FAULT_TIMES` prints what each kill and recovery took.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use skiff_integration::host::existing_cgroup_dirs;
use skiff_integration::ptrace::Traced;
use skiff_integration::{Bundle, Harness};

/// A bundle whose cgroup is two levels below a fresh top cgroup that does not exist yet, so the
/// runtime makes parents it must also remove. Returns the bundle and the top cgroup.
fn nested_bundle(h: &Harness) -> Result<(Bundle, String)> {
    let mut b = h.bundle()?;
    let top = b.cgroups_path().context("harness bundles have a cgroup")?;
    let path = format!("{top}/p/c");
    b.edit(|c| c["linux"]["cgroupsPath"] = json!(path))?;
    b.args(&["sleep", "60"])?;
    Ok((b, top))
}

/// After a kill: `state` answers sensibly, `delete --force` succeeds and nothing is left.
fn recover(h: &Harness, id: &str, b: &Bundle, top: &str, when: &str) -> Result<()> {
    let st = h.cmd(&["state", id])?;
    ensure!(
        st.success() || st.stderr.contains("does not exist"),
        "{when}: state: {st}"
    );
    let t = Instant::now();
    h.delete_force(id)
        .with_context(|| format!("{when}: delete --force"))?;
    if std::env::var("SKIFF_FAULT_TIMES").is_ok() {
        eprintln!("delete {:?}", t.elapsed());
    }
    h.check_no_trace(id, b).with_context(|| when.to_string())?;
    let left = existing_cgroup_dirs(top)?;
    ensure!(left.is_empty(), "{when}: cgroup parents are left: {left:?}");
    let st = h.cmd(&["state", id])?;
    ensure!(
        st.stderr.contains("does not exist"),
        "{when}: state after delete --force: {st}"
    );
    Ok(())
}

/// How many system calls `args` makes when nothing kills it (after `setup`), cleaned up after.
fn count(
    h: &Harness,
    id: &str,
    b: &Bundle,
    setup: &dyn Fn() -> Result<()>,
    args: &[&str],
) -> Result<u64> {
    setup()?;
    let n = match h.traced(args, None)? {
        Traced::Finished { code: 0, syscalls } => syscalls,
        other => bail!("`{}` failed untouched: {other:?}", args.join(" ")),
    };
    h.delete_force(id)?;
    h.check_no_trace(id, b)?;
    Ok(n)
}

/// Kills `args` at system call 1, 1+stride, ... up to its count; `setup` runs before each.
fn sweep(
    h: &Harness,
    id: &str,
    (b, top): (&Bundle, &str),
    setup: &dyn Fn() -> Result<()>,
    args: &[&str],
    stride: u64,
) -> Result<u64> {
    let total = count(h, id, b, setup, args)?;
    let started = Instant::now();
    let mut killed = 0;
    let mut n = 1;
    while n <= total {
        setup()?;
        let t = Instant::now();
        let when = format!("`{}` killed at system call {n} of {total}", args.join(" "));
        match h.traced(args, Some(n))? {
            Traced::Killed => killed += 1,
            // The path varies a little between runs (retries, EINTR): finishing is fine too,
            // if it succeeded (the id was free again after the last kill).
            Traced::Finished { code: 0, .. } => {}
            other => bail!("{when}: {other:?}"),
        }
        let t2 = Instant::now();
        recover(h, id, b, top, &when)?;
        if std::env::var("SKIFF_FAULT_TIMES").is_ok() {
            eprintln!("{n}: kill {:?} recover {:?}", t2 - t, t2.elapsed());
        }
        n += stride;
    }
    eprintln!(
        "{}: {killed} kills over {total} system calls in {:?}",
        args.join(" "),
        started.elapsed()
    );
    ensure!(killed > 0, "no kill landed");
    Ok(total)
}

fn stride_from_env(default: u64) -> u64 {
    std::env::var("SKIFF_FAULT_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(default)
}

#[test]
fn create_killed_at_every_system_call_leaves_nothing_after_delete_force() -> Result<()> {
    let h = Harness::new()?;
    let (b, top) = nested_bundle(&h)?;
    let id = h.id("fault-create");
    let path = b.path_str();
    let args = ["create", "--bundle", path.as_str(), id.as_str()];
    let none = || Ok(());
    let stride = stride_from_env(1);
    let total = sweep(&h, &id, (&b, &top), &none, &args, stride)?;
    ensure!(total > 50, "suspiciously short create path: {total}");
    // The id is reusable after all that.
    h.try_create(&id, &b, &[])?.ok()?;
    ensure!(h.status(&id)? == "created");
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)
}

#[test]
fn run_detached_killed_along_its_path_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    let (b, top) = nested_bundle(&h)?;
    let id = h.id("fault-run");
    let path = b.path_str();
    let args = ["run", "-d", "--bundle", path.as_str(), id.as_str()];
    sweep(
        &h,
        &id,
        (&b, &top),
        &|| Ok(()),
        &args,
        stride_from_env(1) * 7,
    )?;
    Ok(())
}

/// A create that joins a user namespace by path goes through a first stage (which joins it and
/// clones the init with CLONE_PARENT): killed along that path too, it leaves nothing.
#[test]
fn create_joining_a_user_namespace_killed_along_its_path_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    let (mut b, top) = nested_bundle(&h)?;
    let holder = skiff_integration::userns::UsernsHolder::start(0, 65_536)?;
    b.set_namespace("user", Some(&holder.path()))?;
    let id = h.id("fault-userns");
    let path = b.path_str();
    let args = ["create", "--bundle", path.as_str(), id.as_str()];
    sweep(
        &h,
        &id,
        (&b, &top),
        &|| Ok(()),
        &args,
        stride_from_env(1) * 3,
    )?;
    Ok(())
}

/// A create with an idmapped bind makes a user namespace for the mapping (a helper process) and a
/// detached, idmapped tree: killed along that path, it leaves no helper and no mount.
#[test]
fn create_with_an_idmapped_mount_killed_along_its_path_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    let (mut b, top) = nested_bundle(&h)?;
    let src = h.dir("idmap-src")?;
    let map = json!([{"containerID": 0, "hostID": 100_000, "size": 65_536}]);
    b.add_mount(json!({
        "destination": "/data", "type": "bind", "source": src.display().to_string(),
        "options": ["rbind"], "uidMappings": map.clone(), "gidMappings": map,
    }))?;
    let id = h.id("fault-idmap");
    let path = b.path_str();
    let args = ["create", "--bundle", path.as_str(), id.as_str()];
    let shown = src.display().to_string();
    let no_mount = || -> Result<()> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        ensure!(!info.contains(&shown), "{shown} is mounted on the host");
        Ok(())
    };
    sweep(
        &h,
        &id,
        (&b, &top),
        &no_mount,
        &args,
        stride_from_env(1) * 3,
    )?;
    no_mount()
}

#[test]
fn start_killed_along_its_path_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    let (b, top) = nested_bundle(&h)?;
    let id = h.id("fault-start");
    let setup = || h.try_create(&id, &b, &[])?.ok().map(drop);
    sweep(&h, &id, (&b, &top), &setup, &["start", id.as_str()], 3)?;
    Ok(())
}

#[test]
fn exec_killed_along_its_path_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    let (b, top) = nested_bundle(&h)?;
    let id = h.id("fault-exec");
    let setup = || {
        h.try_create(&id, &b, &[])?.ok()?;
        h.start(&id).map(drop)
    };
    let args = ["exec", id.as_str(), "true"];
    sweep(&h, &id, (&b, &top), &setup, &args, 5)?;
    Ok(())
}

#[test]
fn delete_killed_along_its_path_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    let (b, top) = nested_bundle(&h)?;
    let id = h.id("fault-delete");
    let setup = || {
        h.try_create(&id, &b, &[])?.ok()?;
        h.start(&id).map(drop)
    };
    let args = ["delete", "--force", id.as_str()];
    sweep(&h, &id, (&b, &top), &setup, &args, 3)?;
    Ok(())
}

/// While a create is under way, `state` and `list` see it, as `creating`, without waiting for it
/// (a createRuntime hook asks, from inside the create); a hook that fails makes the create leave
/// nothing, cgroup parents included.
#[test]
fn a_create_in_progress_is_reported_as_creating() -> Result<()> {
    let h = Harness::new()?;
    let (mut b, top) = nested_bundle(&h)?;
    let id = h.id("creating");
    let out = h.path("state-during-create");
    let ask = format!(
        "{bin} --root {root} state {id} > {out}; {bin} --root {root} list >> {out}",
        bin = h.bin().display(),
        root = h.root().display(),
        out = out.display()
    );
    b.add_hook(
        "createRuntime",
        json!({"path": "/bin/sh", "args": ["sh", "-c", ask], "timeout": 10}),
    )?;
    h.try_create(&id, &b, &[])?.ok()?;
    let seen = std::fs::read_to_string(&out)?;
    let (state, list) = seen.split_at(seen.find("ID ").context("no list output")?);
    let state: serde_json::Value =
        serde_json::from_str(state).with_context(|| format!("state: {seen}"))?;
    ensure!(state["status"] == "creating", "{state}");
    ensure!(
        state["pid"].as_i64().unwrap_or(0) > 0,
        "the init's pid: {state}"
    );
    ensure!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains(" creating ")),
        "{list}"
    );
    ensure!(h.status(&id)? == "created");
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)?;
    ensure!(existing_cgroup_dirs(&top)?.is_empty(), "parents left");

    // A failing hook: the create fails and removes what it made, parents included.
    b.edit(|c| c["hooks"]["createRuntime"] = json!([{"path": "/bin/false"}]))?;
    let o = h.try_create(&id, &b, &[])?;
    ensure!(!o.success(), "{o}");
    h.check_no_trace(&id, &b)?;
    let left = existing_cgroup_dirs(&top)?;
    ensure!(
        left.is_empty(),
        "a failed create left cgroup parents: {left:?}"
    );
    Ok(())
}
