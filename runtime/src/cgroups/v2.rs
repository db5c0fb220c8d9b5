//! The cgroup v2 backend: one directory in the unified hierarchy.

use super::resources::{self, Facts, Write};
use super::stats::{self, Stats};
use super::{
    apply_writes, bpf, freeze_v2, kill_each, make_dirs, read_opt, read_pids, remove_dir, thaw_v2,
    write_file, CgroupError, CgroupManager, Target,
};
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

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

    fn read(&self, file: &str) -> Option<String> {
        read_opt(&self.dir.join(file))
    }

    fn controllers(dir: &Path) -> Vec<String> {
        read_opt(&dir.join("cgroup.controllers"))
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Fills in the current memory limit when only swap is given (an
    /// update): v2's swap value is computed from both.
    fn with_current_limit(&self, res: &LinuxResources) -> LinuxResources {
        let mut res = res.clone();
        if let Some(m) = res.memory_mut() {
            if m.swap().is_some_and(|s| s > 0) && m.limit().is_none_or(|l| l == 0) {
                let cur = self.read("memory.max").unwrap_or_default();
                let cur = cur.trim();
                m.set_limit(Some(if cur == "max" {
                    -1
                } else {
                    cur.parse().unwrap_or(0)
                }));
            }
        }
        res
    }
}

/// The highest ancestor of `dir` that is still in the cgroup2 mount (every
/// cgroup2 directory has `cgroup.controllers`).
fn mount_root(dir: &Path) -> PathBuf {
    let mut root = dir.to_path_buf();
    for a in dir.ancestors().skip(1) {
        if !a.join("cgroup.controllers").exists() {
            break;
        }
        root = a.to_path_buf();
    }
    root
}

/// Enables in `parent`'s `cgroup.subtree_control` every controller it has
/// that is not enabled yet, one by one: a controller the kernel refuses
/// (for example when the parent holds processes itself) is left out and
/// reported by `set` if a value needs it.
fn enable_controllers(parent: &Path) {
    let have = V2::controllers(parent);
    let on: Vec<String> = read_opt(&parent.join("cgroup.subtree_control"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    for c in have.iter().filter(|c| !on.contains(c)) {
        let _ = std::fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
    }
}

impl CgroupManager for V2 {
    fn create(&self) -> Result<(), CgroupError> {
        make_dirs(&self.dir)?;
        // Top down, so each level has the controllers to pass on.
        let root = mount_root(&self.dir);
        let mut levels: Vec<&Path> = self
            .dir
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(&root))
            .collect();
        levels.reverse();
        for l in levels {
            enable_controllers(l);
        }
        Ok(())
    }

    fn set(&self, res: &LinuxResources) -> Result<(), CgroupError> {
        let facts = Facts {
            bfq: self.dir.join("io.bfq.weight").exists(),
        };
        let res = self.with_current_limit(res);
        let writes = resources::v2(&res, facts)?;
        // Checked before anything is written, so a bad list changes nothing.
        let rules = match res.devices() {
            Some(_) => Some(resources::device_rules(&res)?),
            None => None,
        };
        let enabled = V2::controllers(&self.dir);
        apply_writes(
            &writes,
            |w: &Write| {
                if enabled.iter().any(|c| c == w.controller) {
                    Target::File(self.dir.join(&w.file))
                } else {
                    Target::NoController(format!(
                        "the {} controller is not enabled for {} (its cgroup.controllers: {:?})",
                        w.controller,
                        self.dir.display(),
                        enabled.join(" ")
                    ))
                }
            },
            |_, path| {
                format!(
                    "{} does not exist: the kernel has no such setting",
                    path.display()
                )
            },
        )?;
        if let Some(rules) = rules {
            let fd = crate::sys::open(&self.dir, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(
                |source| CgroupError::Bpf {
                    path: self.dir.clone(),
                    source,
                },
            )?;
            bpf::attach(std::os::fd::AsFd::as_fd(&fd), &rules).map_err(|source| {
                CgroupError::Bpf {
                    path: self.dir.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        if !self.dir.join("cgroup.freeze").exists() {
            return Err(CgroupError::Unavailable {
                action: "freeze",
                what: "cgroup.freeze (Linux 5.2 or later)",
            });
        }
        freeze_v2(&self.dir)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        thaw_v2(&self.dir)
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    fn is_frozen(&self) -> bool {
        crate::sys::read_text(self.dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        if !self.dir.is_dir() {
            return Err(CgroupError::Read {
                path: self.dir.clone(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        Ok(v2_stats(&|f| self.read(f), &self.dir))
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let path = self.dir.join("memory.events");
        let text = crate::sys::read_text(&path).map_err(|source| CgroupError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(stats::key(&text, "oom_kill"))
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            write_file(&kill, "1")?;
            if self.is_frozen() {
                self.thaw()?;
            }
            return Ok(());
        }
        kill_each(self)
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

/// Statistics from a v2 directory's files (`read` returns a file's text).
pub fn v2_stats(read: &dyn Fn(&str) -> Option<String>, dir: &Path) -> Stats {
    let mut s = Stats::default();
    let cpu = read("cpu.stat").unwrap_or_default();
    s.cpu.usage.total = stats::key(&cpu, "usage_usec") * 1000;
    s.cpu.usage.user = stats::key(&cpu, "user_usec") * 1000;
    s.cpu.usage.kernel = stats::key(&cpu, "system_usec") * 1000;
    s.cpu.throttling.periods = stats::key(&cpu, "nr_periods");
    s.cpu.throttling.throttled_periods = stats::key(&cpu, "nr_throttled");
    s.cpu.throttling.throttled_time = stats::key(&cpu, "throttled_usec") * 1000;

    s.cpuset.cpus = stats::cpu_list(&read("cpuset.cpus.effective").unwrap_or_default());
    s.cpuset.mems = stats::cpu_list(&read("cpuset.mems.effective").unwrap_or_default());

    let num = |f: &str| read(f).map(|t| stats::number(&t)).unwrap_or(0);
    let raw = stats::keyed(&read("memory.stat").unwrap_or_default());
    s.memory.cache = raw.get("file").copied().unwrap_or(0);
    s.memory.usage.usage = num("memory.current");
    s.memory.usage.limit = num("memory.max");
    s.memory.usage.max = num("memory.peak");
    s.memory.usage.failcnt = stats::key(&read("memory.events").unwrap_or_default(), "max");
    s.memory.swap.usage = num("memory.swap.current");
    s.memory.swap.limit = num("memory.swap.max");
    s.memory.swap.max = num("memory.swap.peak");
    s.memory.raw = raw;

    s.pids.current = num("pids.current");
    s.pids.limit = match num("pids.max") {
        u64::MAX => 0,
        n => n,
    };

    let (bytes, ios) = stats::io_stat(&read("io.stat").unwrap_or_default());
    s.blkio.io_service_bytes_recursive = bytes;
    s.blkio.io_serviced_recursive = ios;

    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for size in stats::hugetlb_sizes(names.iter().map(String::as_str)) {
        let h = stats::Hugetlb {
            usage: num(&format!("hugetlb.{size}.current")),
            max: 0,
            failcnt: stats::key(
                &read(&format!("hugetlb.{size}.events")).unwrap_or_default(),
                "max",
            ),
        };
        s.hugetlb.insert(size, h);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn stats_from_files() {
        let files: HashMap<&str, &str> = [
            ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 20\n"),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.stat", "anon 100\nfile 200\n"),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            ("pids.current", "2\n"),
            ("pids.max", "max\n"),
            ("io.stat", "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n"),
            ("cpuset.cpus.effective", "0-1\n"),
        ]
        .into_iter()
        .collect();
        let read = |f: &str| files.get(f).map(|s| s.to_string());
        let s = v2_stats(&read, Path::new("/nonexistent"));
        assert_eq!(s.cpu.usage.total, 1_500_000);
        assert_eq!(s.cpu.usage.user, 1_000_000);
        assert_eq!(s.cpu.usage.kernel, 500_000);
        assert_eq!(s.cpu.throttling.throttled_time, 20_000);
        assert_eq!(s.memory.usage.usage, 4096);
        assert_eq!(s.memory.usage.limit, u64::MAX);
        assert_eq!(s.memory.usage.failcnt, 3);
        assert_eq!(s.memory.cache, 200);
        assert_eq!(s.memory.raw["anon"], 100);
        assert_eq!((s.pids.current, s.pids.limit), (2, 0));
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(s.cpuset.cpus, vec![0, 1]);
    }

    #[test]
    fn mount_root_stops_outside_the_mount() {
        let base = std::env::temp_dir().join(format!("skiff-v2-{}", std::process::id()));
        let a = base.join("cg/a/b");
        std::fs::create_dir_all(&a).unwrap();
        for d in [base.join("cg"), base.join("cg/a"), a.clone()] {
            std::fs::write(d.join("cgroup.controllers"), "").unwrap();
        }
        assert_eq!(mount_root(&a.join("c")), base.join("cg"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
