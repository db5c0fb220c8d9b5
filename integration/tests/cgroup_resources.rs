//! `linux.resources` and the cgroup commands (`pause`, `resume`, `ps`, `events`, `update`,
//! `kill --all`), on cgroup v1 (hybrid hosts) and v2 (scripts/vm-test.sh). Every value is read back
//! from the container's cgroup files; what the host cannot do must fail naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use skiff_integration::cgroup_helpers::{
    cgroup_file, controller_dir, host_has_file, is_v2, keyed_value, read_cgroup, wait_for,
};
use skiff_integration::host::process_alive;
use skiff_integration::{wait_for_file, Bundle, Harness, Opts};

/// Merge `resources` into the bundle's `linux.resources` (keeping its device rules).
fn set_resources(b: &mut Bundle, resources: Value) -> Result<()> {
    b.edit(|c| {
        if let (Some(dst), Some(src)) = (
            c["linux"]["resources"].as_object_mut(),
            resources.as_object(),
        ) {
            for (k, v) in src {
                dst.insert(k.clone(), v.clone());
            }
        }
    })?;
    Ok(())
}

/// Create, expecting failure whose message names `field`, and check nothing is left.
fn refused(h: &Harness, b: &Bundle, field: &str) -> Result<()> {
    let id = h.id("bad");
    let out = h.try_create(&id, b, &[])?;
    assert!(!out.success(), "create succeeded: {out}");
    assert!(
        out.stderr.contains(field),
        "the error does not name {field}: {out}"
    );
    h.check_no_trace(&id, b)?;
    Ok(())
}

fn cgroup_of(b: &Bundle) -> String {
    b.cgroups_path().expect("the harness sets cgroupsPath")
}

/// The CPU time (user + system, in clock ticks) a process has used, from /proc.
fn cpu_ticks(pid: i32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Ok(f.iter().sum())
}

fn is_frozen(cgroup: &str) -> Result<bool> {
    Ok(if is_v2()? {
        let t = read_cgroup(cgroup, "", "cgroup.events")?;
        keyed_value(&t, "frozen") == Some(1)
    } else {
        read_cgroup(cgroup, "freezer", "freezer.state")? == "FROZEN"
    })
}

#[test]
fn memory_cpu_and_pids_limits_are_in_the_cgroup() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let v2 = is_v2()?;
    let swap_file = if v2 {
        "memory.swap.max"
    } else {
        "memory.memsw.limit_in_bytes"
    };
    let swap = host_has_file("memory", swap_file)?;
    let mut memory = json!({"limit": 104857600, "reservation": 52428800});
    if swap {
        memory["swap"] = json!(209715200);
    }
    set_resources(
        &mut b,
        json!({
            "memory": memory,
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
            "pids": {"limit": 50}
        }),
    )?;
    let cg = cgroup_of(&b);
    let id = h.id("limits");
    h.create(&id, &b)?;
    let want: Vec<(&str, &str, &str)> = if v2 {
        vec![
            ("memory", "memory.max", "104857600"),
            ("memory", "memory.low", "52428800"),
            ("cpu", "cpu.weight", "20"),
            ("cpu", "cpu.max", "50000 100000"),
            ("cpuset", "cpuset.cpus", "0"),
            ("cpuset", "cpuset.mems", "0"),
            ("pids", "pids.max", "50"),
        ]
    } else {
        vec![
            ("memory", "memory.limit_in_bytes", "104857600"),
            ("memory", "memory.soft_limit_in_bytes", "52428800"),
            ("cpu", "cpu.shares", "512"),
            ("cpu", "cpu.cfs_quota_us", "50000"),
            ("cpu", "cpu.cfs_period_us", "100000"),
            ("cpuset", "cpuset.cpus", "0"),
            ("cpuset", "cpuset.mems", "0"),
            ("pids", "pids.max", "50"),
        ]
    };
    for (ctrl, file, value) in want {
        assert_eq!(read_cgroup(&cg, ctrl, file)?, value, "{ctrl}/{file}");
    }
    if swap {
        // v2's memory.swap.max is swap alone: memory+swap minus memory.
        let value = if v2 { "104857600" } else { "209715200" };
        assert_eq!(read_cgroup(&cg, "memory", swap_file)?, value, "{swap_file}");
    }
    h.start(&id)?;
    // The statistics see the same limits.
    let out = h.cmd(&["events", "--stats", &id])?.ok()?;
    let ev: Value = serde_json::from_str(out.stdout.trim()).context("events --stats JSON")?;
    assert_eq!(ev["type"], "stats", "{ev}");
    assert_eq!(ev["id"], id.as_str(), "{ev}");
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 104857600, "{ev}");
    assert_eq!(ev["data"]["pids"]["limit"], 50, "{ev}");
    assert!(ev["data"]["pids"]["current"].as_u64() >= Some(1), "{ev}");
    assert!(
        ev["data"]["memory"]["usage"]["usage"].as_u64() > Some(0),
        "{ev}"
    );
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// The memory settings only v1 has files for: applied there; on v2 ignored (the rest of the
/// memory settings applied), as runc 1.1.5 does. `kernelTCP` and `useHierarchy` are ignored on
/// both, as by runc (which warns about kernel memory settings).
#[test]
fn v1_only_memory_settings() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    set_resources(
        &mut b,
        json!({"memory": {"limit": 67108864, "swappiness": 10, "disableOOMKiller": true,
                          "useHierarchy": false, "kernelTCP": 16777216}}),
    )?;
    let cg = cgroup_of(&b);
    let id = h.id("v1mem");
    let out = h.create(&id, &b)?;
    assert!(
        out.stderr.contains("level=warning")
            && out.stderr.contains("Kernel memory settings are ignored"),
        "no warning about kernelTCP: {out}"
    );
    if is_v2()? {
        assert_eq!(read_cgroup(&cg, "memory", "memory.max")?, "67108864");
        for f in [
            "memory.swappiness",
            "memory.oom_control",
            "memory.use_hierarchy",
        ] {
            assert!(!cgroup_file(&cg, "memory", f)?.exists(), "{f} on v2");
        }
        return Ok(());
    }
    assert_eq!(read_cgroup(&cg, "memory", "memory.swappiness")?, "10");
    assert_eq!(read_cgroup(&cg, "memory", "memory.use_hierarchy")?, "1");
    let oom = read_cgroup(&cg, "memory", "memory.oom_control")?;
    assert_eq!(keyed_value(&oom, "oom_kill_disable"), Some(1), "{oom}");
    let tcp = read_cgroup(&cg, "memory", "memory.kmem.tcp.limit_in_bytes")?;
    assert_ne!(tcp, "16777216", "kernelTCP was applied");
    Ok(())
}

#[test]
fn block_io_weight_and_throttling() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let v2 = is_v2()?;
    // Which weight file the kernel offers depends on the I/O scheduler.
    let (ctrl, candidates): (&str, &[&str]) = if v2 {
        ("io", &["io.bfq.weight", "io.weight"])
    } else {
        ("blkio", &["blkio.weight", "blkio.bfq.weight"])
    };
    let mut file = None;
    for f in candidates {
        if host_has_file(ctrl, f)? {
            file = Some(*f);
            break;
        }
    }
    set_resources(&mut b, json!({"blockIO": {"weight": 500}}))?;
    let Some(file) = file else {
        return refused(&h, &b, "linux.resources.blockIO.weight");
    };
    let cg = cgroup_of(&b);
    let id = h.id("blkio");
    h.create(&id, &b)?;
    let got = read_cgroup(&cg, ctrl, file)?;
    // io.weight is on v2's 1-10000 scale and reads "default N".
    let want = if file == "io.weight" { "4950" } else { "500" };
    assert!(
        got.split_whitespace().any(|w| w == want),
        "{file} is {got:?}, want {want}"
    );
    Ok(())
}

#[test]
fn hugepage_limits_or_a_clear_error() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    set_resources(
        &mut b,
        json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}),
    )?;
    let file = if is_v2()? {
        "hugetlb.2MB.max"
    } else {
        "hugetlb.2MB.limit_in_bytes"
    };
    if !host_has_file("hugetlb", file)? {
        return refused(&h, &b, "linux.resources.hugepageLimits[0]");
    }
    let cg = cgroup_of(&b);
    let id = h.id("huge");
    h.create(&id, &b)?;
    assert_eq!(read_cgroup(&cg, "hugetlb", file)?, "4194304");
    Ok(())
}

#[test]
fn network_class_id_or_a_clear_error_and_ignored_on_v2() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    set_resources(&mut b, json!({"network": {"classID": 1048577}}))?;
    let cg = cgroup_of(&b);
    if is_v2()? {
        // Ignored on v2 (net_cls is a v1 controller), as runc ignores it.
        let id = h.id("netcls");
        h.create(&id, &b)?;
        return Ok(());
    }
    if controller_dir(&cg, "net_cls")?.is_none() {
        return refused(&h, &b, "linux.resources.network.classID");
    }
    let id = h.id("netcls");
    h.create(&id, &b)?;
    assert_eq!(read_cgroup(&cg, "net_cls", "net_cls.classid")?, "1048577");
    Ok(())
}

#[test]
fn unified_keys_on_v2_and_refused_on_v1() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    set_resources(
        &mut b,
        json!({"pids": {"limit": 30}, "unified": {"pids.max": "12", "memory.high": "50000000"}}),
    )?;
    if !is_v2()? {
        return refused(&h, &b, "linux.resources.unified");
    }
    let cg = cgroup_of(&b);
    let id = h.id("unified");
    h.create(&id, &b)?;
    // Unified keys are written last, so they win.
    assert_eq!(read_cgroup(&cg, "pids", "pids.max")?, "12");
    // The kernel rounds to pages.
    let high: u64 = read_cgroup(&cg, "memory", "memory.high")?.parse()?;
    assert!(
        (49_000_000..=50_000_000).contains(&high),
        "memory.high {high}"
    );
    Ok(())
}

#[test]
fn invalid_resources_are_refused_naming_the_field() -> Result<()> {
    let h = Harness::new()?;
    let cases = [
        (
            json!({"memory": {"limit": -5}}),
            "linux.resources.memory.limit",
        ),
        (
            json!({"cpu": {"quota": 50000, "period": 50}}),
            "linux.resources.cpu.period",
        ),
        (json!({"cpu": {"quota": 10}}), "linux.resources.cpu.quota"),
        (json!({"pids": {"limit": -3}}), "linux.resources.pids.limit"),
        (
            json!({"devices": [{"allow": true, "type": "p", "access": "rwm"}]}),
            "linux.resources.devices[0].type",
        ),
        (
            json!({"devices": [{"allow": true, "type": "x", "access": "rwm"}]}),
            "linux.resources.devices[0].type",
        ),
        (
            json!({"devices": [{"allow": true, "type": "c", "access": "rwz"}]}),
            "linux.resources.devices[0].access",
        ),
        (
            json!({"unified": {"bogus.max": "1"}}),
            "linux.resources.unified",
        ),
        (
            json!({"unified": {"memory.bogus": "1"}}),
            "linux.resources.unified",
        ),
    ];
    for (resources, field) in cases {
        let mut b = h.bundle()?;
        b.args(&["true"])?;
        set_resources(&mut b, resources.clone())?;
        refused(&h, &b, field).with_context(|| format!("resources {resources}"))?;
    }
    Ok(())
}

#[test]
fn device_rules_allow_and_deny() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    // mknod is allowed for any device; opening is what the rules decide. Minors 200 and 201 of
    // major 1 have no driver: an allowed open fails with ENXIO, a denied one with EPERM.
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(l) = c["process"]["capabilities"][set].as_array_mut() {
                l.push(json!("CAP_MKNOD"));
            }
        }
        if let Some(l) = c["linux"]["resources"]["devices"].as_array_mut() {
            l.push(json!({"allow": true, "type": "c", "major": 1, "minor": 201, "access": "w"}));
        }
    })?;
    b.sh(
        "mknod /dev/a c 1 200 && mknod /dev/b c 1 201 && echo made; \
          (echo x > /dev/a) 2>&1; (echo x > /dev/b) 2>&1; cat /dev/b 2>&1; \
          (echo x > /dev/null) 2>&1 && echo null-ok",
    )?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"made"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/dev/a") && l.contains("not permitted")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/dev/b") && l.contains("No such device")),
        "{out}"
    );
    // The rule allows writing only.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cat") && l.contains("not permitted")),
        "{out}"
    );
    assert!(out.contains("null-ok"), "{out}");
    Ok(())
}

#[test]
fn memory_hog_is_oom_killed_and_events_reports_it() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    // busybox tail keeps its whole input when it sees no newline.
    b.args(&["tail", "/dev/zero"])?;
    set_resources(
        &mut b,
        json!({"memory": {"limit": 33554432, "swap": 33554432}}),
    )?;
    let swap_file = if is_v2()? {
        "memory.swap.max"
    } else {
        "memory.memsw.limit_in_bytes"
    };
    if !host_has_file("memory", swap_file)? {
        set_resources(&mut b, json!({"memory": {"limit": 33554432}}))?;
    }
    let cg = cgroup_of(&b);
    let id = h.id("oom");
    h.create(&id, &b)?;
    let events_out = h.path("events.out");
    let events = h.spawn(
        &["events", "--interval", "100ms", &id],
        Opts {
            stdout: Some(events_out.clone()),
            timeout: Some(Duration::from_secs(120)),
            ..Opts::default()
        },
    )?;
    // A first statistics line: events has taken its first look at the OOM counter, so the kill
    // to come is news to it.
    wait_for(h.timeout(), "the first stats event", || {
        Ok(fs::read_to_string(&events_out)
            .is_ok_and(|t| t.contains("\"stats\""))
            .then_some(()))
    })?;
    h.start(&id)?;
    let out = events.wait()?.ok()?;
    let ooms: Vec<Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["type"] == "oom")
        .collect();
    assert!(!ooms.is_empty(), "no oom event: {out}");
    assert_eq!(ooms[0]["id"], id.as_str());
    let (file, key) = if is_v2()? {
        ("memory.events", "oom_kill")
    } else {
        ("memory.oom_control", "oom_kill")
    };
    let text = read_cgroup(&cg, "memory", file)?;
    assert!(keyed_value(&text, key) >= Some(1), "{file}: {text}");
    assert_eq!(h.status(&id)?, "stopped");
    Ok(())
}

#[test]
fn pids_limit_stops_a_fork_bomb() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let out = h.dir("out")?;
    b.bind(&out, "/out", false)?;
    // The bomb forks until the kernel refuses, which ends it (a shell exits when it cannot
    // fork); its parent, the init, then reports and stays.
    b.sh(
        "sh -c 'while :; do sleep 60 & done' 2>/dev/null; echo forked > /out/done; \
         exec sleep 60",
    )?;
    set_resources(&mut b, json!({"pids": {"limit": 10}}))?;
    let cg = cgroup_of(&b);
    let id = h.id("pids");
    h.create(&id, &b)?;
    h.start(&id)?;
    wait_for_file(&out.join("done"), h.timeout())?;
    // At the limit the kernel refused a fork: the init, the bomb and 8 sleeps made 10.
    let events = read_cgroup(&cg, "pids", "pids.events")?;
    assert!(
        keyed_value(&events, "max") >= Some(1),
        "pids.events: {events}"
    );
    // The bomb is gone; the init (now a sleep too) and the 8 sleeps stay. Each is a sleep once
    // it has exec'd, which a forked child may not have done yet: waited for too.
    let is_sleep =
        |p: &i32| fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"));
    let mut last = Vec::new();
    let waited = wait_for(h.timeout(), "the bomb to exit", || {
        let ps = h.cmd(&["ps", "--format", "json", &id])?.ok()?;
        let pids: Vec<i32> = serde_json::from_str(ps.stdout.trim())?;
        last.clone_from(&pids);
        Ok((pids.len() == 9 && pids.iter().all(is_sleep)).then_some(pids))
    });
    let pids = waited.with_context(|| format!("last seen: {last:?}"))?;
    assert_eq!(read_cgroup(&cg, "pids", "pids.current")?, "9", "{pids:?}");
    Ok(())
}

#[test]
fn pause_freezes_and_resume_thaws() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("while :; do :; done")?;
    let cg = cgroup_of(&b);
    let id = h.id("pause");
    h.create(&id, &b)?;
    h.start(&id)?;
    let pid = h.pid(&id)?;
    let start = cpu_ticks(pid)?;
    wait_for(h.timeout(), "the busy loop to use CPU", || {
        Ok((cpu_ticks(pid)? > start).then_some(()))
    })?;
    h.cmd(&["pause", &id])?.ok()?;
    assert_eq!(h.status(&id)?, "paused");
    assert!(is_frozen(&cg)?, "the cgroup is not frozen");
    let before = cpu_ticks(pid)?;
    sleep(Duration::from_millis(500));
    assert_eq!(cpu_ticks(pid)?, before, "the container ran while paused");
    // Pausing twice is an error; so is resuming a running container.
    assert!(!h.cmd(&["pause", &id])?.success());
    h.cmd(&["resume", &id])?.ok()?;
    assert_eq!(h.status(&id)?, "running");
    assert!(!is_frozen(&cg)?);
    wait_for(h.timeout(), "the loop to run again", || {
        Ok((cpu_ticks(pid)? > before).then_some(()))
    })?;
    assert!(!h.cmd(&["resume", &id])?.success());
    Ok(())
}

#[test]
fn update_changes_live_limits() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    set_resources(
        &mut b,
        json!({"pids": {"limit": 100}, "memory": {"limit": 67108864}}),
    )?;
    let cg = cgroup_of(&b);
    let v2 = is_v2()?;
    let (mem_file, shares_file, shares_value) = if v2 {
        ("memory.max", "cpu.weight", "4")
    } else {
        ("memory.limit_in_bytes", "cpu.shares", "100")
    };
    let id = h.id("update");
    h.create(&id, &b)?;
    h.start(&id)?;
    h.cmd(&[
        "update",
        "--pids-limit",
        "5",
        "--memory",
        "128m",
        "--cpu-share",
        "100",
        &id,
    ])?
    .ok()?;
    assert_eq!(read_cgroup(&cg, "pids", "pids.max")?, "5");
    assert_eq!(read_cgroup(&cg, "memory", mem_file)?, "134217728");
    assert_eq!(read_cgroup(&cg, "cpu", shares_file)?, shares_value);

    // --resources takes linux.resources JSON; the other flags are then ignored.
    let file = h.path("resources.json");
    fs::write(&file, r#"{"pids": {"limit": 7}}"#)?;
    let file = file.display().to_string();
    h.cmd(&["update", "--resources", &file, "--pids-limit", "99", &id])?
        .ok()?;
    assert_eq!(read_cgroup(&cg, "pids", "pids.max")?, "7");

    // A bad value is refused naming the field, and nothing changes.
    let out = h.cmd(&["update", "--cpu-quota", "10", "--pids-limit", "3", &id])?;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("cpu.quota"), "{out}");
    assert_eq!(read_cgroup(&cg, "pids", "pids.max")?, "7");
    assert!(!h
        .cmd(&["update", "--pids-limit", "3", "no-such-id"])?
        .success());
    Ok(())
}

#[test]
fn ps_lists_the_container_processes() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let out = h.dir("out")?;
    b.bind(&out, "/out", false)?;
    b.sh("sleep 61 & sleep 62 & echo > /out/ready; wait")?;
    let cg = cgroup_of(&b);
    let id = h.id("ps");
    h.create(&id, &b)?;
    h.start(&id)?;
    wait_for_file(&out.join("ready"), h.timeout())?;
    let procs = wait_for(h.timeout(), "three processes", || {
        let text = fs::read_to_string(cgroup_file(&cg, "pids", "cgroup.procs")?)?;
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        Ok((pids.len() == 3).then_some(pids))
    })?;
    let json = h.cmd(&["ps", "--format", "json", &id])?.ok()?;
    let mut pids: Vec<i32> = serde_json::from_str(json.stdout.trim())?;
    pids.sort();
    let mut want = procs.clone();
    want.sort();
    assert_eq!(pids, want);

    let table = h.cmd(&["ps", &id])?.ok()?;
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].contains("PID"), "{}", table.stdout);
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(table.stdout.contains("sleep 61") && table.stdout.contains("sleep 62"));
    // ps options after the id go to ps(1).
    let custom = h.cmd(&["ps", &id, "-o", "pid,comm"])?.ok()?;
    let lines: Vec<&str> = custom.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", custom.stdout);
    assert!(lines[0].contains("COMMAND"), "{}", custom.stdout);
    Ok(())
}

#[test]
fn events_prints_stats_every_interval_until_the_container_stops() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let id = h.id("events");
    h.create(&id, &b)?;
    h.start(&id)?;
    let events = h.spawn(&["events", "--interval", "100ms", &id], Opts::default())?;
    sleep(Duration::from_millis(800));
    h.kill(&id, Some("KILL"))?;
    let out = events.wait()?.ok()?;
    let stats: Vec<Value> = out
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("events output is not JSON lines:\n{}", out.stdout))?;
    assert!(stats.len() >= 2, "{}", out.stdout);
    let data = &stats[0]["data"];
    let mut keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    // runc's `types.Stats`.
    assert_eq!(
        keys,
        vec![
            "blkio",
            "cpu",
            "cpuset",
            "hugetlb",
            "intel_rdt",
            "memory",
            "network_interfaces",
            "pids"
        ]
    );
    assert!(stats
        .iter()
        .all(|s| s["type"] == "stats" && s["id"] == id.as_str()));
    Ok(())
}

#[test]
fn kill_all_kills_every_process() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    // Without a pid namespace of their own, children outlive the init.
    b.remove_namespace("pid")?;
    let out = h.dir("out")?;
    b.bind(&out, "/out", false)?;
    b.sh("sleep 71 & sleep 72 & echo > /out/ready; wait")?;
    let cg = cgroup_of(&b);
    let id = h.id("killall");
    h.create(&id, &b)?;
    h.start(&id)?;
    wait_for_file(&out.join("ready"), h.timeout())?;
    let procs = wait_for(h.timeout(), "three processes", || {
        let text = fs::read_to_string(cgroup_file(&cg, "pids", "cgroup.procs")?)?;
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        Ok((pids.len() == 3).then_some(pids))
    })?;
    h.cmd(&["kill", "--all", &id, "KILL"])?.ok()?;
    wait_for(h.timeout(), "every process to die", || {
        Ok(procs.iter().all(|p| !process_alive(*p)).then_some(()))
    })?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn kill_all_and_delete_of_a_paused_container() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.remove_namespace("pid")?;
    b.sh("sleep 81 & sleep 82 & wait")?;
    let id = h.id("killpaused");
    h.create(&id, &b)?;
    h.start(&id)?;
    h.cmd(&["pause", &id])?.ok()?;
    h.cmd(&["kill", "--all", &id, "KILL"])?.ok()?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    h.check_no_trace(&id, &b)?;

    // delete --force of a paused container with stragglers leaves nothing either.
    let mut b = h.bundle()?;
    b.remove_namespace("pid")?;
    b.sh("trap '' TERM; sleep 91 & sleep 92 & wait")?;
    let id = h.id("delpaused");
    h.create(&id, &b)?;
    h.start(&id)?;
    h.cmd(&["pause", &id])?.ok()?;
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// `major:minor` of the whole disk holding `path` (throttle rules take disks, not partitions).
fn disk_of(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(path).ok()?.dev();
    let sys = std::path::PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(dev),
        libc::minor(dev)
    ));
    let text = if sys.join("partition").exists() {
        fs::read_to_string(sys.join("../dev")).ok()?
    } else {
        fs::read_to_string(sys.join("dev")).ok()?
    };
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[test]
fn events_stats_count_the_block_io_of_a_throttled_container() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let Some((major, minor)) = disk_of(b.path()) else {
        eprintln!("skipping: the bundle is on no block device");
        return Ok(());
    };
    b.edit(|c| c["root"]["readonly"] = json!(false))?;
    b.sh(
        "dd if=/dev/zero of=/written bs=64k count=16 conv=fsync 2>/dev/null; touch /done; sleep 60",
    )?;
    // On v1 the throttle policy counts only cgroups that have a limit (and BFQ's files, present
    // under any scheduler, count nothing unless BFQ runs the disk): the stats must find the
    // counted ones, as runc's do.
    set_resources(
        &mut b,
        json!({"blockIO": {"throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 1_000_000_000u64}]}}),
    )?;
    let id = h.create_and_start("blkstat", &b)?;
    wait_for_file(&b.rootfs().join("done"), Duration::from_secs(10))?;
    let out = h.cmd(&["events", "--stats", &id])?.ok()?;
    let ev: Value = serde_json::from_str(out.stdout.trim()).context("events --stats JSON")?;
    let bytes = ev["data"]["blkio"]["ioServiceBytesRecursive"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let written = bytes
        .iter()
        .find(|e| e["op"] == "Write" && e["major"] == major)
        .and_then(|e| e["value"].as_u64())
        .unwrap_or(0);
    assert!(written >= 1024 * 1024, "{:#}", ev["data"]["blkio"]);
    h.delete_force(&id)?;
    Ok(())
}
