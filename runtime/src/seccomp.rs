//! OCI seccomp profiles compiled to BPF with seccompiler, before any fork,
//! and loaded as the init's (or exec'd process's) last step.
//!
//! seccompiler builds filters with one match action and one mismatch
//! action, while an OCI profile has an action per rule. The profile is
//! therefore split into stacked filters, relying on the kernel running
//! every filter and keeping the most restrictive result:
//!
//! | filter | rules | on match | otherwise |
//! |--------|-------|----------|-----------|
//! | base | every rule whose action differs from the default | allow | the default action |
//! | one per other action A (not allow) | the rules with action A | A | allow |
//!
//! The filters are then chained into one program (runc loads one filter):
//! the action groups by the kernel's precedence, each jumping to the next
//! where it would allow, and the base filter last. Only a profile too long
//! for one program stays stacked; then a filter that may refuse
//! `seccomp(2)` itself (an allow-list without it) is loaded after the
//! others, so loading needs no more than runc's one filter does.
//!
//! A call matching a rule with action A gets `min(allow, A) = A`; a call
//! matching no rule gets the default from the base filter and `allow`
//! from the others. Names the target does not know are skipped, as runc
//! skips names libseccomp does not know.

use crate::syscalls;
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::{BTreeMap, HashMap};

/// A profile that cannot be compiled or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: {field}: {reason}")]
    Unsupported { field: String, reason: String },
    #[error("linux.seccomp: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("linux.seccomp: compile: {0}")]
    Compile(String),
    #[error("linux.seccomp: load filter: {0}")]
    Load(std::io::Error),
}

/// Compiled filters, in installation order, and the `seccomp(2)` flags.
#[derive(Debug, Clone, Default)]
pub struct SeccompPlan {
    pub filters: Vec<BpfProgram>,
    pub flags: libc::c_ulong,
}

fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    field: &str,
) -> Result<SeccompAction, SeccompError> {
    use LinuxSeccompAction::*;
    Ok(match a {
        ScmpActKill | ScmpActKillThread => SeccompAction::KillThread,
        ScmpActKillProcess => SeccompAction::KillProcess,
        ScmpActTrap => SeccompAction::Trap,
        ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(libc::EPERM as u32)),
        ScmpActAllow => SeccompAction::Allow,
        ScmpActLog => SeccompAction::Log,
        ScmpActNotify => {
            return Err(SeccompError::Unsupported {
                field: field.to_string(),
                reason: "SCMP_ACT_NOTIFY (seccomp user notification) is not supported".into(),
            })
        }
    })
}

fn condition(
    a: &oci_spec::runtime::LinuxSeccompArg,
    field: &str,
) -> Result<SeccompCondition, SeccompError> {
    use LinuxSeccompOperator::*;
    let op = match a.op() {
        ScmpCmpNe => SeccompCmpOp::Ne,
        ScmpCmpLt => SeccompCmpOp::Lt,
        ScmpCmpLe => SeccompCmpOp::Le,
        ScmpCmpEq => SeccompCmpOp::Eq,
        ScmpCmpGe => SeccompCmpOp::Ge,
        ScmpCmpGt => SeccompCmpOp::Gt,
        // (arg & value) == valueTwo
        ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(a.value()),
    };
    let value = if matches!(a.op(), ScmpCmpMaskedEq) {
        a.value_two().unwrap_or(0)
    } else {
        a.value()
    };
    let index = u8::try_from(a.index()).map_err(|_| SeccompError::Invalid {
        field: format!("{field}.index"),
        reason: format!("{} is not an argument index", a.index()),
    })?;
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(|e| {
        SeccompError::Invalid {
            field: field.to_string(),
            reason: e.to_string(),
        }
    })
}

/// Rules by syscall number; an empty list matches unconditionally.
type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn add_rule(rules: &mut Rules, nr: i64, rule: Option<SeccompRule>) {
    match (rules.get_mut(&nr), rule) {
        // An unconditional rule makes any other moot.
        (_, None) => {
            rules.insert(nr, Vec::new());
        }
        // Already unconditional (an empty chain) stays so.
        (Some(chain), Some(_)) if chain.is_empty() => {}
        (Some(chain), Some(r)) => chain.push(r),
        (None, Some(r)) => {
            rules.insert(nr, vec![r]);
        }
    }
}

fn target() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::Unsupported {
            field: "architectures".into(),
            reason: format!("{} is not supported", std::env::consts::ARCH),
        })
    }
}

/// Compiles an OCI seccomp profile.
pub fn compile(s: &LinuxSeccomp) -> Result<SeccompPlan, SeccompError> {
    let arch = target()?;
    if s.listener_path().is_some() {
        return Err(SeccompError::Unsupported {
            field: "listenerPath".into(),
            reason: "seccomp user notification is not supported".into(),
        });
    }
    let default = action(s.default_action(), s.default_errno_ret(), "defaultAction")?;
    // c_long is i64 on the 64-bit targets supported; the conversion stays
    // for the others.
    #[allow(clippy::useless_conversion)]
    let table: HashMap<&str, i64> = syscalls::SYSCALLS
        .iter()
        .map(|(n, nr)| (*n, i64::from(*nr)))
        .collect();
    let mut base: Rules = BTreeMap::new();
    // Keyed by the action's kernel return value, so equal actions group.
    let mut groups: BTreeMap<u32, (SeccompAction, Rules)> = BTreeMap::new();
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("syscalls[{i}]");
        let act = action(sc.action(), sc.errno_ret(), &format!("{field}.action"))?;
        if act == default {
            continue;
        }
        let conds = sc
            .args()
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, a)| condition(a, &format!("{field}.args[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        // Conditions on distinct arguments must all hold (one rule); two
        // conditions on the same argument are alternatives, one rule each,
        // as runc does (libseccomp cannot AND them).
        let mut indexes: Vec<u32> = sc
            .args()
            .iter()
            .flatten()
            .map(|a| a.index() as u32)
            .collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        let alternatives: Vec<Vec<SeccompCondition>> = if repeated {
            conds.into_iter().map(|c| vec![c]).collect()
        } else {
            vec![conds]
        };
        let mut rules: Vec<Option<SeccompRule>> = Vec::new();
        for g in alternatives {
            rules.push(if g.is_empty() {
                None
            } else {
                Some(SeccompRule::new(g).map_err(|e| SeccompError::Invalid {
                    field: field.clone(),
                    reason: e.to_string(),
                })?)
            });
        }
        for name in sc.names() {
            let Some(&nr) = table.get(name.as_str()) else {
                continue;
            };
            for rule in &rules {
                add_rule(&mut base, nr, rule.clone());
                if act != SeccompAction::Allow {
                    let key = u32::from(act.clone());
                    let g = groups
                        .entry(key)
                        .or_insert_with(|| (act.clone(), BTreeMap::new()));
                    add_rule(&mut g.1, nr, rule.clone());
                }
            }
        }
    }
    let build = |rules: Rules, mismatch: SeccompAction, matched: SeccompAction| {
        let f = SeccompFilter::new(rules, mismatch, matched, arch)
            .map_err(|e| SeccompError::Compile(e.to_string()))?;
        BpfProgram::try_from(f).map_err(|e| SeccompError::Compile(e.to_string()))
    };
    // Each filter is loaded with seccomp(2) under the ones loaded before
    // it: a filter that may refuse seccomp(2) itself goes last, so that an
    // allow-list without seccomp needs nothing the runtime alone uses.
    let nr_seccomp: i64 = libc::SYS_seccomp;
    // (precedence, refuses seccomp(2), program): the action groups, then
    // the base filter (which comes last when chained).
    let mut staged: Vec<(i32, bool, BpfProgram)> = Vec::new();
    for (_, (act, rules)) in groups {
        let refuses = rules.contains_key(&nr_seccomp);
        let rank = precedence(&act);
        staged.push((rank, refuses, build(rules, SeccompAction::Allow, act)?));
    }
    staged.sort_by_key(|(rank, _, _)| *rank);
    if default != SeccompAction::Allow {
        let allows = base.get(&nr_seccomp).is_some_and(|chain| chain.is_empty());
        staged.push((
            i32::MAX,
            !allows,
            build(base, default, SeccompAction::Allow)?,
        ));
    }
    let programs: Vec<&BpfProgram> = staged.iter().map(|(_, _, f)| f).collect();
    let filters = match chain(&programs) {
        // One filter, as runc loads.
        Some(one) => vec![one],
        // Too long for one: stacked filters.
        None => {
            staged.sort_by_key(|(_, refuses, _)| *refuses);
            staged.into_iter().map(|(_, _, f)| f).collect()
        }
    };
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            // Threads do not exist yet at load time: TSYNC is moot.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 0,
            #[allow(unreachable_patterns)]
            _ => 0,
        };
    }
    Ok(SeccompPlan { filters, flags })
}

/// The kernel's precedence of an action (lower wins when filters disagree):
/// its action bits as a signed number, as `seccomp_run_filters` compares.
fn precedence(act: &SeccompAction) -> i32 {
    (u32::from(act.clone()) & 0xffff_0000) as i32
}

const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;
const RET_ALLOW: u32 = 0x7fff_0000;
/// BPF_MAXINSNS: the longest program the kernel loads.
const MAX_INSNS: usize = 4096;

/// Joins filters into one program with the stacked filters' result: each
/// but the last returns its action on a match and otherwise (where it would
/// return allow) jumps to the next one. The filters come ordered by
/// precedence, so the first match is the result the kernel would keep.
/// `None` when the program would be too long.
fn chain(programs: &[&BpfProgram]) -> Option<BpfProgram> {
    let total: usize = programs.iter().map(|p| p.len()).sum();
    if programs.is_empty() || total > MAX_INSNS {
        return None;
    }
    let mut out = BpfProgram::with_capacity(total);
    let last = programs.len() - 1;
    for (n, prog) in programs.iter().enumerate() {
        for (i, insn) in prog.iter().enumerate() {
            let mut insn = insn.clone();
            if n != last && insn.code == BPF_RET_K && insn.k == RET_ALLOW {
                // To the first instruction of the next program.
                insn.code = BPF_JMP_JA;
                insn.jt = 0;
                insn.jf = 0;
                insn.k = u32::try_from(prog.len() - i - 1).ok()?;
            }
            out.push(insn);
        }
    }
    Some(out)
}

/// Loads the filters into the calling process (after no_new_privs, or
/// with CAP_SYS_ADMIN still held).
pub fn install(p: &SeccompPlan) -> Result<(), SeccompError> {
    for f in &p.filters {
        let prog = libc::sock_fprog {
            len: f.len() as libc::c_ushort,
            filter: f.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points at a live, correctly laid out BPF program
        // (seccompiler's sock_filter is repr(C) like the kernel's).
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                1 as libc::c_ulong, // SECCOMP_SET_MODE_FILTER
                p.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            return Err(SeccompError::Load(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn allow_list_is_one_filter() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "write", "not_a_syscall"], "action": "SCMP_ACT_ALLOW"}]
        })))
        .unwrap();
        assert_eq!(p.filters.len(), 1);
    }

    #[test]
    fn mixed_actions_are_one_chained_filter() {
        let returns = |f: &BpfProgram, k: u32| f.iter().any(|i| i.code == 0x06 && i.k == k);
        let errno = |e: u32| 0x0005_0000 | e;
        // As Docker's default profile: an allow-list plus ENOSYS for clone3,
        // one filter as in runc.
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        })))
        .unwrap();
        assert_eq!(p.filters.len(), 1);
        assert!(returns(&p.filters[0], errno(1)) && returns(&p.filters[0], errno(38)));
        assert!(returns(&p.filters[0], RET_ALLOW));
    }

    #[test]
    fn chaining_jumps_to_the_next_program_and_keeps_the_last_allow() {
        let ret = |k| seccompiler::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k,
        };
        let a: BpfProgram = vec![ret(0x0005_0026), ret(RET_ALLOW)];
        let b: BpfProgram = vec![ret(RET_ALLOW)];
        let one = chain(&[&a, &b]).unwrap();
        assert_eq!(one.len(), 3);
        assert_eq!((one[1].code, one[1].k), (BPF_JMP_JA, 0));
        assert_eq!((one[2].code, one[2].k), (0x06, RET_ALLOW));
        let long: BpfProgram = vec![ret(RET_ALLOW); MAX_INSNS];
        assert!(chain(&[&long, &b]).is_none());
    }

    #[test]
    fn deny_list_and_mixed_actions() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
            ]
        })))
        .unwrap();
        // Default allow: no base filter; the errno groups chained.
        assert_eq!(p.filters.len(), 1);
    }

    #[test]
    fn notify_is_refused() {
        let e = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })))
        .unwrap_err();
        assert!(e.to_string().contains("syscalls[0].action"), "{e}");
    }

    #[test]
    fn bad_arg_index() {
        let e = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}]
        })))
        .unwrap_err();
        assert!(e.to_string().contains("syscalls[0].args[0]"), "{e}");
    }

    #[test]
    fn loads_and_denies_in_a_child() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]
        })))
        .unwrap();
        let dir = std::env::temp_dir().join(format!("skiff-seccomp-{}", std::process::id()));
        let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: the child only makes async-signal-safe calls before _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let code = match install(&p) {
                Ok(()) => {
                    let r = unsafe { libc::mkdir(c.as_ptr(), 0o700) };
                    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    if r < 0 && e == 122 {
                        0
                    } else {
                        1
                    }
                }
                Err(_) => 2,
            };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0);
        assert!(!dir.exists());
    }
}
