//! Cgroups: finding the host's hierarchies, resolving `cgroupsPath`, and
//! placing, limiting, freezing, measuring, signalling and removing a
//! container's processes.
//!
//! One trait, [`CgroupManager`], with a backend per host mode: `v2` for the
//! unified hierarchy and `v1` for legacy and hybrid hosts (one directory per
//! controller, plus the empty unified hierarchy of a hybrid host, whose
//! `cgroup.kill` and `cgroup.freeze` v1 uses when present), and `systemd`
//! for `--systemd-cgroup` (a transient scope made over D-Bus, then the v2
//! backend's files). `resources` is
//! the pure translation of `linux.resources` into files and values, `bpf`
//! the v2 device filter, `stats` runc's statistics shapes.

pub mod bpf;
pub mod dbus;
pub mod gvariant;
pub mod resources;
pub mod stats;
pub mod sub;
pub mod systemd;
pub mod v1;
pub mod v2;

use oci_spec::runtime::LinuxResources;
use resources::{ResourceError, When, Write};
use stats::Stats;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// A cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup: write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("cgroup: create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup: remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup: remove {path}: still busy after {waited:?}; processes left: {pids:?}")]
    Busy {
        path: PathBuf,
        waited: Duration,
        pids: Vec<i32>,
    },
    #[error("linux.cgroupsPath: {path:?}: {reason}")]
    BadPath { path: PathBuf, reason: &'static str },
    #[error("cgroup: no cgroup hierarchy is mounted under /sys/fs/cgroup")]
    NoHierarchy,
    #[error(transparent)]
    Systemd(#[from] systemd::SystemdError),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// A value was given for a controller or file the host does not have.
    #[error("{field}: {reason}")]
    Missing { field: String, reason: String },
    /// Writing a resource value failed.
    #[error("{field}: write {value:?} to {path}: {source}")]
    Set {
        field: String,
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("linux.resources.devices: attach the device filter to {path}: {source}")]
    Bpf {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup: cannot {action}: this container's cgroup has no {what}")]
    Unavailable {
        action: &'static str,
        what: &'static str,
    },
    #[error("cgroup: {path}: not frozen after {waited:?} (state {state:?})")]
    FreezeTimeout {
        path: PathBuf,
        waited: Duration,
        state: String,
    },
}

/// What every backend does for a container.
pub trait CgroupManager {
    /// Creates the container's cgroup directories (v2: enabling the
    /// available controllers in every ancestor's `cgroup.subtree_control`).
    fn create(&self) -> Result<(), CgroupError>;
    // Processes enter through `Entry` (see there), not through the manager.
    /// Applies `linux.resources` (devices only when the list is present).
    fn set(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    /// Freezes every process and waits until the kernel says frozen.
    fn freeze(&self) -> Result<(), CgroupError>;
    /// Thaws the cgroup.
    fn thaw(&self) -> Result<(), CgroupError>;
    /// The pids in the container's cgroup.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// Whether the cgroup is frozen.
    fn is_frozen(&self) -> bool;
    /// The statistics `events` reports.
    fn stats(&self) -> Result<Stats, CgroupError>;
    /// How many processes the OOM killer has killed in the cgroup.
    fn oom_kill_count(&self) -> Result<u64, CgroupError>;
    /// SIGKILLs every process: `cgroup.kill` where the kernel has it, else
    /// each pid while the cgroup is frozen (so none forks away).
    fn kill_all(&self) -> Result<(), CgroupError>;
    /// Removes the directories, retrying while exiting tasks still hold
    /// them.
    fn remove(&self) -> Result<(), CgroupError>;
    /// The directories in use, for the state record.
    fn dirs(&self) -> Vec<PathBuf>;
    /// `v1` or `v2`.
    fn mode(&self) -> &'static str;
}

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Only cgroup2, mounted at the given path.
    Unified(PathBuf),
    /// cgroup v1 controllers (mount point, controllers), and the cgroup2
    /// mount of a hybrid host if any.
    Legacy {
        controllers: Vec<(PathBuf, Vec<String>)>,
        unified: Option<PathBuf>,
    },
}

/// A cgroup mount found in mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    pub root: PathBuf,
    pub v2: bool,
    pub options: Vec<String>,
}

/// Parses /proc/self/mountinfo text for cgroup and cgroup2 mounts.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let v2 = match r[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(CgroupMount {
            mount_point: PathBuf::from(unescape(l[4])),
            root: PathBuf::from(unescape(l[3])),
            v2,
            options: r[2].split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The controllers named in a v1 mount's super options.
fn v1_controllers(options: &[String]) -> Vec<String> {
    const KNOWN: &[&str] = &[
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "net_cls",
        "net_prio",
        "perf_event",
        "hugetlb",
        "rdma",
        "misc",
    ];
    options
        .iter()
        .filter(|o| KNOWN.contains(&o.as_str()) || o.starts_with("name="))
        .cloned()
        .collect()
}

/// Detects the host's layout from /proc/self/mountinfo, once per process:
/// the container's init, cloned after the parent looked, inherits the
/// answer with the address space (its new mount namespace is a copy of the
/// parent's, so the answer holds there too) instead of reading mountinfo
/// again.
pub fn detect() -> Result<Hierarchy, CgroupError> {
    static HIERARCHY: std::sync::OnceLock<Hierarchy> = std::sync::OnceLock::new();
    if let Some(h) = HIERARCHY.get() {
        return Ok(h.clone());
    }
    let text =
        crate::sys::read_text("/proc/self/mountinfo").map_err(|source| CgroupError::Read {
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
    let h = hierarchy_from(parse_mountinfo(&text))?;
    Ok(HIERARCHY.get_or_init(|| h).clone())
}

/// Chooses the layout from the cgroup mounts.
pub fn hierarchy_from(mounts: Vec<CgroupMount>) -> Result<Hierarchy, CgroupError> {
    let mut controllers = Vec::new();
    let mut unified = None;
    for m in mounts {
        if m.v2 {
            if unified.is_none() {
                unified = Some(m.mount_point);
            }
        } else {
            let c = v1_controllers(&m.options);
            if !c.is_empty() && !controllers.iter().any(|(p, _)| *p == m.mount_point) {
                controllers.push((m.mount_point, c));
            }
        }
    }
    match (controllers.is_empty(), unified) {
        (true, Some(u)) => Ok(Hierarchy::Unified(u)),
        (true, None) => Err(CgroupError::NoHierarchy),
        (false, unified) => Ok(Hierarchy::Legacy {
            controllers,
            unified,
        }),
    }
}

/// The path of the calling process's cgroup in a hierarchy, from
/// /proc/self/cgroup: for v1 the line naming `controller`, for v2 `0::`.
pub fn own_cgroup(text: &str, controller: Option<&str>) -> Option<PathBuf> {
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = match controller {
            None => id == "0" && ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| PathBuf::from(path))
    })
}

/// Resolves `cgroupsPath` to a path below a hierarchy's root: absolute as
/// given; relative below `own` (the runtime's own cgroup); empty as
/// `/skiff/<id>`. `..` may not climb out.
pub fn resolve_path(
    cgroups_path: Option<&Path>,
    id: &str,
    own: &Path,
) -> Result<PathBuf, CgroupError> {
    let raw = match cgroups_path {
        None => PathBuf::from("/skiff").join(id),
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("/skiff").join(id),
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => {
            if p.to_string_lossy().contains(':') {
                return Err(CgroupError::BadPath {
                    path: p.to_path_buf(),
                    reason: "looks like a systemd slice:prefix:name path; pass --systemd-cgroup",
                });
            }
            own.join(p)
        }
    };
    let mut out = PathBuf::from("/");
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(CgroupError::BadPath {
                    path: raw,
                    reason: "\"..\" is not allowed",
                })
            }
            _ => {}
        }
    }
    if out == Path::new("/") {
        return Err(CgroupError::BadPath {
            path: raw,
            reason: "the root cgroup cannot be a container's cgroup",
        });
    }
    Ok(out)
}

/// How a process the runtime clones gets into a container's cgroup.
///
/// Moving a process by pid (writing it to `cgroup.procs`) takes the kernel's
/// global threadgroup lock for writing, and taking it after a quiet moment
/// waits for an RCU grace period: 5 to 15 ms on the development machines,
/// paid on every create and exec, even when the process is already there.
/// Two ways in avoid that lock, so the pid write is only a fallback:
///
/// | directory | way in |
/// | --- | --- |
/// | cgroup2 (the v2 one, or a hybrid host's unified one) | `clone3(CLONE_INTO_CGROUP)`, by the parent |
/// | each v1 hierarchy | the child writes `0` (itself) to the `tasks` file the parent opened |
///
/// Moving the calling thread itself needs no threadgroup lock; the child is
/// single-threaded (it was cloned from the single-threaded runtime), so the
/// thread is the whole process.
#[derive(Debug, Default)]
pub struct Entry {
    /// The cgroup2 directory for `CLONE_INTO_CGROUP`.
    clone_into: Option<(PathBuf, std::os::fd::OwnedFd)>,
    /// v1 `tasks` files, open for writing, for the child.
    self_move: Vec<(PathBuf, std::os::fd::OwnedFd)>,
    /// Directories the parent moves the child into by pid.
    by_pid: Vec<PathBuf>,
}

impl Entry {
    /// The plan for `dirs`, a container's cgroup directories, of which the
    /// one at index `cgroup2` (if any) is a cgroup2 directory and the others
    /// v1 ones. A file that cannot be opened falls back to the pid write,
    /// whose error then names it.
    pub fn new(dirs: &[PathBuf], cgroup2: Option<usize>) -> Entry {
        let mut e = Entry::default();
        for (i, d) in dirs.iter().enumerate() {
            if Some(i) == cgroup2 {
                match crate::sys::open(d, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
                    Ok(fd) => e.clone_into = Some((d.clone(), fd)),
                    Err(_) => e.by_pid.push(d.clone()),
                }
            } else {
                let tasks = d.join("tasks");
                match crate::sys::open(&tasks, libc::O_WRONLY, 0) {
                    Ok(fd) => e.self_move.push((tasks, fd)),
                    Err(_) => e.by_pid.push(d.clone()),
                }
            }
        }
        e
    }

    /// Makes the child write `tasks` last among its own moves.
    pub fn move_last(&mut self, tasks: &Path) {
        if let Some(i) = self.self_move.iter().position(|(p, _)| p == tasks) {
            let f = self.self_move.remove(i);
            self.self_move.push(f);
        }
    }

    /// The directory for `clone3(CLONE_INTO_CGROUP)`, if any.
    pub fn clone_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.clone_into.as_ref().map(|(_, fd)| fd.as_fd())
    }

    /// The `tasks` files the child writes itself into ([`move_self`]).
    pub fn take_self_move(&mut self) -> Vec<(PathBuf, std::os::fd::OwnedFd)> {
        std::mem::take(&mut self.self_move)
    }

    /// After the clone (`cloned_into`: whether `CLONE_INTO_CGROUP` was
    /// used): moves `pid` by pid into the directories nothing else covered.
    pub fn finish(self, pid: i32, cloned_into: bool) -> Result<(), CgroupError> {
        let v = pid.to_string();
        let missed = self.clone_into.filter(|_| !cloned_into).map(|(d, _)| d);
        for d in self.by_pid.iter().chain(missed.iter()) {
            write_file(&d.join("cgroup.procs"), &v)?;
        }
        Ok(())
    }
}

/// In the child: enters every v1 hierarchy through its `tasks` file
/// ([`Entry`]), then closes the files.
pub fn move_self(files: Vec<(PathBuf, std::os::fd::OwnedFd)>) -> Result<(), CgroupError> {
    for (path, fd) in files {
        use crate::sys::AsFdBorrowed;
        crate::sys::write_all(fd.as_fd_borrowed(), b"0").map_err(|source| CgroupError::Write {
            path,
            value: "0".into(),
            source,
        })?;
    }
    Ok(())
}

/// The backend for the host.
pub enum Manager {
    V1(v1::V1),
    V2(v2::V2),
    Systemd(systemd::Systemd),
}

impl Manager {
    /// The manager for a new container.
    /// `annotations` are the config's: with the systemd driver its
    /// `org.systemd.property.<Name>` entries become the scope's properties.
    pub fn new(
        cgroups_path: Option<&Path>,
        id: &str,
        systemd: bool,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Manager, CgroupError> {
        if systemd {
            return Manager::systemd(cgroups_path, id, annotations);
        }
        let own = crate::sys::read_text("/proc/self/cgroup").unwrap_or_default();
        match detect()? {
            Hierarchy::Unified(mnt) => {
                let own = own_cgroup(&own, None).unwrap_or_else(|| "/".into());
                let rel = resolve_path(cgroups_path, id, &own)?;
                Ok(Manager::V2(v2::V2::new(join_below(&mnt, &rel))))
            }
            Hierarchy::Legacy {
                controllers,
                unified,
            } => {
                let mut dirs = Vec::new();
                let mut names = Vec::new();
                for (mnt, ctrls) in controllers {
                    let own = ctrls
                        .first()
                        .and_then(|c| own_cgroup(&own, Some(c)))
                        .unwrap_or_else(|| "/".into());
                    let rel = resolve_path(cgroups_path, id, &own)?;
                    dirs.push(join_below(&mnt, &rel));
                    names.push(ctrls);
                }
                let mut cgroup2 = None;
                if let Some(u) = unified {
                    let o = own_cgroup(&own, None).unwrap_or_else(|| "/".into());
                    let rel = resolve_path(cgroups_path, id, &o)?;
                    cgroup2 = Some(dirs.len());
                    dirs.push(join_below(&u, &rel));
                    names.push(Vec::new());
                }
                Ok(Manager::V1(v1::V1::with_layout(dirs, names, cgroup2)))
            }
        }
    }

    /// The systemd driver's manager (cgroup v2 only, for now).
    fn systemd(
        cgroups_path: Option<&Path>,
        id: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Manager, CgroupError> {
        let up = systemd::unit_path(cgroups_path, id)?;
        let extra = systemd::annotation_properties(annotations)?;
        match detect()? {
            Hierarchy::Unified(mnt) => Ok(Manager::Systemd(
                systemd::Systemd::new(&mnt, up, id)?.with_properties(extra),
            )),
            Hierarchy::Legacy {
                controllers,
                unified,
            } => {
                let mut mounts: Vec<(PathBuf, Vec<String>)> = controllers;
                if let Some(u) = unified {
                    mounts.push((u, Vec::new()));
                }
                Ok(Manager::Systemd(
                    systemd::Systemd::new_v1(&mounts, up, id)?.with_properties(extra),
                ))
            }
        }
    }

    /// How a new process enters this cgroup ([`Entry`]). A systemd scope
    /// that is not there yet is entered through [`Manager::place`].
    pub fn entry(&self) -> Entry {
        match self {
            Manager::V1(v1) => v1.entry(),
            Manager::V2(v2) => Entry::new(&[v2.dir().to_path_buf()], Some(0)),
            Manager::Systemd(s) => s.entry().unwrap_or_default(),
        }
    }

    /// Whether the cgroup is made with the init in it, after the clone
    /// ([`Manager::place`]), rather than before it.
    pub fn made_with_init(&self) -> bool {
        matches!(self, Manager::Systemd(_))
    }

    /// After the clone: a systemd scope is started with `pid` in it and
    /// the resources set; the other backends did all before the clone.
    pub fn place(&self, pid: i32, res: &LinuxResources) -> Result<(), CgroupError> {
        match self {
            Manager::Systemd(s) => s.start(pid, res),
            _ => Ok(()),
        }
    }

    /// The manager of an existing container, from its record.
    /// `controllers` is what [`Manager::controllers`] said at create time
    /// (empty for records that lack it: the directories are then looked at).
    pub fn from_record(mode: &str, dirs: &[PathBuf], controllers: &[Vec<String>]) -> Manager {
        if mode == "v2" {
            Manager::V2(v2::V2::new(dirs.first().cloned().unwrap_or_default()))
        } else if mode == "systemd" {
            Manager::Systemd(systemd::Systemd::from_dir(
                dirs.first().cloned().unwrap_or_default(),
            ))
        } else if mode == "systemd-v1" {
            Manager::Systemd(systemd::Systemd::from_v1_dirs(dirs, controllers))
        } else if !dirs.is_empty() && controllers.len() == dirs.len() {
            // The unified directory is the one without controllers (a
            // named v1 hierarchy has its `name=...`).
            let unified = controllers.iter().position(|c| c.is_empty());
            Manager::V1(v1::V1::with_layout(
                dirs.to_vec(),
                controllers.to_vec(),
                unified,
            ))
        } else {
            Manager::V1(v1::V1::new(dirs.to_vec()))
        }
    }

    /// Per directory, the controllers of its hierarchy (v1; empty for the
    /// unified one), for the container's record.
    pub fn controllers(&self) -> Vec<Vec<String>> {
        match self {
            Manager::V1(v1) => v1.controllers(),
            Manager::Systemd(s) => s.controllers(),
            Manager::V2(_) => Vec::new(),
        }
    }

    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Manager::V1(m) => m,
            Manager::V2(m) => m,
            Manager::Systemd(m) => m,
        }
    }
}

impl CgroupManager for Manager {
    fn create(&self) -> Result<(), CgroupError> {
        self.inner().create()
    }
    fn set(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.inner().set(resources)
    }
    fn freeze(&self) -> Result<(), CgroupError> {
        self.inner().freeze()
    }
    fn thaw(&self) -> Result<(), CgroupError> {
        self.inner().thaw()
    }
    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.inner().pids()
    }
    fn is_frozen(&self) -> bool {
        self.inner().is_frozen()
    }
    fn stats(&self) -> Result<Stats, CgroupError> {
        self.inner().stats()
    }
    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        self.inner().oom_kill_count()
    }
    fn kill_all(&self) -> Result<(), CgroupError> {
        self.inner().kill_all()
    }
    fn remove(&self) -> Result<(), CgroupError> {
        self.inner().remove()
    }
    fn dirs(&self) -> Vec<PathBuf> {
        self.inner().dirs()
    }
    fn mode(&self) -> &'static str {
        self.inner().mode()
    }
}

fn join_below(mount: &Path, rel: &Path) -> PathBuf {
    mount.join(rel.strip_prefix("/").unwrap_or(rel))
}

/// Reads a `cgroup.procs` file into pids.
pub(crate) fn read_pids(file: &Path) -> Result<Vec<i32>, CgroupError> {
    match crate::sys::read_text(file) {
        Ok(t) => Ok(t.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Read {
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// Writes `value` to a cgroup file.
pub(crate) fn write_file(file: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(file, value).map_err(|source| CgroupError::Write {
        path: file.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// `rmdir` with bounded retries on EBUSY (tasks still exiting), then an
/// error listing the processes still there.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    // The common case first: a leaf cgroup whose tasks are gone goes with
    // one rmdir, without listing its (virtual) files.
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    // Sub-cgroups first (made for `exec --cgroup`, or by the container
    // itself through its cgroup namespace), deepest first, as runc does.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dir(&e.path())?;
            }
        }
    }
    let start = Instant::now();
    let mut delay = std::time::Duration::from_millis(1);
    for _ in 0..16 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(200));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    Err(CgroupError::Busy {
        path: dir.to_path_buf(),
        waited: start.elapsed(),
        pids: read_pids(&dir.join("cgroup.procs")).unwrap_or_default(),
    })
}

/// The ancestors of `dirs` that do not exist yet, deepest first: what
/// creating `dirs` will make besides them, so it can be recorded first and
/// removed with the container.
pub fn missing_ancestors(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        for a in d.ancestors().skip(1) {
            if a.exists() {
                break;
            }
            if !out.iter().any(|o| o == a) {
                out.push(a.to_path_buf());
            }
        }
    }
    // Deeper paths have more components; a stable sort keeps the order of
    // unrelated ones.
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Removes the ancestors a create made (`missing_ancestors`), deepest
/// first, where nothing else uses them: one still holding another
/// container's directory (or processes) stays.
pub fn remove_parents(parents: &[PathBuf]) -> Result<(), CgroupError> {
    for p in parents {
        match std::fs::remove_dir(p) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTEMPTY | libc::EBUSY | libc::EEXIST)
                ) => {}
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: p.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// `mkdir -p` for a cgroup directory, retried when a parent vanishes
/// under it (another container's delete removing a parent it made).
pub(crate) fn make_dirs(dir: &Path) -> Result<(), CgroupError> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
            r => {
                return r.map_err(|source| CgroupError::Create {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Reads a cgroup file, `None` when it is absent or unreadable.
pub(crate) fn read_opt(file: &Path) -> Option<String> {
    crate::sys::read_text(file).ok()
}

/// Where a write goes, as the backend resolves it.
pub(crate) enum Target {
    /// The file to write.
    File(PathBuf),
    /// The controller is not there: the reason, for the error.
    NoController(String),
}

/// Applies `writes` in order: `IfPresent` ones only where the file exists,
/// `Deferrable` ones retried once after the rest when the kernel answers
/// `EINVAL` (the right order of a pair depends on the current values).
/// `missing_file` explains a file that is absent although its controller
/// is there.
pub(crate) fn apply_writes(
    writes: &[Write],
    target: impl Fn(&Write) -> Target,
    missing_file: impl Fn(&Write, &Path) -> String,
) -> Result<(), CgroupError> {
    let mut deferred = Vec::new();
    // One open per file, not per value: consecutive writes to one file
    // (device rules) reuse the descriptor; a missing file is ENOENT from the
    // open itself (no stat first, no O_CREAT).
    let mut open: Option<(PathBuf, std::fs::File)> = None;
    for w in writes {
        let path = match target(w) {
            Target::File(p) => p,
            Target::NoController(_) if w.when == When::IfPresent => continue,
            Target::NoController(reason) => {
                return Err(CgroupError::Missing {
                    field: w.field.clone(),
                    reason,
                })
            }
        };
        if open.as_ref().map(|(p, _)| p) != Some(&path) {
            match std::fs::OpenOptions::new().write(true).open(&path) {
                Ok(f) => open = Some((path.clone(), f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if w.when == When::IfPresent {
                        continue;
                    }
                    return Err(CgroupError::Missing {
                        field: w.field.clone(),
                        reason: missing_file(w, &path),
                    });
                }
                Err(source) => return Err(set_err(w, path, source)),
            }
        }
        let Some((_, f)) = open.as_mut() else {
            continue;
        };
        // A cgroup file takes one value per write(2).
        match std::io::Write::write(f, w.value.as_bytes()) {
            Ok(_) => {}
            Err(e) if w.when == When::Deferrable && e.raw_os_error() == Some(libc::EINVAL) => {
                deferred.push((w, path));
            }
            Err(source) => return Err(set_err(w, path, source)),
        }
    }
    drop(open);
    for (w, path) in deferred {
        std::fs::write(&path, &w.value).map_err(|source| set_err(w, path, source))?;
    }
    Ok(())
}

fn set_err(w: &Write, path: PathBuf, source: std::io::Error) -> CgroupError {
    CgroupError::Set {
        field: w.field.clone(),
        path,
        value: w.value.clone(),
        source,
    }
}

/// How long freezing may take before it is given up.
pub(crate) const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls `check` with a growing delay until it is true or `limit` passes.
pub(crate) fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_micros(100);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

/// Freezes a cgroup v2 directory (`cgroup.freeze`), waiting for
/// `cgroup.events` to say `frozen 1`; thaws again if that never comes.
pub(crate) fn freeze_v2(dir: &Path) -> Result<(), CgroupError> {
    write_file(&dir.join("cgroup.freeze"), "1")?;
    let events = dir.join("cgroup.events");
    let frozen = || read_opt(&events).is_some_and(|t| stats::key(&t, "frozen") == 1);
    if wait_until(FREEZE_TIMEOUT, frozen) {
        return Ok(());
    }
    let _ = write_file(&dir.join("cgroup.freeze"), "0");
    Err(CgroupError::FreezeTimeout {
        path: dir.to_path_buf(),
        waited: FREEZE_TIMEOUT,
        state: read_opt(&events).unwrap_or_default(),
    })
}

/// Thaws a cgroup v2 directory.
pub(crate) fn thaw_v2(dir: &Path) -> Result<(), CgroupError> {
    write_file(&dir.join("cgroup.freeze"), "0")
}

/// Sends `sig` to every process of the cgroup. SIGKILL goes through
/// [`CgroupManager::kill_all`]; other signals go to each pid while the
/// cgroup is frozen when it can be (so no process forks away unsignalled),
/// and a cgroup that was paused stays paused.
pub fn signal_all(cg: &dyn CgroupManager, sig: libc::c_int) -> Result<(), CgroupError> {
    if sig == libc::SIGKILL {
        return cg.kill_all();
    }
    let was_frozen = cg.is_frozen();
    let froze = !was_frozen && cg.freeze().is_ok();
    let result = cg.pids().map(|pids| {
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions; the pids
            // are the container's own.
            unsafe { libc::kill(pid, sig) };
        }
    });
    if froze {
        cg.thaw()?;
    }
    result
}

/// SIGKILLs every pid of the cgroup while it is frozen (when it can be).
pub(crate) fn kill_each(cg: &dyn CgroupManager) -> Result<(), CgroupError> {
    let froze = cg.freeze().is_ok();
    let result = cg.pids().map(|pids| {
        for pid in pids {
            // SAFETY: as in signal_all.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    if froze {
        // SIGKILL is delivered to frozen tasks only once they thaw.
        cg.thaw()?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a record keeps is what a manager made from it says again; no directory is looked at.
    #[test]
    fn the_record_layout_round_trips_without_looking() {
        let dirs: Vec<PathBuf> = [
            "/nonexistent/memory/c",
            "/nonexistent/systemd/c",
            "/nonexistent/unified/c",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let ctrls = vec![
            vec!["memory".to_string()],
            vec!["name=systemd".to_string()],
            vec![],
        ];
        let m = Manager::from_record("v1", &dirs, &ctrls);
        assert_eq!(m.controllers(), ctrls);
        let Manager::V1(v1) = &m else {
            panic!("v1 expected")
        };
        let e = v1.entry();
        assert_eq!(
            e.clone_into.as_ref().map(|(d, _)| d),
            None,
            "nonexistent: no fd"
        );
        assert_eq!(
            e.by_pid, dirs,
            "nothing could be opened: every directory falls back"
        );
        // An old record without the layout still works (it is probed on use).
        assert_eq!(
            Manager::from_record("v1", &dirs, &[]).controllers().len(),
            3
        );
    }

    /// The order a v1 manager gives the child: the freezer's `tasks` last, wherever it stands.
    #[test]
    fn the_freezer_is_entered_last() {
        let base = std::env::temp_dir().join(format!("skiff-entry-order-{}", std::process::id()));
        let (freezer, memory) = (base.join("freezer"), base.join("memory"));
        for d in [&freezer, &memory] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("tasks"), "").unwrap();
        }
        let v1 = v1::V1::with_layout(
            vec![freezer.clone(), memory.clone()],
            vec![vec!["freezer".into()], vec!["memory".into()]],
            None,
        );
        let order: Vec<PathBuf> = v1
            .entry()
            .take_self_move()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(order, vec![memory.join("tasks"), freezer.join("tasks")]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Plain directories standing in for cgroup ones: the kind is told by the files in them.
    #[test]
    fn entry_picks_a_way_in_per_directory() {
        let base = std::env::temp_dir().join(format!("skiff-entry-{}", std::process::id()));
        let (unified, memory, broken) = (base.join("u"), base.join("m"), base.join("b"));
        for d in [&unified, &memory, &broken] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(unified.join("cgroup.controllers"), "").unwrap();
        std::fs::write(memory.join("tasks"), "").unwrap();
        let dirs = vec![memory.clone(), broken.clone(), unified.clone()];

        let mut e = Entry::new(&dirs, Some(2));
        assert!(
            e.clone_fd().is_some(),
            "the cgroup2 directory is cloned into"
        );
        let own = e.take_self_move();
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].0, memory.join("tasks"));
        move_self(own).unwrap();
        assert_eq!(std::fs::read_to_string(memory.join("tasks")).unwrap(), "0");
        // A directory without a tasks file falls back to the pid; so does the cgroup2 one
        // when clone3 refused it.
        e.finish(42, false).unwrap();
        for d in [&broken, &unified] {
            assert_eq!(
                std::fs::read_to_string(d.join("cgroup.procs")).unwrap(),
                "42"
            );
        }
        std::fs::remove_file(unified.join("cgroup.procs")).unwrap();
        std::fs::remove_file(broken.join("cgroup.procs")).unwrap();
        let e = Entry::new(&dirs, Some(2));
        e.finish(43, true).unwrap();
        assert!(!unified.join("cgroup.procs").exists(), "clone3 did it");
        assert_eq!(
            std::fs::read_to_string(broken.join("cgroup.procs")).unwrap(),
            "43"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// What a create makes besides its directories is known before, deepest first; removing it
    /// spares a parent another container still uses.
    #[test]
    fn created_parents_are_known_first_and_removed_when_unused() {
        let base = std::env::temp_dir().join(format!("skiff-parents-{}", std::process::id()));
        std::fs::create_dir_all(base.join("m1")).unwrap();
        std::fs::create_dir_all(base.join("m2")).unwrap();
        let dirs = vec![base.join("m1/a/b/c"), base.join("m2/a/b/c")];
        let parents = missing_ancestors(&dirs);
        let want: Vec<PathBuf> = ["m1/a/b", "m2/a/b", "m1/a", "m2/a"]
            .iter()
            .map(|p| base.join(p))
            .collect();
        assert_eq!(parents, want);
        for d in &dirs {
            make_dirs(d).unwrap();
        }
        // Another container under m2/a/b.
        std::fs::create_dir(base.join("m2/a/b/other")).unwrap();
        for d in &dirs {
            std::fs::remove_dir(d).unwrap();
        }
        remove_parents(&parents).unwrap();
        assert!(!base.join("m1/a").exists());
        assert!(base.join("m2/a/b/other").exists(), "a parent in use stays");
        std::fs::remove_dir_all(&base).unwrap();
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host() {
        let h = hierarchy_from(parse_mountinfo(HYBRID)).unwrap();
        let Hierarchy::Legacy {
            controllers,
            unified,
        } = h
        else {
            panic!("expected legacy");
        };
        assert_eq!(controllers.len(), 3);
        assert_eq!(controllers[0].1, vec!["cpu".to_string()]);
        assert_eq!(controllers[2].1, vec!["name=systemd".to_string()]);
        assert_eq!(unified, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn unified_host() {
        let t = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            hierarchy_from(parse_mountinfo(t)).unwrap(),
            Hierarchy::Unified("/sys/fs/cgroup".into())
        );
        assert!(hierarchy_from(vec![]).is_err());
    }

    #[test]
    fn paths() {
        let own = Path::new("/user.slice");
        assert_eq!(
            resolve_path(None, "c1", own).unwrap(),
            PathBuf::from("/skiff/c1")
        );
        assert_eq!(
            resolve_path(Some(Path::new("/a/b")), "c1", own).unwrap(),
            PathBuf::from("/a/b")
        );
        assert_eq!(
            resolve_path(Some(Path::new("x/y")), "c1", own).unwrap(),
            PathBuf::from("/user.slice/x/y")
        );
        assert!(resolve_path(Some(Path::new("/a/../../b")), "c", own).is_err());
        assert!(resolve_path(Some(Path::new("/")), "c", own).is_err());
        assert!(resolve_path(Some(Path::new("system.slice:skiff:c")), "c", own).is_err());
    }

    #[test]
    fn own_cgroup_lines() {
        let t = "12:pids:/a\n4:cpu,cpuacct:/b\n0::/c\n";
        assert_eq!(own_cgroup(t, Some("cpu")), Some(PathBuf::from("/b")));
        assert_eq!(own_cgroup(t, Some("pids")), Some(PathBuf::from("/a")));
        assert_eq!(own_cgroup(t, None), Some(PathBuf::from("/c")));
        assert_eq!(own_cgroup(t, Some("memory")), None);
    }

    #[test]
    fn unescape_spaces() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
