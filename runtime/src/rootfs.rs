//! Building the container's root filesystem inside its mount namespace:
//! propagation, the rootfs bind, the spec's mounts, /dev, pivot_root, and
//! the masked and read-only paths.
//!
//! Every path inside the rootfs is resolved with `openat2(RESOLVE_IN_ROOT)`
//! and the mount is made onto the resulting descriptor
//! (`/proc/self/fd/N`), so a symlink in the image can never redirect a mount
//! to the host, and nothing is resolved twice.

use crate::cgroups;
use crate::mountfd;
use crate::plan::{Device, MountKind, MountOp, Plan};
use crate::sys::{self, AsFdBorrowed};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A rootfs step failed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs {path}: {source}")]
    Rootfs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: PathBuf,
        source: std::io::Error,
    },
    #[error("mounts: destination {path}: {source}")]
    Destination {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounts: source {path} of {dest}: {source}")]
    Source {
        path: PathBuf,
        dest: PathBuf,
        source: std::io::Error,
    },
    #[error("device {path}: {source}")]
    Device {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pivot_root into {path}: {source}")]
    Pivot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Path {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounts: destination {path}: {source}")]
    ProcMount {
        path: PathBuf,
        source: crate::procmount::ProcMountError,
    },
    #[error("{path} is not the null device: refusing to use it for masking")]
    NotNullDevice { path: PathBuf },
}

fn mount_err(what: impl Into<String>, target: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let what = what.into();
    let target = target.to_path_buf();
    move |source| RootfsError::Mount {
        what,
        target,
        source,
    }
}

/// Mount flags that the kernel keeps locked on a bind and that a remount
/// must therefore repeat.
fn preserved_flags(fd: BorrowedFd<'_>) -> libc::c_ulong {
    let f = sys::mount_flags(fd).unwrap_or(0);
    let mut out = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st != 0 {
            out |= ms;
        }
    }
    out
}

/// Steps before pivot_root, in the new mount namespace: returns an `O_PATH`
/// descriptor of the rootfs mount. `cgroup_ready` is called once, before
/// the first `cgroup` mount or at the end: it waits until the init is in
/// its cgroup (the parent places it while these mounts are being made).
pub fn prepare<E: From<RootfsError>>(
    plan: &Plan,
    cgroup_ready: &mut dyn FnMut() -> Result<(), E>,
) -> Result<OwnedFd, E> {
    // Cut propagation to the host first, so nothing below leaks out (or
    // apply the spec's rootfsPropagation, which runc applies here too).
    sys::mount(None, Path::new("/"), None, plan.root_propagation, None)
        .map_err(mount_err("propagation", Path::new("/")))?;
    // pivot_root needs the new root to be a mount point.
    let rootfs = &plan.rootfs;
    sys::mount(
        Some(rootfs),
        rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(mount_err(rootfs.display().to_string(), rootfs))?;
    if plan.root_propagation & libc::MS_SHARED != 0 {
        make_parent_private(rootfs)?;
    }
    let root = sys::open(rootfs, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|source| {
        RootfsError::Rootfs {
            path: rootfs.clone(),
            source,
        }
    })?;
    let mut waited = false;
    for op in &plan.mounts {
        if op.kind == MountKind::Cgroup && !waited {
            cgroup_ready()?;
            waited = true;
        }
        mount_one(plan, root.as_fd_borrowed(), op)?;
    }
    if !waited {
        cgroup_ready()?;
    }
    if plan.setup_dev {
        let in_userns = plan.namespaces.new_user
            || plan
                .namespaces
                .joins
                .iter()
                .any(|(k, _)| *k == crate::namespaces::NsKind::User);
        setup_dev(root.as_fd_borrowed(), &plan.devices, in_userns)?;
    }
    Ok(root)
}

/// pivot_root fails when the new root's parent mount is shared: make the
/// mount that holds the rootfs directory private.
fn make_parent_private(rootfs: &Path) -> Result<(), RootfsError> {
    let text = sys::read_text("/proc/self/mountinfo").map_err(|source| RootfsError::Rootfs {
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    let parent = rootfs.parent().unwrap_or(Path::new("/"));
    let best = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(cgroups::unescape))
        .map(PathBuf::from)
        .filter(|mp| parent.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"));
    sys::mount(None, &best, None, libc::MS_PRIVATE, None)
        .map_err(mount_err("private propagation", &best))
}

fn dest_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Destination { path, source }
}

/// The container path `dest` resolves to inside the rootfs `root` (its
/// symlinks followed inside the root; the missing tail appended as is).
fn resolve_in_root(root: BorrowedFd<'_>, dest: &Path) -> std::io::Result<PathBuf> {
    let rel = sys::relative(dest);
    let comps: Vec<_> = rel.components().collect();
    let root_path = std::fs::read_link(sys::fd_path(root))?;
    let mut have = comps.len();
    loop {
        let prefix: PathBuf = comps[..have].iter().collect();
        let prefix = if have == 0 {
            PathBuf::from(".")
        } else {
            prefix
        };
        match sys::openat2(root, &prefix, libc::O_PATH, 0, sys::IN_ROOT) {
            Ok(fd) => {
                let found = std::fs::read_link(sys::fd_path(fd.as_fd_borrowed()))?;
                let inside = found.strip_prefix(&root_path).unwrap_or(Path::new(""));
                let mut out = Path::new("/").join(inside);
                out.extend(&comps[have..]);
                return Ok(crate::procmount::normalize(&out));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && have > 0 => have -= 1,
            Err(e) => return Err(e),
        }
    }
}

/// runc's checkProcMount: nothing but a procfs over /proc, nothing below it
/// but the files lxcfs emulates; checked before anything is created.
fn check_proc_mount(plan: &Plan, root: BorrowedFd<'_>, op: &MountOp) -> Result<(), RootfsError> {
    use crate::procmount::{self, Source};
    let dest = &op.destination;
    let resolved = resolve_in_root(root, dest).map_err(dest_err(dest))?;
    if !resolved.starts_with("/proc") {
        return Ok(());
    }
    let source = match &op.kind {
        MountKind::Fs { fstype } if fstype == "proc" => Source::NewProcfs,
        MountKind::Bind { .. } => {
            let src = op.source.clone().unwrap_or_default();
            let src = plan.bundle.join(src);
            match sys::open(&src, libc::O_PATH, 0) {
                Ok(fd) if crate::procfs::is_procfs(fd.as_fd_borrowed()) => Source::ProcfsBind,
                _ => Source::Other,
            }
        }
        _ => Source::Other,
    };
    procmount::check(&resolved, source).map_err(|source| RootfsError::ProcMount {
        path: dest.clone(),
        source,
    })
}

fn mount_one(plan: &Plan, root: BorrowedFd<'_>, op: &MountOp) -> Result<(), RootfsError> {
    let dest = &op.destination;
    check_proc_mount(plan, root, op)?;
    match &op.kind {
        MountKind::Bind { recursive } => {
            let src = op.source.clone().unwrap_or_default();
            let src = if src.is_absolute() {
                src
            } else {
                plan.bundle.join(src)
            };
            let src_err = |source| RootfsError::Source {
                path: src.clone(),
                dest: dest.clone(),
                source,
            };
            let src_fd = sys::open(&src, libc::O_PATH, 0).map_err(src_err)?;
            let st = sys::fstat(src_fd.as_fd_borrowed()).map_err(src_err)?;
            let dst = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                sys::mkdir_all_in_root(root, dest, 0o755)
            } else {
                sys::touch_in_root(root, dest)
            }
            .map_err(dest_err(dest))?;
            let mut flags = libc::MS_BIND;
            if *recursive {
                flags |= libc::MS_REC;
            }
            sys::mount(
                Some(&sys::fd_path(src_fd.as_fd_borrowed())),
                &sys::fd_path(dst.as_fd_borrowed()),
                None,
                flags,
                None,
            )
            .map_err(mount_err(src.display().to_string(), dest))?;
            let extra = op.flags & !libc::MS_REC;
            if extra != 0 {
                let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
                remount_bind(fd.as_fd_borrowed(), extra, dest)?;
            }
        }
        MountKind::Fs { fstype } => {
            let dst = sys::mkdir_all_in_root(root, dest, 0o755).map_err(dest_err(dest))?;
            let source = op
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from(fstype.as_str()));
            sys::mount(
                Some(&source),
                &sys::fd_path(dst.as_fd_borrowed()),
                Some(fstype),
                op.flags,
                Some(&op.data),
            )
            .map_err(mount_err(fstype.clone(), dest))?;
        }
        MountKind::Cgroup => mount_cgroups(plan, root, op)?,
    }
    if !op.propagation.is_empty() {
        let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
        for p in &op.propagation {
            sys::mount(None, &sys::fd_path(fd.as_fd_borrowed()), None, *p, None)
                .map_err(mount_err("propagation", dest))?;
        }
    }
    Ok(())
}

/// Applies `flags` to a bind mount, keeping the flags the kernel locks.
fn remount_bind(fd: BorrowedFd<'_>, flags: libc::c_ulong, shown: &Path) -> Result<(), RootfsError> {
    let target = sys::fd_path(fd);
    let base = libc::MS_BIND | libc::MS_REMOUNT;
    match sys::mount(None, &target, None, base | flags, None) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => sys::mount(
            None,
            &target,
            None,
            base | flags | preserved_flags(fd),
            None,
        )
        .map_err(mount_err("remount", shown)),
        r => r.map_err(mount_err("remount", shown)),
    }
}

/// A `cgroup` mount: the container's view of the host's hierarchies. With a
/// cgroup namespace each hierarchy is mounted afresh (the namespace makes
/// its root the container's cgroup); without one, the container's cgroup
/// directories are bind-mounted.
fn mount_cgroups(plan: &Plan, root: BorrowedFd<'_>, op: &MountOp) -> Result<(), RootfsError> {
    let dest = &op.destination;
    let flags = op.flags & !libc::MS_RDONLY;
    let ro = op.flags & libc::MS_RDONLY;
    let fresh = plan.namespaces.unshare_cgroup;
    let hier = cgroups::detect().map_err(|e| RootfsError::Mount {
        what: "cgroup".into(),
        target: dest.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let own = sys::read_text("/proc/self/cgroup").unwrap_or_default();
    let host_dir = |mnt: &Path, ctrl: Option<&str>| {
        let p = cgroups::own_cgroup(&own, ctrl).unwrap_or_else(|| "/".into());
        mnt.join(p.strip_prefix("/").unwrap_or(&p))
    };
    match hier {
        cgroups::Hierarchy::Unified(mnt) => {
            let dst = sys::mkdir_all_in_root(root, dest, 0o755).map_err(dest_err(dest))?;
            let target = sys::fd_path(dst.as_fd_borrowed());
            if fresh {
                sys::mount(
                    Some(Path::new("cgroup2")),
                    &target,
                    Some("cgroup2"),
                    flags | ro,
                    None,
                )
            } else {
                sys::mount(
                    Some(&host_dir(&mnt, None)),
                    &target,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
            }
            .map_err(mount_err("cgroup2", dest))?;
            if !fresh && ro != 0 {
                let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
                remount_bind(fd.as_fd_borrowed(), flags | ro, dest)?;
            }
        }
        cgroups::Hierarchy::Legacy {
            controllers,
            unified,
        } => {
            let dst = sys::mkdir_all_in_root(root, dest, 0o755).map_err(dest_err(dest))?;
            sys::mount(
                Some(Path::new("tmpfs")),
                &sys::fd_path(dst.as_fd_borrowed()),
                Some("tmpfs"),
                flags,
                Some("mode=755"),
            )
            .map_err(mount_err("tmpfs", dest))?;
            let mut subs: Vec<(PathBuf, Option<String>, PathBuf)> = controllers
                .iter()
                .map(|(mnt, ctrls)| {
                    let first = ctrls.first().map(String::as_str);
                    (mnt.clone(), Some(ctrls.join(",")), host_dir(mnt, first))
                })
                .collect();
            if let Some(u) = unified {
                let hd = host_dir(&u, None);
                subs.push((u, None, hd));
            }
            for (mnt, ctrls, hdir) in subs {
                let Some(name) = mnt.file_name() else {
                    continue;
                };
                let sub = dest.join(name);
                let d = sys::mkdir_all_in_root(root, &sub, 0o755).map_err(dest_err(&sub))?;
                let target = sys::fd_path(d.as_fd_borrowed());
                let r = match (&ctrls, fresh) {
                    (Some(c), true) => {
                        let data = if c.starts_with("name=") {
                            format!("none,{c}")
                        } else {
                            c.clone()
                        };
                        sys::mount(
                            Some(Path::new("cgroup")),
                            &target,
                            Some("cgroup"),
                            flags | ro,
                            Some(&data),
                        )
                    }
                    (None, true) => sys::mount(
                        Some(Path::new("cgroup2")),
                        &target,
                        Some("cgroup2"),
                        flags | ro,
                        None,
                    ),
                    (_, false) => sys::mount(
                        Some(&hdir),
                        &target,
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    ),
                };
                r.map_err(mount_err("cgroup", &sub))?;
                if !fresh && ro != 0 {
                    let fd = sys::open_path_in_root(root, &sub).map_err(dest_err(&sub))?;
                    remount_bind(fd.as_fd_borrowed(), flags | ro, &sub)?;
                }
            }
            if ro != 0 {
                let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
                sys::mount(
                    None,
                    &sys::fd_path(fd.as_fd_borrowed()),
                    None,
                    libc::MS_REMOUNT | flags | ro,
                    Some("mode=755"),
                )
                .map_err(mount_err("remount tmpfs", dest))?;
            }
        }
    }
    Ok(())
}

/// The device nodes and the standard links of /dev.
fn setup_dev(root: BorrowedFd<'_>, devices: &[Device], in_userns: bool) -> Result<(), RootfsError> {
    for d in devices {
        if in_userns {
            // mknod is refused in a user namespace: bind the host's node.
            bind_device(root, d)?;
        } else {
            make_device(root, d)?;
        }
    }
    let dev = sys::mkdir_all_in_root(root, Path::new("/dev"), 0o755)
        .map_err(dest_err(Path::new("/dev")))?;
    let dev = sys::reopen(dev.as_fd_borrowed(), libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(dest_err(Path::new("/dev")))?;
    // /dev/ptmx must be the devpts instance's, not a host-like node.
    let _ = unlinkat(dev.as_fd_borrowed(), "ptmx");
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlinkat(target, dev.as_fd_borrowed(), name).map_err(|source| RootfsError::Device {
            path: Path::new("/dev").join(name),
            source,
        })?;
    }
    Ok(())
}

fn unlinkat(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    let c = sys::cstr(name)?;
    // SAFETY: valid dir fd and C string.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn symlinkat(target: &str, dir: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    let t = sys::cstr(target)?;
    let n = sys::cstr(name)?;
    // SAFETY: valid C strings and dir fd.
    if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

fn bind_device(root: BorrowedFd<'_>, d: &Device) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Device {
        path: d.path.clone(),
        source,
    };
    let host = sys::open(&d.path, libc::O_PATH, 0).map_err(err)?;
    let target = sys::touch_in_root(root, &d.path).map_err(err)?;
    sys::mount(
        Some(&sys::fd_path(host.as_fd_borrowed())),
        &sys::fd_path(target.as_fd_borrowed()),
        None,
        libc::MS_BIND,
        None,
    )
    .map_err(err)
}

fn make_device(root: BorrowedFd<'_>, d: &Device) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Device {
        path: d.path.clone(),
        source,
    };
    let parent = d.path.parent().unwrap_or(Path::new("/dev"));
    let name = d
        .path
        .file_name()
        .ok_or_else(|| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let dir = sys::mkdir_all_in_root(root, parent, 0o755).map_err(err)?;
    let dir = sys::reopen(dir.as_fd_borrowed(), libc::O_RDONLY | libc::O_DIRECTORY).map_err(err)?;
    let c = sys::cstr(name).map_err(err)?;
    let dev = libc::makedev(d.major as u32, d.minor as u32);
    // SAFETY: valid dir fd and name.
    let r = unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), d.kind | d.mode, dev) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(err(e));
    }
    // SAFETY: valid dir fd and name; AT_SYMLINK_NOFOLLOW on what we just made.
    let r = unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            d.uid,
            d.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // The umask may have narrowed the mode given to mknod.
    // SAFETY: as above.
    let r = unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), d.mode, 0) };
    if r < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes the rootfs the process's root: pivot_root and detach the old root,
/// or with `--no-pivot` move the mount over `/` and chroot.
pub fn pivot(plan: &Plan, root: &OwnedFd) -> Result<(), RootfsError> {
    let perr = |source| RootfsError::Pivot {
        path: plan.rootfs.clone(),
        source,
    };
    sys::fchdir(root.as_fd_borrowed()).map_err(perr)?;
    if plan.options.no_pivot {
        sys::mount(
            Some(Path::new(".")),
            Path::new("/"),
            None,
            libc::MS_MOVE,
            None,
        )
        .map_err(perr)?;
        sys::chroot(Path::new(".")).map_err(perr)?;
    } else {
        sys::pivot_root_here().map_err(perr)?;
        // The old root is now stacked on "."; make it a slave so that
        // detaching it cannot propagate an unmount to the host.
        sys::mount(
            None,
            Path::new("."),
            None,
            libc::MS_SLAVE | libc::MS_REC,
            None,
        )
        .map_err(perr)?;
        sys::umount2(Path::new("."), libc::MNT_DETACH).map_err(perr)?;
    }
    sys::chdir(Path::new("/")).map_err(perr)
}

/// Steps after pivot_root: masked and read-only paths, a read-only root,
/// and the root's final propagation.
pub fn finalize(plan: &Plan) -> Result<(), RootfsError> {
    let root =
        sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|source| {
            RootfsError::Rootfs {
                path: "/".into(),
                source,
            }
        })?;
    let root = root.as_fd_borrowed();
    for p in &plan.readonly_paths {
        readonly_path(root, p)?;
    }
    if !plan.masked_paths.is_empty() {
        let null = open_null(root)?;
        for p in &plan.masked_paths {
            mask_path(root, null.as_fd_borrowed(), p)?;
        }
    }
    if plan.rootfs_readonly {
        let fd = sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(dest_err(Path::new("/")))?;
        mountfd::set_attrs(fd.as_fd_borrowed(), mountfd::MOUNT_ATTR_RDONLY, false)
            .map_err(mount_err("remount read-only", Path::new("/")))?;
    }
    if plan.root_propagation != (libc::MS_SLAVE | libc::MS_REC) {
        sys::mount(None, Path::new("/"), None, plan.root_propagation, None)
            .map_err(mount_err("propagation", Path::new("/")))?;
    }
    Ok(())
}

fn open_optional(root: BorrowedFd<'_>, p: &Path) -> Result<Option<OwnedFd>, RootfsError> {
    match sys::open_path_in_root(root, p) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(source) => Err(RootfsError::Path {
            what: "open",
            path: p.to_path_buf(),
            source,
        }),
    }
}

fn readonly_path(root: BorrowedFd<'_>, p: &Path) -> Result<(), RootfsError> {
    let Some(fd) = open_optional(root, p)? else {
        return Ok(());
    };
    // A read-only copy of the tree at `p` stacked onto it: made and moved by
    // descriptor, never through the container's /proc.
    let tree =
        mountfd::clone_tree(fd.as_fd_borrowed(), true).map_err(mount_err("read-only bind", p))?;
    mountfd::set_attrs(tree.as_fd_borrowed(), mountfd::MOUNT_ATTR_RDONLY, false)
        .map_err(mount_err("read-only", p))?;
    mountfd::move_onto(tree.as_fd_borrowed(), fd.as_fd_borrowed())
        .map_err(mount_err("read-only bind", p))
}

/// Opens /dev/null of the container (resolved inside its root: the image's
/// /dev may itself be a symlink, CVE-2026-41579) and checks it is the real
/// null device (the image could have replaced it with a link to something
/// it wants exposed: CVE-2025-31133).
fn open_null(root: BorrowedFd<'_>) -> Result<OwnedFd, RootfsError> {
    let p = Path::new("/dev/null");
    let fd = sys::openat2(root, Path::new("dev/null"), libc::O_PATH, 0, sys::IN_ROOT).map_err(
        |source| RootfsError::Path {
            what: "open",
            path: p.to_path_buf(),
            source,
        },
    )?;
    let st = sys::fstat(fd.as_fd_borrowed()).map_err(|source| RootfsError::Path {
        what: "stat",
        path: p.to_path_buf(),
        source,
    })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
        return Err(RootfsError::NotNullDevice { path: p.into() });
    }
    Ok(fd)
}

fn mask_path(root: BorrowedFd<'_>, null: BorrowedFd<'_>, p: &Path) -> Result<(), RootfsError> {
    let Some(fd) = open_optional(root, p)? else {
        return Ok(());
    };
    let st = sys::fstat(fd.as_fd_borrowed()).map_err(|source| RootfsError::Path {
        what: "stat",
        path: p.to_path_buf(),
        source,
    })?;
    // The mask is made and attached by descriptor, never through the
    // container's /proc (CVE-2025-52881).
    let tree = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        mountfd::new_fs(c"tmpfs", &[(c"size", c"0k")], mountfd::MOUNT_ATTR_RDONLY)
    } else {
        mountfd::clone_tree(null, false)
    }
    .map_err(mount_err("mask", p))?;
    mountfd::move_onto(tree.as_fd_borrowed(), fd.as_fd_borrowed()).map_err(mount_err("mask", p))
}
