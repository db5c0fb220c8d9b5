//! cgroup files → containerd's metrics types (`io.containerd.cgroups.v1.Metrics` and
//! `io.containerd.cgroups.v2.Metrics`), what `Stats` returns and `ctr task metrics` prints.
//!
//! The functions are pure: they take a reader that returns a cgroup file's content (or `None` when
//! the file or controller is absent), so they are tested with fixed strings.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;

/// Reads `file` of cgroup v1 `controller` (e.g. `("memory", "memory.usage_in_bytes")`).
pub type V1Reader<'a> = &'a dyn Fn(&str, &str) -> Option<String>;
/// Reads `file` of the cgroup v2 directory (e.g. `"memory.current"`).
pub type V2Reader<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The value of `key` in a flat keyed file (`key value` per line, as `memory.stat`).
pub fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A single-number file; `max` (no limit) reads as `u64::MAX`.
pub fn number(text: Option<String>) -> u64 {
    match text.as_deref().map(str::trim) {
        Some("max") => u64::MAX,
        Some(n) => n.parse().unwrap_or(0),
        None => 0,
    }
}

/// cgroup v1 metrics: pids, cpuacct, memory (with the OOM control counters).
pub fn v1_metrics(read: V1Reader) -> v1::Metrics {
    let mut m = v1::Metrics::new();

    let mut pids = v1::PidsStat::new();
    pids.current = number(read("pids", "pids.current"));
    pids.limit = number(read("pids", "pids.max"));
    pids.limit = if pids.limit == u64::MAX {
        0
    } else {
        pids.limit
    };
    m.pids = Some(pids).into();

    let mut usage = v1::CPUUsage::new();
    usage.total = number(read("cpuacct", "cpuacct.usage"));
    usage.kernel = number(read("cpuacct", "cpuacct.usage_sys"));
    usage.user = number(read("cpuacct", "cpuacct.usage_user"));
    usage.per_cpu = read("cpuacct", "cpuacct.usage_percpu")
        .map(|t| {
            t.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let stat = read("cpu", "cpu.stat").unwrap_or_default();
    let mut throttle = v1::Throttle::new();
    throttle.periods = keyed(&stat, "nr_periods");
    throttle.throttled_periods = keyed(&stat, "nr_throttled");
    throttle.throttled_time = keyed(&stat, "throttled_time");
    let mut cpu = v1::CPUStat::new();
    cpu.usage = Some(usage).into();
    cpu.throttling = Some(throttle).into();
    m.cpu = Some(cpu).into();

    let stat = read("memory", "memory.stat").unwrap_or_default();
    let mut mem = v1::MemoryStat::new();
    mem.cache = keyed(&stat, "cache");
    mem.rss = keyed(&stat, "rss");
    mem.rss_huge = keyed(&stat, "rss_huge");
    mem.mapped_file = keyed(&stat, "mapped_file");
    mem.dirty = keyed(&stat, "dirty");
    mem.writeback = keyed(&stat, "writeback");
    mem.pg_fault = keyed(&stat, "pgfault");
    mem.pg_maj_fault = keyed(&stat, "pgmajfault");
    mem.inactive_anon = keyed(&stat, "inactive_anon");
    mem.active_anon = keyed(&stat, "active_anon");
    mem.inactive_file = keyed(&stat, "inactive_file");
    mem.active_file = keyed(&stat, "active_file");
    mem.unevictable = keyed(&stat, "unevictable");
    mem.hierarchical_memory_limit = keyed(&stat, "hierarchical_memory_limit");
    mem.total_cache = keyed(&stat, "total_cache");
    mem.total_rss = keyed(&stat, "total_rss");
    let entry = |prefix: &str| {
        let mut e = v1::MemoryEntry::new();
        e.usage = number(read("memory", &format!("{prefix}usage_in_bytes")));
        e.limit = number(read("memory", &format!("{prefix}limit_in_bytes")));
        e.max = number(read("memory", &format!("{prefix}max_usage_in_bytes")));
        e.failcnt = number(read("memory", &format!("{prefix}failcnt")));
        e
    };
    mem.usage = Some(entry("memory.")).into();
    mem.swap = Some(entry("memory.memsw.")).into();
    mem.kernel = Some(entry("memory.kmem.")).into();
    mem.kernel_tcp = Some(entry("memory.kmem.tcp.")).into();
    m.memory = Some(mem).into();

    let oom = read("memory", "memory.oom_control").unwrap_or_default();
    let mut control = v1::MemoryOomControl::new();
    control.oom_kill_disable = keyed(&oom, "oom_kill_disable");
    control.under_oom = keyed(&oom, "under_oom");
    control.oom_kill = keyed(&oom, "oom_kill");
    m.memory_oom_control = Some(control).into();
    m
}

/// cgroup v2 metrics: pids, cpu.stat, memory and memory.events.
pub fn v2_metrics(read: V2Reader) -> v2::Metrics {
    let mut m = v2::Metrics::new();

    let mut pids = v2::PidsStat::new();
    pids.current = number(read("pids.current"));
    pids.limit = number(read("pids.max"));
    pids.limit = if pids.limit == u64::MAX {
        0
    } else {
        pids.limit
    };
    m.pids = Some(pids).into();

    let stat = read("cpu.stat").unwrap_or_default();
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = keyed(&stat, "usage_usec");
    cpu.user_usec = keyed(&stat, "user_usec");
    cpu.system_usec = keyed(&stat, "system_usec");
    cpu.nr_periods = keyed(&stat, "nr_periods");
    cpu.nr_throttled = keyed(&stat, "nr_throttled");
    cpu.throttled_usec = keyed(&stat, "throttled_usec");
    m.cpu = Some(cpu).into();

    let stat = read("memory.stat").unwrap_or_default();
    let mut mem = v2::MemoryStat::new();
    mem.anon = keyed(&stat, "anon");
    mem.file = keyed(&stat, "file");
    mem.kernel_stack = keyed(&stat, "kernel_stack");
    mem.slab = keyed(&stat, "slab");
    mem.sock = keyed(&stat, "sock");
    mem.shmem = keyed(&stat, "shmem");
    mem.file_mapped = keyed(&stat, "file_mapped");
    mem.file_dirty = keyed(&stat, "file_dirty");
    mem.file_writeback = keyed(&stat, "file_writeback");
    mem.inactive_anon = keyed(&stat, "inactive_anon");
    mem.active_anon = keyed(&stat, "active_anon");
    mem.inactive_file = keyed(&stat, "inactive_file");
    mem.active_file = keyed(&stat, "active_file");
    mem.unevictable = keyed(&stat, "unevictable");
    mem.pgfault = keyed(&stat, "pgfault");
    mem.pgmajfault = keyed(&stat, "pgmajfault");
    mem.usage = number(read("memory.current"));
    mem.usage_limit = number(read("memory.max"));
    mem.swap_usage = number(read("memory.swap.current"));
    mem.swap_limit = number(read("memory.swap.max"));
    mem.max_usage = number(read("memory.peak"));
    m.memory = Some(mem).into();

    let events = read("memory.events").unwrap_or_default();
    let mut ev = v2::MemoryEvents::new();
    ev.low = keyed(&events, "low");
    ev.high = keyed(&events, "high");
    ev.max = keyed(&events, "max");
    ev.oom = keyed(&events, "oom");
    ev.oom_kill = keyed(&events, "oom_kill");
    m.memory_events = Some(ev).into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_from_files() {
        let read = |c: &str, f: &str| -> Option<String> {
            match (c, f) {
                ("pids", "pids.current") => Some("3\n".into()),
                ("pids", "pids.max") => Some("max\n".into()),
                ("cpuacct", "cpuacct.usage") => Some("12345\n".into()),
                ("cpuacct", "cpuacct.usage_percpu") => Some("12000 345 \n".into()),
                ("memory", "memory.usage_in_bytes") => Some("4096\n".into()),
                ("memory", "memory.limit_in_bytes") => Some("8192\n".into()),
                ("memory", "memory.stat") => Some("cache 10\nrss 20\n".into()),
                ("memory", "memory.oom_control") => {
                    Some("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n".into())
                }
                _ => None,
            }
        };
        let m = v1_metrics(&read);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, 0);
        assert_eq!(m.cpu.usage.total, 12345);
        assert_eq!(m.cpu.usage.per_cpu, vec![12000, 345]);
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 8192);
        assert_eq!((m.memory.cache, m.memory.rss), (10, 20));
        assert_eq!(m.memory_oom_control.oom_kill, 2);
    }

    #[test]
    fn v2_from_files() {
        let read = |f: &str| -> Option<String> {
            match f {
                "pids.current" => Some("2\n".into()),
                "pids.max" => Some("10\n".into()),
                "cpu.stat" => Some("usage_usec 77\nuser_usec 70\nsystem_usec 7\n".into()),
                "memory.current" => Some("100\n".into()),
                "memory.max" => Some("max\n".into()),
                "memory.events" => Some("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n".into()),
                _ => None,
            }
        };
        let m = v2_metrics(&read);
        assert_eq!(m.pids.limit, 10);
        assert_eq!(m.cpu.usage_usec, 77);
        assert_eq!(m.memory.usage, 100);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.memory_events.oom_kill, 1);
    }
}
