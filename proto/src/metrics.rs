//! cgroup files → containerd's metrics types (`io.containerd.cgroups.v1.Metrics` and
//! `io.containerd.cgroups.v2.Metrics`), what `Stats` returns and `ctr task metrics` prints.
//!
//! Every field the types have is filled from the file containerd's own cgroups library reads it
//! from, except those no cgroup file holds (`network`, which needs the container's network
//! namespace, and v1 `cgroup_stats`, which comes from taskstats over netlink): containerd's runc
//! shim leaves those empty too.
//!
//! | v1 field | file |
//! | --- | --- |
//! | `pids` | `pids.current`, `pids.max` (`max` → 0) |
//! | `cpu.usage` | `cpuacct.usage`, `cpuacct.usage_percpu`; `user`/`kernel` from `cpuacct.stat` (USER_HZ ticks → ns) |
//! | `cpu.throttling` | `cpu.stat` |
//! | `memory` | every `memory.stat` key (`pgpgin` → `pg_pg_in`, `hierarchical_memsw_limit` → `hierarchical_swap_limit`, the `total_*` set); `usage`/`swap`/`kernel`/`kernel_tcp` from `memory[.memsw\|.kmem\|.kmem.tcp].{usage,limit,max_usage}_in_bytes` and `failcnt` |
//! | `memory_oom_control` | `memory.oom_control` |
//! | `blkio` | CFQ's eight `blkio.*_recursive` files when they counted anything, else BFQ's or the throttle policy's bytes and ios (as runc chooses) |
//! | `hugetlb` | `hugetlb.<size>.{usage_in_bytes,max_usage_in_bytes,failcnt}` per page size |
//! | `rdma` | `rdma.current`, `rdma.max` |
//!
//! | v2 field | file |
//! | --- | --- |
//! | `pids` | `pids.current`, `pids.max` |
//! | `cpu` | `cpu.stat`, PSI from `cpu.pressure` |
//! | `memory` | every `memory.stat` key, `memory.{current,max,peak}`, `memory.swap.{current,max,peak}`, PSI from `memory.pressure` |
//! | `memory_events` | `memory.events` |
//! | `io` | `io.stat` per device, PSI from `io.pressure` |
//! | `hugetlb` | `hugetlb.<size>.{current,max}`, `failcnt` from `hugetlb.<size>.events` (`max`) |
//! | `rdma` | `rdma.current`, `rdma.max` |
//!
//! v1 CPU times: `cpuacct.usage_user` and `cpuacct.usage_sys` count whole scheduler ticks, so a
//! short burst of system time reads as a full tick and the kernel time came out larger than the
//! total. `cpuacct.stat` is scaled by the kernel so that user + system matches the precise total
//! (what containerd and runc read); it is read before the total, and each part is capped at it.
//!
//! The functions are pure: they take a reader that returns a cgroup file's content (or `None` when
//! the file or controller is absent), so they are tested with fixed strings.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;

/// Reads `file` of cgroup v1 `controller` (e.g. `("memory", "memory.usage_in_bytes")`).
pub type V1Reader<'a> = &'a dyn Fn(&str, &str) -> Option<String>;
/// Reads `file` of the cgroup v2 directory (e.g. `"memory.current"`).
pub type V2Reader<'a> = &'a dyn Fn(&str) -> Option<String>;
/// The device name (`/dev/sda`) of a block device number, for v1 blkio entries.
pub type DeviceNamer<'a> = &'a dyn Fn(u64, u64) -> String;

/// Clock ticks per second of `cpuacct.stat` (USER_HZ, 100 on every Linux architecture).
const USER_HZ: u64 = 100;

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

/// The hugetlb page sizes (`2MB`, `1GB`) named by a cgroup directory's file names.
pub fn hugetlb_sizes<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut sizes: Vec<String> = names
        .filter_map(|n| n.strip_prefix("hugetlb."))
        .filter_map(|n| n.split('.').next())
        .filter(|s| s.ends_with('B'))
        .map(str::to_string)
        .collect();
    sizes.sort();
    sizes.dedup();
    sizes
}

fn pids_limit(text: Option<String>) -> u64 {
    match number(text) {
        u64::MAX => 0,
        n => n,
    }
}

/// `rdma.current`/`rdma.max` rows: `mlx4_0 hca_handle=2 hca_object=2000` (`max` → u32::MAX).
fn rdma_rows(text: &str) -> Vec<(String, u32, u32)> {
    let field = |v: &str| match v {
        "max" => u32::MAX,
        n => n.parse().unwrap_or(0),
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let device = f.next()?.to_string();
            let (mut handles, mut objects) = (0, 0);
            for kv in f {
                match kv.split_once('=') {
                    Some(("hca_handle", v)) => handles = field(v),
                    Some(("hca_object", v)) => objects = field(v),
                    _ => {}
                }
            }
            Some((device, handles, objects))
        })
        .collect()
}

/// cgroup v1 metrics: every field of containerd's `io.containerd.cgroups.v1.Metrics` that a
/// cgroup file holds (see the module's table).
pub fn v1_metrics(read: V1Reader, hugetlb: &[String], device: DeviceNamer) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    let mut pids = v1::PidsStat::new();
    pids.current = number(read("pids", "pids.current"));
    pids.limit = pids_limit(read("pids", "pids.max"));
    m.pids = Some(pids).into();
    m.cpu = Some(v1_cpu(read)).into();
    m.memory = Some(v1_memory(read)).into();
    let oom = read("memory", "memory.oom_control").unwrap_or_default();
    let mut control = v1::MemoryOomControl::new();
    control.oom_kill_disable = keyed(&oom, "oom_kill_disable");
    control.under_oom = keyed(&oom, "under_oom");
    control.oom_kill = keyed(&oom, "oom_kill");
    m.memory_oom_control = Some(control).into();
    m.blkio = Some(v1_blkio(read, device)).into();
    m.hugetlb = hugetlb
        .iter()
        .map(|size| {
            let file = |what: &str| number(read("hugetlb", &format!("hugetlb.{size}.{what}")));
            let mut h = v1::HugetlbStat::new();
            h.usage = file("usage_in_bytes");
            h.max = file("max_usage_in_bytes");
            h.failcnt = file("failcnt");
            h.pagesize = size.clone();
            h
        })
        .collect();
    let rdma = |file: &str| {
        rdma_rows(&read("rdma", file).unwrap_or_default())
            .into_iter()
            .map(|(device, handles, objects)| {
                let mut e = v1::RdmaEntry::new();
                e.device = device;
                e.hca_handles = handles;
                e.hca_objects = objects;
                e
            })
            .collect()
    };
    let mut r = v1::RdmaStat::new();
    r.current = rdma("rdma.current");
    r.limit = rdma("rdma.max");
    m.rdma = Some(r).into();
    m
}

fn v1_cpu(read: V1Reader) -> v1::CPUStat {
    // cpuacct.stat before the total, so that neither part can exceed it.
    let times = read("cpuacct", "cpuacct.stat").unwrap_or_default();
    let mut usage = v1::CPUUsage::new();
    usage.total = number(read("cpuacct", "cpuacct.usage"));
    let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / USER_HZ);
    usage.user = ns(keyed(&times, "user")).min(usage.total);
    usage.kernel = ns(keyed(&times, "system")).min(usage.total);
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
    cpu
}

fn v1_memory(read: V1Reader) -> v1::MemoryStat {
    let stat = read("memory", "memory.stat").unwrap_or_default();
    let k = |key: &str| keyed(&stat, key);
    let mut mem = v1::MemoryStat::new();
    mem.cache = k("cache");
    mem.rss = k("rss");
    mem.rss_huge = k("rss_huge");
    mem.mapped_file = k("mapped_file");
    mem.dirty = k("dirty");
    mem.writeback = k("writeback");
    mem.pg_pg_in = k("pgpgin");
    mem.pg_pg_out = k("pgpgout");
    mem.pg_fault = k("pgfault");
    mem.pg_maj_fault = k("pgmajfault");
    mem.inactive_anon = k("inactive_anon");
    mem.active_anon = k("active_anon");
    mem.inactive_file = k("inactive_file");
    mem.active_file = k("active_file");
    mem.unevictable = k("unevictable");
    mem.hierarchical_memory_limit = k("hierarchical_memory_limit");
    mem.hierarchical_swap_limit = k("hierarchical_memsw_limit");
    mem.total_cache = k("total_cache");
    mem.total_rss = k("total_rss");
    mem.total_rss_huge = k("total_rss_huge");
    mem.total_mapped_file = k("total_mapped_file");
    mem.total_dirty = k("total_dirty");
    mem.total_writeback = k("total_writeback");
    mem.total_pg_pg_in = k("total_pgpgin");
    mem.total_pg_pg_out = k("total_pgpgout");
    mem.total_pg_fault = k("total_pgfault");
    mem.total_pg_maj_fault = k("total_pgmajfault");
    mem.total_inactive_anon = k("total_inactive_anon");
    mem.total_active_anon = k("total_active_anon");
    mem.total_inactive_file = k("total_inactive_file");
    mem.total_active_file = k("total_active_file");
    mem.total_unevictable = k("total_unevictable");
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
    mem
}

/// v1 blkio rows: `8:0 Read 4096` (an op per device; `Total` rows without a device are skipped)
/// or `8:0 4096` (`sectors_recursive`, `time_recursive`: no op).
fn blkio_rows(text: &str, device: DeviceNamer) -> Vec<v1::BlkIOEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, op, value) = match f.as_slice() {
                [dev, op, value] => (*dev, *op, *value),
                [dev, value] => (*dev, "", *value),
                _ => return None,
            };
            let (major, minor) = dev.split_once(':')?;
            let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
            let mut e = v1::BlkIOEntry::new();
            e.op = op.to_string();
            e.device = device(major, minor);
            e.major = major;
            e.minor = minor;
            e.value = value.parse().ok()?;
            Some(e)
        })
        .collect()
}

fn v1_blkio(read: V1Reader, device: DeviceNamer) -> v1::BlkIOStat {
    let rows = |file: &str| blkio_rows(&read("blkio", file).unwrap_or_default(), device);
    let mut b = v1::BlkIOStat::new();
    // A policy's files exist whether or not it handles the device (BFQ's are there under
    // mq-deadline; the throttle policy counts only cgroups with limits): like runc, take the
    // first policy that counted something.
    if !rows("blkio.io_serviced_recursive").is_empty() {
        // CFQ: the full set.
        b.io_service_bytes_recursive = rows("blkio.io_service_bytes_recursive");
        b.io_serviced_recursive = rows("blkio.io_serviced_recursive");
        b.io_queued_recursive = rows("blkio.io_queued_recursive");
        b.io_service_time_recursive = rows("blkio.io_service_time_recursive");
        b.io_wait_time_recursive = rows("blkio.io_wait_time_recursive");
        b.io_merged_recursive = rows("blkio.io_merged_recursive");
        b.io_time_recursive = rows("blkio.time_recursive");
        b.sectors_recursive = rows("blkio.sectors_recursive");
        return b;
    }
    // BFQ, else the throttle policy: bytes and ios only.
    for prefix in ["blkio.bfq.", "blkio.throttle."] {
        let serviced = rows(&format!("{prefix}io_serviced_recursive"));
        if !serviced.is_empty() {
            b.io_service_bytes_recursive = rows(&format!("{prefix}io_service_bytes_recursive"));
            b.io_serviced_recursive = serviced;
            break;
        }
    }
    b
}

/// A PSI file (`cpu.pressure`): `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and `full ...`.
fn psi(text: Option<String>) -> Option<v2::PSIStats> {
    let text = text?;
    let line = |kind: &str| {
        let l = text.lines().find(|l| l.starts_with(kind))?;
        let mut d = v2::PSIData::new();
        for kv in l.split_whitespace().skip(1) {
            match kv.split_once('=') {
                Some(("avg10", v)) => d.avg10 = v.parse().unwrap_or(0.0),
                Some(("avg60", v)) => d.avg60 = v.parse().unwrap_or(0.0),
                Some(("avg300", v)) => d.avg300 = v.parse().unwrap_or(0.0),
                Some(("total", v)) => d.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Some(d)
    };
    let mut p = v2::PSIStats::new();
    p.some = line("some").into();
    p.full = line("full").into();
    Some(p)
}

/// cgroup v2 metrics: every field of containerd's `io.containerd.cgroups.v2.Metrics` that a
/// cgroup file holds (see the module's table).
pub fn v2_metrics(read: V2Reader, hugetlb: &[String]) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let mut pids = v2::PidsStat::new();
    pids.current = number(read("pids.current"));
    pids.limit = pids_limit(read("pids.max"));
    m.pids = Some(pids).into();
    m.cpu = Some(v2_cpu(read)).into();
    m.memory = Some(v2_memory(read)).into();
    let events = read("memory.events").unwrap_or_default();
    let mut ev = v2::MemoryEvents::new();
    ev.low = keyed(&events, "low");
    ev.high = keyed(&events, "high");
    ev.max = keyed(&events, "max");
    ev.oom = keyed(&events, "oom");
    ev.oom_kill = keyed(&events, "oom_kill");
    ev.oom_group_kill = keyed(&events, "oom_group_kill");
    m.memory_events = Some(ev).into();
    let mut io = v2::IOStat::new();
    io.usage = io_rows(&read("io.stat").unwrap_or_default());
    io.psi = psi(read("io.pressure")).into();
    m.io = Some(io).into();
    m.hugetlb = hugetlb
        .iter()
        .map(|size| {
            let file = |what: &str| read(&format!("hugetlb.{size}.{what}"));
            let mut h = v2::HugeTlbStat::new();
            h.current = number(file("current"));
            h.max = number(file("max"));
            h.failcnt = keyed(&file("events").unwrap_or_default(), "max");
            h.pagesize = size.clone();
            h
        })
        .collect();
    let rdma = |file: &str| {
        rdma_rows(&read(file).unwrap_or_default())
            .into_iter()
            .map(|(device, handles, objects)| {
                let mut e = v2::RdmaEntry::new();
                e.device = device;
                e.hca_handles = handles;
                e.hca_objects = objects;
                e
            })
            .collect()
    };
    let mut r = v2::RdmaStat::new();
    r.current = rdma("rdma.current");
    r.limit = rdma("rdma.max");
    m.rdma = Some(r).into();
    m
}

fn v2_cpu(read: V2Reader) -> v2::CPUStat {
    let stat = read("cpu.stat").unwrap_or_default();
    let k = |key: &str| keyed(&stat, key);
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = k("usage_usec");
    cpu.user_usec = k("user_usec");
    cpu.system_usec = k("system_usec");
    cpu.nr_periods = k("nr_periods");
    cpu.nr_throttled = k("nr_throttled");
    cpu.throttled_usec = k("throttled_usec");
    cpu.nr_bursts = k("nr_bursts");
    cpu.burst_usec = k("burst_usec");
    cpu.psi = psi(read("cpu.pressure")).into();
    cpu
}

fn v2_memory(read: V2Reader) -> v2::MemoryStat {
    let stat = read("memory.stat").unwrap_or_default();
    let k = |key: &str| keyed(&stat, key);
    // Kernels since 5.9 split these by anon and file.
    let split = |key: &str| match k(key) {
        0 => k(&format!("{key}_anon")) + k(&format!("{key}_file")),
        n => n,
    };
    let mut mem = v2::MemoryStat::new();
    mem.anon = k("anon");
    mem.file = k("file");
    mem.kernel_stack = k("kernel_stack");
    mem.slab = k("slab");
    mem.sock = k("sock");
    mem.shmem = k("shmem");
    mem.file_mapped = k("file_mapped");
    mem.file_dirty = k("file_dirty");
    mem.file_writeback = k("file_writeback");
    mem.anon_thp = k("anon_thp");
    mem.inactive_anon = k("inactive_anon");
    mem.active_anon = k("active_anon");
    mem.inactive_file = k("inactive_file");
    mem.active_file = k("active_file");
    mem.unevictable = k("unevictable");
    mem.slab_reclaimable = k("slab_reclaimable");
    mem.slab_unreclaimable = k("slab_unreclaimable");
    mem.pgfault = k("pgfault");
    mem.pgmajfault = k("pgmajfault");
    mem.workingset_refault = split("workingset_refault");
    mem.workingset_activate = split("workingset_activate");
    mem.workingset_nodereclaim = k("workingset_nodereclaim");
    mem.pgrefill = k("pgrefill");
    mem.pgscan = k("pgscan");
    mem.pgsteal = k("pgsteal");
    mem.pgactivate = k("pgactivate");
    mem.pgdeactivate = k("pgdeactivate");
    mem.pglazyfree = k("pglazyfree");
    mem.pglazyfreed = k("pglazyfreed");
    mem.thp_fault_alloc = k("thp_fault_alloc");
    mem.thp_collapse_alloc = k("thp_collapse_alloc");
    mem.usage = number(read("memory.current"));
    mem.usage_limit = number(read("memory.max"));
    mem.swap_usage = number(read("memory.swap.current"));
    mem.swap_limit = number(read("memory.swap.max"));
    mem.max_usage = number(read("memory.peak"));
    mem.swap_max_usage = number(read("memory.swap.peak"));
    mem.psi = psi(read("memory.pressure")).into();
    mem
}

/// v2 `io.stat` rows: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
fn io_rows(text: &str) -> Vec<v2::IOEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (major, minor) = f.next()?.split_once(':')?;
            let mut e = v2::IOEntry::new();
            e.major = major.parse().ok()?;
            e.minor = minor.parse().ok()?;
            for kv in f {
                let Some((key, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match key {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_device(major: u64, minor: u64) -> String {
        format!("dev{major}:{minor}")
    }

    const MEMORY_STAT_V1: &str = "cache 10\nrss 20\nrss_huge 0\nshmem 1\nmapped_file 3\ndirty 4\n\
writeback 5\npgpgin 600\npgpgout 500\npgfault 900\npgmajfault 7\ninactive_anon 8\nactive_anon 9\n\
inactive_file 11\nactive_file 12\nunevictable 13\nhierarchical_memory_limit 104857600\n\
hierarchical_memsw_limit 209715200\ntotal_cache 110\ntotal_rss 120\ntotal_rss_huge 130\n\
total_mapped_file 140\ntotal_dirty 150\ntotal_writeback 160\ntotal_pgpgin 1700\n\
total_pgpgout 1800\ntotal_pgfault 1900\ntotal_pgmajfault 200\ntotal_inactive_anon 210\n\
total_active_anon 220\ntotal_inactive_file 230\ntotal_active_file 240\ntotal_unevictable 250\n";

    #[test]
    fn v1_from_files() {
        let read = |c: &str, f: &str| -> Option<String> {
            let text = match (c, f) {
                ("pids", "pids.current") => "3\n",
                ("pids", "pids.max") => "max\n",
                ("cpuacct", "cpuacct.usage") => "45000000\n",
                // Ticks: 1 user, 9 system = 90 ms of system time, more than the total.
                ("cpuacct", "cpuacct.stat") => "user 1\nsystem 9\n",
                ("cpuacct", "cpuacct.usage_percpu") => "12000 345 \n",
                ("cpu", "cpu.stat") => "nr_periods 5\nnr_throttled 2\nthrottled_time 77\n",
                ("memory", "memory.usage_in_bytes") => "4096\n",
                ("memory", "memory.limit_in_bytes") => "8192\n",
                ("memory", "memory.memsw.failcnt") => "6\n",
                ("memory", "memory.kmem.tcp.max_usage_in_bytes") => "99\n",
                ("memory", "memory.stat") => MEMORY_STAT_V1,
                ("memory", "memory.oom_control") => "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                // BFQ's files exist but count nothing when another scheduler runs the disk.
                ("blkio", "blkio.bfq.io_serviced_recursive") => "Total 0\n",
                ("blkio", "blkio.throttle.io_serviced_recursive") => {
                    "8:0 Read 3\n8:0 Write 4\n8:0 Total 7\nTotal 7\n"
                }
                ("blkio", "blkio.throttle.io_service_bytes_recursive") => "8:0 Read 4096\n",
                ("hugetlb", "hugetlb.2MB.usage_in_bytes") => "2097152\n",
                ("hugetlb", "hugetlb.2MB.failcnt") => "1\n",
                ("rdma", "rdma.max") => "mlx4_0 hca_handle=2 hca_object=max\n",
                _ => return None,
            };
            Some(text.to_string())
        };
        let m = v1_metrics(&read, &["2MB".to_string()], &no_device);
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        let u = &m.cpu.usage;
        assert_eq!(u.total, 45_000_000);
        assert_eq!(u.user, 10_000_000);
        assert_eq!(u.kernel, 45_000_000, "capped at the total");
        assert_eq!(u.per_cpu, vec![12000, 345]);
        let t = &m.cpu.throttling;
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_time),
            (5, 2, 77)
        );
        let mem = &m.memory;
        assert_eq!((mem.cache, mem.rss, mem.mapped_file), (10, 20, 3));
        assert_eq!((mem.pg_pg_in, mem.pg_pg_out), (600, 500));
        assert_eq!(mem.hierarchical_swap_limit, 209_715_200);
        assert_eq!(mem.total_rss_huge, 130);
        assert_eq!((mem.total_pg_pg_in, mem.total_pg_pg_out), (1700, 1800));
        assert_eq!(mem.total_unevictable, 250);
        assert_eq!((mem.usage.usage, mem.usage.limit), (4096, 8192));
        assert_eq!(mem.swap.failcnt, 6);
        assert_eq!(mem.kernel_tcp.max, 99);
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        let b = &m.blkio;
        assert_eq!(b.io_serviced_recursive.len(), 3);
        assert_eq!(b.io_serviced_recursive[1].op, "Write");
        assert_eq!(b.io_serviced_recursive[1].value, 4);
        assert_eq!(b.io_serviced_recursive[0].device, "dev8:0");
        assert_eq!(b.io_service_bytes_recursive[0].value, 4096);
        assert!(b.io_queued_recursive.is_empty());
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!((m.hugetlb[0].usage, m.hugetlb[0].failcnt), (2_097_152, 1));
        assert_eq!(m.rdma.limit[0].device, "mlx4_0");
        assert_eq!(m.rdma.limit[0].hca_objects, u32::MAX);
    }

    #[test]
    fn v1_cfq_has_all_eight_blkio_lists() {
        let read = |c: &str, f: &str| -> Option<String> {
            (c == "blkio").then(|| {
                match f {
                    "blkio.sectors_recursive" | "blkio.time_recursive" => "8:16 42\n",
                    _ => "8:16 Read 1\n8:16 Async 2\n",
                }
                .to_string()
            })
        };
        let b = v1_metrics(&read, &[], &no_device).blkio;
        for list in [
            &b.io_service_bytes_recursive,
            &b.io_serviced_recursive,
            &b.io_queued_recursive,
            &b.io_service_time_recursive,
            &b.io_wait_time_recursive,
            &b.io_merged_recursive,
        ] {
            assert_eq!(list.len(), 2);
        }
        assert_eq!(b.sectors_recursive[0].value, 42);
        assert_eq!(b.io_time_recursive[0].op, "");
        assert_eq!(
            (b.io_time_recursive[0].major, b.io_time_recursive[0].minor),
            (8, 16)
        );
    }

    #[test]
    fn v2_from_files() {
        let read = |f: &str| -> Option<String> {
            let text = match f {
                "pids.current" => "2\n",
                "pids.max" => "10\n",
                "cpu.stat" => {
                    "usage_usec 77\nuser_usec 70\nsystem_usec 7\nnr_periods 3\n\
                               nr_throttled 1\nthrottled_usec 9\nnr_bursts 4\nburst_usec 5\n"
                }
                "cpu.pressure" => {
                    "some avg10=1.50 avg60=0.00 avg300=0.00 total=123\n\
                                   full avg10=0.25 avg60=0.00 avg300=0.00 total=45\n"
                }
                "memory.current" => "100\n",
                "memory.max" => "max\n",
                "memory.peak" => "300\n",
                "memory.swap.peak" => "50\n",
                "memory.stat" => {
                    "anon 1\nfile 2\nanon_thp 3\nslab_reclaimable 4\n\
                                  workingset_refault_anon 5\nworkingset_refault_file 6\n\
                                  workingset_activate_anon 1\nworkingset_activate_file 1\n\
                                  pgscan 7\npglazyfreed 8\nthp_collapse_alloc 9\n"
                }
                "memory.events" => "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 1\n",
                "io.stat" => "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
                "hugetlb.1GB.current" => "0\n",
                "hugetlb.1GB.max" => "max\n",
                "hugetlb.1GB.events" => "max 3\n",
                "rdma.current" => "mlx4_0 hca_handle=1 hca_object=20\n",
                _ => return None,
            };
            Some(text.to_string())
        };
        let m = v2_metrics(&read, &["1GB".to_string()]);
        assert_eq!(m.pids.limit, 10);
        let cpu = &m.cpu;
        assert_eq!(
            (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
            (77, 70, 7)
        );
        assert_eq!(
            (cpu.nr_bursts, cpu.burst_usec, cpu.throttled_usec),
            (4, 5, 9)
        );
        assert_eq!(cpu.psi.some.avg10, 1.5);
        assert_eq!(cpu.psi.full.total, 45);
        let mem = &m.memory;
        assert_eq!(
            (mem.usage, mem.usage_limit, mem.max_usage),
            (100, u64::MAX, 300)
        );
        assert_eq!(mem.swap_max_usage, 50);
        assert_eq!((mem.anon_thp, mem.slab_reclaimable, mem.pgscan), (3, 4, 7));
        assert_eq!((mem.workingset_refault, mem.workingset_activate), (11, 2));
        assert_eq!((mem.pglazyfreed, mem.thp_collapse_alloc), (8, 9));
        assert!(mem.psi.is_none());
        assert_eq!(m.memory_events.oom_group_kill, 1);
        let io = &m.io.usage[0];
        assert_eq!(
            (io.major, io.rbytes, io.wbytes, io.rios, io.wios),
            (8, 10, 20, 1, 2)
        );
        let h = &m.hugetlb[0];
        assert_eq!(
            (h.pagesize.as_str(), h.max, h.failcnt),
            ("1GB", u64::MAX, 3)
        );
        assert_eq!(m.rdma.current[0].hca_objects, 20);
    }

    #[test]
    fn hugetlb_names() {
        let names = [
            "hugetlb.2MB.limit_in_bytes",
            "hugetlb.2MB.usage_in_bytes",
            "hugetlb.1GB.max",
            "hugetlb.1GB.rsvd.max",
            "memory.max",
        ];
        assert_eq!(hugetlb_sizes(names.into_iter()), vec!["1GB", "2MB"]);
    }
}
