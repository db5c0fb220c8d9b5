//! The pure part of cgroups: OCI `linux.resources` → the files and values to
//! write, for cgroup v1 and for cgroup v2. Nothing here touches the host;
//! the backends probe the few facts the translation needs ([`Facts`]) and
//! apply the [`Write`]s in order.
//!
//! Conventions follow runc, so configs written for runc behave the same:
//! a zero number means "unset" (Go's zero value), `-1` means "no limit"
//! (`-1` in v1 files, `max` in v2 files), and device rules start from
//! "deny everything", with runc's default device allowlist appended after the
//! spec's rules.

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
    LinuxThrottleDevice,
};
use std::fmt;

/// A resource the spec asks for that is invalid, or that the host's cgroup
/// version cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: not supported on cgroup {version}: {reason}")]
    Unsupported {
        field: String,
        version: &'static str,
        reason: &'static str,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ResourceError {
    ResourceError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn unsupported(
    field: impl Into<String>,
    version: &'static str,
    reason: &'static str,
) -> ResourceError {
    ResourceError::Unsupported {
        field: field.into(),
        version,
        reason,
    }
}

/// When a write happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always; a missing file is an error naming the field.
    Always,
    /// Only when the file exists (optional kernel features).
    IfPresent,
    /// Always, but an `EINVAL` is retried once after the other writes: the
    /// kernel checks some pairs against each other (memory limit against
    /// memory+swap, CFS period against quota), so the right order depends
    /// on the current values.
    Deferrable,
}

/// One value to write into the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// v1: the controller whose hierarchy holds the file. v2: the
    /// controller that must be enabled for the file to exist.
    pub controller: &'static str,
    pub file: String,
    pub value: String,
    /// The spec field the value comes from, for errors.
    pub field: String,
    pub when: When,
}

fn w(
    controller: &'static str,
    file: impl Into<String>,
    value: impl Into<String>,
    field: impl Into<String>,
) -> Write {
    Write {
        controller,
        file: file.into(),
        value: value.into(),
        field: field.into(),
        when: When::Always,
    }
}

impl Write {
    fn when(mut self, when: When) -> Write {
        self.when = when;
        self
    }
}

/// What the host's cgroup files look like, where that changes the
/// translation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// The block I/O weight is BFQ's (`blkio.bfq.weight`, `io.bfq.weight`)
    /// rather than CFQ's `blkio.weight` or io.cost's `io.weight`.
    pub bfq: bool,
}

const F: &str = "linux.resources";

// ---------------------------------------------------------------------------
// Device rules

/// The kind of device a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKind {
    All,
    Char,
    Block,
}

impl DevKind {
    fn as_str(self) -> &'static str {
        match self {
            DevKind::All => "a",
            DevKind::Char => "c",
            DevKind::Block => "b",
        }
    }
}

/// Access bits of a device rule.
pub const ACC_READ: u8 = 1;
pub const ACC_WRITE: u8 = 2;
pub const ACC_MKNOD: u8 = 4;
pub const ACC_ALL: u8 = ACC_READ | ACC_WRITE | ACC_MKNOD;

/// One device cgroup rule; `None` numbers are wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DevKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACC_*` bits.
    pub access: u8,
}

impl DeviceRule {
    /// Whether the rule is a wildcard over every device and access.
    pub fn is_everything(&self) -> bool {
        self.kind == DevKind::All && self.access == ACC_ALL
    }
}

impl fmt::Display for DeviceRule {
    /// The v1 `devices.allow`/`devices.deny` syntax: `c 1:3 rwm`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let mut acc = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        write!(
            f,
            "{} {}:{} {}",
            self.kind.as_str(),
            num(self.major),
            num(self.minor),
            acc
        )
    }
}

fn rule(kind: DevKind, major: Option<u32>, minor: Option<u32>, access: u8) -> DeviceRule {
    DeviceRule {
        allow: true,
        kind,
        major,
        minor,
        access,
    }
}

/// runc's default allowlist, appended after the spec's rules, in its order:
/// mknod of any device, the standard character devices, `/dev/pts/*`,
/// `/dev/ptmx` and `/dev/net/tun` (allowed, not created: runc 1.2.0 dropped
/// it and 1.2.4 put it back, as 1.1 had it).
pub fn default_allowed() -> Vec<DeviceRule> {
    let c = |major, minor| rule(DevKind::Char, Some(major), Some(minor), ACC_ALL);
    vec![
        rule(DevKind::Char, None, None, ACC_MKNOD),
        rule(DevKind::Block, None, None, ACC_MKNOD),
        c(1, 3),
        c(1, 8),
        c(1, 7),
        c(5, 0),
        c(1, 5),
        c(1, 9),
        rule(DevKind::Char, Some(136), None, ACC_ALL),
        c(5, 2),
        c(10, 200),
    ]
}

fn access_bits(field: &str, access: Option<&str>) -> Result<u8, ResourceError> {
    let s = access.unwrap_or("");
    if s.is_empty() {
        return Ok(ACC_ALL);
    }
    let mut bits = 0;
    for ch in s.chars() {
        bits |= match ch {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(invalid(
                    format!("{field}.access"),
                    format!("{s:?}: access is made of r, w and m"),
                ))
            }
        };
    }
    Ok(bits)
}

fn dev_number(field: &str, n: Option<i64>) -> Result<Option<u32>, ResourceError> {
    match n {
        None => Ok(None),
        // Some configs spell the wildcard -1.
        Some(-1) => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| invalid(field, format!("{v} is not a device number"))),
    }
}

/// Converts one OCI device rule (at index `i`).
pub fn device_rule(i: usize, d: &LinuxDeviceCgroup) -> Result<DeviceRule, ResourceError> {
    let field = format!("{F}.devices[{i}]");
    let kind = match d.typ() {
        None | Some(LinuxDeviceType::A) => DevKind::All,
        Some(LinuxDeviceType::C) => DevKind::Char,
        Some(LinuxDeviceType::B) => DevKind::Block,
        Some(t) => {
            return Err(invalid(
                format!("{field}.type"),
                format!(
                    "{:?}: a device cgroup rule is of type a, b or c",
                    t.as_str()
                ),
            ))
        }
    };
    Ok(DeviceRule {
        allow: d.allow(),
        kind,
        major: dev_number(&format!("{field}.major"), d.major())?,
        minor: dev_number(&format!("{field}.minor"), d.minor())?,
        access: access_bits(&field, d.access().as_deref())?,
    })
}

/// The spec's device rules, in order.
pub fn device_rules(res: &LinuxResources) -> Result<Vec<DeviceRule>, ResourceError> {
    res.devices()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, d)| device_rule(i, d))
        .collect()
}

/// An OCI rule for `r` (to extend a spec's list).
pub fn to_oci(r: &DeviceRule) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(r.allow);
    d.set_typ(Some(match r.kind {
        DevKind::All => LinuxDeviceType::A,
        DevKind::Char => LinuxDeviceType::C,
        DevKind::Block => LinuxDeviceType::B,
    }));
    d.set_major(r.major.map(i64::from));
    d.set_minor(r.minor.map(i64::from));
    let s = r.to_string();
    d.set_access(s.rsplit(' ').next().map(str::to_string));
    d
}

/// The resources to apply at create: the spec's, with the device list
/// completed by runc's default allowlist. A `linux.devices` node gets no
/// rule of its own: as in runc, only `linux.resources.devices` (and the
/// defaults) decide whether it can be opened (Docker and containerd pass a
/// rule for every device they add).
pub fn for_create(spec: Option<&LinuxResources>) -> Result<LinuxResources, ResourceError> {
    let mut res = spec.cloned().unwrap_or_default();
    validate(&res)?;
    let mut list = res.devices().clone().unwrap_or_default();
    for r in default_allowed() {
        list.push(to_oci(&r));
    }
    res.set_devices(Some(list));
    Ok(res)
}

// ---------------------------------------------------------------------------
// Validation (the same for v1 and v2)

/// A limit: 0 is unset, -1 is no limit, other negatives are errors.
fn limit(field: &str, v: Option<i64>) -> Result<Option<i64>, ResourceError> {
    match v {
        None | Some(0) => Ok(None),
        Some(v) if v < -1 => Err(invalid(
            field,
            format!("{v} is negative (use -1 for no limit)"),
        )),
        Some(v) => Ok(Some(v)),
    }
}

/// Checks a cpuset list (`0-3,5`); empty means unset.
fn cpu_list(field: &str, s: &str) -> Result<(), ResourceError> {
    if s.trim().is_empty() {
        return Ok(());
    }
    let bad = || invalid(field, format!("{s:?} is not a list like 0-3,5"));
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.trim().parse().map_err(|_| bad())?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
    }
    Ok(())
}

/// Checks a hugepage size such as `2MB` or `1GB`.
fn page_size(field: &str, s: &str) -> Result<(), ResourceError> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["KB", "MB", "GB", "TB", "PB"].contains(&unit);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{s:?} is not a page size like 2MB or 1GB"),
        ))
    }
}

/// The controllers a `linux.resources.unified` key may name.
pub const V2_CONTROLLERS: &[&str] = &[
    "cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc",
];

fn unified_key(key: &str) -> Result<&'static str, ResourceError> {
    let field = format!("{F}.unified[{key:?}]");
    let ctrl = key.split('.').next().unwrap_or("");
    if key.contains('/') || key.contains('\0') || !key.contains('.') || key.ends_with('.') {
        return Err(invalid(field, "not a cgroup interface file name"));
    }
    V2_CONTROLLERS
        .iter()
        .find(|c| **c == ctrl)
        .copied()
        .ok_or_else(|| {
            invalid(
                field,
                format!(
                    "unknown key: {ctrl:?} is not a cgroup v2 controller (one of {})",
                    V2_CONTROLLERS.join(", ")
                ),
            )
        })
}

fn shares(v: u64) -> Result<u64, ResourceError> {
    if !(2..=262_144).contains(&v) {
        return Err(invalid(
            format!("{F}.cpu.shares"),
            format!("{v} is out of range 2-262144"),
        ));
    }
    Ok(v)
}

fn check_memory(m: &LinuxMemory) -> Result<(), ResourceError> {
    let f = format!("{F}.memory");
    limit(&format!("{f}.limit"), m.limit())?;
    limit(&format!("{f}.reservation"), m.reservation())?;
    limit(&format!("{f}.swap"), m.swap())?;
    if let (Some(l), Some(s)) = (limit("", m.limit())?, limit("", m.swap())?) {
        if l > 0 && s > 0 && s < l {
            return Err(invalid(
                format!("{f}.swap"),
                format!("memory+swap {s} is below the memory limit {l}"),
            ));
        }
    }
    Ok(())
}

fn check_cpu(c: &LinuxCpu) -> Result<(), ResourceError> {
    let f = format!("{F}.cpu");
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        shares(s)?;
    }
    match c.quota() {
        None | Some(0) | Some(-1) => {}
        Some(q) if q < 0 => {
            return Err(invalid(
                format!("{f}.quota"),
                format!("{q} is negative (use -1 for no limit)"),
            ))
        }
        Some(q) if q < 1000 => {
            return Err(invalid(
                format!("{f}.quota"),
                format!("{q} is below the kernel's minimum of 1000 µs"),
            ))
        }
        Some(_) => {}
    }
    if let Some(p) = c.period().filter(|p| *p != 0) {
        if !(1000..=1_000_000).contains(&p) {
            let why = if c.quota().is_some_and(|q| q > 0) {
                "the quota needs a period between 1000 µs and 1 s"
            } else {
                "a period is between 1000 µs and 1 s"
            };
            return Err(invalid(format!("{f}.period"), format!("{p}: {why}")));
        }
    }
    limit(&format!("{f}.realtimeRuntime"), c.realtime_runtime())?;
    if let Some(i) = c.idle() {
        if !(0..=1).contains(&i) {
            return Err(invalid(format!("{f}.idle"), format!("{i} is not 0 or 1")));
        }
    }
    if let Some(s) = c.cpus() {
        cpu_list(&format!("{f}.cpus"), s)?;
    }
    if let Some(s) = c.mems() {
        cpu_list(&format!("{f}.mems"), s)?;
    }
    Ok(())
}

fn blkio_weight(field: &str, w: Option<u16>) -> Result<Option<u16>, ResourceError> {
    match w {
        None | Some(0) => Ok(None),
        Some(w) if !(10..=1000).contains(&w) => {
            Err(invalid(field, format!("{w} is out of range 10-1000")))
        }
        Some(w) => Ok(Some(w)),
    }
}

fn device_numbers(field: &str, major: i64, minor: i64) -> Result<String, ResourceError> {
    if major < 0 || minor < 0 {
        return Err(invalid(
            field,
            format!("{major}:{minor} is not a device number"),
        ));
    }
    Ok(format!("{major}:{minor}"))
}

fn check_blkio(b: &LinuxBlockIo) -> Result<(), ResourceError> {
    let f = format!("{F}.blockIO");
    blkio_weight(&format!("{f}.weight"), b.weight())?;
    blkio_weight(&format!("{f}.leafWeight"), b.leaf_weight())?;
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let g = format!("{f}.weightDevice[{i}]");
        device_numbers(&g, d.major(), d.minor())?;
        blkio_weight(&format!("{g}.weight"), d.weight())?;
        blkio_weight(&format!("{g}.leafWeight"), d.leaf_weight())?;
    }
    for (name, list) in throttles(b) {
        for (i, d) in list.iter().enumerate() {
            device_numbers(&format!("{f}.{name}[{i}]"), d.major(), d.minor())?;
        }
    }
    Ok(())
}

fn list(v: &Option<Vec<LinuxThrottleDevice>>) -> &[LinuxThrottleDevice] {
    v.as_deref().unwrap_or(&[])
}

fn throttles(b: &LinuxBlockIo) -> [(&'static str, &[LinuxThrottleDevice]); 4] {
    let s = list;
    [
        ("throttleReadBpsDevice", s(b.throttle_read_bps_device())),
        ("throttleWriteBpsDevice", s(b.throttle_write_bps_device())),
        ("throttleReadIOPSDevice", s(b.throttle_read_iops_device())),
        ("throttleWriteIOPSDevice", s(b.throttle_write_iops_device())),
    ]
}

/// Checks everything that does not depend on the cgroup version.
pub fn validate(res: &LinuxResources) -> Result<(), ResourceError> {
    if let Some(m) = res.memory() {
        check_memory(m)?;
    }
    if let Some(c) = res.cpu() {
        check_cpu(c)?;
    }
    if let Some(p) = res.pids() {
        limit(&format!("{F}.pids.limit"), Some(p.limit()))?;
    }
    if let Some(b) = res.block_io() {
        check_blkio(b)?;
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        page_size(&format!("{F}.hugepageLimits[{i}].pageSize"), h.page_size())?;
        if h.limit() < -1 {
            return Err(invalid(
                format!("{F}.hugepageLimits[{i}].limit"),
                format!("{} is negative (use -1 for no limit)", h.limit()),
            ));
        }
    }
    if let Some(n) = res.network() {
        for (i, p) in n.priorities().iter().flatten().enumerate() {
            if p.name().is_empty() || p.name().contains(char::is_whitespace) {
                return Err(invalid(
                    format!("{F}.network.priorities[{i}].name"),
                    format!("{:?} is not an interface name", p.name()),
                ));
            }
        }
    }
    for key in res.unified().iter().flat_map(|u| u.keys()) {
        unified_key(key)?;
    }
    device_rules(res)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Conversions between the v1 and v2 scales (runc's formulas)

/// cpu.shares [2, 262144] → cpu.weight [1, 10000]: runc's linear map.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// blkio.weight [10, 1000] → io.weight [1, 10000]: runc's linear map.
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight).saturating_sub(10) * 9999) / 990
}

/// OCI `memory.swap` is memory+swap (the v1 memsw limit); v2's
/// `memory.swap.max` is swap alone. `None` leaves it unset; `Some(-1)` is
/// `max`.
pub fn swap_to_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<i64>, ResourceError> {
    let field = format!("{F}.memory.swap");
    match (swap, limit) {
        // Memory unlimited and swap unset: both unlimited (as runc).
        (None, Some(-1)) => Ok(Some(-1)),
        (None, _) => Ok(None),
        (Some(-1), _) => Ok(Some(-1)),
        (Some(_), None) | (Some(_), Some(-1)) => Err(invalid(
            field,
            "a swap limit needs a memory limit (memory+swap minus memory is the swap)",
        )),
        (Some(s), Some(l)) if s < l => Err(invalid(
            field,
            format!("memory+swap {s} is below the memory limit {l}"),
        )),
        (Some(s), Some(l)) => Ok(Some(s - l)),
    }
}

fn v1_num(v: i64) -> String {
    v.to_string()
}

fn v2_num(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

// ---------------------------------------------------------------------------
// cgroup v1

/// The writes for a cgroup v1 host, in order.
pub fn v1(res: &LinuxResources, facts: Facts) -> Result<Vec<Write>, ResourceError> {
    validate(res)?;
    if res.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(unsupported(
            format!("{F}.unified"),
            "v1",
            "unified keys are cgroup v2 interface files",
        ));
    }
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        v1_memory(m, &mut out)?;
    }
    if let Some(c) = res.cpu() {
        v1_cpu(c, &mut out)?;
    }
    if let Some(p) = res.pids() {
        if let Some(l) = limit("", Some(p.limit()))? {
            out.push(w("pids", "pids.max", v2_num(l), format!("{F}.pids.limit")));
        }
    }
    if let Some(b) = res.block_io() {
        v1_blkio(b, facts, &mut out)?;
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("{F}.hugepageLimits[{i}]");
        let size = h.page_size();
        let v = v1_num(h.limit());
        out.push(w(
            "hugetlb",
            format!("hugetlb.{size}.limit_in_bytes"),
            v.clone(),
            field.clone(),
        ));
        out.push(
            w(
                "hugetlb",
                format!("hugetlb.{size}.rsvd.limit_in_bytes"),
                v,
                field,
            )
            .when(When::IfPresent),
        );
    }
    if let Some(n) = res.network() {
        if let Some(id) = n.class_id() {
            out.push(w(
                "net_cls",
                "net_cls.classid",
                id.to_string(),
                format!("{F}.network.classID"),
            ));
        }
        for (i, p) in n.priorities().iter().flatten().enumerate() {
            out.push(w(
                "net_prio",
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
                format!("{F}.network.priorities[{i}]"),
            ));
        }
    }
    rdma(res, &mut out);
    if res.devices().is_some() {
        // A fresh start from "deny everything", then the rules in order.
        out.push(w("devices", "devices.deny", "a", format!("{F}.devices")));
        for (i, r) in device_rules(res)?.iter().enumerate() {
            let file = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            out.push(w(
                "devices",
                file,
                r.to_string(),
                format!("{F}.devices[{i}]"),
            ));
        }
    }
    Ok(out)
}

fn v1_memory(m: &LinuxMemory, out: &mut Vec<Write>) -> Result<(), ResourceError> {
    let f = format!("{F}.memory");
    let lim = limit("", m.limit())?;
    let mut swap = limit("", m.swap())?;
    if lim == Some(-1) && swap.is_none() {
        // As runc: an unlimited memory with swap unset lifts both.
        swap = Some(-1);
    }
    if let Some(l) = lim {
        out.push(
            w(
                "memory",
                "memory.limit_in_bytes",
                v1_num(l),
                format!("{f}.limit"),
            )
            .when(When::Deferrable),
        );
    }
    if let Some(s) = swap {
        out.push(w(
            "memory",
            "memory.memsw.limit_in_bytes",
            v1_num(s),
            format!("{f}.swap"),
        ));
    }
    if let Some(r) = limit("", m.reservation())? {
        out.push(w(
            "memory",
            "memory.soft_limit_in_bytes",
            v1_num(r),
            format!("{f}.reservation"),
        ));
    }
    // kernel and kernelTCP are ignored, as runc 1.1+ ignores them (with a
    // warning at `create`: see `ignored_memory_warning`); so is useHierarchy
    // (runc never read it; kernels since 5.x refuse to turn it off).
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(invalid(
                format!("{f}.swappiness"),
                format!("{s} is out of range 0-100"),
            ));
        }
        out.push(w(
            "memory",
            "memory.swappiness",
            s.to_string(),
            format!("{f}.swappiness"),
        ));
    }
    if m.disable_oom_killer() == Some(true) {
        out.push(w(
            "memory",
            "memory.oom_control",
            "1",
            format!("{f}.disableOOMKiller"),
        ));
    }
    Ok(())
}

fn v1_cpu(c: &LinuxCpu, out: &mut Vec<Write>) -> Result<(), ResourceError> {
    let f = format!("{F}.cpu");
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        out.push(w(
            "cpu",
            "cpu.shares",
            shares(s)?.to_string(),
            format!("{f}.shares"),
        ));
    }
    if let Some(p) = c.period().filter(|p| *p != 0) {
        out.push(
            w(
                "cpu",
                "cpu.cfs_period_us",
                p.to_string(),
                format!("{f}.period"),
            )
            .when(When::Deferrable),
        );
    }
    if let Some(q) = c.quota().filter(|q| *q != 0) {
        out.push(w(
            "cpu",
            "cpu.cfs_quota_us",
            v1_num(q),
            format!("{f}.quota"),
        ));
    }
    if let Some(b) = c.burst() {
        out.push(w(
            "cpu",
            "cpu.cfs_burst_us",
            b.to_string(),
            format!("{f}.burst"),
        ));
    }
    if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
        out.push(w(
            "cpu",
            "cpu.rt_period_us",
            p.to_string(),
            format!("{f}.realtimePeriod"),
        ));
    }
    if let Some(r) = limit("", c.realtime_runtime())? {
        out.push(w(
            "cpu",
            "cpu.rt_runtime_us",
            v1_num(r),
            format!("{f}.realtimeRuntime"),
        ));
    }
    if let Some(i) = c.idle() {
        out.push(w("cpu", "cpu.idle", i.to_string(), format!("{f}.idle")));
    }
    cpuset(c, out);
    Ok(())
}

fn cpuset(c: &LinuxCpu, out: &mut Vec<Write>) {
    let f = format!("{F}.cpu");
    if let Some(s) = c.cpus().as_deref().filter(|s| !s.trim().is_empty()) {
        out.push(w("cpuset", "cpuset.cpus", s.trim(), format!("{f}.cpus")));
    }
    if let Some(s) = c.mems().as_deref().filter(|s| !s.trim().is_empty()) {
        out.push(w("cpuset", "cpuset.mems", s.trim(), format!("{f}.mems")));
    }
}

fn v1_blkio(b: &LinuxBlockIo, facts: Facts, out: &mut Vec<Write>) -> Result<(), ResourceError> {
    let f = format!("{F}.blockIO");
    let (weight, weight_device) = if facts.bfq {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    } else {
        ("blkio.weight", "blkio.weight_device")
    };
    if let Some(v) = blkio_weight("", b.weight())? {
        out.push(w("blkio", weight, v.to_string(), format!("{f}.weight")));
    }
    if let Some(v) = blkio_weight("", b.leaf_weight())? {
        out.push(w(
            "blkio",
            "blkio.leaf_weight",
            v.to_string(),
            format!("{f}.leafWeight"),
        ));
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let g = format!("{f}.weightDevice[{i}]");
        let dev = device_numbers(&g, d.major(), d.minor())?;
        if let Some(v) = blkio_weight("", d.weight())? {
            out.push(w(
                "blkio",
                weight_device,
                format!("{dev} {v}"),
                format!("{g}.weight"),
            ));
        }
        if let Some(v) = blkio_weight("", d.leaf_weight())? {
            out.push(w(
                "blkio",
                "blkio.leaf_weight_device",
                format!("{dev} {v}"),
                format!("{g}.leafWeight"),
            ));
        }
    }
    let files = [
        "blkio.throttle.read_bps_device",
        "blkio.throttle.write_bps_device",
        "blkio.throttle.read_iops_device",
        "blkio.throttle.write_iops_device",
    ];
    for ((name, list), file) in throttles(b).into_iter().zip(files) {
        for (i, d) in list.iter().enumerate() {
            let g = format!("{f}.{name}[{i}]");
            let dev = device_numbers(&g, d.major(), d.minor())?;
            out.push(w("blkio", file, format!("{dev} {}", d.rate()), g));
        }
    }
    Ok(())
}

fn rdma(res: &LinuxResources, out: &mut Vec<Write>) {
    let Some(map) = res.rdma() else {
        return;
    };
    let mut devs: Vec<_> = map.iter().collect();
    devs.sort_by(|a, b| a.0.cmp(b.0));
    for (dev, r) in devs {
        let n = |v: Option<u32>| v.map_or_else(|| "max".to_string(), |v| v.to_string());
        out.push(w(
            "rdma",
            "rdma.max",
            format!(
                "{dev} hca_handle={} hca_object={}",
                n(r.hca_handles()),
                n(r.hca_objects())
            ),
            format!("{F}.rdma[{dev:?}]"),
        ));
    }
}

// ---------------------------------------------------------------------------
// cgroup v2

/// The writes for a cgroup v2 host, in order (device rules are not files
/// on v2: see [`device_rules`] and the eBPF program).
pub fn v2(res: &LinuxResources, facts: Facts) -> Result<Vec<Write>, ResourceError> {
    validate(res)?;
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        v2_memory(m, &mut out)?;
    }
    if let Some(c) = res.cpu() {
        v2_cpu(c, &mut out)?;
    }
    if let Some(p) = res.pids() {
        if let Some(l) = limit("", Some(p.limit()))? {
            out.push(w("pids", "pids.max", v2_num(l), format!("{F}.pids.limit")));
        }
    }
    if let Some(b) = res.block_io() {
        v2_io(b, facts, &mut out)?;
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("{F}.hugepageLimits[{i}]");
        let size = h.page_size();
        let v = v2_num(h.limit());
        out.push(w(
            "hugetlb",
            format!("hugetlb.{size}.max"),
            v.clone(),
            field.clone(),
        ));
        out.push(w("hugetlb", format!("hugetlb.{size}.rsvd.max"), v, field).when(When::IfPresent));
    }
    // linux.resources.network (net_cls, net_prio: v1 controllers) is
    // ignored on v2, as runc ignores it.
    rdma(res, &mut out);
    if let Some(u) = res.unified() {
        let mut keys: Vec<_> = u.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in keys {
            let ctrl = unified_key(k)?;
            out.push(w(ctrl, k.clone(), v.clone(), format!("{F}.unified[{k:?}]")));
        }
    }
    Ok(out)
}

fn v2_memory(m: &LinuxMemory, out: &mut Vec<Write>) -> Result<(), ResourceError> {
    let f = format!("{F}.memory");
    let lim = limit("", m.limit())?;
    if let Some(s) = swap_to_v2(limit("", m.swap())?, lim)? {
        // Without swap accounting there is no memory.swap.max; "max" and
        // "0" then mean what the kernel does anyway.
        let when = if s <= 0 {
            When::IfPresent
        } else {
            When::Always
        };
        out.push(w("memory", "memory.swap.max", v2_num(s), format!("{f}.swap")).when(when));
    }
    if let Some(l) = lim {
        out.push(w("memory", "memory.max", v2_num(l), format!("{f}.limit")));
    }
    if let Some(r) = limit("", m.reservation())? {
        out.push(w(
            "memory",
            "memory.low",
            v2_num(r),
            format!("{f}.reservation"),
        ));
    }
    // What v2 has no file for is ignored, as runc ignores it there:
    // swappiness, disableOOMKiller, useHierarchy; kernelTCP everywhere (see
    // `v1_memory`).
    Ok(())
}

fn v2_cpu(c: &LinuxCpu, out: &mut Vec<Write>) -> Result<(), ResourceError> {
    let f = format!("{F}.cpu");
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        out.push(w(
            "cpu",
            "cpu.weight",
            shares_to_weight(shares(s)?).to_string(),
            format!("{f}.shares"),
        ));
    }
    let quota = c.quota().filter(|q| *q != 0);
    let period = c.period().filter(|p| *p != 0);
    if quota.is_some() || period.is_some() {
        let mut v = match quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        if let Some(p) = period {
            v.push_str(&format!(" {p}"));
        }
        let field = if quota.is_some() { "quota" } else { "period" };
        out.push(w("cpu", "cpu.max", v, format!("{f}.{field}")));
    }
    if let Some(b) = c.burst() {
        out.push(w(
            "cpu",
            "cpu.max.burst",
            b.to_string(),
            format!("{f}.burst"),
        ));
    }
    if c.realtime_runtime().is_some_and(|r| r != 0) || c.realtime_period().is_some_and(|p| p != 0) {
        let field = if c.realtime_runtime().is_some_and(|r| r != 0) {
            "realtimeRuntime"
        } else {
            "realtimePeriod"
        };
        return Err(unsupported(
            format!("{f}.{field}"),
            "v2",
            "the cpu controller has no realtime group scheduling",
        ));
    }
    if let Some(i) = c.idle() {
        out.push(w("cpu", "cpu.idle", i.to_string(), format!("{f}.idle")));
    }
    cpuset(c, out);
    Ok(())
}

fn v2_io(b: &LinuxBlockIo, facts: Facts, out: &mut Vec<Write>) -> Result<(), ResourceError> {
    let f = format!("{F}.blockIO");
    if let Some(v) = blkio_weight("", b.weight())? {
        let (file, val) = if facts.bfq {
            ("io.bfq.weight", u64::from(v))
        } else {
            ("io.weight", blkio_to_io_weight(v))
        };
        out.push(w("io", file, val.to_string(), format!("{f}.weight")));
    }
    if blkio_weight("", b.leaf_weight())?.is_some() {
        return Err(unsupported(
            format!("{f}.leafWeight"),
            "v2",
            "there are no leaf weights",
        ));
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let g = format!("{f}.weightDevice[{i}]");
        let dev = device_numbers(&g, d.major(), d.minor())?;
        if let Some(v) = blkio_weight("", d.weight())? {
            let (file, val) = if facts.bfq {
                ("io.bfq.weight", u64::from(v))
            } else {
                ("io.weight", blkio_to_io_weight(v))
            };
            out.push(w("io", file, format!("{dev} {val}"), format!("{g}.weight")));
        }
        if blkio_weight("", d.leaf_weight())?.is_some() {
            return Err(unsupported(
                format!("{g}.leafWeight"),
                "v2",
                "there are no leaf weights",
            ));
        }
    }
    let keys = ["rbps", "wbps", "riops", "wiops"];
    for ((name, list), key) in throttles(b).into_iter().zip(keys) {
        for (i, d) in list.iter().enumerate() {
            let g = format!("{f}.{name}[{i}]");
            let dev = device_numbers(&g, d.major(), d.minor())?;
            // 0 removes the v1 rule; "max" is v2's way to say it.
            let rate = if d.rate() == 0 {
                "max".to_string()
            } else {
                d.rate().to_string()
            };
            out.push(w("io", "io.max", format!("{dev} {key}={rate}"), g));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    /// (file, value) pairs, for compact assertions.
    fn fv(ws: &[Write]) -> Vec<(&str, &str)> {
        ws.iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect()
    }

    fn field_of(e: ResourceError) -> String {
        match e {
            ResourceError::Invalid { field, .. } | ResourceError::Unsupported { field, .. } => {
                field
            }
        }
    }

    #[test]
    fn memory_v1() {
        let r = res(serde_json::json!({"memory": {
            "limit": 104857600, "reservation": 52428800, "swap": 209715200,
            "swappiness": 10, "disableOOMKiller": true, "useHierarchy": true,
            "kernelTCP": 1048576
        }}));
        let ws = v1(&r, Facts::default()).unwrap();
        // kernelTCP and useHierarchy are ignored, as runc 1.1.5 ignores them.
        assert_eq!(
            fv(&ws),
            vec![
                ("memory.limit_in_bytes", "104857600"),
                ("memory.memsw.limit_in_bytes", "209715200"),
                ("memory.soft_limit_in_bytes", "52428800"),
                ("memory.swappiness", "10"),
                ("memory.oom_control", "1"),
            ]
        );
        assert_eq!(ws[0].when, When::Deferrable);
        assert!(ws.iter().all(|w| w.controller == "memory"));
        assert_eq!(ws[1].field, "linux.resources.memory.swap");
        // Off is ignored too (kernels since 5.x refuse it; runc never wrote it).
        let r = res(serde_json::json!({"memory": {"useHierarchy": false}}));
        assert!(v1(&r, Facts::default()).unwrap().is_empty());
        // A swappiness out of range is refused on v1, as by runc there.
        let r = res(serde_json::json!({"memory": {"swappiness": 101}}));
        assert_eq!(
            field_of(v1(&r, Facts::default()).unwrap_err()),
            "linux.resources.memory.swappiness"
        );
    }

    #[test]
    fn memory_unlimited_lifts_swap_too() {
        let r = res(serde_json::json!({"memory": {"limit": -1}}));
        assert_eq!(
            fv(&v1(&r, Facts::default()).unwrap()),
            vec![
                ("memory.limit_in_bytes", "-1"),
                ("memory.memsw.limit_in_bytes", "-1")
            ]
        );
        assert_eq!(
            fv(&v2(&r, Facts::default()).unwrap()),
            vec![("memory.swap.max", "max"), ("memory.max", "max")]
        );
    }

    #[test]
    fn memory_v2_swap_is_swap_minus_memory() {
        let r = res(serde_json::json!({"memory": {
            "limit": 104857600, "reservation": 52428800, "swap": 209715200
        }}));
        let ws = v2(&r, Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("memory.swap.max", "104857600"),
                ("memory.max", "104857600"),
                ("memory.low", "52428800"),
            ]
        );
        assert_eq!(ws[0].when, When::Always);
        // swap == limit: no swap at all, harmless without swap accounting.
        let r = res(serde_json::json!({"memory": {"limit": 1000000, "swap": 1000000}}));
        let ws = v2(&r, Facts::default()).unwrap();
        assert_eq!(ws[0].value, "0");
        assert_eq!(ws[0].when, When::IfPresent);
    }

    #[test]
    fn swap_conversion() {
        assert_eq!(swap_to_v2(None, None), Ok(None));
        assert_eq!(swap_to_v2(None, Some(100)), Ok(None));
        assert_eq!(swap_to_v2(None, Some(-1)), Ok(Some(-1)));
        assert_eq!(swap_to_v2(Some(-1), Some(100)), Ok(Some(-1)));
        assert_eq!(swap_to_v2(Some(300), Some(100)), Ok(Some(200)));
        assert!(swap_to_v2(Some(300), None).is_err());
        assert!(swap_to_v2(Some(300), Some(-1)).is_err());
        assert!(swap_to_v2(Some(50), Some(100)).is_err());
    }

    #[test]
    fn memory_v1_only_fields_are_ignored_on_v2() {
        // As runc 1.1.5 does on v2: no file to write, no error; even a
        // swappiness v1 would refuse.
        for v in [
            serde_json::json!({"swappiness": 10}),
            serde_json::json!({"swappiness": 101}),
            serde_json::json!({"disableOOMKiller": true}),
            serde_json::json!({"useHierarchy": false}),
            serde_json::json!({"kernelTCP": 4096, "kernel": 8192}),
        ] {
            let r = res(serde_json::json!({ "memory": v }));
            assert!(v2(&r, Facts::default()).unwrap().is_empty(), "{v}");
        }
        let r = res(serde_json::json!({"memory": {"limit": 1048576, "disableOOMKiller": true}}));
        assert_eq!(
            fv(&v2(&r, Facts::default()).unwrap()),
            vec![("memory.max", "1048576")]
        );
    }

    #[test]
    fn cpu_v1() {
        let r = res(serde_json::json!({"cpu": {
            "shares": 512, "quota": 50000, "period": 100000, "burst": 1000,
            "realtimeRuntime": 950000, "realtimePeriod": 1000000, "idle": 1,
            "cpus": "0-1", "mems": "0"
        }}));
        let ws = v1(&r, Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("cpu.cfs_burst_us", "1000"),
                ("cpu.rt_period_us", "1000000"),
                ("cpu.rt_runtime_us", "950000"),
                ("cpu.idle", "1"),
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0"),
            ]
        );
        assert_eq!(ws[1].when, When::Deferrable);
        assert_eq!(ws[7].controller, "cpuset");
        let r = res(serde_json::json!({"cpu": {"quota": -1}}));
        assert_eq!(
            fv(&v1(&r, Facts::default()).unwrap()),
            vec![("cpu.cfs_quota_us", "-1")]
        );
    }

    #[test]
    fn cpu_v2() {
        let r = res(serde_json::json!({"cpu": {
            "shares": 1024, "quota": 50000, "period": 100000, "burst": 1000, "idle": 0,
            "cpus": "1", "mems": "0"
        }}));
        assert_eq!(
            fv(&v2(&r, Facts::default()).unwrap()),
            vec![
                ("cpu.weight", "39"),
                ("cpu.max", "50000 100000"),
                ("cpu.max.burst", "1000"),
                ("cpu.idle", "0"),
                ("cpuset.cpus", "1"),
                ("cpuset.mems", "0"),
            ]
        );
        let one = |cpu: serde_json::Value| {
            fv(&v2(&res(serde_json::json!({ "cpu": cpu })), Facts::default()).unwrap())
                .into_iter()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(one(serde_json::json!({"quota": 20000}))[0].1, "20000");
        assert_eq!(one(serde_json::json!({"quota": -1}))[0].1, "max");
        assert_eq!(one(serde_json::json!({"period": 50000}))[0].1, "max 50000");
        assert_eq!(
            one(serde_json::json!({"quota": -1, "period": 20000}))[0].1,
            "max 20000"
        );
        let e = v2(
            &res(serde_json::json!({"cpu": {"realtimeRuntime": 1000}})),
            Facts::default(),
        )
        .unwrap_err();
        assert_eq!(field_of(e), "linux.resources.cpu.realtimeRuntime");
    }

    #[test]
    fn shares_to_weight_is_runcs_formula() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(500), 4950);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }

    #[test]
    fn invalid_cpu() {
        for (cpu, field) in [
            (serde_json::json!({"quota": -5}), "quota"),
            (serde_json::json!({"quota": 500}), "quota"),
            (serde_json::json!({"quota": 50000, "period": 10}), "period"),
            (serde_json::json!({"period": 2000000}), "period"),
            (serde_json::json!({"shares": 1}), "shares"),
            (serde_json::json!({"shares": 300000}), "shares"),
            (serde_json::json!({"idle": 2}), "idle"),
            (serde_json::json!({"cpus": "0-x"}), "cpus"),
            (serde_json::json!({"mems": "3-1"}), "mems"),
        ] {
            let r = res(serde_json::json!({ "cpu": cpu }));
            let e = validate(&r).unwrap_err();
            assert_eq!(field_of(e), format!("linux.resources.cpu.{field}"), "{cpu}");
        }
    }

    #[test]
    fn invalid_limits_name_the_field() {
        for (v, field) in [
            (serde_json::json!({"memory": {"limit": -2}}), "memory.limit"),
            (
                serde_json::json!({"memory": {"reservation": -100}}),
                "memory.reservation",
            ),
            (
                serde_json::json!({"memory": {"limit": 200, "swap": 100}}),
                "memory.swap",
            ),
            (serde_json::json!({"pids": {"limit": -7}}), "pids.limit"),
            (
                serde_json::json!({"blockIO": {"weight": 5}}),
                "blockIO.weight",
            ),
            (
                serde_json::json!({"blockIO": {"throttleReadBpsDevice": [{"major": -1, "minor": 0, "rate": 1}]}}),
                "blockIO.throttleReadBpsDevice[0]",
            ),
            (
                serde_json::json!({"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}),
                "hugepageLimits[0].pageSize",
            ),
            (
                serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": -3}]}),
                "hugepageLimits[0].limit",
            ),
            (
                serde_json::json!({"unified": {"bogus.key": "1"}}),
                "unified[\"bogus.key\"]",
            ),
            (
                serde_json::json!({"unified": {"../memory.max": "1"}}),
                "unified[\"../memory.max\"]",
            ),
            (
                serde_json::json!({"devices": [{"allow": true, "type": "p", "access": "rwm"}]}),
                "devices[0].type",
            ),
            (
                serde_json::json!({"devices": [{"allow": true, "type": "c", "access": "rwx"}]}),
                "devices[0].access",
            ),
            (
                serde_json::json!({"devices": [{"allow": true, "type": "c", "major": -4}]}),
                "devices[0].major",
            ),
        ] {
            let e = validate(&res(v.clone())).unwrap_err();
            assert_eq!(field_of(e), format!("linux.resources.{field}"), "{v}");
        }
    }

    #[test]
    fn pids() {
        let r = res(serde_json::json!({"pids": {"limit": 50}}));
        assert_eq!(
            fv(&v1(&r, Facts::default()).unwrap()),
            vec![("pids.max", "50")]
        );
        assert_eq!(
            fv(&v2(&r, Facts::default()).unwrap()),
            vec![("pids.max", "50")]
        );
        let r = res(serde_json::json!({"pids": {"limit": -1}}));
        assert_eq!(
            fv(&v1(&r, Facts::default()).unwrap()),
            vec![("pids.max", "max")]
        );
        let r = res(serde_json::json!({"pids": {"limit": 0}}));
        assert!(v2(&r, Facts::default()).unwrap().is_empty());
    }

    fn blkio_spec() -> LinuxResources {
        res(serde_json::json!({"blockIO": {
            "weight": 500,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 2097152}],
            "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]
        }}))
    }

    #[test]
    fn blkio_v1() {
        let ws = v1(&blkio_spec(), Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("blkio.weight", "500"),
                ("blkio.weight_device", "8:0 300"),
                ("blkio.throttle.read_bps_device", "8:0 1048576"),
                ("blkio.throttle.write_bps_device", "8:16 2097152"),
                ("blkio.throttle.read_iops_device", "8:0 100"),
                ("blkio.throttle.write_iops_device", "8:0 0"),
            ]
        );
        let ws = v1(&blkio_spec(), Facts { bfq: true }).unwrap();
        assert_eq!(ws[0].file, "blkio.bfq.weight");
        assert_eq!(ws[1].file, "blkio.bfq.weight_device");
        assert_eq!(
            ws[2].field,
            "linux.resources.blockIO.throttleReadBpsDevice[0]"
        );
    }

    #[test]
    fn io_v2() {
        let ws = v2(&blkio_spec(), Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("io.weight", "4950"),
                ("io.weight", "8:0 2930"),
                ("io.max", "8:0 rbps=1048576"),
                ("io.max", "8:16 wbps=2097152"),
                ("io.max", "8:0 riops=100"),
                ("io.max", "8:0 wiops=max"),
            ]
        );
        let ws = v2(&blkio_spec(), Facts { bfq: true }).unwrap();
        assert_eq!(
            fv(&ws)[..2],
            [("io.bfq.weight", "500"), ("io.bfq.weight", "8:0 300")]
        );
        let r = res(serde_json::json!({"blockIO": {"leafWeight": 100}}));
        assert_eq!(
            field_of(v2(&r, Facts::default()).unwrap_err()),
            "linux.resources.blockIO.leafWeight"
        );
    }

    #[test]
    fn hugetlb() {
        let r = res(serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}));
        let ws = v1(&r, Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("hugetlb.2MB.limit_in_bytes", "4194304"),
                ("hugetlb.2MB.rsvd.limit_in_bytes", "4194304")
            ]
        );
        assert_eq!(ws[1].when, When::IfPresent);
        let ws = v2(&r, Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("hugetlb.2MB.max", "4194304"),
                ("hugetlb.2MB.rsvd.max", "4194304")
            ]
        );
        assert_eq!(ws[0].field, "linux.resources.hugepageLimits[0]");
    }

    #[test]
    fn network_is_v1_only_and_ignored_on_v2() {
        let r = res(serde_json::json!({"network": {
            "classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]
        }}));
        let ws = v1(&r, Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("net_cls.classid", "1048577"),
                ("net_prio.ifpriomap", "eth0 5")
            ]
        );
        assert_eq!(ws[1].controller, "net_prio");
        // Ignored on v2, as runc ignores it there.
        assert!(v2(&r, Facts::default()).unwrap().is_empty());
    }

    #[test]
    fn rdma_both() {
        let r = res(serde_json::json!({"rdma": {"mlx5_1": {"hcaHandles": 3}}}));
        let want = vec![("rdma.max", "mlx5_1 hca_handle=3 hca_object=max")];
        assert_eq!(fv(&v1(&r, Facts::default()).unwrap()), want);
        assert_eq!(fv(&v2(&r, Facts::default()).unwrap()), want);
    }

    #[test]
    fn unified_is_v2_only_and_comes_last() {
        let r = res(serde_json::json!({
            "pids": {"limit": 10},
            "unified": {"pids.max": "20", "memory.high": "1000000"}
        }));
        let ws = v2(&r, Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("pids.max", "10"),
                ("memory.high", "1000000"),
                ("pids.max", "20")
            ]
        );
        assert_eq!(ws[1].controller, "memory");
        assert_eq!(ws[1].field, "linux.resources.unified[\"memory.high\"]");
        let e = v1(&r, Facts::default()).unwrap_err();
        assert!(matches!(
            e,
            ResourceError::Unsupported { version: "v1", .. }
        ));
        assert_eq!(field_of(e), "linux.resources.unified");
    }

    #[test]
    fn device_rules_v1_start_from_deny_all() {
        let r = res(serde_json::json!({"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            {"allow": true, "type": "b", "major": 8, "access": "m"},
            {"allow": false, "type": "c", "major": 5, "minor": 1}
        ]}));
        let ws = v1(&r, Facts::default()).unwrap();
        assert_eq!(
            fv(&ws),
            vec![
                ("devices.deny", "a"),
                ("devices.deny", "a *:* rwm"),
                ("devices.allow", "c 1:3 rw"),
                ("devices.allow", "b 8:* m"),
                ("devices.deny", "c 5:1 rwm"),
            ]
        );
        assert_eq!(ws[2].field, "linux.resources.devices[1]");
        // No device list: nothing is written (update).
        assert!(v1(&LinuxResources::default(), Facts::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn create_appends_the_default_allowlist_only() {
        let spec = res(serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}));
        let r = for_create(Some(&spec)).unwrap();
        let rules: Vec<String> = device_rules(&r)
            .unwrap()
            .iter()
            .map(|r| format!("{} {r}", if r.allow { "allow" } else { "deny" }))
            .collect();
        assert_eq!(
            rules,
            vec![
                "deny a *:* rwm",
                "allow c *:* m",
                "allow b *:* m",
                "allow c 1:3 rwm",
                "allow c 1:8 rwm",
                "allow c 1:7 rwm",
                "allow c 5:0 rwm",
                "allow c 1:5 rwm",
                "allow c 1:9 rwm",
                "allow c 136:* rwm",
                "allow c 5:2 rwm",
                "allow c 10:200 rwm",
            ]
        );
        // Without a spec there is still a device list (deny by default).
        let r = for_create(None).unwrap();
        assert_eq!(device_rules(&r).unwrap().len(), 11);
        assert!(for_create(Some(&res(serde_json::json!({"memory": {"limit": -9}})))).is_err());
    }

    #[test]
    fn rule_display_and_wildcards() {
        let r = device_rule(
            0,
            &serde_json::from_value(serde_json::json!({"allow": true, "major": -1})).unwrap(),
        )
        .unwrap();
        assert!(r.is_everything());
        assert_eq!(r.to_string(), "a *:* rwm");
    }
}
