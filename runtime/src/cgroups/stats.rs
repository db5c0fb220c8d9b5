//! Container statistics in runc's JSON shapes (`runc events`), and the pure
//! parsers for the cgroup files they are read from. The backends read the
//! files; everything here works on their text.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// runc's `types.Event`: `{"type": "stats"|"oom", "id": ..., "data": ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

/// runc's `types.Stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
    pub intel_rdt: serde_json::Map<String, serde_json::Value>,
    pub network_interfaces: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

/// Nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throttling {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(default, rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(default, rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSet {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pids {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 when unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkioEntry {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Blkio {
    #[serde(
        default,
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioServicedRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hugetlb {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

// ---------------------------------------------------------------------------
// Parsers

/// A single-number file; `max` reads as `u64::MAX`, garbage as 0.
pub fn number(text: &str) -> u64 {
    match text.trim() {
        "max" => u64::MAX,
        t => t.parse().unwrap_or(0),
    }
}

/// A flat keyed file (`key value` per line: memory.stat, cpu.stat, ...).
pub fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// The value of `key` in a flat keyed file, 0 when absent.
pub fn key(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A space-separated list of numbers (cpuacct.usage_percpu).
pub fn numbers(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// A cpuset list (`0-2,5`) expanded.
pub fn cpu_list(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// cpuacct.usage_all: `cpu user system` rows after a header, in ns.
pub fn usage_all(text: &str) -> (Vec<u64>, Vec<u64>) {
    let mut user = Vec::new();
    let mut sys = Vec::new();
    for l in text.lines().skip(1) {
        let f: Vec<u64> = numbers(l);
        if f.len() == 3 {
            user.push(f[1]);
            sys.push(f[2]);
        }
    }
    (user, sys)
}

/// v1 blkio files: `8:0 Read 4096` rows (and a `Total` row without a device).
pub fn blkio_v1(text: &str) -> Vec<BlkioEntry> {
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 3 {
            continue;
        }
        let Some((ma, mi)) = f[0].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor), Ok(value)) = (ma.parse(), mi.parse(), f[2].parse()) else {
            continue;
        };
        out.push(BlkioEntry {
            major,
            minor,
            op: f[1].to_string(),
            value,
        });
    }
    out
}

/// v2 io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` rows,
/// as runc reports them: bytes and ios, Read and Write per device.
pub fn io_stat(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((ma, mi)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (ma.parse(), mi.parse()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let value = v.parse().unwrap_or(0);
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
    (bytes, ios)
}

/// The page sizes named by hugetlb files in a directory listing
/// (`hugetlb.2MB.limit_in_bytes`, `hugetlb.1GB.max` → `2MB`, `1GB`).
pub fn hugetlb_sizes<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = names
        .filter_map(|n| n.strip_prefix("hugetlb."))
        .filter_map(|n| n.split('.').next())
        .filter(|s| s.ends_with('B'))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(number("max\n"), u64::MAX);
        assert_eq!(number("42\n"), 42);
        assert_eq!(number("x"), 0);
        assert_eq!(key("a 1\nnr_periods 7\n", "nr_periods"), 7);
        assert_eq!(key("a 1\n", "b"), 0);
        assert_eq!(keyed("cache 5\nrss 6\n")["rss"], 6);
        assert_eq!(cpu_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(cpu_list(""), Vec::<u16>::new());
        assert_eq!(numbers("1 2 3 \n"), vec![1, 2, 3]);
        let (u, s) = usage_all("cpu user system\n0 10 20\n1 30 40\n");
        assert_eq!((u, s), (vec![10, 30], vec![20, 40]));
    }

    #[test]
    fn blkio_rows() {
        let t = "8:0 Read 4096\n8:0 Write 0\n8:0 Total 4096\nTotal 4096\n";
        let e = blkio_v1(t);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].op, "Read");
        assert_eq!((e[0].major, e[0].minor, e[0].value), (8, 0, 4096));
        let (b, i) = io_stat("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(b.len(), 2);
        assert_eq!((b[1].op.as_str(), b[1].value), ("Write", 20));
        assert_eq!((i[0].op.as_str(), i[0].value), ("Read", 1));
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

    #[test]
    fn json_shape_matches_runc() {
        let s = Stats {
            pids: Pids {
                current: 1,
                limit: 0,
            },
            ..Stats::default()
        };
        let v = serde_json::to_value(Event {
            kind: "stats",
            id: "c1",
            data: Some(s),
        })
        .unwrap();
        assert_eq!(v["type"], "stats");
        assert_eq!(v["id"], "c1");
        let d = &v["data"];
        assert_eq!(d["pids"], serde_json::json!({"current": 1}));
        assert_eq!(d["cpu"]["throttling"], serde_json::json!({}));
        assert_eq!(
            d["cpu"]["usage"],
            serde_json::json!({"kernel": 0, "user": 0})
        );
        assert_eq!(
            d["memory"]["usage"],
            serde_json::json!({"limit": 0, "failcnt": 0})
        );
        assert!(d["memory"]["kernelTCP"].is_object());
        assert_eq!(d["blkio"], serde_json::json!({}));
        assert_eq!(d["hugetlb"], serde_json::json!({}));
        assert_eq!(d["intel_rdt"], serde_json::json!({}));
        assert!(d["network_interfaces"].is_null());
        assert_eq!(d["cpuset"]["sched_relax_domain_level"], 0);
        let oom = serde_json::to_string(&Event {
            kind: "oom",
            id: "c1",
            data: None,
        })
        .unwrap();
        assert_eq!(oom, r#"{"type":"oom","id":"c1"}"#);
    }
}
