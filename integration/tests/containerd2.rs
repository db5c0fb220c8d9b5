//! containerd-shim-skiff-v2 under containerd 2.4 (from `../shared/tools`): what containerd 2.x
//! relies on beyond the Task calls, each compared with containerd's own runc shim. Every test
//! skips (with a message) when the containerd 2.4 tarball is absent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use anyhow::Result;
use skiff_integration::containerd::{Containerd, IMAGE, SKIFF_RUNTIME};

/// containerd 2.4 with the busybox image, or `None` to skip.
fn containerd2() -> Result<Option<Containerd>> {
    Containerd::start_v2()
}

/// `ctr plugins inspect-runtime` for `runtime` (with extra flags), as JSON.
fn inspect_runtime(c: &Containerd, runtime: &str, extra: &[&str]) -> Result<serde_json::Value> {
    let mut args = vec!["plugins", "inspect-runtime", "--runtime", runtime];
    args.extend_from_slice(extra);
    let out = c.ctr_ok(&args)?;
    Ok(serde_json::from_str(&out.stdout)?)
}

/// `BINARY features` as JSON.
fn features_of(binary: &std::path::Path) -> Result<serde_json::Value> {
    let out = std::process::Command::new(binary)
        .arg("features")
        .output()?;
    assert!(out.status.success(), "{} features failed", binary.display());
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn info_reports_the_runtimes_features_to_containerd() -> Result<()> {
    let Some(c) = containerd2()? else {
        return Ok(());
    };
    // A task create makes containerd ask the shim for its runtime info.
    c.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        SKIFF_RUNTIME,
        IMAGE,
        "info1",
        "true",
    ])?;
    assert!(
        !c.log().contains("failed to load runtime info"),
        "containerd could not run -info:\n{}",
        c.log_tail()
    );

    let info = inspect_runtime(&c, SKIFF_RUNTIME, &[])?;
    assert_eq!(info["Name"], SKIFF_RUNTIME, "{info:#}");
    let skiff = skiff_integration::harness::runtime_binary();
    assert_eq!(info["Features"], features_of(&skiff)?, "{info:#}");
    let version = std::process::Command::new(skiff_integration::containerd::shim_binary())
        .arg("-v")
        .output()?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let reported = info["Version"]["Version"].as_str().unwrap_or_default();
    assert!(
        !reported.is_empty() && version.contains(reported),
        "{info:#} vs {version}"
    );
    // The runc shim reports none for absent options; so do we.
    assert!(info["Options"].is_null(), "{info:#}");

    // With options naming another runtime, its features (and the options) come back, as the runc
    // shim does for its BinaryName.
    let toml = c.dir().join("runc.toml");
    std::fs::write(&toml, "BinaryName = \"/usr/sbin/runc\"\n")?;
    let toml = toml.display().to_string();
    let info = inspect_runtime(&c, SKIFF_RUNTIME, &["--runtime-config-path", &toml])?;
    assert_eq!(
        info["Features"],
        features_of(std::path::Path::new("/usr/sbin/runc"))?
    );
    assert_eq!(info["Options"]["config_path"], toml.as_str(), "{info:#}");

    // The runc shim driving skiff reports the same features as our shim does.
    let skiff_path = skiff.display().to_string();
    let runc_shim = inspect_runtime(&c, "io.containerd.runc.v2", &["--runc-binary", &skiff_path])?;
    assert_eq!(runc_shim["Features"], features_of(&skiff)?);
    Ok(())
}

/// A ttrpc client on the shim serving container `id` (ours or containerd's runc shim).
fn task_client(c: &Containerd, id: &str) -> Result<skiff_proto::protos::shim_sync::TaskClient> {
    // containerd 2.x records the shim's answer in bootstrap.json; our shim also writes `address`.
    let bundle = c.bundle(id);
    let address = match std::fs::read_to_string(bundle.join("bootstrap.json")) {
        Ok(json) => serde_json::from_str::<serde_json::Value>(&json)?["address"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Err(_) => std::fs::read_to_string(bundle.join("address"))?,
    };
    let client = skiff_proto::ttrpc::Client::connect(address.trim())?;
    Ok(skiff_proto::protos::shim_sync::TaskClient::new(client))
}

fn ctx() -> skiff_proto::ttrpc::context::Context {
    skiff_proto::ttrpc::context::with_timeout(20_000_000_000)
}

/// A fifo in the instance dir, opened for reading without blocking.
struct FifoReader {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl FifoReader {
    fn new(c: &Containerd, name: &str) -> Result<FifoReader> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = c.dir().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)?;
        Ok(FifoReader { path, file })
    }

    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// What arrives within `time` (or until `done` holds for it).
    fn read_for(&mut self, time: Duration, done: impl Fn(&str) -> bool) -> String {
        use std::io::Read;
        let deadline = std::time::Instant::now() + time;
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < deadline && !done(&String::from_utf8_lossy(&text)) {
            match self.file.read(&mut buf) {
                Ok(n) if n > 0 => text.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// An `ExecProcessRequest` for `args` whose process spec says `spec_terminal`.
fn exec_request(
    id: &str,
    exec_id: &str,
    args: &[&str],
    spec_terminal: bool,
) -> skiff_proto::api::ExecProcessRequest {
    let spec = serde_json::json!({
        "terminal": spec_terminal,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
    });
    let mut any = skiff_proto::protobuf::well_known_types::any::Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    any.value = serde_json::to_vec(&spec).unwrap();
    let mut req = skiff_proto::api::ExecProcessRequest::new();
    req.id = id.into();
    req.exec_id = exec_id.into();
    req.spec = Some(any).into();
    req
}

/// Start exec `exec_id` and, when it started, wait for it and delete it.
fn start_exec(
    client: &skiff_proto::protos::shim_sync::TaskClient,
    id: &str,
    exec_id: &str,
) -> std::result::Result<(), String> {
    use skiff_proto::api::{DeleteRequest, StartRequest, WaitRequest};
    let mut req = StartRequest::new();
    req.id = id.into();
    req.exec_id = exec_id.into();
    let started = client.start(ctx(), &req).map_err(|e| format!("{e:?}"));
    if started.is_ok() {
        let mut req = WaitRequest::new();
        req.id = id.into();
        req.exec_id = exec_id.into();
        client.wait(ctx(), &req).map_err(|e| format!("{e:?}"))?;
    }
    let mut req = DeleteRequest::new();
    req.id = id.into();
    req.exec_id = exec_id.into();
    let _ = client.delete(ctx(), &req);
    started.map(|_| ())
}

/// Run a long-lived container `id` with `runtime` (our shim, or containerd's runc shim driving runc).
fn run_sleeper(c: &Containerd, runtime: &str, id: &str, extra: &[&str]) -> Result<()> {
    let mut args = vec!["run", "-d", "--runtime", runtime];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, id, "sleep", "300"]);
    c.ctr_ok(&args)?;
    Ok(())
}

/// Kill and delete task and container `id`.
fn remove(c: &Containerd, id: &str) -> Result<()> {
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    c.wait_until(Duration::from_secs(10), || {
        c.task_status(id).ok().flatten().as_deref() != Some("RUNNING")
    });
    c.ctr(&["task", "delete", id])?;
    c.ctr(&["container", "delete", id])?;
    Ok(())
}

const RUNC_SHIM: &str = "io.containerd.runc.v2";

#[test]
fn exec_with_a_terminal_request_gets_a_terminal_whatever_the_spec_says() -> Result<()> {
    let Some(c) = containerd2()? else {
        return Ok(());
    };
    for runtime in [RUNC_SHIM, SKIFF_RUNTIME] {
        let id = format!("tty-{}", runtime.split('.').nth(2).unwrap_or("x"));
        run_sleeper(&c, runtime, &id, &[])?;
        let client = task_client(&c, &id)?;
        let mut out = FifoReader::new(&c, &format!("{id}.out"))?;
        let mut req = exec_request(
            &id,
            "e1",
            &["sh", "-c", "[ -t 1 ] && echo IS-A-TTY || echo NOT-A-TTY"],
            false,
        );
        req.terminal = true;
        req.stdout = out.path();
        client.exec(ctx(), &req)?;
        let started = start_exec(&client, &id, "e1");
        let text = out.read_for(Duration::from_secs(10), |t| t.contains("A-TTY"));
        assert!(started.is_ok(), "{runtime}: {started:?}");
        assert!(text.contains("IS-A-TTY"), "{runtime}: {text:?}");
        drop(client);
        remove(&c, &id)?;
    }
    Ok(())
}

#[test]
fn a_failed_exec_writes_nothing_into_the_process_streams() -> Result<()> {
    let Some(c) = containerd2()? else {
        return Ok(());
    };
    for runtime in [RUNC_SHIM, SKIFF_RUNTIME] {
        let id = format!("bad-{}", runtime.split('.').nth(2).unwrap_or("x"));
        run_sleeper(&c, runtime, &id, &[])?;
        let client = task_client(&c, &id)?;
        let mut out = FifoReader::new(&c, &format!("{id}.out"))?;
        let mut err = FifoReader::new(&c, &format!("{id}.err"))?;
        let mut req = exec_request(&id, "e1", &["/no/such/binary"], false);
        req.stdout = out.path();
        req.stderr = err.path();
        client.exec(ctx(), &req)?;
        let started = start_exec(&client, &id, "e1");
        let failure = started.expect_err("exec of a missing binary must fail");
        assert!(failure.contains("/no/such/binary"), "{runtime}: {failure}");
        let streams = format!(
            "{}{}",
            out.read_for(Duration::from_secs(2), |_| false),
            err.read_for(Duration::from_millis(500), |_| false)
        );
        assert_eq!(
            streams, "",
            "{runtime}: the runtime's error reached the streams"
        );
        drop(client);
        remove(&c, &id)?;
    }
    Ok(())
}

/// containerd 1.6 (imported busybox), and 2.4 when the tools tarball is there.
fn both_containerds() -> Result<Vec<Containerd>> {
    let old = Containerd::start()?;
    old.import_busybox()?;
    let mut all = vec![old];
    all.extend(containerd2()?);
    Ok(all)
}

/// The pids in the container's cgroup (`/<namespace>/<id>`, v1 pids/memory or v2).
fn cgroup_procs(c: &Containerd, id: &str) -> Vec<String> {
    ["pids", "memory", ""]
        .iter()
        .find_map(|ctl| {
            skiff_integration::containerd::cgroup_file(c.namespace(), id, ctl, "cgroup.procs")
        })
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn without_its_own_pid_namespace_a_containers_processes_die_with_its_init() -> Result<()> {
    for c in both_containerds()? {
        for runtime in [RUNC_SHIM, SKIFF_RUNTIME] {
            // As in a pod that shares its pid namespace: the container joins the sandbox's.
            let name = runtime.split('.').nth(2).unwrap_or("x");
            let sandbox = format!("sandbox-{name}");
            run_sleeper(&c, runtime, &sandbox, &[])?;
            let sandbox_pid = c
                .tasks()?
                .into_iter()
                .find(|t| t.0 == sandbox)
                .map(|t| t.1)
                .unwrap_or_default();
            let pid_ns = format!("pid:/proc/{sandbox_pid}/ns/pid");
            let id = format!("sharedpid-{name}");
            let what = format!("{:?} {runtime}", c.version());
            c.ctr_ok(&[
                "run",
                "-d",
                "--runtime",
                runtime,
                "--with-ns",
                &pid_ns,
                IMAGE,
                &id,
                "sh",
                "-c",
                "sleep 600 & sleep 1",
            ])?;
            assert!(
                c.wait_until(Duration::from_secs(15), || {
                    c.task_status(&id).ok().flatten().as_deref() == Some("STOPPED")
                }),
                "{what}: the init did not exit"
            );
            let emptied = c.wait_until(Duration::from_secs(5), || cgroup_procs(&c, &id).is_empty());
            let left = cgroup_procs(&c, &id);
            remove(&c, &id)?;
            remove(&c, &sandbox)?;
            assert!(
                emptied,
                "{what}: processes left after the init exited: {left:?}"
            );
        }
    }
    Ok(())
}

/// A runtime wrapper that appends its working directory to `cwds` and runs `binary`.
fn cwd_recording_wrapper(
    c: &Containerd,
    name: &str,
    binary: &str,
) -> Result<(String, std::path::PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let log = c.dir().join(format!("{name}.cwds"));
    let script = c.dir().join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\npwd >> {}\nexec {binary} \"$@\"\n",
            log.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok((script.display().to_string(), log))
}

#[test]
fn the_runtime_runs_in_the_bundle_directory() -> Result<()> {
    let skiff = skiff_integration::harness::runtime_binary();
    for c in both_containerds()? {
        for runtime in [RUNC_SHIM, SKIFF_RUNTIME] {
            let name = runtime.split('.').nth(2).unwrap_or("x");
            let id = format!("cwd-{name}");
            let what = format!("{:?} {runtime}", c.version());
            let (flags, log) = if runtime == RUNC_SHIM {
                let (script, log) = cwd_recording_wrapper(&c, name, "/usr/sbin/runc")?;
                (vec!["--runc-binary".to_string(), script], log)
            } else {
                let (script, log) = cwd_recording_wrapper(&c, name, &skiff.display().to_string())?;
                let toml = c.dir().join(format!("{name}.toml"));
                std::fs::write(&toml, format!("BinaryName = \"{script}\"\n"))?;
                (
                    vec![
                        "--runtime-config-path".to_string(),
                        toml.display().to_string(),
                    ],
                    log,
                )
            };
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            run_sleeper(&c, runtime, &id, &flags)?;
            let bundle = c.bundle(&id).canonicalize()?;
            remove(&c, &id)?;
            let cwds = std::fs::read_to_string(&log)?;
            assert!(cwds.lines().count() >= 3, "{what}: {cwds}");
            for cwd in cwds.lines() {
                assert_eq!(
                    std::path::Path::new(cwd),
                    bundle,
                    "{what}: the runtime ran in {cwd}:\n{cwds}"
                );
            }
        }
    }
    Ok(())
}

/// A cgroup `/<name>` made in every hierarchy for the test, removed (once empty) on drop.
struct TestCgroup {
    dirs: Vec<std::path::PathBuf>,
}

impl TestCgroup {
    fn new(name: &str) -> Result<TestCgroup> {
        let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let hierarchies: Vec<std::path::PathBuf> = if unified {
            vec!["/sys/fs/cgroup".into()]
        } else {
            ["pids", "memory", "cpu"]
                .iter()
                .map(|h| std::path::Path::new("/sys/fs/cgroup").join(h))
                .filter(|h| h.is_dir())
                .collect()
        };
        let mut dirs = Vec::new();
        for h in hierarchies {
            let dir = h.join(name);
            std::fs::create_dir_all(&dir)?;
            dirs.push(dir);
        }
        Ok(TestCgroup { dirs })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn the_shim_moves_into_its_shim_cgroup() -> Result<()> {
    for c in both_containerds()? {
        let name = format!("skiff-shimcg-{}", std::process::id());
        let cgroup = TestCgroup::new(&name)?;
        let toml = c.dir().join("shimcg.toml");
        std::fs::write(&toml, format!("ShimCgroup = \"/{name}\"\n"))?;
        let toml = toml.display().to_string();
        run_sleeper(
            &c,
            SKIFF_RUNTIME,
            "shimcg",
            &["--runtime-config-path", &toml],
        )?;
        let shims = c.skiff_shim_pids();
        let membership: Vec<String> = shims
            .iter()
            .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default())
            .collect();
        remove(&c, "shimcg")?;
        assert_eq!(shims.len(), 1, "{shims:?}");
        let suffix = format!("/{name}");
        let joined: Vec<&str> = membership[0]
            .lines()
            .filter(|l| l.ends_with(&suffix))
            .collect();
        assert_eq!(
            joined.len(),
            cgroup.dirs.len(),
            "{:?}: the shim is not in {name} in every hierarchy:\n{}",
            c.version(),
            membership[0]
        );
        drop(c);
        drop(cgroup);
    }
    Ok(())
}

#[test]
fn kill_and_delete_cope_with_a_container_removed_behind_containerds_back() -> Result<()> {
    let skiff = skiff_integration::harness::runtime_binary();
    for c in both_containerds()? {
        for (runtime, binary, root) in [
            (
                RUNC_SHIM,
                std::path::PathBuf::from("/usr/sbin/runc"),
                "/run/containerd/runc",
            ),
            (SKIFF_RUNTIME, skiff.clone(), "/run/containerd/skiff"),
        ] {
            let id = format!("gone-{}", runtime.split('.').nth(2).unwrap_or("x"));
            let what = format!("{:?} {runtime}", c.version());
            run_sleeper(&c, runtime, &id, &[])?;
            let root = std::path::Path::new(root).join(c.namespace());
            let out = std::process::Command::new(&binary)
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .output()?;
            assert!(out.status.success(), "{what}: {out:?}");
            assert!(
                c.wait_until(Duration::from_secs(10), || {
                    c.task_status(&id).ok().flatten().as_deref() == Some("STOPPED")
                }),
                "{what}: containerd did not see the exit"
            );
            // Both shims answer that the process is gone (NotFound; containerd 2.4 prints the
            // shim's message without the code), and delete the task.
            for kill in [
                c.ctr(&["task", "kill", "-s", "SIGKILL", &id])?,
                c.ctr(&["task", "kill", "--all", "-s", "SIGKILL", &id])?,
            ] {
                let said = kill.stderr.to_lowercase();
                assert!(
                    !kill.success() && (said.contains("not found") || said.contains("finished")),
                    "{what}: {kill}"
                );
            }
            let delete = c.ctr(&["task", "delete", &id])?;
            let _ = c.ctr(&["container", "delete", &id]);
            assert!(delete.success(), "{what}: {delete}\n{}", c.log_tail());
            assert!(
                c.task_status(&id)?.is_none(),
                "{what}: the task is still listed"
            );
        }
    }
    Ok(())
}

#[test]
fn kill_stops_a_container_whose_runtime_record_was_removed() -> Result<()> {
    for c in both_containerds()? {
        let what = format!("{:?}", c.version());
        for all in [false, true] {
            let id = format!("unrecorded-{all}");
            run_sleeper(&c, SKIFF_RUNTIME, &id, &[])?;
            let pid: i32 = c
                .tasks()?
                .into_iter()
                .find(|t| t.0 == id)
                .and_then(|t| t.1.parse().ok())
                .unwrap_or_default();
            // The record goes, the processes stay (as when a tool that cannot read skiff's state,
            // or a wiped /run, removed it).
            let record = std::path::Path::new("/run/containerd/skiff")
                .join(c.namespace())
                .join(&id);
            std::fs::remove_dir_all(&record)?;
            let mut kill = vec!["task", "kill", "-s", "SIGKILL"];
            if all {
                kill.push("--all");
            }
            kill.push(&id);
            let out = c.ctr(&kill)?;
            let stopped = c.wait_until(Duration::from_secs(10), || {
                c.task_status(&id).ok().flatten().as_deref() == Some("STOPPED")
            });
            let delete = c.ctr(&["task", "delete", &id])?;
            let _ = c.ctr(&["container", "delete", &id]);
            if skiff_integration::host::process_alive(pid) {
                // SAFETY: kill takes plain integers; the pid is the container's sleep.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            assert!(out.success(), "{what} all={all}: {out}");
            assert!(stopped, "{what} all={all}: the task did not stop");
            assert!(delete.success(), "{what} all={all}: {delete}");
        }
    }
    Ok(())
}

/// `major:minor` of the whole disk holding `path` (throttle rules take disks, not partitions).
fn disk_of(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if sys.join("partition").exists() {
        let parent = std::fs::read_to_string(sys.join("../dev")).ok()?;
        return Some(parent.trim().to_string());
    }
    sys.exists().then(|| format!("{major}:{minor}"))
}

/// The value at `path` (`a.b.c`) of a JSON document, absent (omitted zero) as 0.
fn at(v: &serde_json::Value, path: &str) -> u64 {
    path.split('.').fold(v, |v, k| &v[k]).as_u64().unwrap_or(0)
}

/// A `memory.stat` key's name in containerd's v1 `MemoryStat` (JSON), if it has one.
fn v1_memory_field(key: &str) -> Option<String> {
    let (total, base) = match key.strip_prefix("total_") {
        Some(rest) => ("total_", rest),
        None => ("", key),
    };
    let name = match base {
        "cache" | "rss" | "rss_huge" | "mapped_file" | "dirty" | "writeback" | "inactive_anon"
        | "active_anon" | "inactive_file" | "active_file" | "unevictable" => base,
        "pgpgin" => "pg_pg_in",
        "pgpgout" => "pg_pg_out",
        "pgfault" => "pg_fault",
        "pgmajfault" => "pg_maj_fault",
        "hierarchical_memory_limit" if total.is_empty() => base,
        "hierarchical_memsw_limit" if total.is_empty() => "hierarchical_swap_limit",
        _ => return None,
    };
    Some(format!("{total}{name}"))
}

#[test]
fn stats_carry_every_field_the_cgroup_files_have() -> Result<()> {
    let Some(c) = containerd2()? else {
        return Ok(());
    };
    let id = "stats";
    run_sleeper(&c, SKIFF_RUNTIME, id, &[])?;
    let ns = c.namespace().to_string();
    let file = |ctl: &str, f: &str| skiff_integration::containerd::cgroup_file(&ns, id, ctl, f);
    let v1 = file("memory", "memory.stat").is_some();
    // The throttle policy counts I/O only for cgroups with a limit: give the container one.
    let disk = disk_of(&c.bundle(id).join("rootfs"));
    let throttled = v1
        && disk.as_ref().is_some_and(|d| {
            let dir = std::path::Path::new("/sys/fs/cgroup/blkio")
                .join(&ns)
                .join(id);
            std::fs::write(
                dir.join("blkio.throttle.write_bps_device"),
                format!("{d} 1000000000"),
            )
            .is_ok()
        });
    // Some system time, some user time, and a synced write.
    c.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "work",
        id,
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=1 count=200000 2>/dev/null; \
         i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; \
         dd if=/dev/zero of=/written bs=64k count=16 conv=fsync 2>/dev/null",
    ])?;
    let out = c.ctr_ok(&["task", "metrics", "--format", "json", id])?;
    let m: serde_json::Value = serde_json::from_str(&out.stdout)?;
    if v1 {
        let total = at(&m, "cpu.usage.total");
        let (user, kernel) = (at(&m, "cpu.usage.user"), at(&m, "cpu.usage.kernel"));
        let times = file("cpuacct", "cpuacct.stat").unwrap_or_default();
        let ticks = |k: &str| {
            times
                .lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert!(total > 0 && kernel > 0 && user > 0, "{m:#}");
        assert!(
            kernel + user <= total,
            "kernel {kernel} + user {user} > total {total}"
        );
        assert_eq!(kernel, ticks("system ") * 10_000_000, "{times}");
        assert_eq!(user, ticks("user ") * 10_000_000, "{times}");
        let usage: u64 = file("cpuacct", "cpuacct.usage")
            .unwrap_or_default()
            .trim()
            .parse()?;
        assert_eq!(total, usage);

        let stat = file("memory", "memory.stat").unwrap_or_default();
        let mut checked = 0;
        for line in stat.lines() {
            let Some((key, value)) = line.split_once(' ') else {
                continue;
            };
            let Some(field) = v1_memory_field(key) else {
                continue;
            };
            let value: u64 = value.trim().parse()?;
            assert_eq!(
                at(&m["memory"], &field),
                value,
                "memory.stat {key} as {field}"
            );
            checked += 1;
        }
        assert!(
            checked >= 30,
            "only {checked} memory.stat keys checked:\n{stat}"
        );
        assert!(at(&m, "memory.pg_pg_in") > 0 && at(&m, "memory.total_pg_pg_out") > 0);
        for (entry, prefix) in [
            ("usage", "memory."),
            ("swap", "memory.memsw."),
            ("kernel", "memory.kmem."),
        ] {
            for (field, name) in [
                ("limit", "limit_in_bytes"),
                ("max", "max_usage_in_bytes"),
                ("failcnt", "failcnt"),
            ] {
                if let Some(text) = file("memory", &format!("{prefix}{name}")) {
                    assert_eq!(
                        at(&m, &format!("memory.{entry}.{field}")),
                        text.trim().parse::<u64>()?,
                        "{prefix}{name}"
                    );
                }
            }
        }
        if throttled {
            let bytes =
                file("blkio", "blkio.throttle.io_service_bytes_recursive").unwrap_or_default();
            let written: u64 = bytes
                .lines()
                .find_map(
                    |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                        [_, "Write", n] => n.parse().ok(),
                        _ => None,
                    },
                )
                .unwrap_or(0);
            assert!(written >= 1024 * 1024, "{bytes}");
            let entries = m["blkio"]["io_service_bytes_recursive"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let write = entries
                .iter()
                .find(|e| e["op"] == "Write")
                .unwrap_or_else(|| panic!("no Write entry in {:#}", m["blkio"]));
            assert_eq!(write["value"].as_u64(), Some(written));
            assert!(
                write["device"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("/dev/"),
                "{write}"
            );
            assert!(!m["blkio"]["io_serviced_recursive"]
                .as_array()
                .is_none_or(Vec::is_empty));
        } else {
            eprintln!("no block device limit could be set: blkio not checked");
        }
    } else {
        let stat = file("", "cpu.stat").unwrap_or_default();
        for (key, field) in [
            ("usage_usec", "usage_usec"),
            ("user_usec", "user_usec"),
            ("system_usec", "system_usec"),
        ] {
            let want = stat
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{key} "))?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0);
            assert_eq!(at(&m, &format!("cpu.{field}")), want, "cpu.stat {key}");
        }
        let mstat = file("", "memory.stat").unwrap_or_default();
        for key in [
            "anon",
            "file",
            "kernel_stack",
            "slab",
            "sock",
            "shmem",
            "pgfault",
            "pgmajfault",
            "slab_reclaimable",
            "slab_unreclaimable",
        ] {
            let want = mstat
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{key} "))?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0);
            assert_eq!(at(&m, &format!("memory.{key}")), want, "memory.stat {key}");
        }
        let io = file("", "io.stat").unwrap_or_default();
        assert_eq!(
            m["io"]["usage"].as_array().map_or(0, Vec::len),
            io.lines().count(),
            "{io}"
        );
    }
    remove(&c, id)?;
    Ok(())
}

/// containerd's log lines for connecting to the shim of container `id` (2.x logs them).
fn connect_lines(c: &Containerd, id: &str) -> Vec<String> {
    let needle = format!("connecting to shim {id}");
    c.log()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn containerd_2_speaks_task_v3_with_the_shim_and_1_6_still_gets_a_bare_address() -> Result<()> {
    for mut c in both_containerds()? {
        let v2 = c.version() == skiff_integration::containerd::Version::V2_4;
        let id = "boot";
        run_sleeper(&c, SKIFF_RUNTIME, id, &[])?;
        // Task calls beyond create/start go over the same connection.
        let out = c.ctr_ok(&["task", "exec", "--exec-id", "e1", id, "echo", "hello"])?;
        assert_eq!(out.stdout.trim(), "hello", "{:?}", c.version());
        c.ctr_ok(&["task", "pause", id])?;
        assert_eq!(c.task_status(id)?.as_deref(), Some("PAUSED"));
        c.ctr_ok(&["task", "resume", id])?;
        c.ctr_ok(&["task", "metrics", id])?;
        let address = std::fs::read_to_string(c.bundle(id).join("address"))?;
        assert!(address.starts_with("unix:///"), "{address}");
        if v2 {
            // containerd records the parsed answer in bootstrap.json and logs the version it uses.
            let boot = std::fs::read_to_string(c.bundle(id).join("bootstrap.json"))?;
            let boot: serde_json::Value = serde_json::from_str(&boot)?;
            assert_eq!(boot["version"], 3, "{boot}");
            assert_eq!(boot["protocol"], "ttrpc", "{boot}");
            assert_eq!(boot["address"], address.as_str(), "{boot}");
            let lines = connect_lines(&c, id);
            assert!(
                lines.len() == 1 && lines[0].contains("version=3") && lines[0].contains(&address),
                "containerd 2.4 did not connect with Task v3: {lines:?}\n{}",
                c.log_tail()
            );
        }
        // A restarted containerd reconnects the way it recorded (2.x: bootstrap.json).
        c.restart()?;
        let out = c.ctr_ok(&["task", "exec", "--exec-id", "e2", id, "echo", "again"])?;
        assert_eq!(out.stdout.trim(), "again", "{:?}", c.version());
        if v2 {
            let lines = connect_lines(&c, id);
            assert!(
                lines.len() == 2 && lines[1].contains("version=3"),
                "after the restart: {lines:?}"
            );
        }
        remove(&c, id)?;
        assert!(c.skiff_shim_pids().is_empty(), "{:?}", c.version());
    }
    Ok(())
}
