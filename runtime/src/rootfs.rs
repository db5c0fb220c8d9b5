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
    #[error(transparent)]
    Lsm(#[from] crate::lsm::LsmError),
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
    #[error("mounts: tmpcopyup of {dest}: copying {path}: {source}")]
    CopyUp {
        dest: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
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
/// its cgroup (the parent places it while these mounts are being made) and
/// returns the text of `/proc/self/cgroup` as it was then, before any
/// cgroup namespace (whose root it would show as `/`): the `cgroup` mounts
/// that bind the container's cgroup directories find them by it.
pub fn prepare<E: From<RootfsError>>(
    plan: &Plan,
    trees: &crate::premount::Trees,
    cgroup_ready: &mut dyn FnMut() -> Result<String, E>,
) -> Result<OwnedFd, E> {
    let rootfs = &plan.rootfs;
    if plan.rootfs_on_host {
        bind_rootfs_on_host(rootfs)?;
    } else {
        // Cut propagation to the host first, so nothing below leaks out (or
        // apply the spec's rootfsPropagation, which runc applies here too).
        sys::mount(None, Path::new("/"), None, plan.root_propagation, None)
            .map_err(mount_err("propagation", Path::new("/")))?;
        // Before the rootfs bind, which joins the peer group of the mount it
        // is made from: see `make_parent_private`.
        make_parent_private(rootfs)?;
        // pivot_root needs the new root to be a mount point.
        bind_rootfs(rootfs)?;
    }
    let root = sys::open(rootfs, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|source| {
        RootfsError::Rootfs {
            path: rootfs.clone(),
            source,
        }
    })?;
    let mut own_cgroups: Option<String> = None;
    for (i, op) in plan.mounts.iter().enumerate() {
        if op.kind == MountKind::Cgroup && own_cgroups.is_none() {
            own_cgroups = Some(cgroup_ready()?);
        }
        mount_one(
            plan,
            root.as_fd_borrowed(),
            op,
            own_cgroups.as_deref(),
            trees.get(i),
        )?;
    }
    if own_cgroups.is_none() {
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

fn bind_rootfs(rootfs: &Path) -> Result<(), RootfsError> {
    sys::mount(
        Some(rootfs),
        rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(mount_err(rootfs.display().to_string(), rootfs))
}

/// Without a mount namespace of its own, the container's mounts are made in
/// the host's, as runc makes them, but the host's propagation is left alone:
/// they all hang under one bind of the rootfs, made private at once so that
/// nothing mounted under it propagates to the host's peers, and that
/// `delete` detaches as a whole (see [`detach_host_rootfs`]).
fn bind_rootfs_on_host(rootfs: &Path) -> Result<(), RootfsError> {
    bind_rootfs(rootfs)?;
    sys::mount(None, rootfs, None, libc::MS_PRIVATE, None)
        .map_err(mount_err("private propagation", rootfs))
}

/// The id of the mount `rootfs` resolves to now (the container's own bind
/// once `prepare` has made it), or None if it cannot be opened.
pub fn rootfs_mount_id(rootfs: &Path) -> Option<u64> {
    let dir = sys::open(rootfs, libc::O_PATH | libc::O_DIRECTORY, 0).ok()?;
    sys::mount_id(dir.as_fd_borrowed()).ok()
}

/// Detaches the bind of a container without a mount namespace (with every
/// mount made under it) if `rootfs` still resolves to mount `id`; a rootfs
/// that resolves to another mount (the container's is gone, or was never
/// made) is left alone.
pub fn detach_host_rootfs(rootfs: &Path, id: u64) -> Result<(), RootfsError> {
    if rootfs_mount_id(rootfs) != Some(id) {
        return Ok(());
    }
    sys::umount2(rootfs, libc::MNT_DETACH).map_err(mount_err("detach", rootfs))
}

/// A bind of a shared mount is a peer of it: if the mount holding the rootfs
/// is still shared with the host (a `shared`, `private` or `slave` root
/// propagation only changes `/`), the rootfs bind and every mount made under
/// it would propagate to the host, and pivot_root would refuse the new root.
/// Make that mount (in our namespace only) private first, as runc does.
fn make_parent_private(rootfs: &Path) -> Result<(), RootfsError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Rootfs { path, source }
    };
    let dir = sys::open(rootfs, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(err(rootfs))?;
    let info = Path::new("/proc/self/mountinfo");
    let text = sys::read_text(info).map_err(err(info))?;
    let found = match sys::mount_id(dir.as_fd_borrowed()) {
        Ok(id) => mount_of(&text, id),
        // Kernels before 5.8 have no mount id in statx: the longest mount
        // point above the (resolved) rootfs path, as runc finds it.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            let real = std::fs::canonicalize(rootfs).map_err(err(rootfs))?;
            mount_above(&text, &real)
        }
        Err(e) => return Err(err(rootfs)(e)),
    };
    match found {
        Some((point, true)) => sys::mount(None, &point, None, libc::MS_PRIVATE, None)
            .map_err(mount_err("private propagation", &point)),
        Some((_, false)) => Ok(()),
        None => Err(err(info)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no mount holds the rootfs",
        ))),
    }
}

/// The mount whose mount point is the longest one at or above `path` (the
/// last mounted of those on the same point), and whether it is shared.
fn mount_above(mountinfo: &str, path: &Path) -> Option<(PathBuf, bool)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let id = line.split(' ').next()?.parse::<u64>().ok()?;
            mount_of(line, id)
        })
        .filter(|(point, _)| path.starts_with(point))
        .max_by_key(|(point, _)| point.components().count())
}

/// The mount point of mount `id` in a mountinfo text, and whether the mount
/// is shared (has a `shared:N` tag).
fn mount_of(mountinfo: &str, id: u64) -> Option<(PathBuf, bool)> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        if fields.next()?.parse::<u64>().ok()? != id {
            return None;
        }
        let point = fields.nth(3)?;
        let shared = fields
            .skip(1)
            .take_while(|f| *f != "-")
            .any(|f| f.starts_with("shared:"));
        Some((PathBuf::from(cgroups::unescape(point)), shared))
    })
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

/// Mounts `op`. `own_cgroups`: the init's `/proc/self/cgroup` before any
/// cgroup namespace (see [`prepare`]); given from the first `cgroup` mount
/// on. `tree`: the detached bind the runtime made for it (see `premount`),
/// attached instead of binding the source.
fn mount_one(
    plan: &Plan,
    root: BorrowedFd<'_>,
    op: &MountOp,
    own_cgroups: Option<&str>,
    tree: Option<BorrowedFd<'_>>,
) -> Result<(), RootfsError> {
    let dest = &op.destination;
    check_proc_mount(plan, root, op)?;
    match &op.kind {
        MountKind::Bind { recursive } => {
            let src = crate::premount::source_path(plan, op);
            let src_err = |source| RootfsError::Source {
                path: src.clone(),
                dest: dest.clone(),
                source,
            };
            let opened;
            let src_fd = match tree {
                Some(t) => t,
                None => {
                    opened = sys::open(&src, libc::O_PATH, 0).map_err(src_err)?;
                    opened.as_fd_borrowed()
                }
            };
            let st = sys::fstat(src_fd).map_err(src_err)?;
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
            match tree {
                Some(t) => mountfd::move_onto(t, dst.as_fd_borrowed()),
                None => sys::mount(
                    Some(&sys::fd_path(src_fd)),
                    &sys::fd_path(dst.as_fd_borrowed()),
                    None,
                    flags,
                    None,
                ),
            }
            .map_err(mount_err(src.display().to_string(), dest))?;
            let extra = op.flags & !libc::MS_REC;
            if extra != 0 {
                let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
                remount_bind(fd.as_fd_borrowed(), extra, dest)?;
            }
        }
        MountKind::Fs { fstype } => {
            // The mode of the directory a tmpfs covers, if it exists (see
            // `finish_tmpfs`).
            let covered = match fstype == "tmpfs" {
                true => sys::open_path_in_root(root, dest)
                    .and_then(|fd| sys::fstat(fd.as_fd_borrowed()))
                    .ok()
                    .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                    .map(|st| st.st_mode & 0o7777),
                false => None,
            };
            let dst = sys::mkdir_all_in_root(root, dest, 0o755).map_err(dest_err(dest))?;
            // tmpcopyup: the directory opened before the tmpfs covers it;
            // its entries stay reachable through this descriptor.
            let lower = match op.copy_up {
                true => Some(
                    sys::reopen(dst.as_fd_borrowed(), libc::O_RDONLY | libc::O_DIRECTORY)
                        .map_err(dest_err(dest))?,
                ),
                false => None,
            };
            let source = op
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from(fstype.as_str()));
            // A read-only tmpfs (or /dev) is mounted read-write and made
            // read-only by `finalize`, as runc does: its superblock stays rw.
            let flags = if delayed_readonly(op) {
                op.flags & !libc::MS_RDONLY
            } else {
                op.flags
            };
            sys::mount(
                Some(&source),
                &sys::fd_path(dst.as_fd_borrowed()),
                Some(fstype),
                flags,
                Some(&op.data),
            )
            .map_err(mount_err(
                // A label the kernel refuses shows in the error, as in runc.
                match op.data.contains("context=") {
                    true => format!("{fstype} (data {})", op.data),
                    false => fstype.clone(),
                },
                dest,
            ))?;
            if fstype == "tmpfs" {
                finish_tmpfs(root, op, lower, covered)?;
            }
            // mqueue's superblock exists before the mount: labelled on its
            // root instead of by `context=` (as runc does).
            if let (Some(label), "mqueue") = (&plan.mount_label, fstype.as_str()) {
                let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
                crate::lsm::label_file(fd.as_fd_borrowed(), label, dest)?;
            }
        }
        MountKind::Cgroup => mount_cgroups(plan, root, op, own_cgroups.unwrap_or_default())?,
    }
    if !op.propagation.is_empty() {
        let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
        for p in &op.propagation {
            sys::mount(None, &sys::fd_path(fd.as_fd_borrowed()), None, *p, None)
                .map_err(mount_err("propagation", dest))?;
        }
    }
    // Last, as runc does: the recursive attributes reach every mount the
    // steps above left under the destination.
    if let Some(attr) = &op.rec_attr {
        let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
        sys::mount_setattr(fd.as_fd_borrowed(), attr.set, attr.clear)
            .map_err(mount_err("recursive attributes", dest))?;
    }
    Ok(())
}

/// What runc does once a tmpfs is mounted: with `tmpcopyup`, the tree of
/// the directory it covers (`lower`) is copied in ([`crate::copyup`]); over
/// an existing directory, the tmpfs's root takes that directory's mode
/// (`covered`), as runc 1.1 chmods it, unless the options set a `mode=`
/// (which runc 1.2+, passing the old mode first, lets win; 1.1.5 overrode it).
fn finish_tmpfs(
    root: BorrowedFd<'_>,
    op: &MountOp,
    lower: Option<OwnedFd>,
    covered: Option<libc::mode_t>,
) -> Result<(), RootfsError> {
    let dest = &op.destination;
    let own_mode = op.data.split(',').any(|o| o.starts_with("mode="));
    let mode = covered.filter(|_| !own_mode);
    if lower.is_none() && mode.is_none() {
        return Ok(());
    }
    let top = sys::open_path_in_root(root, dest)
        .and_then(|fd| sys::reopen(fd.as_fd_borrowed(), libc::O_RDONLY | libc::O_DIRECTORY))
        .map_err(dest_err(dest))?;
    if let Some(lower) = lower {
        crate::copyup::copy_tree(lower.as_fd_borrowed(), top.as_fd_borrowed()).map_err(|e| {
            RootfsError::CopyUp {
                dest: dest.clone(),
                path: e.path,
                source: e.source,
            }
        })?;
    }
    if let Some(mode) = mode {
        // SAFETY: valid descriptor.
        sys::check(unsafe { libc::fchmod(top.as_raw_fd(), mode) })
            .map_err(mount_err("chmod tmpfs root", dest))?;
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

/// A `cgroup` mount: the container's view of the host's hierarchies, made
/// as runc makes it. `own` is the init's `/proc/self/cgroup` from before
/// its cgroup namespace.
///
/// On cgroup v2 (runc's `mountCgroupV2`) a fresh cgroup2 is mounted with
/// the mount's own source, flags and data: with a cgroup namespace its root
/// is the container's cgroup; without one it is the hierarchy's root (the
/// container sees the host's tree, as under runc). Where the kernel refuses
/// that (EPERM: a user namespace that does not own the cgroup namespace;
/// EBUSY), the mount falls back to a bind, remounted with the mount's flags:
/// of the container's cgroup directory with a cgroup namespace, else of the
/// whole hierarchy. On v1, see [`mount_cgroups_v1`].
fn mount_cgroups(
    plan: &Plan,
    root: BorrowedFd<'_>,
    op: &MountOp,
    own: &str,
) -> Result<(), RootfsError> {
    let dest = &op.destination;
    let hier = cgroups::detect().map_err(|e| RootfsError::Mount {
        what: "cgroup".into(),
        target: dest.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let host_dir = |mnt: &Path, ctrl: Option<&str>| {
        let p = cgroups::own_cgroup(own, ctrl).unwrap_or_else(|| "/".into());
        mnt.join(p.strip_prefix("/").unwrap_or(&p))
    };
    match hier {
        cgroups::Hierarchy::Unified(mnt) => {
            let dst = sys::mkdir_all_in_root(root, dest, 0o755).map_err(dest_err(dest))?;
            let target = sys::fd_path(dst.as_fd_borrowed());
            let fresh = sys::mount(
                op.source.as_deref(),
                &target,
                Some("cgroup2"),
                op.flags,
                Some(&op.data),
            );
            match fresh {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EBUSY)) => {
                    let src = match plan.namespaces.unshare_cgroup {
                        true => host_dir(&mnt, None),
                        false => mnt,
                    };
                    sys::mount(Some(&src), &target, None, libc::MS_BIND, None)
                        .map_err(mount_err("cgroup2 (bind)", dest))?;
                    if op.flags & !(libc::MS_REC | libc::MS_BIND | libc::MS_REMOUNT) != 0 {
                        let fd = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
                        remount_bind(fd.as_fd_borrowed(), op.flags, dest)?;
                    }
                }
                r => r.map_err(mount_err("cgroup2", dest))?,
            }
        }
        // The v1 hierarchies only, as runc (1.1 to 1.4) mounts them: a hybrid
        // host's cgroup2 `unified` mount is not shown in the container.
        cgroups::Hierarchy::Legacy { controllers, .. } => {
            mount_cgroups_v1(plan, root, op, &controllers, &host_dir)?
        }
    }
    Ok(())
}

/// runc's `mountCgroupV1`: a tmpfs on the destination, always read-write
/// with nosuid, nodev and noexec (whatever the cgroup mount's own options:
/// runc 1.1 to 1.4 never make it read-only), then per v1 hierarchy either a
/// fresh mount (with a cgroup namespace: nosuid, nodev, noexec, and `ro` if
/// the cgroup mount has it; the named systemd hierarchy with source
/// `systemd`) or a bind of the container's cgroup directory remounted with
/// the cgroup mount's own flags, and a link per controller of a co-mounted
/// hierarchy (`cpu` -> `cpu,cpuacct`).
fn mount_cgroups_v1(
    plan: &Plan,
    root: BorrowedFd<'_>,
    op: &MountOp,
    controllers: &[(PathBuf, Vec<String>)],
    host_dir: &dyn Fn(&Path, Option<&str>) -> PathBuf,
) -> Result<(), RootfsError> {
    const DEFAULT: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let dest = &op.destination;
    let fresh = plan.namespaces.unshare_cgroup;
    let dst = sys::mkdir_all_in_root(root, dest, 0o755).map_err(dest_err(dest))?;
    sys::mount(
        Some(Path::new("tmpfs")),
        &sys::fd_path(dst.as_fd_borrowed()),
        Some("tmpfs"),
        DEFAULT,
        Some(&crate::lsm::mount_data(
            "mode=755",
            plan.mount_label.as_deref(),
        )),
    )
    .map_err(mount_err("tmpfs", dest))?;
    // The tmpfs is fresh and ours: each hierarchy's directory is made and
    // opened relative to it (nothing there can be a symlink) instead of
    // being resolved from the root again.
    let top = sys::open_path_in_root(root, dest).map_err(dest_err(dest))?;
    let mut merged = Vec::new();
    for (mnt, ctrls) in controllers {
        let Some(name) = mnt.file_name() else {
            continue;
        };
        let sub = dest.join(name);
        let d =
            sys::mkdir_at(top.as_fd_borrowed(), Path::new(name), 0o755).map_err(dest_err(&sub))?;
        let target = sys::fd_path(d.as_fd_borrowed());
        if fresh {
            let data = ctrls.join(",");
            let data = if data.starts_with("name=") {
                format!("none,{data}")
            } else {
                data
            };
            let source = if name == "systemd" {
                "systemd"
            } else {
                "cgroup"
            };
            sys::mount(
                Some(Path::new(source)),
                &target,
                Some("cgroup"),
                DEFAULT | (op.flags & libc::MS_RDONLY),
                Some(&data),
            )
            .map_err(mount_err("cgroup", &sub))?;
        } else {
            let hdir = host_dir(mnt, ctrls.first().map(String::as_str));
            sys::mount(
                Some(&hdir),
                &target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(mount_err("cgroup", &sub))?;
            let fd = sys::open_path_in_root(root, &sub).map_err(dest_err(&sub))?;
            // A bind keeps the host mount's flags: the cgroup mount's own
            // (nosuid, nodev, noexec, ro, ...) are applied by a remount.
            if op.flags != 0 {
                remount_bind(fd.as_fd_borrowed(), op.flags, &sub)?;
            }
            for p in &op.propagation {
                sys::mount(None, &sys::fd_path(fd.as_fd_borrowed()), None, *p, None)
                    .map_err(mount_err("propagation", &sub))?;
            }
        }
        let name = name.to_string_lossy();
        if name.contains(',') {
            merged.push(name.into_owned());
        }
    }
    for m in &merged {
        for ctrl in m.split(',') {
            symlinkat(m, top.as_fd_borrowed(), ctrl).map_err(dest_err(&dest.join(ctrl)))?;
        }
    }
    Ok(())
}

/// The device nodes and the standard links of /dev.
fn setup_dev(root: BorrowedFd<'_>, devices: &[Device], in_userns: bool) -> Result<(), RootfsError> {
    // Each parent directory (almost always /dev) is opened once for all of
    // its nodes: mknodat only ever adds device nodes, never a symlink that
    // could redirect a later one.
    let mut dirs: Vec<(PathBuf, OwnedFd)> = Vec::new();
    for d in devices {
        if in_userns {
            // mknod is refused in a user namespace: bind the host's node.
            bind_device(root, d)?;
            continue;
        }
        let parent = d.path.parent().unwrap_or(Path::new("/dev"));
        let i = match dirs.iter().position(|(p, _)| p == parent) {
            Some(i) => i,
            None => {
                let fd = open_dir_in_root(root, parent).map_err(|source| RootfsError::Device {
                    path: d.path.clone(),
                    source,
                })?;
                dirs.push((parent.to_path_buf(), fd));
                dirs.len() - 1
            }
        };
        make_device(dirs[i].1.as_fd_borrowed(), d)?;
    }
    let dev = match dirs.iter().position(|(p, _)| p == Path::new("/dev")) {
        Some(i) => dirs.swap_remove(i).1,
        None => open_dir_in_root(root, Path::new("/dev")).map_err(dest_err(Path::new("/dev")))?,
    };
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
    // As runc: /dev/core where the kernel has /proc/kcore (CONFIG_PROC_KCORE),
    // an existing /dev/core left as it is (as every link here). /proc is
    // still the host's here, before pivot_root.
    if Path::new("/proc/kcore").exists() {
        symlinkat("/proc/kcore", dev.as_fd_borrowed(), "core").map_err(|source| {
            RootfsError::Device {
                path: PathBuf::from("/dev/core"),
                source,
            }
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

/// A directory inside the root, made if missing, opened for `*at` calls.
fn open_dir_in_root(root: BorrowedFd<'_>, path: &Path) -> std::io::Result<OwnedFd> {
    let dir = sys::mkdir_all_in_root(root, path, 0o755)?;
    sys::reopen(dir.as_fd_borrowed(), libc::O_RDONLY | libc::O_DIRECTORY)
}

/// The node `d` in `dir`, its parent directory.
fn make_device(dir: BorrowedFd<'_>, d: &Device) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Device {
        path: d.path.clone(),
        source,
    };
    let name = d
        .path
        .file_name()
        .ok_or_else(|| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
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
/// or with `--no-pivot` move the mount over `/` and chroot, or without a
/// mount namespace of its own only chroot.
pub fn pivot(plan: &Plan, root: &OwnedFd) -> Result<(), RootfsError> {
    let perr = |source| RootfsError::Pivot {
        path: plan.rootfs.clone(),
        source,
    };
    sys::fchdir(root.as_fd_borrowed()).map_err(perr)?;
    if plan.rootfs_on_host {
        // The host's mount namespace: pivot_root would swap the host's root
        // (and --no-pivot's move would cover it); only chroot, as runc does.
        sys::chroot(Path::new(".")).map_err(perr)?;
    } else if plan.options.no_pivot {
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
        // Held across pivot_root to act on the old root afterwards: "." is
        // still the new root's mount, with the old one stacked on it.
        let old_root =
            sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0).map_err(perr)?;
        sys::pivot_root_here().map_err(perr)?;
        sys::fchdir(old_root.as_fd_borrowed()).map_err(perr)?;
        // The old root's tree (only: the container's mounts keep their
        // propagation, e.g. an rshared bind) becomes a slave, so that
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

/// Steps after pivot_root: masked and read-only paths and a read-only root.
/// (runc does not apply rootfsPropagation to the new root again: it keeps
/// the propagation its bind got, private unless the rootfs came from a
/// slave mount.)
pub fn finalize(plan: &Plan) -> Result<(), RootfsError> {
    let root =
        sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|source| {
            RootfsError::Rootfs {
                path: "/".into(),
                source,
            }
        })?;
    let root = root.as_fd_borrowed();
    // As runc's finalizeRootfs, before the paths below: the delayed
    // read-only mounts, then the read-only root (so a mask's bind of the
    // rootfs's own /dev/null is read-only too, as in runc).
    for op in plan.mounts.iter().filter(|op| delayed_readonly(op)) {
        let fd =
            sys::open_path_in_root(root, &op.destination).map_err(dest_err(&op.destination))?;
        remount_bind(fd.as_fd_borrowed(), op.flags, &op.destination)?;
    }
    if plan.rootfs_readonly {
        mountfd::set_attrs(root, mountfd::MOUNT_ATTR_RDONLY, false)
            .map_err(mount_err("remount read-only", Path::new("/")))?;
    }
    for p in &plan.readonly_paths {
        readonly_path(root, p)?;
    }
    if !plan.masked_paths.is_empty() {
        let null = open_null(root)?;
        for p in &plan.masked_paths {
            mask_path(root, null.as_fd_borrowed(), p, plan.mount_label.as_deref())?;
        }
    }
    Ok(())
}

/// A read-only filesystem mount that runc mounts read-write and remounts
/// read-only (the mount, not the superblock) once the rootfs is set up: a
/// tmpfs, or any filesystem on /dev (the device nodes are made in it).
fn delayed_readonly(op: &MountOp) -> bool {
    let MountKind::Fs { fstype } = &op.kind else {
        return false;
    };
    op.flags & libc::MS_RDONLY != 0 && (fstype == "tmpfs" || op.destination == Path::new("/dev"))
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

fn mask_path(
    root: BorrowedFd<'_>,
    null: BorrowedFd<'_>,
    p: &Path,
    label: Option<&str>,
) -> Result<(), RootfsError> {
    let Some(fd) = open_optional(root, p)? else {
        return Ok(());
    };
    let st = sys::fstat(fd.as_fd_borrowed()).map_err(|source| RootfsError::Path {
        what: "stat",
        path: p.to_path_buf(),
        source,
    })?;
    // The mask is made and attached by descriptor, never through the
    // container's /proc (CVE-2025-52881). A directory gets what runc's
    // mount("tmpfs", p, "tmpfs", MS_RDONLY) gives: a read-only superblock
    // (no size option) on a read-only mount, carrying linux.mountLabel (as
    // runc's maskPath).
    let tree = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let context = label
            .map(|l| sys::cstr(l).map_err(mount_err("mask", p)))
            .transpose()?;
        let mut options = vec![(c"source", c"tmpfs"), (c"ro", c"")];
        if let Some(c) = &context {
            options.push((c"context", c.as_c_str()));
        }
        mountfd::new_fs(c"tmpfs", &options, mountfd::MOUNT_ATTR_RDONLY)
    } else {
        mountfd::clone_tree(null, false)
    }
    .map_err(mount_err("mask", p))?;
    mountfd::move_onto(tree.as_fd_borrowed(), fd.as_fd_borrowed()).map_err(mount_err("mask", p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
60 27 0:50 / /run/a\\040b rw shared:7 master:2 - tmpfs tmpfs rw
61 27 0:51 / /var/x rw master:3 - tmpfs tmpfs rw
";

    #[test]
    fn mount_of_finds_the_point_and_sharing_by_id() {
        assert_eq!(mount_of(INFO, 27), Some((PathBuf::from("/"), true)));
        assert_eq!(
            mount_of(INFO, 31),
            Some((PathBuf::from("/sys/fs/cgroup"), false))
        );
        assert_eq!(mount_of(INFO, 60), Some((PathBuf::from("/run/a b"), true)));
        assert_eq!(mount_of(INFO, 61), Some((PathBuf::from("/var/x"), false)));
        assert_eq!(mount_of(INFO, 2), None);
    }

    #[test]
    fn mount_above_takes_the_longest_point_and_the_last_on_it() {
        let info = format!("{INFO}62 60 0:52 / /run/a\\040b rw - tmpfs tmpfs rw\n");
        let above = |p: &str| mount_above(&info, Path::new(p));
        assert_eq!(above("/srv/x"), Some((PathBuf::from("/"), true)));
        assert_eq!(above("/var/x"), Some((PathBuf::from("/var/x"), false)));
        assert_eq!(above("/var/xy"), Some((PathBuf::from("/"), true)));
        assert_eq!(
            above("/run/a b/c"),
            Some((PathBuf::from("/run/a b"), false))
        );
    }
}
