//! Reading a container's cgroup files on either cgroup version, for the resource tests.

use std::fs;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::host::{cgroup_mode, CgroupMode};

/// Whether the host has only the unified hierarchy.
pub fn is_v2() -> Result<bool> {
    Ok(matches!(cgroup_mode()?, CgroupMode::V2 { .. }))
}

/// The directory of `cgroup` (an absolute cgroups path) that holds `controller`'s files: on v1 the
/// controller's hierarchy (`None` when the host does not mount it), on v2 the one directory.
pub fn controller_dir(cgroup: &str, controller: &str) -> Result<Option<PathBuf>> {
    let rel = cgroup.trim_start_matches('/');
    Ok(match cgroup_mode()? {
        CgroupMode::V2 { root } => Some(root.join(rel)),
        CgroupMode::V1 { controllers, .. } => controllers.get(controller).map(|m| m.join(rel)),
    })
}

/// The path of `file` of `controller` in `cgroup`; an error when v1 lacks the controller.
pub fn cgroup_file(cgroup: &str, controller: &str, file: &str) -> Result<PathBuf> {
    controller_dir(cgroup, controller)?
        .map(|d| d.join(file))
        .ok_or_else(|| anyhow!("the host has no {controller} controller"))
}

/// The trimmed content of `file` of `controller` in `cgroup`.
pub fn read_cgroup(cgroup: &str, controller: &str, file: &str) -> Result<String> {
    let path = cgroup_file(cgroup, controller, file)?;
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// The value of `key` in a flat keyed cgroup file (`memory.events`, `pids.events`, ...).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Whether the host's root cgroup of `controller` has `file` (for settings that depend on the kernel
/// or the block scheduler, such as `blkio.bfq.weight`). On v2 the root lacks most files, so the
/// question is asked of a fresh child of the root created for the purpose and removed at once.
pub fn host_has_file(controller: &str, file: &str) -> Result<bool> {
    match cgroup_mode()? {
        CgroupMode::V1 { controllers, .. } => {
            let Some(mount) = controllers.get(controller) else {
                return Ok(false);
            };
            // Non-root directories have files the root lacks: look at a direct child made for it.
            let probe = mount.join(format!("skiff-it-probe-{}", std::process::id()));
            fs::create_dir_all(&probe)?;
            let has = probe.join(file).exists();
            let _ = fs::remove_dir(&probe);
            Ok(has)
        }
        CgroupMode::V2 { root } => {
            let enabled = fs::read_to_string(root.join("cgroup.subtree_control"))?;
            if !enabled.split_whitespace().any(|c| c == controller) {
                return Ok(false);
            }
            let probe = root.join(format!("skiff-it-probe-{}", std::process::id()));
            fs::create_dir_all(&probe)?;
            let has = probe.join(file).exists();
            let _ = fs::remove_dir(&probe);
            Ok(has)
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(Duration::from_millis(20));
    }
}
