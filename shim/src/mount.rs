//! The rootfs mounts containerd sends with `Create` (overlay, bind), mounted on `bundle/rootfs`
//! and unmounted on `Delete` (or by `delete` after a dead shim).

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use skiff_proto::api::Mount;

/// Why a rootfs mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting {fstype} {source_path} on {target}: {errno}")]
    Mount {
        fstype: String,
        source_path: String,
        target: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// Split mount(8)-style options into flags and the data string for the filesystem.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            _ => {
                data.push(opt.as_str());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

/// Mount `mounts` on `bundle/rootfs`; returns whether anything was mounted.
pub fn mount_rootfs(bundle: &Path, mounts: &[Mount]) -> Result<bool, MountError> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(|source| MountError::Dir {
        path: target.clone(),
        source,
    })?;
    for (i, m) in mounts.iter().enumerate() {
        let (flags, data) = parse_options(&m.options);
        let err = |errno| MountError::Mount {
            fstype: m.type_.clone(),
            source_path: m.source.clone(),
            target: target.clone(),
            errno,
        };
        let data_opt = (!data.is_empty()).then_some(data.as_str());
        let fstype =
            (!m.type_.is_empty() && !flags.contains(MsFlags::MS_BIND)).then_some(m.type_.as_str());
        let result = mount(Some(m.source.as_str()), &target, fstype, flags, data_opt);
        if let Err(errno) = result {
            for _ in 0..i {
                let _ = umount2(&target, MntFlags::MNT_DETACH);
            }
            return Err(err(errno));
        }
        if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
            // A bind mount ignores MS_RDONLY until it is remounted.
            let remount = flags | MsFlags::MS_REMOUNT;
            if let Err(errno) = mount(None::<&str>, &target, None::<&str>, remount, None::<&str>) {
                let _ = umount2(&target, MntFlags::MNT_DETACH);
                return Err(err(errno));
            }
        }
    }
    Ok(true)
}

/// Unmount everything on `bundle/rootfs` (best effort: lazily if it is busy).
pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    for _ in 0..16 {
        if umount2(&target, MntFlags::empty()).is_err()
            && umount2(&target, MntFlags::MNT_DETACH).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_are_data() {
        let opts: Vec<String> = ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = parse_options(&opts);
        assert!(flags.is_empty());
        assert_eq!(data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l");
    }

    #[test]
    fn bind_flags() {
        let opts: Vec<String> = ["rbind", "ro", "nosuid"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = parse_options(&opts);
        assert!(flags.contains(
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        ));
        assert!(data.is_empty());
        let (flags, _) = parse_options(&["ro".to_string(), "rw".to_string()]);
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }
}
