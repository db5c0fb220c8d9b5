//! The commands that work on a container's cgroup: `pause`, `resume`, `ps`,
//! `events` and `update`, with runc's flags and output.

use super::{io_err, CmdError};
use crate::cgroups::stats::Event;
use crate::cgroups::CgroupManager;
use crate::cli::Cli;
use crate::state::{self, Container, Record, Status};
use clap::Args;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `ps` flags.
#[derive(Debug, Args, Clone)]
pub struct PsArgs {
    /// table or json (json prints the pids only).
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// The container id.
    pub id: String,
    /// Options for ps(1) (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// `events` flags.
#[derive(Debug, Args, Clone)]
pub struct EventsArgs {
    /// The container id.
    pub id: String,
    /// Print the statistics once and exit.
    #[arg(long)]
    pub stats: bool,
    /// How often statistics are printed (Go duration: 5s, 500ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
}

/// `update` flags: runc's. Values of the memory flags take units (`512m`,
/// `1g`); `-1` lifts a limit.
#[derive(Debug, Args, Clone, Default)]
pub struct UpdateArgs {
    /// The container id.
    pub id: String,
    /// A JSON file of `linux.resources` ("-" for stdin); the other flags are
    /// then ignored.
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Block I/O weight (10-1000).
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CFS period (µs).
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CFS quota (µs per period; -1 for none).
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share", alias = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// Realtime period (µs).
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// Realtime runtime (µs per period).
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// SCHED_IDLE for the cgroup (1) or not (0).
    #[arg(long = "cpu-idle")]
    pub cpu_idle: Option<i64>,
    /// CPUs to use (0-3,5).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_bytes)]
    pub memory: Option<i64>,
    /// Memory reservation (soft limit).
    #[arg(long = "memory-reservation", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub memory_swap: Option<i64>,
    /// Maximum number of pids (-1 for no limit).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Obsolete (kernel memory limits are gone from the kernel); ignored.
    #[arg(long = "kernel-memory", hide = true, allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// Obsolete; ignored.
    #[arg(long = "kernel-memory-tcp", hide = true, allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Intel RDT L3 cache schema (not supported).
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not supported).
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
}

/// Parses a Go duration: a sequence of numbers with units (ns, us, µs, ms,
/// s, m, h), e.g. `1m30s`, `1.5s`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 5s, 500ms or 1m30s");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[u..];
    }
    if total <= 0.0 {
        return Err(format!("{s:?}: the interval must be positive"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a size in bytes with an optional binary unit (`512m`, `1G`,
/// `100k`, `4096`, `-1`), as runc's flags accept.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let bad = || format!("{s:?} is not a size like 1024, 512m or 1g (or -1)");
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        Some('t') => (&body[..body.len() - 1], 40),
        Some('p') => (&body[..body.len() - 1], 50),
        _ => (body, 0),
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if v.is_nan() || v < 0.0 {
        return Err(bad());
    }
    let bytes = v * (1u64 << shift) as f64;
    if bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// The record and whether its init is alive, read without the container's
/// lock: these commands only look at or thaw the cgroup, and must not wait
/// behind a command that holds the lock (an exec into a paused container
/// holds it until the container is resumed).
fn peek(cli: &Cli, id: &str) -> Result<(Record, bool), CmdError> {
    let r = Container::peek(&cli.root, id)?;
    let alive = state::process_alive(r.pid, r.init_start_time);
    Ok((r, alive))
}

/// `pause`: freezes a created or running container.
pub fn pause(cli: &Cli, id: &str) -> Result<(), CmdError> {
    let c = Container::load(&cli.root, id)?;
    match c.status() {
        Status::Running | Status::Created => {}
        Status::Paused => {
            return Err(CmdError::BadStatus {
                id: id.to_string(),
                action: "pause",
                status: "paused",
            })
        }
        _ => return Err(CmdError::NotRunning(id.to_string())),
    }
    c.record.cgroup().freeze()?;
    Ok(())
}

/// `resume`: thaws a paused container.
pub fn resume(cli: &Cli, id: &str) -> Result<(), CmdError> {
    let (record, alive) = peek(cli, id)?;
    if !alive {
        return Err(CmdError::NotRunning(id.to_string()));
    }
    let cg = record.cgroup();
    if !cg.is_frozen() {
        let created = cli.root.join(id).join(state::EXEC_FIFO).exists();
        return Err(CmdError::BadStatus {
            id: id.to_string(),
            action: "resume",
            status: if created { "created" } else { "running" },
        });
    }
    cg.thaw()?;
    Ok(())
}

/// `ps`: the container's processes, as `ps` prints them or as a JSON list
/// of pids.
pub fn ps(cli: &Cli, a: &PsArgs) -> Result<(), CmdError> {
    let (record, alive) = peek(cli, &a.id)?;
    let pids = if alive {
        record.cgroup().pids()?
    } else {
        Vec::new()
    };
    let mut out = std::io::stdout().lock();
    if a.format == "json" {
        let s = serde_json::to_string(&pids)
            .map_err(|e| io_err("ps JSON")(std::io::Error::other(e)))?;
        return writeln!(out, "{s}").map_err(io_err("write"));
    }
    let args: Vec<String> = if a.ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        a.ps_args.clone()
    };
    let o = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(io_err("run ps"))?;
    if !o.status.success() {
        return Err(CmdError::Ps {
            reason: format!(
                "ps {}: {}: {}",
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        });
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let lines = filter_ps(&text, &pids).map_err(|reason| CmdError::Ps { reason })?;
    for l in lines {
        writeln!(out, "{l}").map_err(io_err("write"))?;
    }
    Ok(())
}

/// The header of `ps` output and the rows whose PID column is in `pids`.
pub fn filter_ps<'a>(text: &'a str, pids: &[i32]) -> Result<Vec<&'a str>, String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|f| f == "PID")
        .ok_or_else(|| format!("no PID column in the ps header {header:?}"))?;
    let mut out = vec![header];
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let pid = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push(l);
        }
    }
    Ok(out)
}

fn print_event(ev: &Event<'_>) -> Result<(), CmdError> {
    let s =
        serde_json::to_string(ev).map_err(|e| io_err("event JSON")(std::io::Error::other(e)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")
        .and_then(|_| out.flush())
        .map_err(io_err("write"))
}

/// How often the OOM counter is looked at between statistics.
const OOM_POLL: Duration = Duration::from_millis(100);

/// `events`: statistics every `interval` (or once with `--stats`) and an
/// `oom` event whenever the OOM killer strikes, as JSON lines, until the
/// container stops.
pub fn events(cli: &Cli, a: &EventsArgs) -> Result<(), CmdError> {
    let (record, alive) = peek(cli, &a.id)?;
    if !alive {
        return Err(CmdError::NotRunning(a.id.clone()));
    }
    let cg = record.cgroup();
    if a.stats {
        let s = cg.stats()?;
        return print_event(&Event {
            kind: "stats",
            id: &a.id,
            data: Some(s),
        });
    }
    let mut ooms = cg.oom_kill_count().unwrap_or(0);
    let mut next = Instant::now() + a.interval;
    let report_ooms = |ooms: &mut u64| -> Result<(), CmdError> {
        if let Ok(n) = cg.oom_kill_count() {
            for _ in *ooms..n {
                print_event(&Event {
                    kind: "oom",
                    id: &a.id,
                    data: None,
                })?;
            }
            *ooms = (*ooms).max(n);
        }
        Ok(())
    };
    loop {
        report_ooms(&mut ooms)?;
        if !state::process_alive(record.pid, record.init_start_time) {
            // One last look: the kill that ended it may be an OOM kill.
            report_ooms(&mut ooms)?;
            return Ok(());
        }
        let now = Instant::now();
        if now >= next {
            // The cgroup may go away under us; a failed read is skipped.
            if let Ok(s) = cg.stats() {
                print_event(&Event {
                    kind: "stats",
                    id: &a.id,
                    data: Some(s),
                })?;
            }
            next = now + a.interval;
        }
        std::thread::sleep(OOM_POLL.min(next.saturating_duration_since(Instant::now())));
    }
}

/// The resources `update` asks for: the JSON of `--resources`, else the
/// flags. Device rules are never updated (as runc).
pub fn update_resources(a: &UpdateArgs) -> Result<LinuxResources, CmdError> {
    if let Some(path) = &a.resources {
        let data = if path.as_os_str() == "-" {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                .map_err(io_err("read resources from stdin"))?;
            v
        } else {
            std::fs::read(path).map_err(io_err(format!("--resources {}", path.display())))?
        };
        let de = &mut serde_json::Deserializer::from_slice(&data);
        let mut r: LinuxResources = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            CmdError::BadResources {
                field,
                reason: e.into_inner().to_string(),
            }
        })?;
        r.set_devices(None);
        return Ok(r);
    }
    if a.l3_cache_schema.is_some() || a.mem_bw_schema.is_some() {
        return Err(CmdError::BadResources {
            field: "--l3-cache-schema/--mem-bw-schema".into(),
            reason: "Intel RDT is not supported".into(),
        });
    }
    let mut r = LinuxResources::default();
    if a.memory.is_some() || a.memory_reservation.is_some() || a.memory_swap.is_some() {
        let mut m = LinuxMemory::default();
        m.set_limit(a.memory);
        m.set_reservation(a.memory_reservation);
        m.set_swap(a.memory_swap);
        r.set_memory(Some(m));
    }
    let cpu_given = a.cpu_shares.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_period.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpu_idle.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some();
    if cpu_given {
        let mut c = LinuxCpu::default();
        c.set_shares(a.cpu_shares);
        c.set_quota(a.cpu_quota);
        c.set_period(a.cpu_period);
        c.set_realtime_period(a.cpu_rt_period);
        c.set_realtime_runtime(a.cpu_rt_runtime);
        c.set_idle(a.cpu_idle);
        c.set_cpus(a.cpuset_cpus.clone());
        c.set_mems(a.cpuset_mems.clone());
        r.set_cpu(Some(c));
    }
    if let Some(l) = a.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(l);
        r.set_pids(Some(p));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// `update`: applies new limits to a live container.
pub fn update(cli: &Cli, a: &UpdateArgs) -> Result<(), CmdError> {
    let res = update_resources(a)?;
    let c = Container::load(&cli.root, &a.id)?;
    if !c.status().can_kill() {
        return Err(CmdError::NotRunning(a.id.clone()));
    }
    c.record.cgroup().set(&res)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("-1"), Ok(-1));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("100KB"), Ok(100 << 10));
        assert_eq!(parse_bytes("2MiB"), Ok(2 << 20));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert!(parse_bytes("-2").is_err());
        assert!(parse_bytes("ten").is_err());
    }

    #[test]
    fn ps_rows_by_pid_column() {
        let text =
            "UID  PID  PPID CMD\nroot 10   1    sleep\nroot 11   10   sh\nroot 110  1    x\n";
        assert_eq!(
            filter_ps(text, &[10, 110]).unwrap(),
            vec![
                "UID  PID  PPID CMD",
                "root 10   1    sleep",
                "root 110  1    x"
            ]
        );
        assert!(filter_ps("A B\n1 2\n", &[1]).is_err());
    }

    #[test]
    fn update_flags_become_resources() {
        let a = UpdateArgs {
            memory: Some(1 << 20),
            memory_swap: Some(-1),
            cpu_shares: Some(100),
            cpu_quota: Some(-1),
            pids_limit: Some(20),
            blkio_weight: Some(300),
            cpuset_cpus: Some("0".into()),
            ..UpdateArgs::default()
        };
        let r = update_resources(&a).unwrap();
        let m = r.memory().unwrap();
        assert_eq!(
            (m.limit(), m.swap(), m.reservation()),
            (Some(1 << 20), Some(-1), None)
        );
        let c = r.cpu().as_ref().unwrap();
        assert_eq!(
            (c.shares(), c.quota(), c.period()),
            (Some(100), Some(-1), None)
        );
        assert_eq!(c.cpus().as_deref(), Some("0"));
        assert_eq!(r.pids().unwrap().limit(), 20);
        assert_eq!(r.block_io().as_ref().unwrap().weight(), Some(300));
        assert!(r.devices().is_none());
        let none = update_resources(&UpdateArgs::default()).unwrap();
        assert!(none.memory().is_none() && none.cpu().is_none() && none.pids().is_none());
    }

    #[test]
    fn update_from_a_file_ignores_devices() {
        let p = std::env::temp_dir().join(format!("skiff-upd-{}.json", std::process::id()));
        std::fs::write(
            &p,
            r#"{"pids": {"limit": 7}, "devices": [{"allow": true, "access": "rwm"}]}"#,
        )
        .unwrap();
        let a = UpdateArgs {
            resources: Some(p.clone()),
            pids_limit: Some(99),
            ..UpdateArgs::default()
        };
        let r = update_resources(&a).unwrap();
        assert_eq!(r.pids().unwrap().limit(), 7);
        assert!(r.devices().is_none());
        std::fs::write(&p, r#"{"memory": {"limit": "x"}}"#).unwrap();
        let e = update_resources(&a).unwrap_err().to_string();
        assert!(e.contains("memory.limit"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }
}
