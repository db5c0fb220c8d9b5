//! A container's cgroup as the shim sees it from the host: found through `/proc/<pid>/cgroup` and
//! `/proc/self/mountinfo`, read for `Stats`, `Pids` and the OOM watcher. The shim never writes
//! the containers' cgroups (the runtime owns them); it only moves its own server into the
//! `ShimCgroup` the runtime options name ([`join_cgroup`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use skiff_proto::metrics::{hugetlb_sizes, keyed, v1_metrics, v2_metrics};
use skiff_proto::protobuf::well_known_types::any::Any;

/// A container's cgroup directories.
#[derive(Debug, Clone)]
pub enum Cgroup {
    /// Legacy or hybrid host: one directory per v1 controller.
    V1(HashMap<String, PathBuf>),
    /// Unified host.
    V2(PathBuf),
}

struct MountEntry {
    root: String,
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

fn mounts(mountinfo: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        out.push(MountEntry {
            root: l[3].to_string(),
            point: PathBuf::from(l[4]),
            fstype: r[0].to_string(),
            options: r[2].split(',').map(str::to_string).collect(),
        });
    }
    out
}

fn join(point: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or(path);
    point.join(rel.trim_start_matches('/'))
}

/// Why the shim could not move into its `ShimCgroup`.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("reading /proc/self/mountinfo: {0}")]
    Mountinfo(std::io::Error),
    #[error("ShimCgroup {0}: no such cgroup in any hierarchy")]
    NotFound(String),
    #[error("moving pid {pid} into {path}: {source}")]
    Write {
        pid: u32,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `cgroup.procs` files of cgroup `path` (absolute in its hierarchies): on a unified host the
/// cgroup2 one; otherwise every v1 hierarchy's that has the directory (as containerd's runc shim
/// loads a static v1 path: hierarchies without it are skipped).
fn procs_files(path: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mounts = mounts(mountinfo);
    let unified = mounts
        .iter()
        .find(|m| m.point == Path::new("/sys/fs/cgroup") && m.fstype == "cgroup2");
    let chosen: Vec<&MountEntry> = match unified {
        Some(m) => vec![m],
        None => mounts.iter().filter(|m| m.fstype == "cgroup").collect(),
    };
    chosen
        .into_iter()
        .map(|m| join(&m.point, &m.root, path))
        .filter(|dir| dir.is_dir())
        .map(|dir| dir.join("cgroup.procs"))
        .collect()
}

/// Move process `pid` into the cgroup `path` (the runtime options' `ShimCgroup`).
pub fn join_cgroup(pid: u32, path: &str) -> Result<(), JoinError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(JoinError::Mountinfo)?;
    let files = procs_files(path, &mountinfo);
    if files.is_empty() {
        return Err(JoinError::NotFound(path.to_string()));
    }
    for file in files {
        std::fs::write(&file, pid.to_string()).map_err(|source| JoinError::Write {
            pid,
            path: file.clone(),
            source,
        })?;
    }
    Ok(())
}

impl Cgroup {
    /// The cgroup of `pid`, or `None` if it cannot be found.
    pub fn of_pid(pid: i32) -> Option<Cgroup> {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Cgroup::parse(&cgroups, &mountinfo)
    }

    fn parse(cgroups: &str, mountinfo: &str) -> Option<Cgroup> {
        let mounts = mounts(mountinfo);
        let mut v1 = HashMap::new();
        let mut unified = None;
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.is_empty() {
                unified = mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup2")
                    .map(|m| join(&m.point, &m.root, path));
                continue;
            }
            for controller in controllers.split(',') {
                let name = controller.trim_start_matches("name=");
                if let Some(m) = mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))
                {
                    v1.insert(name.to_string(), join(&m.point, &m.root, path));
                }
            }
        }
        if v1.contains_key("memory") || v1.contains_key("pids") {
            Some(Cgroup::V1(v1))
        } else {
            unified.map(Cgroup::V2)
        }
    }

    /// The directory holding the memory controller's files.
    pub fn memory_dir(&self) -> Option<PathBuf> {
        match self {
            Cgroup::V1(dirs) => dirs.get("memory").cloned(),
            Cgroup::V2(dir) => Some(dir.clone()),
        }
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let dir = match self {
            Cgroup::V1(dirs) => ["pids", "memory", "freezer", "cpu", "devices"]
                .iter()
                .find_map(|c| dirs.get(*c))
                .cloned(),
            Cgroup::V2(dir) => Some(dir.clone()),
        };
        dir.and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The OOM kills counted so far.
    pub fn oom_kills(&self) -> u64 {
        match self {
            Cgroup::V1(dirs) => dirs
                .get("memory")
                .and_then(|d| std::fs::read_to_string(d.join("memory.oom_control")).ok())
                .map(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0),
            Cgroup::V2(dir) => std::fs::read_to_string(dir.join("memory.events"))
                .map(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0),
        }
    }

    /// containerd's metrics for the cgroup, packed for `StatsResponse`.
    pub fn metrics(&self) -> Any {
        match self {
            Cgroup::V1(dirs) => {
                let read = |controller: &str, file: &str| {
                    dirs.get(controller)
                        .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
                };
                let sizes = dirs
                    .get("hugetlb")
                    .map(|d| page_sizes(d))
                    .unwrap_or_default();
                skiff_proto::convert::to_any(&v1_metrics(&read, &sizes, &device_name))
            }
            Cgroup::V2(dir) => {
                let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
                skiff_proto::convert::to_any(&v2_metrics(&read, &page_sizes(dir)))
            }
        }
    }
}

/// The hugetlb page sizes a cgroup directory has files for.
fn page_sizes(dir: &Path) -> Vec<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    hugetlb_sizes(names.iter().map(String::as_str))
}

/// `/dev/<name>` of block device `major:minor` (from its uevent), as containerd names blkio
/// entries; empty when the kernel does not say.
fn device_name(major: u64, minor: u64) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|name| format!("/dev/{name}"))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_uses_v1_dirs() {
        let cg = "5:memory:/default/c1\n2:cpu:/default/c1\n1:name=systemd:/x\n0::/y\n";
        match Cgroup::parse(cg, MOUNTINFO).unwrap() {
            Cgroup::V1(dirs) => {
                assert_eq!(
                    dirs["memory"],
                    PathBuf::from("/sys/fs/cgroup/memory/default/c1")
                );
                assert_eq!(dirs["systemd"], PathBuf::from("/sys/fs/cgroup/systemd/x"));
            }
            Cgroup::V2(_) => panic!("want v1"),
        }
    }

    #[test]
    fn shim_cgroup_in_every_v1_hierarchy_that_has_it() {
        let dir = std::env::temp_dir().join(format!("skiff-cg-{}", std::process::id()));
        for h in ["cpu", "memory"] {
            std::fs::create_dir_all(dir.join(h).join("shims")).unwrap();
        }
        std::fs::create_dir_all(dir.join("systemd")).unwrap();
        let mi = MOUNTINFO.replace("/sys/fs/cgroup/", &format!("{}/", dir.display()));
        let got = procs_files("/shims", &mi);
        assert_eq!(
            got,
            vec![
                dir.join("cpu/shims/cgroup.procs"),
                dir.join("memory/shims/cgroup.procs")
            ]
        );
        assert!(procs_files("/nope", &mi).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unified() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        match Cgroup::parse("0::/default/c1\n", mi).unwrap() {
            Cgroup::V2(dir) => assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/default/c1")),
            Cgroup::V1(_) => panic!("want v2"),
        }
    }
}
