//! What the host sees: mounts, cgroup directories, namespaces and processes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Lines of `/proc/self/mountinfo` that mention `path` (as a mount point, root or source).
pub fn mountinfo_lines_containing(path: &Path) -> Result<Vec<String>> {
    let needle = path.display().to_string();
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect())
}

/// Mount points (field 5 of mountinfo, unescaped) at or below `dir`, deepest first.
pub fn mount_points_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    Ok(points)
}

/// Lines of the mountinfo text `before` that are not in `now` (mounts that went, or whose
/// propagation changed), leaving out those whose mount point no longer exists: removing a
/// directory detaches what is mounted on it in every namespace, and other tests remove theirs.
pub fn mountinfo_lost(before: &str, now: &str) -> Vec<String> {
    let current: std::collections::BTreeSet<&str> = now.lines().collect();
    before
        .lines()
        .filter(|l| !current.contains(l))
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|p| Path::new(&unescape_mountinfo(p)).exists())
        })
        .map(str::to_string)
        .collect()
}

fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 controllers, each mounted on its own (possibly shared with others) hierarchy; on
    /// hybrid hosts a controller-less cgroup2 is mounted beside them (`unified`).
    V1 {
        /// controller (`memory`, `cpu`, `name=systemd`, ...) to its mount point
        controllers: BTreeMap<String, PathBuf>,
        /// the cgroup2 mount of a hybrid host
        unified: Option<PathBuf>,
    },
    /// The unified hierarchy only.
    V2 { root: PathBuf },
}

/// The v1 controllers a runtime must put the container into (when the host has them).
pub const CORE_V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio",
];

/// Work out the cgroup layout from `/proc/self/mountinfo`.
pub fn cgroup_mode() -> Result<CgroupMode> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut controllers = BTreeMap::new();
    let mut unified = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let _source = right.next();
        let super_opts = right.next().unwrap_or_default();
        match fstype {
            "cgroup2" if mount_point == Path::new("/sys/fs/cgroup") => {
                return Ok(CgroupMode::V2 { root: mount_point });
            }
            "cgroup2" => unified = Some(mount_point),
            "cgroup" => {
                for opt in super_opts.split(',') {
                    let known = CORE_V1_CONTROLLERS.contains(&opt)
                        || opt.starts_with("name=")
                        || [
                            "net_cls",
                            "net_prio",
                            "perf_event",
                            "hugetlb",
                            "rdma",
                            "misc",
                        ]
                        .contains(&opt);
                    if known {
                        controllers
                            .entry(opt.to_string())
                            .or_insert_with(|| mount_point.clone());
                    }
                }
            }
            _ => {}
        }
    }
    if controllers.is_empty() {
        match unified {
            Some(root) => return Ok(CgroupMode::V2 { root }),
            None => bail!("no cgroup hierarchy found in /proc/self/mountinfo"),
        }
    }
    Ok(CgroupMode::V1 {
        controllers,
        unified,
    })
}

fn join_cgroup(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

/// The directories a container whose cgroup is `cgroup` (an absolute cgroups path) must have:
/// one per core v1 controller present on the host, or the single v2 directory.
pub fn required_cgroup_dirs(cgroup: &str) -> Result<Vec<PathBuf>> {
    Ok(match cgroup_mode()? {
        CgroupMode::V2 { root } => vec![join_cgroup(&root, cgroup)],
        CgroupMode::V1 { controllers, .. } => {
            let mut dirs: Vec<PathBuf> = CORE_V1_CONTROLLERS
                .iter()
                .filter_map(|c| controllers.get(*c))
                .map(|m| join_cgroup(m, cgroup))
                .collect();
            dirs.dedup();
            dirs
        }
    })
}

/// Every directory named `cgroup` in any cgroup hierarchy of the host (v1 controllers, named
/// hierarchies, the unified one), whether it exists or not: what must be gone after delete.
pub fn all_cgroup_dirs(cgroup: &str) -> Result<Vec<PathBuf>> {
    Ok(match cgroup_mode()? {
        CgroupMode::V2 { root } => vec![join_cgroup(&root, cgroup)],
        CgroupMode::V1 {
            controllers,
            unified,
        } => {
            let mut dirs: Vec<PathBuf> = controllers
                .values()
                .chain(unified.iter())
                .map(|m| join_cgroup(m, cgroup))
                .collect();
            dirs.sort();
            dirs.dedup();
            dirs
        }
    })
}

/// The existing directories among [`all_cgroup_dirs`].
pub fn existing_cgroup_dirs(cgroup: &str) -> Result<Vec<PathBuf>> {
    Ok(all_cgroup_dirs(cgroup)?
        .into_iter()
        .filter(|d| d.is_dir())
        .collect())
}

/// Check that `pid` is in the cgroup `cgroup` for every core controller (v1) or in the unified
/// hierarchy (v2), as `/proc/<pid>/cgroup` tells, and that the directories exist and list the pid.
pub fn check_in_cgroup(pid: i32, cgroup: &str) -> Result<()> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    let want = format!("/{}", cgroup.trim_start_matches('/'));
    let mode = cgroup_mode()?;
    let controllers: Vec<String> = match &mode {
        CgroupMode::V2 { .. } => vec![String::new()],
        CgroupMode::V1 { controllers, .. } => CORE_V1_CONTROLLERS
            .iter()
            .filter(|c| controllers.contains_key(**c))
            .map(|c| c.to_string())
            .collect(),
    };
    for controller in &controllers {
        let line = text.lines().find(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next();
            let names = parts.next().unwrap_or("-");
            if controller.is_empty() {
                names.is_empty()
            } else {
                names.split(',').any(|n| n == controller)
            }
        });
        let Some(line) = line else {
            bail!("/proc/{pid}/cgroup has no line for controller {controller:?}:\n{text}");
        };
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        if path != want {
            bail!("pid {pid} is in {path:?} for controller {controller:?}, want {want:?}:\n{text}");
        }
    }
    // A hybrid host's unified hierarchy holds the container too (skiff enters it with
    // CLONE_INTO_CGROUP, runc by pid).
    if let CgroupMode::V1 {
        unified: Some(_), ..
    } = &mode
    {
        let path = text.lines().find_map(|l| l.strip_prefix("0::"));
        if path != Some(want.as_str()) {
            bail!("pid {pid} is in {path:?} of the unified hierarchy, want {want:?}:\n{text}");
        }
    }
    for dir in required_cgroup_dirs(cgroup)? {
        let procs = fs::read_to_string(dir.join("cgroup.procs"))
            .with_context(|| format!("reading {}/cgroup.procs", dir.display()))?;
        if !procs.lines().any(|l| l.trim() == pid.to_string()) {
            bail!(
                "{}/cgroup.procs does not list {pid}: {procs:?}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Thaw the cgroup `cgroup` (an absolute cgroups path) behind the runtime's back: `THAWED` in the v1
/// freezer, `0` in v2's `cgroup.freeze`. For cleanup after a test that leaves a container frozen.
pub fn thaw_cgroup(cgroup: &str) -> Result<()> {
    let file = match cgroup_mode()? {
        CgroupMode::V2 { root } => join_cgroup(&root, cgroup).join("cgroup.freeze"),
        CgroupMode::V1 { controllers, .. } => match controllers.get("freezer") {
            Some(mount) => join_cgroup(mount, cgroup).join("freezer.state"),
            None => return Ok(()),
        },
    };
    if !file.exists() {
        return Ok(());
    }
    let value = if file.ends_with("freezer.state") {
        "THAWED"
    } else {
        "0"
    };
    fs::write(&file, value).with_context(|| format!("writing {value} to {}", file.display()))
}

/// `readlink /proc/self/ns/<kind>` of the test process (e.g. `net:[4026531840]`).
pub fn host_namespace(kind: &str) -> Result<String> {
    let link = fs::read_link(format!("/proc/self/ns/{kind}"))
        .with_context(|| format!("reading /proc/self/ns/{kind}"))?;
    Ok(link.display().to_string())
}

/// Pids of the processes whose environment holds `NAME=value` (the harness tags every runtime command
/// and every container process with such a variable), excluding the test process itself.
pub fn pids_with_env(name: &str, value: &str) -> Vec<i32> {
    let needle = format!("{name}={value}").into_bytes();
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_slice()))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether a process with this pid exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the last ')' (the command name may hold anything).
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// The host's hostname.
pub fn hostname() -> Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

/// The cgroup directories `pid` is in, one per line of `/proc/<pid>/cgroup` whose hierarchy is
/// mounted on the host (v1 controllers and named hierarchies, or the unified one).
pub fn cgroup_dirs_of(pid: i32) -> Result<Vec<PathBuf>> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    let mode = cgroup_mode()?;
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next();
        let names = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        let mount = match &mode {
            CgroupMode::V2 { root } if names.is_empty() => Some(root.clone()),
            CgroupMode::V2 { .. } => None,
            CgroupMode::V1 { unified, .. } if names.is_empty() => unified.clone(),
            CgroupMode::V1 { controllers, .. } => {
                names.split(',').find_map(|n| controllers.get(n).cloned())
            }
        };
        if let Some(mount) = mount {
            dirs.push(join_cgroup(&mount, path));
        }
    }
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}
