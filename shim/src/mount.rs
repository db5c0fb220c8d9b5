//! The rootfs mounts containerd sends with `Create` (overlay, bind), mounted on `bundle/rootfs`
//! and unmounted on `Delete` (or by `delete` after a dead shim).
//!
//! `mount(2)` takes at most a page of options. An image with many layers gives an overlay
//! `lowerdir=` longer than that, so, as containerd does, such a mount is made with the layers
//! relative to their common parent directory, by a child process that changes into it (the
//! shim's own working directory is shared by its threads and stays `/`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use skiff_proto::api::Mount;

use crate::reaper::Reaper;

/// How long the child that makes a compacted overlay mount may take.
const MOUNT_CHILD_TIMEOUT: Duration = Duration::from_secs(30);

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
    #[error("mounting {fstype} on {target}: a path or option holds a NUL byte")]
    Nul { fstype: String, target: PathBuf },
    #[error("mounting {fstype} on {target} with uidmap/gidmap: {source}")]
    Idmap {
        fstype: String,
        target: PathBuf,
        source: std::io::Error,
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

/// The page size: the most option bytes `mount(2)` takes.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// An overlay option string with its `lowerdir=` layers made relative to their deepest common
/// parent directory: `(that directory, the new options)`. `None` when there is nothing to gain
/// (one layer, or no common parent but `/`).
pub fn compact_lowerdir(data: &str) -> Option<(PathBuf, String)> {
    let opts: Vec<&str> = data.split(',').collect();
    let at = opts.iter().position(|o| o.starts_with("lowerdir="))?;
    let layers: Vec<&Path> = opts[at]["lowerdir=".len()..]
        .split(':')
        .map(Path::new)
        .collect();
    if layers.len() < 2 || layers.iter().any(|l| !l.is_absolute()) {
        return None;
    }
    let mut common = layers[0].parent()?;
    while !layers.iter().all(|l| l.starts_with(common)) {
        common = common.parent()?;
    }
    // Only `/` in common: nothing to gain.
    common.parent()?;
    let relative: Vec<String> = layers
        .iter()
        .map(|l| l.strip_prefix(common).map(|r| r.display().to_string()))
        .collect::<Result<_, _>>()
        .ok()?;
    let mut out: Vec<String> = opts.iter().map(|o| o.to_string()).collect();
    out[at] = format!("lowerdir={}", relative.join(":"));
    Some((common.to_path_buf(), out.join(",")))
}

/// `mount(2)` run by a child process whose working directory is `dir` (relative layer paths).
fn mount_in(
    reaper: &Arc<Reaper>,
    dir: &Path,
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), Option<Errno>> {
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| None);
    let dir = cstr(dir.as_os_str().as_bytes())?;
    let source = cstr(source.as_bytes())?;
    let target = cstr(target.as_os_str().as_bytes())?;
    let fstype = cstr(fstype.as_bytes())?;
    let data = cstr(data.as_bytes())?;
    // Before the fork: its exit must not be reaped unseen.
    let sub = reaper.subscribe();
    // SAFETY: the child only calls chdir, mount and _exit (async-signal-safe) on strings made
    // before the fork, then exits; it never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::chdir(dir.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let rc = libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags.bits(),
                data.as_ptr().cast(),
            );
            libc::_exit(if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            });
        }
    }
    if pid < 0 {
        return Err(Some(Errno::last()));
    }
    match sub.wait_for(pid, MOUNT_CHILD_TIMEOUT) {
        Some(exit) if libc::WIFEXITED(exit.status) => match libc::WEXITSTATUS(exit.status) {
            0 => Ok(()),
            errno => Err(Some(Errno::from_raw(errno))),
        },
        Some(_) => Err(Some(Errno::EINTR)),
        None => {
            let _ = crate::reaper::signal(pid, libc::SIGKILL);
            Err(Some(Errno::ETIMEDOUT))
        }
    }
}

/// Mount `mounts` on `bundle/rootfs`; returns whether anything was mounted.
pub fn mount_rootfs(
    bundle: &Path,
    mounts: &[Mount],
    reaper: &Arc<Reaper>,
) -> Result<bool, MountError> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(|source| MountError::Dir {
        path: target.clone(),
        source,
    })?;
    for (i, m) in mounts.iter().enumerate() {
        // A user-namespaced pod's layers (containerd 2.x): idmapped copies, kept until the
        // overlay holds them.
        let (options, uidmap, gidmap) = crate::idmap::take_idmap_options(&m.options);
        let (flags, data) = parse_options(&options);
        let (data, _mapped) = match (uidmap, gidmap) {
            (None, None) => (data, None),
            (uid, gid) => {
                let idmap_err = |source| MountError::Idmap {
                    fstype: m.type_.clone(),
                    target: target.clone(),
                    source,
                };
                if m.type_ != "overlay" {
                    let why = "only overlay layers are idmapped here";
                    return Err(idmap_err(std::io::Error::other(why)));
                }
                let text = |v: Option<String>| crate::idmap::map_text(&v.unwrap_or_default());
                let (uid, gid) = (text(uid).map_err(idmap_err)?, text(gid).map_err(idmap_err)?);
                let userns = crate::idmap::user_namespace(reaper, &uid, &gid).map_err(idmap_err)?;
                let dir = bundle.join(format!(".idmapped-layers-{i}"));
                let (data, mapped) =
                    crate::idmap::map_lowerdirs(&data, &dir, &userns).map_err(idmap_err)?;
                (data, Some(mapped))
            }
        };
        let err = |errno| MountError::Mount {
            fstype: m.type_.clone(),
            source_path: m.source.clone(),
            target: target.clone(),
            errno,
        };
        let data_opt = (!data.is_empty()).then_some(data.as_str());
        let fstype =
            (!m.type_.is_empty() && !flags.contains(MsFlags::MS_BIND)).then_some(m.type_.as_str());
        let compacted = match fstype {
            Some(t @ "overlay") if data.len() >= page_size() => {
                compact_lowerdir(&data).map(|(dir, data)| (t, dir, data))
            }
            _ => None,
        };
        let result = match compacted {
            Some((t, dir, data)) => mount_in(reaper, &dir, &m.source, &target, t, flags, &data)
                .map_err(|e| {
                    e.map(err).unwrap_or_else(|| MountError::Nul {
                        fstype: m.type_.clone(),
                        target: target.clone(),
                    })
                }),
            None => mount(Some(m.source.as_str()), &target, fstype, flags, data_opt).map_err(err),
        };
        if let Err(e) = result {
            for _ in 0..i {
                let _ = umount2(&target, MntFlags::MNT_DETACH);
            }
            return Err(e);
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

/// Unmount everything on `bundle/rootfs` (best effort: lazily if it is busy), and any idmapped
/// layer copies a killed shim left in the bundle.
pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    for _ in 0..16 {
        if umount2(&target, MntFlags::empty()).is_err()
            && umount2(&target, MntFlags::MNT_DETACH).is_err()
        {
            break;
        }
    }
    crate::idmap::remove_leftover_layers(bundle);
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
    fn long_lowerdirs_are_made_relative_to_their_common_parent() {
        let data = "index=off,lowerdir=/s/snapshots/3/fs:/s/snapshots/2/fs:/s/snapshots/1/fs,upperdir=/s/snapshots/4/fs,workdir=/s/snapshots/4/work";
        let (dir, out) = compact_lowerdir(data).unwrap();
        assert_eq!(dir, PathBuf::from("/s/snapshots"));
        assert_eq!(
            out,
            "index=off,lowerdir=3/fs:2/fs:1/fs,upperdir=/s/snapshots/4/fs,workdir=/s/snapshots/4/work"
        );
        // Nothing to gain: one layer, or layers whose only common parent is `/`.
        assert_eq!(compact_lowerdir("lowerdir=/a/b/c"), None);
        assert_eq!(compact_lowerdir("lowerdir=/a/x:/b/y"), None);
        assert_eq!(compact_lowerdir("upperdir=/u"), None);
        // The deepest common parent, not a common string prefix.
        let (dir, out) = compact_lowerdir("lowerdir=/l/ab/1:/l/ac/2").unwrap();
        assert_eq!(
            (dir, out.as_str()),
            (PathBuf::from("/l"), "lowerdir=ab/1:ac/2")
        );
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
