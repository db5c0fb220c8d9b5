//! The systemd cgroup driver (`--systemd-cgroup`), on cgroup v2 and on v1 (hybrid) hosts.
//!
//! systemd owns the cgroup tree of a node where it is pid 1, so a
//! container's cgroup is a transient scope unit it creates: cgroupsPath
//! `slice:prefix:name` becomes the scope `prefix-name.scope` in `slice`
//! (`system.slice:skiff:<id>` when empty, as runc's `system.slice:runc:<id>`),
//! whose directory is the slice's expanded path plus the scope
//! (`a-b.slice` is `a.slice/a-b.slice`). The scope is started through
//! systemd's D-Bus API ([`dbus`]) with the init's pid in it (a scope cannot
//! start empty), `Delegate=yes`, runc's accounting properties and every
//! resource systemd knows as a property (from the same translation the
//! files use, [`properties`]); the rest, and the same values again, go to
//! the files as on plain v2, and everything after placement (freezing,
//! stats, pids, kill) is the v2 backend's. `update` sets the properties
//! (`SetUnitProperties`) and the files; `remove` stops the unit and resets
//! it if it failed, so nothing of it stays loaded.

use super::dbus::{self, Arg, Bus, DbusError, Property, Value};
use super::resources::{self, Facts, Write};
use super::stats::Stats;
use super::v1::V1;
use super::v2::V2;
use super::{CgroupError, CgroupManager};
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

/// The systemd driver cannot do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("linux.cgroupsPath: {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("--systemd-cgroup: {reason}")]
    Unavailable { reason: String },
    #[error("systemd unit {unit}: {source}")]
    Dbus { unit: String, source: DbusError },
    #[error("error creating systemd unit `{unit}`: got `{result}`")]
    JobFailed { unit: String, result: String },
    #[error("annotations[{key:?}]: {reason}")]
    Annotation { key: String, reason: String },
}

/// The prefix of annotations that set the scope's unit properties.
pub const PROPERTY_PREFIX: &str = "org.systemd.property.";

/// runc's `org.systemd.property.<Name>=<value>` annotations as unit
/// properties: the name is letters only (at least three), the value is
/// GVariant text ([`gvariant`](super::gvariant)), and a name ending in a
/// lowercase letter and `Sec` (`TimeoutStopSec`) is sent as its `USec`
/// property with the number of seconds converted, as runc does. They go
/// after the driver's own properties and before the resources' (which
/// win where both name one, as in runc).
pub fn annotation_properties(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<Property>, SystemdError> {
    use super::gvariant::{self, Gv};
    let mut out = Vec::new();
    for (key, text) in annotations {
        let Some(name) = key.strip_prefix(PROPERTY_PREFIX) else {
            continue;
        };
        let bad = |reason: String| SystemdError::Annotation {
            key: key.clone(),
            reason,
        };
        if name.len() < 3 {
            return Err(bad("the property name is too short".into()));
        }
        if !name.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(bad(
                "the property name has a character other than an ASCII letter".into(),
            ));
        }
        let value = gvariant::parse(text)
            .map_err(|e| bad(format!("value {text:?} is not a GVariant text: {e}")))?;
        let stem = name.strip_suffix("Sec");
        match stem {
            Some(stem) if stem.ends_with(|c: char| c.is_ascii_lowercase()) => {
                const M: f64 = 1_000_000.0;
                let secs: f64 = match value {
                    Gv::Byte(n) => n.into(),
                    Gv::I16(n) => n.into(),
                    Gv::U16(n) => n.into(),
                    Gv::I32(n) => n.into(),
                    Gv::U32(n) => n.into(),
                    Gv::I64(n) => n as f64,
                    Gv::U64(n) => n as f64,
                    Gv::F64(d) => d,
                    _ => return Err(bad(format!("{name} takes a number of seconds"))),
                };
                if secs < 0.0 {
                    return Err(bad(format!("{name} cannot be negative")));
                }
                // Integers exactly, fractions to the microsecond.
                let usec = match value {
                    Gv::F64(_) => (secs * M) as u64,
                    Gv::I64(n) => (n as u64).saturating_mul(1_000_000),
                    Gv::U64(n) => n.saturating_mul(1_000_000),
                    _ => (secs as u64).saturating_mul(1_000_000),
                };
                out.push((format!("{stem}USec"), Value::U64(usec)));
            }
            _ => out.push((name.to_string(), Value::Text(value))),
        }
    }
    Ok(out)
}

/// Where a container's scope goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPath {
    /// The slice the scope is in.
    pub slice: String,
    /// The scope's unit name.
    pub unit: String,
    /// The scope's cgroup, below the cgroup2 mount (`/a.slice/a-b.slice/x.scope`).
    pub cgroup: PathBuf,
}

/// Parses cgroupsPath `slice:prefix:name` as runc's specconv does; empty
/// is `system.slice:skiff:<id>`, and an empty slice is `system.slice`.
pub fn unit_path(cgroups_path: Option<&Path>, id: &str) -> Result<UnitPath, SystemdError> {
    let raw = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad = |reason: &str| SystemdError::BadPath {
        path: raw.clone(),
        reason: reason.to_string(),
    };
    let (slice, prefix, name) = if raw.is_empty() {
        (
            "system.slice".to_string(),
            "skiff".to_string(),
            id.to_string(),
        )
    } else {
        let parts: Vec<&str> = raw.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return Err(bad("expected \"slice:prefix:name\" for systemd cgroups"));
        };
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        (slice.to_string(), prefix.to_string(), name.to_string())
    };
    if prefix.contains('/') || name.contains('/') {
        return Err(bad("the prefix and name may not contain \"/\""));
    }
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    if name.ends_with(".slice") {
        return Err(bad(
            "a name ending in .slice (a slice instead of a scope) is not supported",
        ));
    }
    let unit = if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    let cgroup = expand_slice(&slice).map_err(|r| bad(&r))?.join(&unit);
    Ok(UnitPath {
        slice,
        unit,
        cgroup,
    })
}

/// A slice's cgroup path: each `-` is a level (`a-b-c.slice` is
/// `/a.slice/a-b.slice/a-b-c.slice`); `-.slice` is the root.
pub fn expand_slice(slice: &str) -> Result<PathBuf, String> {
    let Some(stem) = slice.strip_suffix(".slice").filter(|s| !s.is_empty()) else {
        return Err(format!(
            "invalid slice name {slice:?}: it must end in .slice"
        ));
    };
    if slice.contains('/') {
        return Err(format!(
            "invalid slice name {slice:?}: \"/\" is not allowed"
        ));
    }
    let mut path = PathBuf::from("/");
    if stem == "-" {
        return Ok(path);
    }
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return Err(format!(
                "invalid slice name {slice:?}: empty component between dashes"
            ));
        }
        path.push(format!("{prefix}{part}.slice"));
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(path)
}

/// runc's properties for a container's scope (before the resources).
pub fn scope_properties(up: &UnitPath, id: &str, pid: u32) -> Vec<Property> {
    let b = |n: &str, v| (n.to_string(), Value::Bool(v));
    vec![
        (
            "Description".into(),
            Value::Str(format!("skiff container {id}")),
        ),
        ("Slice".into(), Value::Str(up.slice.clone())),
        b("Delegate", true),
        ("PIDs".into(), Value::U32s(vec![pid])),
        b("MemoryAccounting", true),
        b("CPUAccounting", true),
        b("IOAccounting", true),
        b("TasksAccounting", true),
        b("DefaultDependencies", false),
    ]
}

/// `max` is systemd's infinity.
fn amount(v: &str) -> Option<u64> {
    match v.trim() {
        "max" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// A CPU or node list (`0-3,5`) as systemd's bitmask: byte i holds bits
/// 8i..8i+7.
pub fn list_to_bits(list: &str) -> Option<Vec<u8>> {
    let mut bits = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<usize>().ok()?,
                b.trim().parse::<usize>().ok()?,
            ),
            None => {
                let n = part.trim().parse::<usize>().ok()?;
                (n, n)
            }
        };
        if a > b || b > 8191 {
            return None;
        }
        if bits.len() <= b / 8 {
            bits.resize(b / 8 + 1, 0u8);
        }
        for n in a..=b {
            bits[n / 8] |= 1 << (n % 8);
        }
    }
    Some(bits)
}

/// CPUQuotaPerSecUSec for a quota per period, rounded up to 10 ms as runc
/// does (systemd's granularity).
fn quota_per_sec(quota: u64, period: u64) -> u64 {
    let per_sec = quota.saturating_mul(1_000_000) / period.max(1);
    per_sec.div_ceil(10_000) * 10_000
}

/// The unit properties for the v2 writes systemd manages itself (memory,
/// CPU weight and quota, cpusets, tasks, I/O); a value it cannot parse is
/// left to the file write, which reports it. Later writes of one file win,
/// as they do in the files.
pub fn properties(writes: &[Write]) -> Vec<Property> {
    let mut out: Vec<Property> = Vec::new();
    let mut set = |name: &str, v: Value| {
        let v = match (out.iter_mut().find(|(n, _)| n == name), v) {
            (Some((_, Value::PathU64s(have))), Value::PathU64s(more)) => {
                have.extend(more);
                return;
            }
            (Some(slot), v) => {
                slot.1 = v;
                return;
            }
            (None, v) => v,
        };
        out.push((name.to_string(), v));
    };
    for w in writes {
        let v = w.value.trim();
        match w.file.as_str() {
            "memory.max" | "memory.low" | "memory.high" | "memory.min" | "memory.swap.max"
            | "pids.max" => {
                let name = match w.file.as_str() {
                    "memory.max" => "MemoryMax",
                    "memory.low" => "MemoryLow",
                    "memory.high" => "MemoryHigh",
                    "memory.min" => "MemoryMin",
                    "memory.swap.max" => "MemorySwapMax",
                    _ => "TasksMax",
                };
                if let Some(n) = amount(v) {
                    set(name, Value::U64(n));
                }
            }
            "cpu.weight" => {
                if let Ok(n) = v.parse() {
                    set("CPUWeight", Value::U64(n));
                }
            }
            "cpu.max" => {
                let mut f = v.split_whitespace();
                let quota = f.next().and_then(amount);
                let period: Option<u64> = f.next().and_then(|p| p.parse().ok());
                let per_sec = match quota {
                    Some(u64::MAX) => u64::MAX,
                    Some(q) => quota_per_sec(q, period.unwrap_or(100_000)),
                    None => continue,
                };
                set("CPUQuotaPerSecUSec", Value::U64(per_sec));
                if let Some(p) = period {
                    set("CPUQuotaPeriodUSec", Value::U64(p));
                }
            }
            "cpuset.cpus" | "cpuset.mems" => {
                let name = if w.file == "cpuset.cpus" {
                    "AllowedCPUs"
                } else {
                    "AllowedMemoryNodes"
                };
                if let Some(bits) = list_to_bits(v).filter(|b| !b.is_empty()) {
                    set(name, Value::Bytes(bits));
                }
            }
            "io.weight" => match v.split_once(' ') {
                None => {
                    if let Ok(n) = v.parse() {
                        set("IOWeight", Value::U64(n));
                    }
                }
                Some(("default", n)) => {
                    if let Ok(n) = n.trim().parse() {
                        set("IOWeight", Value::U64(n));
                    }
                }
                Some((dev, n)) => {
                    if let Ok(n) = n.trim().parse() {
                        let d = format!("/dev/block/{dev}");
                        set("IODeviceWeight", Value::PathU64s(vec![(d, n)]));
                    }
                }
            },
            "io.max" => {
                let mut f = v.split_whitespace();
                let Some(dev) = f.next() else { continue };
                for kv in f {
                    let Some((k, n)) = kv.split_once('=') else {
                        continue;
                    };
                    let name = match k {
                        "rbps" => "IOReadBandwidthMax",
                        "wbps" => "IOWriteBandwidthMax",
                        "riops" => "IOReadIOPSMax",
                        "wiops" => "IOWriteIOPSMax",
                        _ => continue,
                    };
                    if let Some(n) = amount(n) {
                        let d = format!("/dev/block/{dev}");
                        set(name, Value::PathU64s(vec![(d, n)]));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The scope's directories: one on cgroup v2; on a legacy or hybrid host
/// one per hierarchy at the same path (`<expanded slice>/<unit>`), the ones
/// systemd does not manage made and joined by the runtime, as runc does.
enum Dirs {
    V2(V2),
    V1(V1),
}

impl Dirs {
    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Dirs::V2(m) => m,
            Dirs::V1(m) => m,
        }
    }
}

/// runc's unit properties for cgroup v1 (its `genV1ResourcesProperties`),
/// from the v1 writes: the ones systemd's v1 support knows.
pub fn properties_v1(writes: &[Write]) -> Vec<Property> {
    let mut out: Vec<Property> = Vec::new();
    let find = |file: &str| {
        writes
            .iter()
            .find(|w| w.file == file)
            .map(|w| w.value.trim())
    };
    let num = |file: &str| find(file).and_then(|v| v.parse::<i64>().ok());
    if let Some(n) = num("memory.limit_in_bytes").filter(|n| *n != 0) {
        out.push(("MemoryLimit".into(), Value::U64(n.max(-1) as u64)));
    }
    if let Some(n) = num("cpu.shares").filter(|n| *n > 0) {
        out.push(("CPUShares".into(), Value::U64(n as u64)));
    }
    if let Some(q) = num("cpu.cfs_quota_us").filter(|q| *q != 0) {
        let period = num("cpu.cfs_period_us")
            .filter(|p| *p > 0)
            .unwrap_or(100_000) as u64;
        let per_sec = if q < 0 {
            u64::MAX
        } else {
            quota_per_sec(q as u64, period)
        };
        out.push(("CPUQuotaPerSecUSec".into(), Value::U64(per_sec)));
        if num("cpu.cfs_period_us").is_some() {
            out.push(("CPUQuotaPeriodUSec".into(), Value::U64(period)));
        }
    }
    if let Some(n) = num("blkio.weight").filter(|n| *n > 0) {
        out.push(("BlockIOWeight".into(), Value::U64(n as u64)));
    }
    if let Some(v) = find("pids.max") {
        if let Some(n) = amount(v) {
            out.push(("TasksMax".into(), Value::U64(n)));
        }
    }
    for (file, name) in [
        ("cpuset.cpus", "AllowedCPUs"),
        ("cpuset.mems", "AllowedMemoryNodes"),
    ] {
        if let Some(bits) = find(file).and_then(list_to_bits).filter(|b| !b.is_empty()) {
            out.push((name.into(), Value::Bytes(bits)));
        }
    }
    out
}

/// A container's scope and its cgroup directories.
pub struct Systemd {
    dirs: Dirs,
    unit: String,
    slice: String,
    id: String,
    /// From the annotations ([`annotation_properties`]), for the start.
    extra: Vec<Property>,
}

impl Systemd {
    /// The manager for a new container: the scope `up`, on the cgroup2
    /// mount `mount`. Fails when systemd is not there to ask.
    pub fn new(mount: &Path, up: UnitPath, id: &str) -> Result<Systemd, SystemdError> {
        if !Path::new(dbus::PRIVATE_SOCKET).exists() {
            return Err(SystemdError::Unavailable {
                reason: format!(
                    "systemd is not running as pid 1 (no {})",
                    dbus::PRIVATE_SOCKET
                ),
            });
        }
        let dir = mount.join(up.cgroup.strip_prefix("/").unwrap_or(&up.cgroup));
        Ok(Systemd {
            dirs: Dirs::V2(V2::new(dir)),
            unit: up.unit,
            slice: up.slice,
            id: id.to_string(),
            extra: Vec::new(),
        })
    }

    /// Adds properties for the scope's start, between the driver's own and
    /// the resources'.
    pub fn with_properties(mut self, extra: Vec<Property>) -> Systemd {
        self.extra = extra;
        self
    }

    /// The manager for a new container on a legacy or hybrid host: the
    /// scope's path in each hierarchy (`mounts`: each mount point and its
    /// controllers, empty for the hybrid host's cgroup2 one).
    pub fn new_v1(
        mounts: &[(PathBuf, Vec<String>)],
        up: UnitPath,
        id: &str,
    ) -> Result<Systemd, SystemdError> {
        let Systemd { unit, slice, .. } = Systemd::new(Path::new("/"), up.clone(), id)?;
        let rel = up.cgroup.strip_prefix("/").unwrap_or(&up.cgroup);
        let dirs = mounts.iter().map(|(m, _)| m.join(rel)).collect();
        let controllers: Vec<Vec<String>> = mounts.iter().map(|(_, c)| c.clone()).collect();
        let unified = controllers.iter().position(|c| c.is_empty());
        Ok(Systemd {
            dirs: Dirs::V1(V1::with_layout(dirs, controllers, unified)),
            unit,
            slice,
            id: id.to_string(),
            extra: Vec::new(),
        })
    }

    /// The manager of an existing container on a legacy or hybrid host,
    /// from its record's directories and their controllers.
    pub fn from_v1_dirs(dirs: &[PathBuf], controllers: &[Vec<String>]) -> Systemd {
        let mut s = Systemd::from_dir(dirs.first().cloned().unwrap_or_default());
        let v1 = if controllers.len() == dirs.len() {
            let unified = controllers.iter().position(|c| c.is_empty());
            V1::with_layout(dirs.to_vec(), controllers.to_vec(), unified)
        } else {
            V1::new(dirs.to_vec())
        };
        s.dirs = Dirs::V1(v1);
        s
    }

    /// The manager of an existing container, from its cgroup directory
    /// (whose name is the unit's).
    pub fn from_dir(dir: PathBuf) -> Systemd {
        let unit = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let slice = dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Systemd {
            dirs: Dirs::V2(V2::new(dir)),
            unit,
            slice,
            id: String::new(),
            extra: Vec::new(),
        }
    }

    /// How a new process enters the scope, once it exists.
    pub fn entry(&self) -> Option<super::Entry> {
        match &self.dirs {
            Dirs::V2(v2) if v2.dir().is_dir() => {
                Some(super::Entry::new(&[v2.dir().to_path_buf()], Some(0)))
            }
            Dirs::V1(v1) if v1.dirs().iter().all(|d| d.is_dir()) => Some(v1.entry()),
            _ => None,
        }
    }

    /// Per directory, the controllers of its hierarchy (on v1).
    pub fn controllers(&self) -> Vec<Vec<String>> {
        match &self.dirs {
            Dirs::V1(v1) => v1.controllers(),
            Dirs::V2(_) => Vec::new(),
        }
    }

    /// The unit's name.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    fn bus(&self) -> Result<Bus, SystemdError> {
        Bus::connect(Path::new(dbus::PRIVATE_SOCKET)).map_err(|e| self.dbus_err(e))
    }

    fn dbus_err(&self, source: DbusError) -> SystemdError {
        SystemdError::Dbus {
            unit: self.unit.clone(),
            source,
        }
    }

    /// The properties systemd manages among `res`, and the writes, from one
    /// translation.
    fn resource_properties(&self, res: &LinuxResources) -> Result<Vec<Property>, CgroupError> {
        match &self.dirs {
            Dirs::V2(v2) => {
                let res = v2.with_current_limit(res);
                Ok(properties(&resources::v2(&res, Facts::default())?))
            }
            Dirs::V1(_) => Ok(properties_v1(&resources::v1(res, Facts::default())?)),
        }
    }

    /// Starts the scope with `pid` in it and the resources as properties,
    /// waits for systemd's job (as runc), passes the controllers down and
    /// writes the resources into the files. A unit of the same name left
    /// over (failed) is reset and the start retried once, as runc does.
    pub fn start(&self, pid: i32, res: &LinuxResources) -> Result<(), CgroupError> {
        let mut props = scope_properties(
            &UnitPath {
                slice: self.slice.clone(),
                unit: self.unit.clone(),
                cgroup: PathBuf::new(),
            },
            &self.id,
            pid as u32,
        );
        if matches!(self.dirs, Dirs::V1(_)) {
            // systemd's name for the blkio accounting on cgroup v1.
            for p in props.iter_mut().filter(|p| p.0 == "IOAccounting") {
                p.0 = "BlockIOAccounting".into();
            }
        }
        // runc starts the unit with the annotations' properties and sets
        // the resources after: where both name one, the resource wins.
        props.extend(self.extra.iter().cloned());
        props.extend(self.resource_properties(res)?);
        let mut bus = self.bus()?;
        let start = |bus: &mut Bus| {
            let args = [
                Arg::Str(&self.unit),
                Arg::Str("replace"),
                Arg::Props(&props),
                Arg::NoAux,
            ];
            bus.call("StartTransientUnit", &args)
        };
        let reply = match start(&mut bus) {
            Err(DbusError::Remote { name, .. }) if name.ends_with(".UnitExists") => {
                let _ = bus.call("ResetFailedUnit", &[Arg::Str(&self.unit)]);
                start(&mut bus)
            }
            r => r,
        }
        .map_err(|e| self.dbus_err(e))?;
        let job = reply.first_str().ok_or_else(|| {
            self.dbus_err(DbusError::Malformed {
                what: "StartTransientUnit returned no job",
            })
        })?;
        let result = bus.wait_job(&job).map_err(|e| self.dbus_err(e))?;
        if result != "done" {
            let _ = bus.call("ResetFailedUnit", &[Arg::Str(&self.unit)]);
            return Err(SystemdError::JobFailed {
                unit: self.unit.clone(),
                result,
            }
            .into());
        }
        match &self.dirs {
            // systemd enables the controllers it manages; the others
            // (hugetlb, misc, rdma) are passed down as on plain v2, as runc does.
            Dirs::V2(v2) => {
                v2.create()?;
                v2.set(res)
            }
            // systemd made and joined the hierarchies it manages (memory,
            // cpu, blkio, pids, name=systemd); the others (cpuset, freezer,
            // devices, ...) are made and joined here, as runc does.
            Dirs::V1(v1) => {
                v1.create()?;
                for d in v1.dirs() {
                    super::write_file(&d.join("cgroup.procs"), &pid.to_string())?;
                }
                v1.set(res)
            }
        }
    }

    /// Stops the unit and waits for it; a unit already gone is no error.
    fn stop(&self) -> Result<(), SystemdError> {
        let mut bus = self.bus()?;
        let stopped = match bus.call("StopUnit", &[Arg::Str(&self.unit), Arg::Str("replace")]) {
            Ok(reply) => match reply.first_str() {
                Some(job) => bus.wait_job(&job).map(|_| ()),
                None => Ok(()),
            },
            Err(DbusError::Remote { name, .. }) if name.ends_with(".NoSuchUnit") => Ok(()),
            Err(e) => Err(e),
        };
        // A failed unit stays listed until it is reset.
        let _ = bus.call("ResetFailedUnit", &[Arg::Str(&self.unit)]);
        stopped.map_err(|e| self.dbus_err(e))
    }
}

impl CgroupManager for Systemd {
    fn create(&self) -> Result<(), CgroupError> {
        // The scope is made with the init in it: `start`.
        Ok(())
    }

    fn set(&self, res: &LinuxResources) -> Result<(), CgroupError> {
        let props = self.resource_properties(res)?;
        if !props.is_empty() {
            let mut bus = self.bus()?;
            let args = [Arg::Str(&self.unit), Arg::Bool(true), Arg::Props(&props)];
            bus.call("SetUnitProperties", &args)
                .map_err(|e| self.dbus_err(e))?;
        }
        self.dirs.inner().set(res)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.dirs.inner().freeze()
    }
    fn thaw(&self) -> Result<(), CgroupError> {
        self.dirs.inner().thaw()
    }
    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.dirs.inner().pids()
    }
    fn is_frozen(&self) -> bool {
        self.dirs.inner().is_frozen()
    }
    fn stats(&self) -> Result<Stats, CgroupError> {
        self.dirs.inner().stats()
    }
    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        self.dirs.inner().oom_kill_count()
    }
    fn kill_all(&self) -> Result<(), CgroupError> {
        self.dirs.inner().kill_all()
    }
    fn remove(&self) -> Result<(), CgroupError> {
        self.stop()?;
        // Sub-cgroups the container made, and on v1 the hierarchies systemd
        // does not manage, are left by systemd.
        self.dirs.inner().remove()
    }
    fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.inner().dirs()
    }
    fn mode(&self) -> &'static str {
        match self.dirs {
            Dirs::V2(_) => "systemd",
            Dirs::V1(_) => "systemd-v1",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_by_dashes() {
        assert_eq!(
            expand_slice("kubepods-besteffort-pod12ab.slice").unwrap(),
            PathBuf::from(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12ab.slice"
            )
        );
        assert_eq!(
            expand_slice("system.slice").unwrap(),
            PathBuf::from("/system.slice")
        );
        assert_eq!(expand_slice("-.slice").unwrap(), PathBuf::from("/"));
        for bad in [
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
            "a.scope",
            "",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cgroups_path_is_slice_prefix_name() {
        let up = unit_path(
            Some(Path::new(
                "kubepods-burstable-pod1.slice:cri-containerd:abc",
            )),
            "x",
        )
        .unwrap();
        assert_eq!(up.slice, "kubepods-burstable-pod1.slice");
        assert_eq!(up.unit, "cri-containerd-abc.scope");
        assert_eq!(
            up.cgroup,
            PathBuf::from(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"
            )
        );
        let d = unit_path(None, "c1").unwrap();
        assert_eq!(
            (d.slice.as_str(), d.unit.as_str()),
            ("system.slice", "skiff-c1.scope")
        );
        assert_eq!(d.cgroup, PathBuf::from("/system.slice/skiff-c1.scope"));
        let e = unit_path(Some(Path::new(":p:n")), "c").unwrap();
        assert_eq!(e.slice, "system.slice");
        assert_eq!(
            unit_path(Some(Path::new("a.slice::n")), "c").unwrap().unit,
            "n.scope"
        );
        for bad in [
            "/a/b",
            "a.slice:b",
            "a.slice:b:c:d",
            "a.slice:p:../x",
            "a.slice:p:",
            "a:p:n",
            "a.slice:p:n.slice",
        ] {
            let e = unit_path(Some(Path::new(bad)), "c").unwrap_err();
            assert!(e.to_string().contains("linux.cgroupsPath"), "{bad}: {e}");
        }
    }

    fn res(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    fn props_of(v: serde_json::Value) -> Vec<Property> {
        properties(&resources::v2(&res(v), Facts::default()).unwrap())
    }

    fn get<'a>(p: &'a [Property], name: &str) -> Option<&'a Value> {
        p.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// runc's conversions: shares to weight, quota to a per-second value rounded up to 10 ms,
    /// memory+swap to swap alone, cpusets to bitmasks, -1 to infinity.
    #[test]
    fn resources_become_properties_as_in_runc() {
        let p = props_of(serde_json::json!({
            "memory": {"limit": 104857600, "reservation": 52428800, "swap": 209715200},
            "cpu": {"shares": 1024, "quota": 12345, "period": 100000, "cpus": "0-1,9", "mems": "0"},
            "pids": {"limit": -1},
            "blockIO": {"weight": 500,
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "weightDevice": [{"major": 8, "minor": 0, "weight": 100}]},
            "unified": {"memory.high": "94371840"}
        }));
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(104857600)));
        assert_eq!(get(&p, "MemoryLow"), Some(&Value::U64(52428800)));
        assert_eq!(get(&p, "MemorySwapMax"), Some(&Value::U64(104857600)));
        assert_eq!(get(&p, "MemoryHigh"), Some(&Value::U64(94371840)));
        assert_eq!(get(&p, "CPUWeight"), Some(&Value::U64(39)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(130000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(&Value::U64(100000)));
        assert_eq!(
            get(&p, "AllowedCPUs"),
            Some(&Value::Bytes(vec![0x03, 0x02]))
        );
        assert_eq!(
            get(&p, "AllowedMemoryNodes"),
            Some(&Value::Bytes(vec![0x01]))
        );
        assert_eq!(get(&p, "TasksMax"), Some(&Value::U64(u64::MAX)));
        assert_eq!(get(&p, "IOWeight"), Some(&Value::U64(4950)));
        assert_eq!(
            get(&p, "IODeviceWeight"),
            Some(&Value::PathU64s(vec![("/dev/block/8:0".into(), 910)]))
        );
        assert_eq!(
            get(&p, "IOReadBandwidthMax"),
            Some(&Value::PathU64s(vec![("/dev/block/8:0".into(), 1048576)]))
        );
        // Unlimited quota with a period, and nothing at all.
        let p = props_of(serde_json::json!({"cpu": {"quota": -1, "period": 50000}}));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(u64::MAX)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(&Value::U64(50000)));
        assert!(props_of(serde_json::json!({})).is_empty());
        // A quota without a period is per 100 ms.
        let p = props_of(serde_json::json!({"cpu": {"quota": 50000}}));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(500000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), None);
    }

    #[test]
    fn cpu_lists_become_bitmasks() {
        assert_eq!(list_to_bits("0").unwrap(), vec![1]);
        assert_eq!(list_to_bits("0-7").unwrap(), vec![0xff]);
        assert_eq!(list_to_bits("8").unwrap(), vec![0, 1]);
        assert_eq!(list_to_bits("1,3-4").unwrap(), vec![0b11010]);
        assert!(list_to_bits("3-1").is_none());
        assert!(list_to_bits("x").is_none());
    }

    #[test]
    fn the_scope_has_runcs_properties() {
        let up = unit_path(Some(Path::new("a.slice:p:n")), "n").unwrap();
        let p = scope_properties(&up, "n", 42);
        assert_eq!(get(&p, "Slice"), Some(&Value::Str("a.slice".into())));
        assert_eq!(get(&p, "Delegate"), Some(&Value::Bool(true)));
        assert_eq!(get(&p, "PIDs"), Some(&Value::U32s(vec![42])));
        assert_eq!(get(&p, "DefaultDependencies"), Some(&Value::Bool(false)));
    }

    /// A record names only the directory: the unit and slice come back from it.
    #[test]
    fn the_unit_comes_back_from_the_directory() {
        let s = Systemd::from_dir(PathBuf::from("/sys/fs/cgroup/a.slice/a-b.slice/p-n.scope"));
        assert_eq!(s.unit(), "p-n.scope");
        assert_eq!(s.slice, "a-b.slice");
    }

    fn ann(pairs: &[(&str, &str)]) -> Result<Vec<Property>, SystemdError> {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        annotation_properties(&m)
    }

    /// runc's `org.systemd.property.` annotations: typed values, `Sec`
    /// names sent as `USec`, other annotations ignored.
    #[test]
    fn annotations_become_properties_as_in_runc() {
        use crate::cgroups::gvariant::Gv;
        let p = ann(&[
            ("org.systemd.property.CollectMode", "'inactive-or-failed'"),
            ("org.systemd.property.TimeoutStopSec", "uint64 42"),
            ("org.systemd.property.RuntimeMaxSec", "1.5"),
            ("org.systemd.property.TasksMax", "uint64 77"),
            ("org.systemd.property.After", "['a.service', 'b.service']"),
            ("org.systemd.property.DefaultDependencies", "true"),
            ("io.kubernetes.other", "whatever {"),
        ])
        .unwrap();
        assert_eq!(
            get(&p, "CollectMode"),
            Some(&Value::Text(Gv::Str("inactive-or-failed".into())))
        );
        assert_eq!(get(&p, "TimeoutStopUSec"), Some(&Value::U64(42_000_000)));
        assert_eq!(get(&p, "RuntimeMaxUSec"), Some(&Value::U64(1_500_000)));
        assert_eq!(get(&p, "TasksMax"), Some(&Value::Text(Gv::U64(77))));
        assert_eq!(get(&p, "After").unwrap().signature(), "as");
        assert_eq!(
            get(&p, "DefaultDependencies"),
            Some(&Value::Text(Gv::Bool(true)))
        );
        assert_eq!(p.len(), 6);
        // A name ending in an upper-case letter before "Sec" is kept as is.
        let p = ann(&[("org.systemd.property.FooSSec", "1")]).unwrap();
        assert_eq!(get(&p, "FooSSec"), Some(&Value::Text(Gv::I32(1))));
    }

    #[test]
    fn bad_annotations_name_the_key_and_the_reason() {
        for (k, v, why) in [
            ("org.systemd.property.Ab", "1", "too short"),
            ("org.systemd.property.Mem_Max", "1", "ASCII letter"),
            ("org.systemd.property.TasksMax", "uint64 'x'", "GVariant"),
            ("org.systemd.property.TasksMax", "[]", "GVariant"),
            (
                "org.systemd.property.TimeoutStopSec",
                "'ten'",
                "number of seconds",
            ),
            ("org.systemd.property.TimeoutStopSec", "-1", "negative"),
        ] {
            let e = ann(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(why), "{k}={v}: {e}");
        }
    }
}
