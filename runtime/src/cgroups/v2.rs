//! The cgroup v2 backend: one directory in the unified hierarchy.

use super::{read_pids, remove_dir, write_file, CgroupError, CgroupManager};
use std::path::PathBuf;

/// A container's cgroup on a unified host.
pub struct V2 {
    dir: PathBuf,
}

impl V2 {
    pub fn new(dir: PathBuf) -> Self {
        V2 { dir }
    }

    /// The directory, for `CLONE_INTO_CGROUP`.
    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }
}

impl CgroupManager for V2 {
    fn create(&self) -> Result<(), CgroupError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| CgroupError::Create {
            path: self.dir.clone(),
            source,
        })
    }

    fn apply(&self, pid: i32) -> Result<(), CgroupError> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    fn is_frozen(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
    }

    fn remove(&self) -> Result<(), CgroupError> {
        remove_dir(&self.dir)
    }

    fn dirs(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }

    fn mode(&self) -> &'static str {
        "v2"
    }
}
