//! The runtime's other commands and global flags: list, spec, --log/--log-format, --debug,
//! --preserve-fds, --no-new-keyring.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs::{self, File};

use anyhow::Result;
use serde_json::{json, Value};
use skiff_integration::bundle::build_rootfs;
use skiff_integration::harness::TAG_VAR;
use skiff_integration::{Bundle, Harness, Opts};

#[test]
fn list_shows_containers_as_table_json_and_ids() -> Result<()> {
    let h = Harness::new()?;
    let mut a = h.bundle()?;
    a.args(&["sleep", "30"])?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "30"])?;
    let created = h.id("listc");
    let running = h.id("listr");
    h.create(&created, &a)?;
    h.create(&running, &b)?;
    h.start(&running)?;

    let quiet = h.cmd(&["list", "-q"])?.ok()?;
    let ids: BTreeSet<&str> = quiet.stdout.lines().map(str::trim).collect();
    assert_eq!(
        ids,
        BTreeSet::from([created.as_str(), running.as_str()]),
        "{quiet}"
    );

    let out = h.cmd(&["list", "--format", "json"])?.ok()?;
    let list: Value = serde_json::from_str(&out.stdout)?;
    let entries = list.as_array().expect("list --format json gives an array");
    assert_eq!(entries.len(), 2, "{list}");
    for (id, bundle, status) in [(&created, &a, "created"), (&running, &b, "running")] {
        let entry = entries
            .iter()
            .find(|e| e["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} missing from {list}"));
        assert_eq!(entry["status"], status, "{entry}");
        assert_eq!(entry["bundle"], bundle.path_str().as_str(), "{entry}");
        assert_eq!(entry["pid"], h.pid(id)?, "{entry}");
        assert!(entry["created"].is_string(), "{entry}");
    }

    let table = h.cmd(&["list"])?.ok()?;
    let mut lines = table.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "{table}"
    );
    for (id, status) in [(&created, "created"), (&running, "running")] {
        let row: Vec<&str> = table
            .stdout
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} missing from table:\n{}", table.stdout))
            .split_whitespace()
            .collect();
        assert_eq!(row[1], h.pid(id)?.to_string(), "{row:?}");
        assert_eq!(row[2], status, "{row:?}");
    }
    Ok(())
}

#[test]
fn spec_writes_a_default_config_that_runs() -> Result<()> {
    let h = Harness::new()?;
    let dir = h.dir("spec")?;
    let out = h.exec(
        &["spec", "--bundle", &dir.display().to_string()],
        Opts {
            no_root: true,
            ..Opts::default()
        },
    )?;
    assert!(out.success(), "{out}");
    let config: Value = serde_json::from_str(&fs::read_to_string(dir.join("config.json"))?)?;
    assert!(
        config["ociVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("1."),
        "{config}"
    );
    assert_eq!(config["root"]["path"], "rootfs");
    assert_eq!(config["process"]["args"], json!(["sh"]));
    assert_eq!(config["process"]["terminal"], true);
    let namespaces: BTreeSet<&str> = config["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for ns in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(namespaces.contains(ns), "no {ns} namespace in {config}");
    }
    let destinations: BTreeSet<&str> = config["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["destination"].as_str())
        .collect();
    for dest in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
    ] {
        assert!(destinations.contains(dest), "no {dest} mount in {config}");
    }

    // `spec` without --bundle writes into the working directory.
    let cwd = h.dir("spec-cwd")?;
    let out = h.exec(
        &["spec"],
        Opts {
            cwd: Some(cwd.clone()),
            no_root: true,
            ..Opts::default()
        },
    )?;
    assert!(out.success(), "{out}");
    assert!(cwd.join("config.json").is_file());

    // The generated config runs a container once it has a rootfs and no terminal.
    build_rootfs(&dir.join("rootfs"))?;
    let mut config = config;
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["sh", "-c", "echo spec-works"]);
    config["process"]["env"]
        .as_array_mut()
        .expect("env")
        .push(json!(format!("{TAG_VAR}={}", h.tag())));
    config["linux"]["cgroupsPath"] = json!(h.cgroup_path());
    let bundle = Bundle::create(&dir, config)?;
    assert!(h.run_ok(&bundle)?.contains("spec-works"));
    Ok(())
}

#[test]
fn log_json_records_the_error_of_a_failed_command() -> Result<()> {
    let h = Harness::new()?;
    let log = h.path("runtime.log");
    let log_arg = log.display().to_string();
    let missing = format!("nothere-{}", h.tag());
    let out = h.cmd(&[
        "--log",
        &log_arg,
        "--log-format",
        "json",
        "--debug",
        "state",
        &missing,
    ])?;
    assert_eq!(out.exit_code(), 1, "{out}");
    let text = fs::read_to_string(&log)?;
    let last = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("empty log; {out}"));
    let entry: Value = serde_json::from_str(last)?;
    assert_eq!(entry["level"], "error", "{entry}");
    assert!(
        entry["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{entry}"
    );
    assert!(entry["time"].is_string(), "{entry}");
    // Every line is JSON.
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<Value>(line)?;
    }
    Ok(())
}

#[test]
fn preserve_fds_hands_extra_descriptors_to_the_container() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("echo through-fd-3 >&3")?;
    let target = h.path("fd3.txt");
    let id = h.id("fds");
    let out = h.exec(
        &["run", "--bundle", &b.path_str(), "--preserve-fds", "1", &id],
        Opts {
            fd3: Some(File::create(&target)?),
            ..Opts::default()
        },
    )?;
    assert!(out.success(), "{out}");
    assert_eq!(fs::read_to_string(&target)?.trim(), "through-fd-3");
    Ok(())
}

#[test]
fn no_new_keyring_and_no_pivot_are_accepted_by_run() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.sh("echo flags-ok")?;
    let id = h.id("flags");
    let out = h.run(&id, &b, &["--no-new-keyring", "--no-pivot"])?;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("flags-ok"), "{out}");
    Ok(())
}
