//! containerd-shim-skiff-v2 under containerd 2.4 (from `../shared/tools`): what containerd 2.x
//! relies on beyond the Task calls, each compared with containerd's own runc shim. Every test
//! skips (with a message) when the containerd 2.4 tarball is absent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
