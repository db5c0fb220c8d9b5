//! The cgroup v1 backend: one directory per mounted controller, plus the
//! unified hierarchy's directory on a hybrid host. That directory has no
//! controllers, but its `cgroup.kill` and `cgroup.freeze` work on the same
//! processes, so they are used when the v1 way is missing or slower.

use super::resources::{self, Facts, Write};
use super::stats::{self, Stats};
use super::{
    apply_writes, freeze_v2, kill_each, make_dirs, read_opt, read_pids, remove_dir, thaw_v2,
    wait_until, write_file, CgroupError, CgroupManager, Target, FREEZE_TIMEOUT,
};
use oci_spec::runtime::LinuxResources;
use std::cell::OnceCell;
use std::path::{Path, PathBuf};

/// A container's cgroup on a legacy or hybrid host.
pub struct V1 {
    dirs: Vec<PathBuf>,
    /// Which directory has which controllers: known from mountinfo for a new
    /// container, found by looking at the directories otherwise (once).
    layout: OnceCell<Layout>,
}

/// The hierarchies behind [`V1::dirs`], by index.
#[derive(Debug, Default)]
struct Layout {
    /// Per directory, the controllers of its hierarchy (`memory`,
    /// `name=systemd`, ...); empty for the unified directory.
    controllers: Vec<Vec<String>>,
    /// The hybrid host's unified directory.
    unified: Option<usize>,
}

impl V1 {
    /// The manager of existing directories: their hierarchies are found by
    /// looking at their files when first needed.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        V1 {
            dirs,
            layout: OnceCell::new(),
        }
    }

    /// The manager of a new container: `controllers[i]` are the controllers
    /// of `dirs[i]` (from mountinfo), `unified` the index of the hybrid
    /// host's unified directory. Nothing is looked up on disk.
    pub fn with_layout(
        dirs: Vec<PathBuf>,
        controllers: Vec<Vec<String>>,
        unified: Option<usize>,
    ) -> Self {
        let layout = OnceCell::new();
        let _ = layout.set(Layout {
            controllers,
            unified,
        });
        V1 { dirs, layout }
    }

    fn layout(&self) -> &Layout {
        self.layout.get_or_init(|| {
            let mut l = Layout::default();
            for (i, d) in self.dirs.iter().enumerate() {
                // cgroup2 directories have `cgroup.controllers`; v1 ones never do.
                if l.unified.is_none() && d.join("cgroup.controllers").exists() {
                    l.unified = Some(i);
                    l.controllers.push(Vec::new());
                    continue;
                }
                // A v1 directory's controllers are the prefixes of its files
                // (`memory.limit_in_bytes`); `cgroup.*`, `notify_on_release`,
                // `release_agent` and `tasks` belong to every hierarchy.
                let mut found: Vec<String> = Vec::new();
                for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if let Some((prefix, _)) = name.split_once('.') {
                        if prefix != "cgroup" && !found.iter().any(|f| f == prefix) {
                            found.push(prefix.to_string());
                        }
                    }
                }
                l.controllers.push(found);
            }
            l
        })
    }

    fn freezer(&self) -> Option<&PathBuf> {
        self.dir_of("freezer")
    }

    /// The hybrid host's unified directory.
    fn unified(&self) -> Option<&PathBuf> {
        self.layout().unified.and_then(|i| self.dirs.get(i))
    }

    /// The directory of the hierarchy that has `controller`.
    fn dir_of(&self, controller: &str) -> Option<&PathBuf> {
        let l = self.layout();
        l.controllers
            .iter()
            .position(|cs| cs.iter().any(|c| c == controller))
            .and_then(|i| self.dirs.get(i))
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        read_opt(&self.dir_of(controller)?.join(file))
    }

    /// Per directory, its hierarchy's controllers (empty for the unified one).
    pub fn controllers(&self) -> Vec<Vec<String>> {
        self.layout().controllers.clone()
    }

    /// How a new process enters these directories ([`super::Entry`]).
    pub fn entry(&self) -> super::Entry {
        let mut e = super::Entry::new(&self.dirs, self.layout().unified);
        // The freezer last: a child that joins a frozen cgroup (exec into a
        // paused container) stops right after that write, and should be in
        // every other hierarchy by then.
        if let Some(f) = self.freezer() {
            e.move_last(&f.join("tasks"));
        }
        e
    }
}

impl CgroupManager for V1 {
    fn create(&self) -> Result<(), CgroupError> {
        let cpuset = self.dir_of("cpuset");
        for d in &self.dirs {
            if Some(d) == cpuset {
                create_cpuset(d)?;
                continue;
            }
            make_dirs(d)?;
        }
        Ok(())
    }

    fn set(&self, res: &LinuxResources) -> Result<(), CgroupError> {
        let blkio = self.dir_of("blkio");
        let facts = Facts {
            // Only looked at when there are blkio settings to translate.
            bfq: res.block_io().is_some()
                && blkio.is_some_and(|d| {
                    !d.join("blkio.weight").exists() && d.join("blkio.bfq.weight").exists()
                }),
        };
        let writes = resources::v1(res, facts)?;
        let mut dirs: Vec<(&str, Option<&PathBuf>)> = Vec::new();
        for w in &writes {
            if !dirs.iter().any(|(c, _)| *c == w.controller) {
                dirs.push((w.controller, self.dir_of(w.controller)));
            }
        }
        let dir = |c: &str| dirs.iter().find(|(n, _)| *n == c).and_then(|(_, d)| *d);
        apply_writes(
            &writes,
            |w: &Write| match dir(w.controller) {
                Some(d) => Target::File(d.join(&w.file)),
                None => Target::NoController(format!(
                    "the {} controller is not mounted on this host (no cgroup v1 hierarchy has it)",
                    w.controller
                )),
            },
            |_, path| {
                format!(
                    "{} does not exist: the kernel has no such setting",
                    path.display()
                )
            },
        )
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        let Some(d) = self.freezer() else {
            return match self.unified() {
                Some(u) if u.join("cgroup.freeze").exists() => freeze_v2(u),
                _ => Err(CgroupError::Unavailable {
                    action: "freeze",
                    what: "freezer controller",
                }),
            };
        };
        let state = d.join("freezer.state");
        // A directory that is not there (a create that died before making
        // it) has nothing to freeze; waiting would only time out.
        if !d.is_dir() {
            return Err(CgroupError::Read {
                path: state,
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        // FREEZING until every task has stopped; writing again nudges tasks
        // that were forking.
        let frozen = || {
            let now = read_opt(&state).unwrap_or_default();
            if now.trim() == "FROZEN" {
                return true;
            }
            let _ = std::fs::write(&state, "FROZEN");
            false
        };
        if wait_until(FREEZE_TIMEOUT, frozen) {
            return Ok(());
        }
        let _ = write_file(&state, "THAWED");
        Err(CgroupError::FreezeTimeout {
            path: d.clone(),
            waited: FREEZE_TIMEOUT,
            state: read_opt(&state).unwrap_or_default().trim().to_string(),
        })
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        match self.freezer() {
            Some(d) => write_file(&d.join("freezer.state"), "THAWED"),
            None => match self.unified() {
                Some(u) if u.join("cgroup.freeze").exists() => thaw_v2(u),
                _ => Err(CgroupError::Unavailable {
                    action: "thaw",
                    what: "freezer controller",
                }),
            },
        }
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        match self.dirs.first() {
            Some(d) if !d.is_dir() => Err(CgroupError::Read {
                path: d.clone(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            }),
            _ => Ok(v1_stats(&|c, f| self.read(c, f), self.dir_of("hugetlb"))),
        }
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let Some(d) = self.dir_of("memory") else {
            return Err(CgroupError::Unavailable {
                action: "count OOM kills",
                what: "memory controller",
            });
        };
        let path = d.join("memory.oom_control");
        let text = crate::sys::read_text(&path).map_err(|source| CgroupError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(stats::key(&text, "oom_kill"))
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        if let Some(kill) = self
            .unified()
            .map(|u| u.join("cgroup.kill"))
            .filter(|k| k.exists())
        {
            write_file(&kill, "1")?;
            // Frozen v1 tasks take a SIGKILL only once thawed.
            if self.is_frozen() {
                self.thaw()?;
            }
            return Ok(());
        }
        kill_each(self)
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        // Every hierarchy holds the same processes; the first suffices.
        match self.dirs.first() {
            Some(d) => read_pids(&d.join("cgroup.procs")),
            None => Ok(Vec::new()),
        }
    }

    fn is_frozen(&self) -> bool {
        match self.freezer() {
            Some(d) => read_opt(&d.join("freezer.state")).is_some_and(|s| s.trim() == "FROZEN"),
            None => self
                .unified()
                .and_then(|u| read_opt(&u.join("cgroup.freeze")))
                .is_some_and(|s| s.trim() == "1"),
        }
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

/// A new cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems`
/// and accepts no task until they are set: every empty level on the way
/// inherits its parent's values, top down.
fn create_cpuset(dir: &Path) -> Result<(), CgroupError> {
    make_dirs(dir)?;
    fill_cpuset(dir, 0)
}

fn fill_cpuset(dir: &Path, depth: usize) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        fill_cpuset_file(dir, file, depth)?;
    }
    Ok(())
}

/// Gives `dir/file` its parent's value when empty (the parent filled first
/// the same way), reading each level once; returns the value it has.
fn fill_cpuset_file(dir: &Path, file: &str, depth: usize) -> Result<String, CgroupError> {
    let p = dir.join(file);
    let cur = crate::sys::read_text(&p).map_err(|source| CgroupError::Read {
        path: p.clone(),
        source,
    })?;
    let cur = cur.trim();
    if !cur.is_empty() {
        return Ok(cur.to_string());
    }
    let Some(parent) = dir.parent() else {
        return Ok(String::new());
    };
    let v = if depth < 64 {
        fill_cpuset_file(parent, file, depth + 1)?
    } else {
        let pp = parent.join(file);
        let v =
            crate::sys::read_text(&pp).map_err(|source| CgroupError::Read { path: pp, source })?;
        v.trim().to_string()
    };
    write_file(&p, &v)?;
    Ok(v)
}

/// Clock ticks per second of `cpuacct.stat` (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// Statistics from the v1 hierarchies (`read(controller, file)` returns a
/// file's text; `hugetlb` is that controller's directory, for its sizes).
pub fn v1_stats(read: &dyn Fn(&str, &str) -> Option<String>, hugetlb: Option<&PathBuf>) -> Stats {
    let mut s = Stats::default();
    let num = |c: &str, f: &str| read(c, f).map(|t| stats::number(&t)).unwrap_or(0);
    s.cpu.usage.total = num("cpuacct", "cpuacct.usage");
    s.cpu.usage.percpu =
        stats::numbers(&read("cpuacct", "cpuacct.usage_percpu").unwrap_or_default());
    let (user, sys) = stats::usage_all(&read("cpuacct", "cpuacct.usage_all").unwrap_or_default());
    s.cpu.usage.percpu_user = user;
    s.cpu.usage.percpu_kernel = sys;
    let st = read("cpuacct", "cpuacct.stat").unwrap_or_default();
    s.cpu.usage.user = stats::key(&st, "user") * (1_000_000_000 / USER_HZ);
    s.cpu.usage.kernel = stats::key(&st, "system") * (1_000_000_000 / USER_HZ);
    let cpu = read("cpu", "cpu.stat").unwrap_or_default();
    s.cpu.throttling.periods = stats::key(&cpu, "nr_periods");
    s.cpu.throttling.throttled_periods = stats::key(&cpu, "nr_throttled");
    s.cpu.throttling.throttled_time = stats::key(&cpu, "throttled_time");

    let cs = |f: &str| num("cpuset", &format!("cpuset.{f}"));
    s.cpuset.cpus = stats::cpu_list(&read("cpuset", "cpuset.cpus").unwrap_or_default());
    s.cpuset.mems = stats::cpu_list(&read("cpuset", "cpuset.mems").unwrap_or_default());
    s.cpuset.cpu_exclusive = cs("cpu_exclusive");
    s.cpuset.mem_hardwall = cs("mem_hardwall");
    s.cpuset.mem_exclusive = cs("mem_exclusive");
    s.cpuset.memory_migrate = cs("memory_migrate");
    s.cpuset.memory_spread_page = cs("memory_spread_page");
    s.cpuset.memory_spread_slab = cs("memory_spread_slab");
    s.cpuset.memory_pressure = cs("memory_pressure");
    s.cpuset.sched_load_balance = cs("sched_load_balance");
    s.cpuset.sched_relax_domain_level = read("cpuset", "cpuset.sched_relax_domain_level")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);

    let entry = |prefix: &str| stats::MemoryEntry {
        limit: num("memory", &format!("{prefix}limit_in_bytes")),
        usage: num("memory", &format!("{prefix}usage_in_bytes")),
        max: num("memory", &format!("{prefix}max_usage_in_bytes")),
        failcnt: num("memory", &format!("{prefix}failcnt")),
    };
    s.memory.usage = entry("memory.");
    s.memory.swap = entry("memory.memsw.");
    s.memory.kernel = entry("memory.kmem.");
    s.memory.kernel_tcp = entry("memory.kmem.tcp.");
    s.memory.raw = stats::keyed(&read("memory", "memory.stat").unwrap_or_default());
    s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);

    s.pids.current = num("pids", "pids.current");
    s.pids.limit = match num("pids", "pids.max") {
        u64::MAX => 0,
        n => n,
    };

    // CFQ's files, else BFQ's, else the throttling ones: the first that counted anything (as
    // runc; every policy's files exist whether or not it handles the device).
    for prefix in ["blkio.", "blkio.bfq.", "blkio.throttle."] {
        let serviced = stats::blkio_v1(
            &read("blkio", &format!("{prefix}io_serviced_recursive")).unwrap_or_default(),
        );
        if !serviced.is_empty() {
            s.blkio.io_serviced_recursive = serviced;
            s.blkio.io_service_bytes_recursive = stats::blkio_v1(
                &read("blkio", &format!("{prefix}io_service_bytes_recursive")).unwrap_or_default(),
            );
            break;
        }
    }

    let names: Vec<String> = hugetlb
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for size in stats::hugetlb_sizes(names.iter().map(String::as_str)) {
        let f = |x: &str| num("hugetlb", &format!("hugetlb.{size}.{x}"));
        let h = stats::Hugetlb {
            usage: f("usage_in_bytes"),
            max: f("max_usage_in_bytes"),
            failcnt: f("failcnt"),
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
        let files: HashMap<(&str, &str), &str> = [
            (("cpuacct", "cpuacct.usage"), "300\n"),
            (("cpuacct", "cpuacct.usage_percpu"), "100 200 \n"),
            (
                ("cpuacct", "cpuacct.usage_all"),
                "cpu user system\n0 10 90\n1 0 200\n",
            ),
            (("cpuacct", "cpuacct.stat"), "user 1\nsystem 2\n"),
            (
                ("cpu", "cpu.stat"),
                "nr_periods 2\nnr_throttled 1\nthrottled_time 7\n",
            ),
            (("cpuset", "cpuset.cpus"), "0\n"),
            (("cpuset", "cpuset.sched_relax_domain_level"), "-1\n"),
            (("memory", "memory.limit_in_bytes"), "104857600\n"),
            (("memory", "memory.usage_in_bytes"), "4096\n"),
            (("memory", "memory.failcnt"), "5\n"),
            (("memory", "memory.memsw.limit_in_bytes"), "209715200\n"),
            (("memory", "memory.stat"), "cache 8192\nrss 4096\n"),
            (("pids", "pids.current"), "3\n"),
            (("pids", "pids.max"), "50\n"),
            // CFQ's file is there but counted nothing: BFQ's are taken.
            (("blkio", "blkio.io_serviced_recursive"), "Total 0\n"),
            (
                ("blkio", "blkio.bfq.io_serviced_recursive"),
                "8:0 Read 2\nTotal 2\n",
            ),
        ]
        .into_iter()
        .collect();
        let read = |c: &str, f: &str| files.get(&(c, f)).map(|s| s.to_string());
        let s = v1_stats(&read, None);
        assert_eq!(s.cpu.usage.total, 300);
        assert_eq!(s.cpu.usage.percpu, vec![100, 200]);
        assert_eq!(s.cpu.usage.percpu_kernel, vec![90, 200]);
        assert_eq!(s.cpu.usage.user, 10_000_000);
        assert_eq!(s.cpu.usage.kernel, 20_000_000);
        assert_eq!(s.cpu.throttling.throttled_time, 7);
        assert_eq!(s.cpuset.cpus, vec![0]);
        assert_eq!(s.cpuset.sched_relax_domain_level, -1);
        assert_eq!(s.memory.usage.limit, 104_857_600);
        assert_eq!(s.memory.usage.failcnt, 5);
        assert_eq!(s.memory.swap.limit, 209_715_200);
        assert_eq!(s.memory.cache, 8192);
        assert_eq!((s.pids.current, s.pids.limit), (3, 50));
        assert_eq!(s.blkio.io_serviced_recursive.len(), 1);
    }
}
