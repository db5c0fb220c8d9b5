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
fn relative_mount_destination() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.add_mount(json!({"destination": "relative/dir", "type": "tmpfs", "source": "tmpfs"}))?;
    assert_rejected(&h, &b, &h.id("relmnt"), &["destination", "mount"])
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
