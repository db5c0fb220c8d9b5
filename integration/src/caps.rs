//! Capability names and the masks the kernel prints in `/proc/<pid>/status` (`CapEff:` and friends).

use anyhow::{anyhow, Result};

/// Linux capabilities in bit order (`CAP_CHOWN` is bit 0).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The mask of a list of capability names.
pub fn mask(names: &[&str]) -> Result<u64> {
    names.iter().try_fold(0u64, |acc, name| {
        let bit = CAPABILITIES
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| anyhow!("unknown capability {name}"))?;
        Ok(acc | (1u64 << bit))
    })
}

/// The five capability sets read from a `/proc/<pid>/status` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// Parse the `Cap*:` lines of a `/proc/<pid>/status` text.
pub fn parse_status(status: &str) -> Result<CapSets> {
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("no {name} line in:\n{status}"))?;
        let hex = line[name.len()..].trim();
        u64::from_str_radix(hex, 16).map_err(|e| anyhow!("bad {name} value {hex:?}: {e}"))
    };
    Ok(CapSets {
        inheritable: field("CapInh:")?,
        permitted: field("CapPrm:")?,
        effective: field("CapEff:")?,
        bounding: field("CapBnd:")?,
        ambient: field("CapAmb:")?,
    })
}
