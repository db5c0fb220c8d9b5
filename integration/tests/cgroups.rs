//! The container's cgroup: named by `linux.cgroupsPath`, joined by the init, removed on delete.
//! Works on cgroup v1 (and hybrid) hosts and on pure cgroup v2 hosts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use skiff_integration::host::{
    cgroup_dirs_of, check_in_cgroup, existing_cgroup_dirs, required_cgroup_dirs,
};
use skiff_integration::Harness;

#[test]
fn the_init_is_in_the_cgroups_path_and_delete_removes_it() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.args(&["sleep", "60"])?;
    let cgroup = b.cgroups_path().unwrap();
    assert!(existing_cgroup_dirs(&cgroup)?.is_empty());
    let id = h.id("cg");
    h.create(&id, &b)?;
    let pid = h.pid(&id)?;
    for dir in required_cgroup_dirs(&cgroup)? {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    check_in_cgroup(pid, &cgroup)?;

    // The user process (same pid after exec) stays there.
    h.start(&id)?;
    check_in_cgroup(pid, &cgroup)?;

    h.kill(&id, Some("KILL"))?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    let left = existing_cgroup_dirs(&cgroup)?;
    assert!(left.is_empty(), "left after delete: {left:?}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn children_of_the_container_share_its_cgroup() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    let cgroup = b.cgroups_path().unwrap();
    // Print the child's own view: with no cgroup namespace it names the host path.
    b.sh("sh -c 'cat /proc/self/cgroup'")?;
    let out = h.run_ok(&b)?;
    let want = format!("/{}", cgroup.trim_start_matches('/'));
    let paths: Vec<&str> = out
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    assert!(
        paths.iter().any(|p| *p == want),
        "child not in {want}:\n{out}"
    );
    Ok(())
}

/// Removes directories a test found (only ones named after its own container) if they are left.
struct RmdirOnDrop(Vec<std::path::PathBuf>);

impl Drop for RmdirOnDrop {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn without_a_cgroups_path_the_default_cgroup_is_removed_on_delete() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| {
        c["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    })?;
    b.args(&["sleep", "60"])?;
    let id = h.id("cgdefault");
    h.create(&id, &b)?;
    let pid = h.pid(&id)?;
    // The runtime picks a cgroup of its own for the container, named after it (runc: `<id>` under
    // the caller's cgroup).
    let dirs: Vec<_> = cgroup_dirs_of(pid)?
        .into_iter()
        .filter(|d| d.display().to_string().contains(&id))
        .collect();
    let _guard = RmdirOnDrop(dirs.clone());
    assert!(
        !dirs.is_empty(),
        "init is in no cgroup of its own: {}",
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?
    );
    h.start(&id)?;
    h.kill(&id, Some("KILL"))?;
    h.wait_status(&id, "stopped")?;
    h.delete(&id)?;
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "left after delete: {left:?}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}
