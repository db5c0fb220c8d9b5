//! User namespaces: `linux.uidMappings`/`gidMappings` with a `user` namespace. Container root is
//! host uid 100000; the rootfs is owned by the mapped ids, as an image unpacked for such a container
//! is.
//!
//! Kept in a file of their own (they were written while user namespaces were being added to
//! skiff): `cargo test -p skiff-integration --test userns -- --test-threads=2`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::{lchown, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use skiff_integration::procfs::{id_map, status_field};
use skiff_integration::{Bundle, Harness};

/// The first host id of the container's range, and its size.
const HOST_BASE: u32 = 100_000;
const RANGE: u32 = 65_536;

/// `chown -hR uid:gid`, without following symlinks.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    lchown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A harness bundle with a new user namespace mapping container ids 0..65536 to host ids
/// 100000..165536, and its rootfs owned by the container's root.
fn userns_bundle(h: &Harness) -> Result<Bundle> {
    let mut b = h.bundle()?;
    let map = json!([{"containerID": 0, "hostID": HOST_BASE, "size": RANGE}]);
    b.set_namespace("user", None)?;
    b.edit(|c| {
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
    })?;
    chown_tree(&b.rootfs(), HOST_BASE, HOST_BASE)?;
    Ok(b)
}

/// The numbers of a `Name:` line of a `/proc/<pid>/status` text (`Uid:`, `Gid:`, `Groups:`).
fn field(status: &str, name: &str) -> Vec<u32> {
    status_field(status, name)
        .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{name}: {n:?}")))
        .collect()
}

#[test]
fn the_mapping_is_visible_inside_and_the_process_is_root_there() -> Result<()> {
    let h = Harness::new()?;
    let mut b = userns_bundle(&h)?;
    b.sh("cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; id -u; id -g")?;
    let out = h.run_ok(&b)?;
    let parts: Vec<&str> = out.split("--\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    let want = vec![[0, u64::from(HOST_BASE), u64::from(RANGE)]];
    assert_eq!(id_map(parts[0])?, want, "uid_map: {out}");
    assert_eq!(id_map(parts[1])?, want, "gid_map: {out}");
    assert_eq!(parts[2], "0\n0\n", "{out}");
    Ok(())
}

#[test]
fn the_host_sees_the_init_as_the_mapped_uid_in_a_new_user_namespace() -> Result<()> {
    let h = Harness::new()?;
    let mut b = userns_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("userns", &b)?;
    let pid = h.pid(&id)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(field(&status, "Uid"), [HOST_BASE; 4], "{status}");
    assert_eq!(field(&status, "Gid"), [HOST_BASE; 4], "{status}");
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
    assert_eq!(
        id_map(&map)?,
        [[0, u64::from(HOST_BASE), u64::from(RANGE)]],
        "{map}"
    );
    let theirs = fs::read_link(format!("/proc/{pid}/ns/user"))?;
    let ours = fs::read_link("/proc/self/ns/user")?;
    assert_ne!(theirs, ours, "the init shares the host's user namespace");
    h.delete_force(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn files_created_in_a_bind_mount_belong_to_the_mapped_ids() -> Result<()> {
    let h = Harness::new()?;
    let dir = h.dir("userns-data")?;
    let mut b = userns_bundle(&h)?;
    b.bind(&dir, "/data", false)?;
    // chown needs CAP_CHOWN (in the container's user namespace), not in the default set.
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(caps) = c["process"]["capabilities"][set].as_array_mut() {
                caps.push(json!("CAP_CHOWN"));
            }
        }
    })?;
    b.sh(
        "touch /data/by-root && mkdir /data/dir-by-root && touch /data/by-1000 && \
          chown 1000:1000 /data/by-1000 && stat -c '%u:%g' /data/by-root /data/by-1000",
    )?;
    // Inside, the container's ids.
    assert_eq!(h.run_ok(&b)?, "0:0\n1000:1000\n");
    // On the host, the ids they map to.
    let owner = |name: &str| -> Result<(u32, u32)> {
        let meta = fs::metadata(dir.join(name))?;
        Ok((meta.uid(), meta.gid()))
    };
    assert_eq!(owner("by-root")?, (HOST_BASE, HOST_BASE));
    assert_eq!(owner("dir-by-root")?, (HOST_BASE, HOST_BASE));
    assert_eq!(owner("by-1000")?, (HOST_BASE + 1000, HOST_BASE + 1000));
    Ok(())
}

#[test]
fn a_non_root_user_maps_into_the_range_and_keeps_its_groups() -> Result<()> {
    let h = Harness::new()?;
    let mut b = userns_bundle(&h)?;
    b.sh("id -u; id -g; grep ^Groups: /proc/self/status")?;
    b.edit(|c| c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10]}))?;
    let out = h.run_ok(&b)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000"], "{out}");
    assert_eq!(field(&out, "Groups"), [10], "{out}");
    Ok(())
}

#[test]
fn unmapped_root_owned_files_show_as_nobody() -> Result<()> {
    let h = Harness::new()?;
    let dir = h.dir("userns-host")?;
    // Owned by host root, which the mapping does not cover.
    fs::write(dir.join("host-file"), "x")?;
    let mut b = userns_bundle(&h)?;
    b.bind(&dir, "/host", true)?;
    b.sh("stat -c '%u:%g' /host/host-file")?;
    assert_eq!(h.run_ok(&b)?, "65534:65534\n");
    Ok(())
}

#[test]
fn exec_joins_the_user_namespace() -> Result<()> {
    let h = Harness::new()?;
    let mut b = userns_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("userns", &b)?;
    let init = h.pid(&id)?;
    let out = h
        .exec_in(&id, &[], &["sh", "-c", "cat /proc/self/uid_map; id -u"])?
        .ok()?;
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    let uid = lines.pop().unwrap_or_default();
    let map = lines.join("\n");
    assert_eq!(
        id_map(&map)?,
        [[0, u64::from(HOST_BASE), u64::from(RANGE)]],
        "{out}"
    );
    assert_eq!(uid, "0", "{out}");

    let pid = h.exec_detached(&id, &[], &["sleep", "600"])?;
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/user"))?,
        fs::read_link(format!("/proc/{init}/ns/user"))?
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(field(&status, "Uid"), [HOST_BASE; 4], "{status}");

    // As another user of the container: host uid 100000 + 1000.
    let pid = h.exec_detached(&id, &["-u", "1000:1000"], &["sleep", "600"])?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(field(&status, "Uid"), [HOST_BASE + 1000; 4], "{status}");
    Ok(())
}
