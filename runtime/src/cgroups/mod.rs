//! Cgroups: finding the host's hierarchies, resolving `cgroupsPath`, and
//! placing, listing, signalling and removing a container's processes.
//!
//! One trait, [`CgroupManager`], with a backend per host mode: `v2` for the
//! unified hierarchy and `v1` for legacy and hybrid hosts (one directory per
//! controller, plus the empty unified hierarchy of a hybrid host). Resource
//! limits arrive with the cgroups issue.

pub mod v1;
pub mod v2;

use std::path::{Component, Path, PathBuf};

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
    #[error("linux.cgroupsPath: {path:?}: {reason}")]
    BadPath { path: PathBuf, reason: &'static str },
    #[error("cgroup: no cgroup hierarchy is mounted under /sys/fs/cgroup")]
    NoHierarchy,
    #[error("--systemd-cgroup: the systemd cgroup driver is not supported yet")]
    Systemd,
}

/// What every backend does for a container.
pub trait CgroupManager {
    /// Creates the container's cgroup directories.
    fn create(&self) -> Result<(), CgroupError>;
    /// Moves `pid` into the container's cgroup.
    fn apply(&self, pid: i32) -> Result<(), CgroupError>;
    /// The pids in the container's cgroup.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// Whether the cgroup is frozen.
    fn is_frozen(&self) -> bool;
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

/// Detects the host's layout from /proc/self/mountinfo.
pub fn detect() -> Result<Hierarchy, CgroupError> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Read {
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
    hierarchy_from(parse_mountinfo(&text))
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

/// The backend for the host.
pub enum Manager {
    V1(v1::V1),
    V2(v2::V2),
}

impl Manager {
    /// The manager for a new container.
    pub fn new(
        cgroups_path: Option<&Path>,
        id: &str,
        systemd: bool,
    ) -> Result<Manager, CgroupError> {
        if systemd {
            return Err(CgroupError::Systemd);
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
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
                for (mnt, ctrls) in &controllers {
                    let own = ctrls
                        .first()
                        .and_then(|c| own_cgroup(&own, Some(c)))
                        .unwrap_or_else(|| "/".into());
                    let rel = resolve_path(cgroups_path, id, &own)?;
                    dirs.push(join_below(mnt, &rel));
                }
                if let Some(u) = unified {
                    let o = own_cgroup(&own, None).unwrap_or_else(|| "/".into());
                    let rel = resolve_path(cgroups_path, id, &o)?;
                    dirs.push(join_below(&u, &rel));
                }
                Ok(Manager::V1(v1::V1::new(dirs)))
            }
        }
    }

    /// The manager of an existing container, from its record.
    pub fn from_record(mode: &str, dirs: &[PathBuf]) -> Manager {
        if mode == "v2" {
            Manager::V2(v2::V2::new(dirs.first().cloned().unwrap_or_default()))
        } else {
            Manager::V1(v1::V1::new(dirs.to_vec()))
        }
    }

    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Manager::V1(m) => m,
            Manager::V2(m) => m,
        }
    }
}

impl CgroupManager for Manager {
    fn create(&self) -> Result<(), CgroupError> {
        self.inner().create()
    }
    fn apply(&self, pid: i32) -> Result<(), CgroupError> {
        self.inner().apply(pid)
    }
    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.inner().pids()
    }
    fn is_frozen(&self) -> bool {
        self.inner().is_frozen()
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

/// Whether the container recorded with these dirs is frozen.
pub fn is_frozen(mode: &str, dirs: &[PathBuf]) -> bool {
    !dirs.is_empty() && Manager::from_record(mode, dirs).is_frozen()
}

fn join_below(mount: &Path, rel: &Path) -> PathBuf {
    mount.join(rel.strip_prefix("/").unwrap_or(rel))
}

/// Reads a `cgroup.procs` file into pids.
pub(crate) fn read_pids(file: &Path) -> Result<Vec<i32>, CgroupError> {
    match std::fs::read_to_string(file) {
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

/// `rmdir` with bounded retries on EBUSY (tasks still exiting).
pub(crate) fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut delay = std::time::Duration::from_millis(1);
    for _ in 0..12 {
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
    Err(CgroupError::Remove {
        path: dir.to_path_buf(),
        source: std::io::Error::from_raw_os_error(libc::EBUSY),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
