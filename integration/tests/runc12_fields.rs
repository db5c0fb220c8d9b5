//! Fields runc 1.2–1.5 implements and runc 1.1.5 (the oracle on the development hosts) does not
//! know: `linux.memoryPolicy`, `process.execCPUAffinity`, `linux.netDevices`, `exec --cgroup`.
//! runc 1.1.5 ignores the fields, so each test asserts the effect the runtime-spec and runc's
//! later releases describe, seen from inside the container.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use serde_json::json;
use skiff_integration::Harness;

/// The task's memory policy as `/proc/self/numa_maps` shows it on its first mapping.
fn policy_seen(h: &Harness, policy: Option<serde_json::Value>) -> Result<String> {
    let mut b = h.bundle()?;
    if let Some(p) = policy {
        b.edit(|c| c["linux"]["memoryPolicy"] = p)?;
    }
    b.sh("head -1 /proc/self/numa_maps")?;
    let out = h.run_ok(&b)?;
    Ok(out
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string())
}

#[test]
fn the_memory_policy_is_the_processs() -> Result<()> {
    let h = Harness::new()?;
    assert_eq!(policy_seen(&h, None)?, "default");
    let seen = policy_seen(
        &h,
        Some(json!({"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]})),
    )?;
    assert_eq!(seen, "interleave=static:0");
    assert_eq!(
        policy_seen(&h, Some(json!({"mode": "MPOL_BIND", "nodes": "0"})))?,
        "bind:0"
    );
    assert_eq!(
        policy_seen(&h, Some(json!({"mode": "MPOL_PREFERRED"})))?,
        "local"
    );
    Ok(())
}

#[test]
fn a_bad_memory_policy_fails_create_naming_the_field() -> Result<()> {
    let h = Harness::new()?;
    for bad in [
        json!({"mode": "MPOL_BIND"}),
        json!({"mode": "MPOL_BIND", "nodes": "0",
               "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
        json!({"mode": "MPOL_DEFAULT", "nodes": "0"}),
        json!({"mode": "MPOL_BIND", "nodes": "5-1"}),
        // Valid, but no such node on the host: the kernel refuses it in the init.
        json!({"mode": "MPOL_BIND", "nodes": "1000"}),
    ] {
        let mut b = h.bundle()?;
        b.edit(|c| c["linux"]["memoryPolicy"] = bad.clone())?;
        b.args(&["true"])?;
        let id = h.id("badmempolicy");
        let out = h.try_create(&id, &b, &[])?;
        assert_eq!(out.exit_code(), 1, "{bad}: {out}");
        assert!(out.stderr.contains("memoryPolicy"), "{bad}: {out}");
        h.check_no_trace(&id, &b)?;
    }
    Ok(())
}
