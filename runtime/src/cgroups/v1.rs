//! The cgroup v1 backend: one directory per mounted controller, plus the
//! unified hierarchy's directory on a hybrid host.

use super::{read_pids, remove_dir, write_file, CgroupError, CgroupManager};
use std::path::{Path, PathBuf};

/// A container's cgroup on a legacy or hybrid host.
pub struct V1 {
    dirs: Vec<PathBuf>,
}

impl V1 {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        V1 { dirs }
    }

    fn freezer(&self) -> Option<&PathBuf> {
        self.dirs.iter().find(|d| d.join("freezer.state").exists())
    }
}

impl CgroupManager for V1 {
    fn create(&self) -> Result<(), CgroupError> {
        for d in &self.dirs {
            if is_cpuset_dir(d) {
                create_cpuset(d)?;
                continue;
            }
            std::fs::create_dir_all(d).map_err(|source| CgroupError::Create {
                path: d.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn apply(&self, pid: i32) -> Result<(), CgroupError> {
        let v = pid.to_string();
        for d in &self.dirs {
            write_file(&d.join("cgroup.procs"), &v)?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        // Every hierarchy holds the same processes; the first suffices.
        match self.dirs.first() {
            Some(d) => read_pids(&d.join("cgroup.procs")),
            None => Ok(Vec::new()),
        }
    }

    fn is_frozen(&self) -> bool {
        self.freezer()
            .and_then(|d| std::fs::read_to_string(d.join("freezer.state")).ok())
            .is_some_and(|s| s.trim() == "FROZEN")
    }

    fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = remove_dir(d) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.clone()
    }

    fn mode(&self) -> &'static str {
        "v1"
    }
}

/// Whether `dir` lies in the cpuset hierarchy (its nearest existing
/// ancestor has cpuset files).
fn is_cpuset_dir(dir: &Path) -> bool {
    dir.ancestors()
        .find(|a| a.exists())
        .is_some_and(|a| a.join("cpuset.cpus").exists())
}

/// A new cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems`
/// and accepts no task until they are set: every empty level on the way
/// inherits its parent's values, top down.
fn create_cpuset(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    fill_cpuset(dir, 0)
}

fn fill_cpuset(dir: &Path, depth: usize) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let p = dir.join(file);
        let cur = std::fs::read_to_string(&p).map_err(|source| CgroupError::Read {
            path: p.clone(),
            source,
        })?;
        if !cur.trim().is_empty() {
            continue;
        }
        if depth < 64 {
            fill_cpuset(parent, depth + 1)?;
        }
        let pp = parent.join(file);
        let v = std::fs::read_to_string(&pp)
            .map_err(|source| CgroupError::Read { path: pp, source })?;
        write_file(&p, v.trim())?;
    }
    Ok(())
}
