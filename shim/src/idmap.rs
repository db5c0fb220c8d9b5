//! Idmapped overlay layers: containerd 2.x gives a user-namespaced pod's rootfs as an overlay
//! with `uidmap=C:H:S` and `gidmap=C:H:S` options (the pod's mappings), which the kernel does not
//! take as overlay options. As containerd's own mount code does, each `lowerdir` is cloned
//! (`open_tree`), idmapped with a user namespace that has the mapping (`mount_setattr`), attached
//! on a directory of its own under the bundle, and the overlay is made over those; the
//! directories are detached and removed once the overlay holds the layers.
//!
//! The user namespace comes from a child that unshares one and waits while the shim writes its
//! maps and opens it; the child is then killed and reaped.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::reaper::Reaper;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The `uidmap=`/`gidmap=` values of `options`, and the options without them.
pub fn take_idmap_options(options: &[String]) -> (Vec<String>, Option<String>, Option<String>) {
    let mut rest = Vec::new();
    let (mut uid, mut gid) = (None, None);
    for o in options {
        if let Some(v) = o.strip_prefix("uidmap=") {
            uid = Some(v.to_string());
        } else if let Some(v) = o.strip_prefix("gidmap=") {
            gid = Some(v.to_string());
        } else {
            rest.push(o.clone());
        }
    }
    (rest, uid, gid)
}

/// `C:H:S` entries (several separated by `,`) as `/proc/<pid>/uid_map` text.
pub fn map_text(value: &str) -> io::Result<String> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("id mapping {value:?}"));
    let mut out = String::new();
    for entry in value.split(',').filter(|e| !e.is_empty()) {
        let n: Vec<u32> = entry
            .split(':')
            .map(|p| p.parse::<u32>().map_err(|_| bad()))
            .collect::<io::Result<_>>()?;
        if n.len() != 3 || n[2] == 0 {
            return Err(bad());
        }
        out.push_str(&format!("{} {} {}\n", n[0], n[1], n[2]));
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// A user namespace with the maps `uid_map` and `gid_map` (text as in /proc).
pub fn user_namespace(reaper: &Arc<Reaper>, uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    let ours = std::fs::metadata("/proc/self/ns/user")?;
    let sub = reaper.subscribe();
    // SAFETY: the child only calls unshare, pause and _exit (async-signal-safe), then is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                libc::_exit(1);
            }
            loop {
                libc::pause();
            }
        }
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let made = (|| {
        use std::os::unix::fs::MetadataExt;
        let ns = format!("/proc/{pid}/ns/user");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = std::fs::metadata(&ns)?;
            if m.ino() != ours.ino() || m.dev() != ours.dev() {
                break;
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the user namespace helper never unshared",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
        std::fs::File::open(&ns).map(OwnedFd::from)
    })();
    let _ = crate::reaper::signal(pid, libc::SIGKILL);
    let _ = sub.wait_for(pid, Duration::from_secs(10));
    made
}

/// Idmapped copies of overlay layers, attached under a directory of their own; detached and
/// removed on drop.
#[derive(Debug)]
pub struct MappedLayers {
    dir: PathBuf,
    layers: Vec<PathBuf>,
}

/// Detaches and removes idmapped layer copies that a killed shim left in `bundle`
/// (`.idmapped-layers-<i>/<n>`, see [`map_lowerdirs`]).
pub fn remove_leftover_layers(bundle: &Path) {
    let Ok(entries) = std::fs::read_dir(bundle) else {
        return;
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with(".idmapped-layers-")
        {
            continue;
        }
        let dir = e.path();
        // Not a symlink: only directories the shim made (a symlink is removed, not followed).
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_file(&dir);
            continue;
        }
        if let Ok(layers) = std::fs::read_dir(&dir) {
            for l in layers.flatten() {
                let _ = nix::mount::umount2(&l.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir(l.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

impl Drop for MappedLayers {
    fn drop(&mut self) {
        for l in &self.layers {
            let _ = nix::mount::umount2(l, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(l);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// One idmapped copy of `layer`, attached on `at`.
fn map_layer(layer: &Path, at: &Path, userns: &OwnedFd) -> io::Result<()> {
    let src = cstr(layer)?;
    // SAFETY: a valid C string; the kernel returns a new descriptor or -1.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let tree = unsafe { OwnedFd::from_raw_fd(r as libc::c_int) };
    // Read-only as well: an overlay never writes its lower layers, and a copy left attached by a
    // shim killed before it could detach it must not let a removal of the bundle (containerd's
    // cleanup removes it recursively) delete the image layer's files through it.
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: valid descriptors, an empty path and a mount_attr that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let to = cstr(at)?;
    // SAFETY: valid descriptor and C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The overlay option string `data` with its `lowerdir=` layers replaced by idmapped copies
/// under `dir` (made here, removed when the returned layers drop).
pub fn map_lowerdirs(
    data: &str,
    dir: &Path,
    userns: &OwnedFd,
) -> io::Result<(String, MappedLayers)> {
    let mut opts: Vec<String> = data.split(',').map(str::to_string).collect();
    let at = opts
        .iter()
        .position(|o| o.starts_with("lowerdir="))
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "an overlay without lowerdir")
        })?;
    std::fs::create_dir_all(dir)?;
    let mut mapped = MappedLayers {
        dir: dir.to_path_buf(),
        layers: Vec::new(),
    };
    let layers: Vec<String> = opts[at]["lowerdir=".len()..]
        .split(':')
        .map(str::to_string)
        .collect();
    let mut new = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let to = dir.join(i.to_string());
        std::fs::create_dir(&to)?;
        mapped.layers.push(to.clone());
        map_layer(Path::new(layer), &to, userns)?;
        new.push(to.display().to_string());
    }
    opts[at] = format!("lowerdir={}", new.join(":"));
    Ok((opts.join(","), mapped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idmap_options_are_taken_out_and_parsed() {
        let opts: Vec<String> = [
            "index=off",
            "uidmap=0:327680:65536",
            "gidmap=0:327680:65536",
            "lowerdir=/l",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (rest, uid, gid) = take_idmap_options(&opts);
        assert_eq!(rest, ["index=off", "lowerdir=/l"]);
        assert_eq!(uid.as_deref(), Some("0:327680:65536"));
        assert_eq!(map_text(&gid.unwrap()).unwrap(), "0 327680 65536\n");
        assert_eq!(map_text("0:1:2,5:6:7").unwrap(), "0 1 2\n5 6 7\n");
        assert!(map_text("0:1").is_err());
        assert!(map_text("0:1:0").is_err());
        assert!(map_text("").is_err());
    }
}
