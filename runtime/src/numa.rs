//! Where a container's processes run and take memory from:
//! `linux.memoryPolicy` (set_mempolicy(2) in the init before execve) and
//! `process.execCPUAffinity` (sched_setaffinity(2) around an `exec`'s entry
//! into the container's cgroup). The spec's strings become plain masks here,
//! before any fork; applying them is one syscall each.

use oci_spec::runtime::MemoryPolicyModeType as Mode;
use oci_spec::runtime::{ExecCPUAffinity, LinuxMemoryPolicy, MemoryPolicyFlagType as Flag};
use serde::{Deserialize, Serialize};

/// The largest node number accepted, as runc.
const MAX_NODE: u32 = 4095;
/// The largest CPU number accepted (the kernel's largest NR_CPUS).
const MAX_CPU: u32 = 8191;

const BITS: u32 = u64::BITS;

/// A list such as `0-3,7` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NumaError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> NumaError {
    NumaError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Parses `0-3,7` (the kernel's list format) into a bit mask of u64 words,
/// each number at most `max`; `field` names the spec field in errors.
pub fn parse_list(field: &str, list: &str, max: u32) -> Result<Vec<u64>, NumaError> {
    let mut mask: Vec<u64> = Vec::new();
    for part in list.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(invalid(field, format!("empty entry in {list:?}")));
        }
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (number(field, a.trim(), max)?, number(field, b.trim(), max)?),
            None => {
                let n = number(field, part, max)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(invalid(field, format!("range {part:?} runs backwards")));
        }
        for id in lo..=hi {
            let word = (id / BITS) as usize;
            if mask.len() <= word {
                mask.resize(word + 1, 0);
            }
            mask[word] |= 1 << (id % BITS);
        }
    }
    Ok(mask)
}

fn number(field: &str, s: &str, max: u32) -> Result<u32, NumaError> {
    let n: u32 = s
        .parse()
        .map_err(|_| invalid(field, format!("{s:?} is not a number")))?;
    if n > max {
        return Err(invalid(field, format!("{n} is above {max}")));
    }
    Ok(n)
}

/// set_mempolicy(2)'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemPolicy {
    /// The mode with its MPOL_F_* flags.
    pub mode: i32,
    pub nodes: Vec<u64>,
}

const MPOL_DEFAULT: i32 = 0;
const MPOL_PREFERRED: i32 = 1;
const MPOL_BIND: i32 = 2;
const MPOL_INTERLEAVE: i32 = 3;
const MPOL_LOCAL: i32 = 4;
const MPOL_PREFERRED_MANY: i32 = 5;
const MPOL_WEIGHTED_INTERLEAVE: i32 = 6;
const MPOL_F_NUMA_BALANCING: i32 = 1 << 13;
const MPOL_F_RELATIVE_NODES: i32 = 1 << 14;
const MPOL_F_STATIC_NODES: i32 = 1 << 15;

/// Checks `linux.memoryPolicy` the way set_mempolicy(2) would, so a bad
/// policy fails `create` with the field named rather than in the init.
pub fn mem_policy(p: &LinuxMemoryPolicy) -> Result<MemPolicy, NumaError> {
    const FIELD: &str = "linux.memoryPolicy";
    let mode = match p.mode() {
        Mode::MpolDefault => MPOL_DEFAULT,
        Mode::MpolPreferred => MPOL_PREFERRED,
        Mode::MpolBind => MPOL_BIND,
        Mode::MpolInterleave => MPOL_INTERLEAVE,
        Mode::MpolLocal => MPOL_LOCAL,
        Mode::MpolPreferredMany => MPOL_PREFERRED_MANY,
        Mode::MpolWeightedInterleave => MPOL_WEIGHTED_INTERLEAVE,
    };
    let mut flags = 0;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            Flag::MpolFNumaBalancing => MPOL_F_NUMA_BALANCING,
            Flag::MpolFRelativeNodes => MPOL_F_RELATIVE_NODES,
            Flag::MpolFStaticNodes => MPOL_F_STATIC_NODES,
        };
    }
    let static_and_relative = MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES;
    if flags & static_and_relative == static_and_relative {
        return Err(invalid(
            &format!("{FIELD}.flags"),
            "MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other",
        ));
    }
    if flags & MPOL_F_NUMA_BALANCING != 0 && mode != MPOL_BIND {
        return Err(invalid(
            &format!("{FIELD}.flags"),
            "MPOL_F_NUMA_BALANCING goes only with MPOL_BIND",
        ));
    }
    let nodes = match p.nodes().as_deref().map(str::trim) {
        None | Some("") => Vec::new(),
        Some(list) => parse_list(&format!("{FIELD}.nodes"), list, MAX_NODE)?,
    };
    let has_nodes = nodes.iter().any(|w| *w != 0);
    match mode {
        MPOL_DEFAULT | MPOL_LOCAL if has_nodes || flags != 0 => Err(invalid(
            FIELD,
            format!("{} takes neither nodes nor flags", p.mode()),
        )),
        // MPOL_PREFERRED without nodes is "local allocation".
        MPOL_PREFERRED if !has_nodes && flags & static_and_relative != 0 => Err(invalid(
            FIELD,
            "MPOL_PREFERRED without nodes takes no static or relative flag",
        )),
        MPOL_BIND | MPOL_INTERLEAVE | MPOL_PREFERRED_MANY | MPOL_WEIGHTED_INTERLEAVE
            if !has_nodes =>
        {
            Err(invalid(
                &format!("{FIELD}.nodes"),
                format!("{} needs at least one node", p.mode()),
            ))
        }
        _ => Ok(MemPolicy {
            mode: mode | flags,
            nodes,
        }),
    }
}

/// Sets the calling thread's memory policy (inherited across fork and
/// kept across execve).
pub fn apply_mem_policy(p: &MemPolicy) -> Result<(), NumaError> {
    let (ptr, maxnode) = if p.nodes.is_empty() {
        (std::ptr::null(), 0)
    } else {
        // The kernel reads maxnode - 1 bits; one more than we pass is safe.
        (p.nodes.as_ptr(), p.nodes.len() as u64 * BITS as u64 + 1)
    };
    // SAFETY: `ptr` points at `nodes.len()` words or is null with 0.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, p.mode, ptr, maxnode) };
    if r < 0 {
        return Err(NumaError::Sys {
            what: "set_mempolicy (linux.memoryPolicy)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `process.execCPUAffinity` as masks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecAffinity {
    /// For the runtime's side of `exec`, before the cgroup is joined.
    pub initial: Option<Vec<u64>>,
    /// For the process once in the container's cgroup.
    pub last: Option<Vec<u64>>,
}

/// Parses `process.execCPUAffinity`; empty strings mean "leave it".
pub fn exec_affinity(a: &ExecCPUAffinity) -> Result<ExecAffinity, NumaError> {
    let list = |field: &str, v: &Option<String>| match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => parse_list(field, s, MAX_CPU).map(Some),
    };
    Ok(ExecAffinity {
        initial: list("process.execCPUAffinity.initial", a.initial())?,
        last: list("process.execCPUAffinity.final", a.cpu_affinity_final())?,
    })
}

/// Pins the calling thread to the CPUs in `mask`.
pub fn set_affinity(mask: &[u64], field: &'static str) -> Result<(), NumaError> {
    // SAFETY: `mask` is `len * 8` readable bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            0,
            std::mem::size_of_val(mask),
            mask.as_ptr(),
        )
    };
    if r < 0 {
        return Err(NumaError::Sys {
            what: field,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(v: serde_json::Value) -> Result<MemPolicy, NumaError> {
        mem_policy(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn lists_become_masks() {
        assert_eq!(parse_list("f", "0-3,7", 9).unwrap(), vec![0b1000_1111]);
        assert_eq!(parse_list("f", " 1 , 64", 64).unwrap(), vec![2, 1]);
        for bad in ["", "a", "3-1", "0,,1", "65", "-1"] {
            let e = parse_list("x.y", bad, 64).unwrap_err().to_string();
            assert!(e.starts_with("x.y: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn memory_policies_are_checked_as_the_kernel_would() {
        let p = policy(serde_json::json!({"mode": "MPOL_BIND", "nodes": "0",
            "flags": ["MPOL_F_STATIC_NODES"]}))
        .unwrap();
        assert_eq!(
            p,
            MemPolicy {
                mode: 2 | 1 << 15,
                nodes: vec![1]
            }
        );
        let p = policy(serde_json::json!({"mode": "MPOL_PREFERRED"})).unwrap();
        assert_eq!(
            p,
            MemPolicy {
                mode: 1,
                nodes: vec![]
            }
        );
        assert_eq!(
            policy(serde_json::json!({"mode": "MPOL_LOCAL"}))
                .unwrap()
                .mode,
            4
        );
        for bad in [
            serde_json::json!({"mode": "MPOL_BIND"}),
            serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": ""}),
            serde_json::json!({"mode": "MPOL_DEFAULT", "nodes": "0"}),
            serde_json::json!({"mode": "MPOL_LOCAL", "flags": ["MPOL_F_STATIC_NODES"]}),
            serde_json::json!({"mode": "MPOL_BIND", "nodes": "0",
                "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
            serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "0",
                "flags": ["MPOL_F_NUMA_BALANCING"]}),
            serde_json::json!({"mode": "MPOL_BIND", "nodes": "0-x"}),
        ] {
            let e = policy(bad.clone()).unwrap_err().to_string();
            assert!(e.starts_with("linux.memoryPolicy"), "{bad}: {e}");
        }
    }

    #[test]
    fn exec_affinity_reads_both_lists() {
        let a: ExecCPUAffinity =
            serde_json::from_value(serde_json::json!({"initial": "0", "final": "1"})).unwrap();
        let a = exec_affinity(&a).unwrap();
        assert_eq!(a.initial, Some(vec![1]));
        assert_eq!(a.last, Some(vec![2]));
    }
}
