//! OCI seccomp profiles compiled to BPF with seccompiler, before any fork,
//! and loaded as the init's (or exec'd process's) last step (before
//! `create` returns when the profile notifies an agent).
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
//!
//! Architectures: an x86_64 process can also make i386 (`int $0x80`) and
//! x32 calls, each ABI with its own numbers. The filters above are built
//! for each ABI the profile lists (the native one always), from that ABI's
//! table, and the program dispatches on `seccomp_data.arch` (and the x32
//! bit of the number) to the ABI's part; a call of an ABI not listed is
//! killed, libseccomp's bad-arch action under runc. seccompiler knows one
//! architecture a filter and only its first three instructions depend on
//! it (the architecture check), so its programs are used without them;
//! calls matched whatever their arguments are emitted here, one compare
//! each as libseccomp does, so Docker's three-ABI allow-list stays one
//! program.
//!
//! User notification (`SCMP_ACT_NOTIFY`): seccompiler has no such action,
//! so a notify group's program is built with trap as a stand-in and its
//! returns patched to `SECCOMP_RET_USER_NOTIF`. The filter holding them is
//! loaded with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, during `create` (see
//! `process::init`); the parent copies the descriptor out of the init and
//! sends it with the process state to the agent ([`send_to_agent`]).

use crate::syscalls;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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
    #[error("linux.seccomp.listenerPath {path}: {what}: {source}")]
    Agent {
        path: std::path::PathBuf,
        what: String,
        source: std::io::Error,
    },
}

/// Compiled filters, in installation order, and the `seccomp(2)` flags.
#[derive(Debug, Clone, Default)]
pub struct SeccompPlan {
    pub filters: Vec<BpfProgram>,
    pub flags: libc::c_ulong,
    /// Where the notify descriptor goes, when a rule is `SCMP_ACT_NOTIFY`.
    pub listener: Option<Listener>,
    /// The filter loaded with `SECCOMP_FILTER_FLAG_NEW_LISTENER`: the one
    /// whose program returns `SECCOMP_RET_USER_NOTIF` (the kernel allows
    /// one listener in a process's filters).
    notify_filter: Option<usize>,
}

/// The seccomp agent of `linux.seccomp.listenerPath`: the runtime connects
/// to its unix socket and sends the notify descriptor with the container's
/// process state (runtime-spec's `ContainerProcessState`).
#[derive(Debug, Clone)]
pub struct Listener {
    pub path: std::path::PathBuf,
    pub metadata: String,
}

impl SeccompPlan {
    /// Whether installing the filters yields a notify descriptor for the
    /// agent.
    pub fn notifies(&self) -> bool {
        self.notify_filter.is_some()
    }
}

/// `SECCOMP_RET_USER_NOTIF`.
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
const FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;

/// A rule's action. seccompiler has no user notification: its programs
/// for a notify rule are built with a stand-in and patched.
#[derive(Debug, Clone, PartialEq)]
enum Act {
    Plain(SeccompAction),
    Notify,
}

impl Act {
    /// The filter's return value.
    fn ret(&self) -> u32 {
        match self {
            Act::Plain(a) => u32::from(a.clone()),
            Act::Notify => RET_USER_NOTIF,
        }
    }

    fn is_allow(&self) -> bool {
        *self == Act::Plain(SeccompAction::Allow)
    }

    /// What seccompiler returns in its place: trap, patched to notify in a
    /// program that returns nothing but it and allow.
    fn stand_in(&self) -> SeccompAction {
        match self {
            Act::Plain(a) => a.clone(),
            Act::Notify => SeccompAction::Trap,
        }
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Act {
    use LinuxSeccompAction::*;
    Act::Plain(match a {
        ScmpActKill | ScmpActKillThread => SeccompAction::KillThread,
        ScmpActKillProcess => SeccompAction::KillProcess,
        ScmpActTrap => SeccompAction::Trap,
        ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(libc::EPERM as u32)),
        ScmpActAllow => SeccompAction::Allow,
        ScmpActLog => SeccompAction::Log,
        ScmpActNotify => return Act::Notify,
    })
}

/// runc's rules for user notification: not as the default action, not for
/// `write` (the init writes the descriptor to its parent under the filter,
/// which a notified write would block forever), and only with a listener.
fn check_notify(s: &LinuxSeccomp) -> Result<Option<Listener>, SeccompError> {
    let invalid = |field: String, reason: &str| SeccompError::Invalid {
        field,
        reason: reason.into(),
    };
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(invalid(
            "defaultAction".into(),
            "SCMP_ACT_NOTIFY cannot be used as default action",
        ));
    }
    let mut notify = false;
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        if sc.action() != LinuxSeccompAction::ScmpActNotify {
            continue;
        }
        notify = true;
        if sc.names().iter().any(|n| n == "write") {
            return Err(invalid(
                format!("syscalls[{i}].names"),
                "SCMP_ACT_NOTIFY cannot be used for the write syscall",
            ));
        }
    }
    if !notify {
        return Ok(None);
    }
    match s.listener_path() {
        Some(path) if !path.as_os_str().is_empty() => Ok(Some(Listener {
            path: path.clone(),
            metadata: s.listener_metadata().clone().unwrap_or_default(),
        })),
        _ => Err(invalid(
            "listenerPath".into(),
            "SCMP_ACT_NOTIFY needs a listenerPath for the seccomp agent",
        )),
    }
}

fn condition(
    a: &oci_spec::runtime::LinuxSeccompArg,
    len: SeccompCmpArgLen,
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
    SeccompCondition::new(index, len, op, value).map_err(|e| SeccompError::Invalid {
        field: field.to_string(),
        reason: e.to_string(),
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

/// `AUDIT_ARCH_*` values, as the kernel reports them in `seccomp_data.arch`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `__X32_SYSCALL_BIT`: x32 calls arrive as x86_64 ones with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// An ABI whose system calls a filter can tell apart. On x86_64 a process
/// can make x86_64, i386 (`int $0x80`) and x32 calls; each has its own
/// numbers, and a profile listing the architecture is matched by name
/// against that ABI's table, as libseccomp does for runc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    Native,
    X86,
    X32,
}

impl Abi {
    /// The ABIs this build filters: the native one first.
    pub fn supported() -> &'static [Abi] {
        if cfg!(target_arch = "x86_64") {
            &[Abi::Native, Abi::X86, Abi::X32]
        } else {
            &[Abi::Native]
        }
    }

    /// The name a profile's `architectures` gives it.
    pub fn scmp_name(self) -> &'static str {
        match self {
            Abi::Native if cfg!(target_arch = "aarch64") => "SCMP_ARCH_AARCH64",
            Abi::Native => "SCMP_ARCH_X86_64",
            Abi::X86 => "SCMP_ARCH_X86",
            Abi::X32 => "SCMP_ARCH_X32",
        }
    }

    fn from_spec(a: Arch) -> Option<Abi> {
        let abi = match a {
            Arch::ScmpArchX86_64 if cfg!(target_arch = "x86_64") => Abi::Native,
            Arch::ScmpArchAarch64 if cfg!(target_arch = "aarch64") => Abi::Native,
            Arch::ScmpArchNative => Abi::Native,
            Arch::ScmpArchX86 => Abi::X86,
            Arch::ScmpArchX32 => Abi::X32,
            _ => return None,
        };
        Abi::supported().contains(&abi).then_some(abi)
    }

    fn audit(self) -> u32 {
        match self {
            Abi::Native if cfg!(target_arch = "aarch64") => AUDIT_ARCH_AARCH64,
            Abi::Native | Abi::X32 => AUDIT_ARCH_X86_64,
            Abi::X86 => AUDIT_ARCH_I386,
        }
    }

    /// Name to number for the ABI: the native table from `libc`, the
    /// others from `syscall-numbers` (generated from the kernel's tables).
    fn table(self) -> HashMap<&'static str, i64> {
        type Lookup = fn(libc::c_long) -> Option<&'static str>;
        let (base, name): (libc::c_long, Lookup) = match self {
            // c_long is i64 on the 64-bit targets supported; the conversion
            // stays for the others.
            #[allow(clippy::useless_conversion)]
            Abi::Native => {
                return syscalls::SYSCALLS
                    .iter()
                    .map(|(n, nr)| (*n, i64::from(*nr)))
                    .collect()
            }
            Abi::X86 => (0, syscall_numbers::x86::sys_call_name),
            Abi::X32 => (
                libc::c_long::from(X32_SYSCALL_BIT as i32),
                syscall_numbers::x32::sys_call_name,
            ),
        };
        // Both tables end well below 1024 entries past their base.
        #[allow(clippy::useless_conversion)]
        (base..base + 1024)
            .filter_map(|nr| name(nr).map(|n| (n, i64::from(nr))))
            .collect()
    }

    /// libseccomp compares only the low 32 bits of an argument on the
    /// 32-bit ABIs (i386 and x32).
    fn arg_len(self) -> SeccompCmpArgLen {
        match self {
            Abi::Native => SeccompCmpArgLen::Qword,
            Abi::X86 | Abi::X32 => SeccompCmpArgLen::Dword,
        }
    }

    /// Instructions that fall through to the next `body` instructions for
    /// the ABI's calls and jump over them for any other.
    fn guard(self, body: usize) -> Option<BpfProgram> {
        let ja = |k: usize| Some(stmt(BPF_JMP_JA, u32::try_from(k).ok()?));
        let mut g = vec![
            stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
            jump(BPF_JEQ_K, self.audit(), 1, 0),
        ];
        // The x86_64 and x32 calls share the audit value: the number's bit
        // tells them apart.
        let split = match self {
            Abi::Native if cfg!(target_arch = "x86_64") => Some((0, 1)),
            Abi::X32 => Some((1, 0)),
            _ => None,
        };
        match split {
            Some((jt, jf)) => {
                g.push(ja(body + 3)?);
                g.push(stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR));
                g.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, jt, jf));
                g.push(ja(body)?);
            }
            None => g.push(ja(body)?),
        }
        Some(g)
    }
}

fn stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// The ABIs a profile covers: the native one always (libseccomp starts
/// every filter with it), then those of `architectures` this target can
/// make calls of. Others (an ARM arch on x86_64) can never be seen here.
fn abis(s: &LinuxSeccomp) -> Vec<Abi> {
    let mut out = vec![Abi::Native];
    for a in s.architectures().iter().flatten() {
        if let Some(abi) = Abi::from_spec(*a) {
            if !out.contains(&abi) {
                out.push(abi);
            }
        }
    }
    out
}

/// A profile's rules split by action, for one ABI.
#[derive(Default)]
struct Split {
    /// Every rule whose action differs from the default.
    base: Rules,
    /// Keyed by the action's kernel return value, so equal actions group.
    groups: BTreeMap<u32, (Act, Rules)>,
}

fn split(
    s: &LinuxSeccomp,
    default: &Act,
    abi: Abi,
    table: &HashMap<&str, i64>,
) -> Result<Split, SeccompError> {
    let mut out = Split::default();
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("syscalls[{i}]");
        let act = action(sc.action(), sc.errno_ret());
        if act == *default {
            continue;
        }
        let conds = sc
            .args()
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, a)| condition(a, abi.arg_len(), &format!("{field}.args[{j}]")))
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
                add_rule(&mut out.base, nr, rule.clone());
                if !act.is_allow() {
                    let key = act.ret();
                    let g = out
                        .groups
                        .entry(key)
                        .or_insert_with(|| (act.clone(), BTreeMap::new()));
                    add_rule(&mut g.1, nr, rule.clone());
                }
            }
        }
    }
    Ok(out)
}

/// One ABI's programs, ordered by the kernel's precedence of their action
/// (the base filter last), each flagged if it may refuse `seccomp(2)`.
/// The programs are seccompiler's without its architecture check: the
/// guards in front of them take its place.
fn stages(
    s: &LinuxSeccomp,
    default: &Act,
    abi: Abi,
    arch: TargetArch,
) -> Result<Vec<(bool, BpfProgram)>, SeccompError> {
    let table = abi.table();
    let Split { base, groups } = split(s, default, abi, &table)?;
    let build = |rules: Rules, mismatch: &Act, matched: &Act| {
        let (plain, conditional): (Rules, Rules) =
            rules.into_iter().partition(|(_, chain)| chain.is_empty());
        let f = SeccompFilter::new(conditional, mismatch.stand_in(), matched.stand_in(), arch)
            .map_err(|e| SeccompError::Compile(e.to_string()))?;
        let p = BpfProgram::try_from(f).map_err(|e| SeccompError::Compile(e.to_string()))?;
        let mut body = strip_arch_check(p)?;
        if *matched == Act::Notify {
            // A notify group's program returns the stand-in or allow.
            let trap = u32::from(SeccompAction::Trap);
            for i in body
                .iter_mut()
                .filter(|i| i.code == BPF_RET_K && i.k == trap)
            {
                i.k = RET_USER_NOTIF;
            }
        }
        let mut out = unconditional(plain.keys(), matched.ret())?;
        out.extend(body);
        Ok::<_, SeccompError>(out)
    };
    // Each filter is loaded with seccomp(2) under the ones loaded before
    // it: a filter that may refuse seccomp(2) itself goes last, so that an
    // allow-list without seccomp needs nothing the runtime alone uses.
    let nr_seccomp: i64 = libc::SYS_seccomp;
    let native = abi == Abi::Native;
    // (precedence, refuses seccomp(2), program).
    let mut staged: Vec<(i32, bool, BpfProgram)> = Vec::new();
    for (_, (act, rules)) in groups {
        let refuses = native && rules.contains_key(&nr_seccomp);
        let rank = precedence(act.ret());
        let allow = Act::Plain(SeccompAction::Allow);
        staged.push((rank, refuses, build(rules, &allow, &act)?));
    }
    staged.sort_by_key(|(rank, _, _)| *rank);
    if !default.is_allow() {
        let allows = base.get(&nr_seccomp).is_some_and(|chain| chain.is_empty());
        let allow = Act::Plain(SeccompAction::Allow);
        staged.push((i32::MAX, native && !allows, build(base, default, &allow)?));
    }
    if staged.is_empty() {
        // Nothing but allow: the ABI's calls pass the guard and are allowed.
        staged.push((i32::MAX, false, vec![stmt(BPF_RET_K, RET_ALLOW)]));
    }
    Ok(staged.into_iter().map(|(_, r, p)| (r, p)).collect())
}

/// The calls matched whatever their arguments, in runs of at most 255
/// comparisons that jump straight to one shared return of `matched` (one
/// instruction a call, as libseccomp emits, where seccompiler spends four):
/// the three ABIs of Docker's default allow-list then fit one program.
/// Falls through, with the call's number loaded, when none matches.
fn unconditional<'a>(
    nrs: impl Iterator<Item = &'a i64>,
    matched: u32,
) -> Result<BpfProgram, SeccompError> {
    let nrs = nrs
        .map(|nr| u32::try_from(*nr))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    let mut out = vec![stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR)];
    for run in nrs.chunks(255) {
        let n = run.len();
        for (i, nr) in run.iter().enumerate() {
            // Over the rest of the run and the jump, onto the return.
            out.push(jump(BPF_JEQ_K, *nr, (n - i) as u8, 0));
        }
        out.push(stmt(BPF_JMP_JA, 1));
        out.push(stmt(BPF_RET_K, matched));
    }
    Ok(out)
}

/// seccompiler starts every program with an architecture check (load the
/// arch, compare, kill): it is dropped here and checked to be exactly that,
/// so that a change in seccompiler fails the compile rather than the filter.
fn strip_arch_check(p: BpfProgram) -> Result<BpfProgram, SeccompError> {
    let ok = p.len() > 3
        && (p[0].code, p[0].k) == (BPF_LD_W_ABS, SECCOMP_DATA_ARCH)
        && p[1].code == BPF_JEQ_K
        && (p[1].jt, p[1].jf) == (1, 0)
        && p[2].code == BPF_RET_K;
    if !ok {
        return Err(SeccompError::Compile(
            "seccompiler's program does not start with its architecture check".into(),
        ));
    }
    Ok(p[3..].to_vec())
}

/// Compiles an OCI seccomp profile.
pub fn compile(s: &LinuxSeccomp) -> Result<SeccompPlan, SeccompError> {
    let arch = target()?;
    let listener = check_notify(s)?;
    let default = action(s.default_action(), s.default_errno_ret());
    let mut blocks: Vec<(Abi, Vec<(bool, BpfProgram)>)> = Vec::new();
    for abi in abis(s) {
        blocks.push((abi, stages(s, &default, abi, arch)?));
    }
    let filters = match one_filter(&blocks) {
        // One filter, as runc loads.
        Some(one) => vec![one],
        None => stacked(&blocks)?,
    };
    let returns_notify = |f: &BpfProgram| {
        f.iter()
            .any(|i| i.code == BPF_RET_K && i.k == RET_USER_NOTIF)
    };
    let notifying: Vec<usize> = (0..filters.len())
        .filter(|i| returns_notify(&filters[*i]))
        .collect();
    if notifying.len() > 1 {
        return Err(SeccompError::Compile(
            "the profile's SCMP_ACT_NOTIFY rules do not fit one filter (one listener a process)"
                .into(),
        ));
    }
    // Names unknown everywhere leave no notify rule: then, as runc with no
    // notify rule, no listener.
    let notify_filter = notifying.first().copied();
    let listener = listener.filter(|_| notify_filter.is_some());
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
    Ok(SeccompPlan {
        filters,
        flags,
        listener,
        notify_filter,
    })
}

/// The kernel's result for a call of an ABI the profile does not list:
/// libseccomp's default bad-arch action, which runc keeps (the thread is
/// killed with SIGSYS).
const RET_KILL_THREAD: u32 = 0;

/// Each ABI's guard and chained programs, one after the other, then
/// `tail` for calls of no listed ABI. `None` when too long.
fn guarded(blocks: &[(Abi, Vec<&BpfProgram>)], tail: u32) -> Option<BpfProgram> {
    let mut out = BpfProgram::new();
    for (abi, programs) in blocks {
        let body = chain(programs)?;
        out.extend(abi.guard(body.len())?);
        out.extend(body);
    }
    out.push(stmt(BPF_RET_K, tail));
    (out.len() <= MAX_INSNS).then_some(out)
}

/// Every ABI in one program, ending with the bad-arch kill.
fn one_filter(blocks: &[(Abi, Vec<(bool, BpfProgram)>)]) -> Option<BpfProgram> {
    let refs: Vec<(Abi, Vec<&BpfProgram>)> = blocks
        .iter()
        .map(|(abi, st)| (*abi, st.iter().map(|(_, p)| p).collect()))
        .collect();
    guarded(&refs, RET_KILL_THREAD)
}

/// A profile too long for one program: a filter that kills the calls of
/// unlisted ABIs, then one per ABI (allowing every other ABI's calls), or
/// one per program of an ABI whose chain is still too long. A filter that
/// may refuse `seccomp(2)` is loaded last.
fn stacked(blocks: &[(Abi, Vec<(bool, BpfProgram)>)]) -> Result<Vec<BpfProgram>, SeccompError> {
    let too_long = || SeccompError::Compile("the profile is too long for seccomp filters".into());
    let allow_all = vec![stmt(BPF_RET_K, RET_ALLOW)];
    let gate: Vec<(Abi, Vec<&BpfProgram>)> = blocks
        .iter()
        .map(|(abi, _)| (*abi, vec![&allow_all]))
        .collect();
    let mut out: Vec<(bool, BpfProgram)> =
        vec![(false, guarded(&gate, RET_KILL_THREAD).ok_or_else(too_long)?)];
    for (abi, st) in blocks {
        let all: Vec<&BpfProgram> = st.iter().map(|(_, p)| p).collect();
        if let Some(f) = guarded(&[(*abi, all)], RET_ALLOW) {
            out.push((st.iter().any(|(r, _)| *r), f));
            continue;
        }
        for (refuses, p) in st {
            let f = guarded(&[(*abi, vec![p])], RET_ALLOW).ok_or_else(too_long)?;
            out.push((*refuses, f));
        }
    }
    out.sort_by_key(|(refuses, _)| *refuses);
    Ok(out.into_iter().map(|(_, f)| f).collect())
}

/// The kernel's precedence of an action (lower wins when filters disagree):
/// its action bits as a signed number, as `seccomp_run_filters` compares.
fn precedence(ret: u32) -> i32 {
    (ret & 0xffff_0000) as i32
}

const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
/// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
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
/// with CAP_SYS_ADMIN still held); returns the notify descriptor when the
/// profile has `SCMP_ACT_NOTIFY` rules.
pub fn install(p: &SeccompPlan) -> Result<Option<OwnedFd>, SeccompError> {
    let mut listener = None;
    for (n, f) in p.filters.iter().enumerate() {
        let prog = libc::sock_fprog {
            len: f.len() as libc::c_ushort,
            filter: f.as_ptr() as *mut libc::sock_filter,
        };
        let notify = p.notify_filter == Some(n);
        let flags = if notify {
            p.flags | FLAG_NEW_LISTENER
        } else {
            p.flags
        };
        // SAFETY: prog points at a live, correctly laid out BPF program
        // (seccompiler's sock_filter is repr(C) like the kernel's).
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                1 as libc::c_ulong, // SECCOMP_SET_MODE_FILTER
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            return Err(SeccompError::Load(std::io::Error::last_os_error()));
        }
        if notify {
            // SAFETY: with NEW_LISTENER the kernel returns a new descriptor
            // (close-on-exec), ours alone.
            listener = Some(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
    }
    Ok(listener)
}

/// runtime-spec's `ContainerProcessState`, as runc sends it: the state of
/// the container (`state`) and the process the descriptor filters (`pid`).
pub fn process_state(
    listener: &Listener,
    pid: libc::pid_t,
    mut state: serde_json::Value,
) -> String {
    // runtime-spec's State only, as runc sends it: not the extras `skiff
    // state` prints.
    if let Some(fields) = state.as_object_mut() {
        fields.retain(|k, _| {
            matches!(
                k.as_str(),
                "ociVersion" | "id" | "status" | "pid" | "bundle" | "annotations"
            )
        });
    }
    serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": listener.metadata,
        "state": state,
    })
    .to_string()
}

/// Connects to the agent's socket and sends `state` with the notify
/// descriptor (SCM_RIGHTS), in one message, then closes the connection.
pub fn send_to_agent(
    listener: &Listener,
    state: &str,
    fd: BorrowedFd<'_>,
) -> Result<(), SeccompError> {
    use nix::sys::socket::{
        connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
        UnixAddr,
    };
    let err = |what: &str, e: nix::Error| SeccompError::Agent {
        path: listener.path.clone(),
        what: what.to_string(),
        source: std::io::Error::from(e),
    };
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err("socket", e))?;
    let addr = UnixAddr::new(&listener.path).map_err(|e| err("address", e))?;
    connect(sock.as_raw_fd(), &addr).map_err(|e| err("connect", e))?;
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(state.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| err("send", e))?;
    if sent != state.len() {
        return Err(err("send", nix::Error::EMSGSIZE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    /// Runs `prog` on a call as the kernel would: (arch, nr, args) in,
    /// the filter's return value out. Covers the instructions emitted here
    /// and by seccompiler.
    fn run(prog: &BpfProgram, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend(nr.to_le_bytes());
        data.extend(arch.to_le_bytes());
        data.extend(0u64.to_le_bytes());
        for a in args {
            data.extend(a.to_le_bytes());
        }
        let word = |k: u32| {
            let k = k as usize;
            u32::from_le_bytes(data[k..k + 4].try_into().unwrap())
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                0x20 => acc = word(i.k),
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x06 => return i.k,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let t = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if t { i.jt } else { i.jf });
                }
                c => panic!("instruction {c:#x} at {}", pc - 1),
            }
        }
    }

    const X86_MKDIR: u32 = 39;
    const X32_MKDIR: u32 = 0x4000_0053;
    const X64_MKDIR: u32 = 83;

    #[test]
    fn each_listed_abi_is_matched_by_its_own_numbers() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]
        })))
        .unwrap();
        assert_eq!(p.filters.len(), 1);
        let f = &p.filters[0];
        let errno = 0x0005_0000 | 122;
        assert_eq!(run(f, AUDIT_ARCH_X86_64, X64_MKDIR, [0; 6]), errno);
        assert_eq!(run(f, AUDIT_ARCH_I386, X86_MKDIR, [0; 6]), errno);
        assert_eq!(run(f, AUDIT_ARCH_X86_64, X32_MKDIR, [0; 6]), errno);
        // 83 is fchown on i386, 39 getpid on x86_64: not mkdir there.
        assert_eq!(run(f, AUDIT_ARCH_I386, X64_MKDIR, [0; 6]), RET_ALLOW);
        assert_eq!(run(f, AUDIT_ARCH_X86_64, X86_MKDIR, [0; 6]), RET_ALLOW);
        // An ABI not listed at all (ARM) is killed.
        assert_eq!(run(f, 0x4000_0028, X86_MKDIR, [0; 6]), RET_KILL_THREAD);
    }

    #[test]
    fn unlisted_abis_are_killed_as_libseccomp_does() {
        // No architectures: the native one only.
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]
        })))
        .unwrap();
        let f = &p.filters[0];
        assert_eq!(
            run(f, AUDIT_ARCH_X86_64, X64_MKDIR, [0; 6]),
            0x0005_0000 | 122
        );
        assert_eq!(run(f, AUDIT_ARCH_X86_64, 39, [0; 6]), RET_ALLOW);
        assert_eq!(run(f, AUDIT_ARCH_I386, X86_MKDIR, [0; 6]), RET_KILL_THREAD);
        assert_eq!(
            run(f, AUDIT_ARCH_X86_64, X32_MKDIR, [0; 6]),
            RET_KILL_THREAD
        );
        // Even a profile that allows everything keeps the ABI check.
        let p = compile(&profile(
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}),
        ))
        .unwrap();
        assert_eq!(
            run(&p.filters[0], AUDIT_ARCH_I386, 1, [0; 6]),
            RET_KILL_THREAD
        );
        assert_eq!(run(&p.filters[0], AUDIT_ARCH_X86_64, 1, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn docker_default_profile_is_one_filter_for_its_three_abis() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../integration/fixtures/seccomp-default.json"
        ))
        .unwrap();
        let p = compile(&profile(v)).unwrap();
        assert_eq!(
            p.filters.len(),
            1,
            "{} instructions",
            p.filters.iter().map(|f| f.len()).sum::<usize>()
        );
        let f = &p.filters[0];
        let eperm = 0x0005_0001;
        // mkdir and chown32 (i386 only) allowed on i386, unshare refused.
        assert_eq!(run(f, AUDIT_ARCH_I386, X86_MKDIR, [0; 6]), RET_ALLOW);
        assert_eq!(run(f, AUDIT_ARCH_I386, 212, [0; 6]), RET_ALLOW);
        assert_eq!(run(f, AUDIT_ARCH_I386, 310, [0; 6]), eperm);
        assert_eq!(run(f, AUDIT_ARCH_X86_64, 272, [0; 6]), eperm);
        assert_eq!(run(f, AUDIT_ARCH_X86_64, X32_MKDIR, [0; 6]), RET_ALLOW);
        // clone3 is ENOSYS on every ABI (435 on all three).
        for (arch, nr) in [
            (AUDIT_ARCH_X86_64, 435),
            (AUDIT_ARCH_I386, 435),
            (AUDIT_ARCH_X86_64, 0x4000_0000 | 435),
        ] {
            assert_eq!(
                run(f, arch, nr, [0; 6]),
                0x0005_0000 | 38,
                "{arch:#x} {nr:#x}"
            );
        }
        // personality(8) allowed on i386, compared on the low 32 bits only.
        assert_eq!(run(f, AUDIT_ARCH_I386, 136, [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run(f, AUDIT_ARCH_I386, 136, [0x1_0000_0008, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(f, AUDIT_ARCH_X86_64, 135, [0x1_0000_0008, 0, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(run(f, AUDIT_ARCH_I386, 136, [7, 0, 0, 0, 0, 0]), eperm);
    }

    #[test]
    fn a_profile_too_long_for_one_program_is_stacked_with_the_abi_check() {
        // Five hundred conditional rules per ABI: too long for one program.
        let rules: Vec<serde_json::Value> = (0..500)
            .map(|v| {
                serde_json::json!({"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1, "args": [{"index": 0, "value": v + 100, "op": "SCMP_CMP_EQ"}]})
            })
            .collect();
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": rules
        })))
        .unwrap();
        assert!(p.filters.len() > 1);
        // The kernel keeps the most restrictive result of all filters.
        let all = |arch, nr, a0| {
            p.filters
                .iter()
                .map(|f| run(f, arch, nr, [a0, 0, 0, 0, 0, 0]))
                .min_by_key(|r| (*r & 0xffff_0000) as i32)
                .unwrap()
        };
        assert_eq!(all(AUDIT_ARCH_X86_64, 135, 150), 0x0005_0001);
        assert_eq!(all(AUDIT_ARCH_X86_64, 135, 8), RET_ALLOW);
        assert_eq!(all(AUDIT_ARCH_I386, 136, 150), 0x0005_0001);
        assert_eq!(all(AUDIT_ARCH_I386, 135, 150), RET_ALLOW);
        assert_eq!(all(AUDIT_ARCH_X86_64, X32_MKDIR, 0), RET_KILL_THREAD);
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
    fn notify_needs_a_listener_and_is_refused_where_runc_refuses_it() {
        let err = |v| compile(&profile(v)).unwrap_err().to_string();
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(e.contains("listenerPath"), "{e}");
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["mkdir", "write"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(
            e.contains("syscalls[0].names") && e.contains("write"),
            "{e}"
        );
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/agent.sock"
        }));
        assert!(e.contains("defaultAction"), "{e}");
    }

    #[test]
    fn notify_rules_return_user_notif_from_the_listener_filter() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "m",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["read", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["personality"], "action": "SCMP_ACT_NOTIFY",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
            ]
        })))
        .unwrap();
        assert!(p.notifies());
        assert_eq!(p.listener.as_ref().unwrap().metadata, "m");
        let f = &p.filters[0];
        assert_eq!(run(f, AUDIT_ARCH_X86_64, X64_MKDIR, [0; 6]), RET_USER_NOTIF);
        assert_eq!(run(f, AUDIT_ARCH_I386, X86_MKDIR, [0; 6]), RET_USER_NOTIF);
        assert_eq!(
            run(f, AUDIT_ARCH_X86_64, 135, [8, 0, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(run(f, AUDIT_ARCH_X86_64, 135, [0; 6]), 0x0005_0001);
        assert_eq!(run(f, AUDIT_ARCH_X86_64, 0, [0; 6]), RET_ALLOW);
        // A real trap elsewhere in the profile stays a trap.
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
                         {"names": ["rmdir"], "action": "SCMP_ACT_TRAP"}]
        })))
        .unwrap();
        assert_eq!(
            run(&p.filters[0], AUDIT_ARCH_X86_64, 84, [0; 6]),
            0x0003_0000
        );
        assert_eq!(
            run(&p.filters[0], AUDIT_ARCH_X86_64, X64_MKDIR, [0; 6]),
            RET_USER_NOTIF
        );
        // A listenerPath with no notify rule: no listener, as runc.
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
        })))
        .unwrap();
        assert!(!p.notifies() && p.listener.is_none());
    }

    #[test]
    fn the_agent_gets_runtime_specs_state_only() {
        let l = Listener {
            path: "/run/a.sock".into(),
            metadata: "meta".into(),
        };
        let state = serde_json::json!({"ociVersion": "1.2.1", "id": "c", "pid": 7, "status": "creating",
            "bundle": "/b", "rootfs": "/b/rootfs", "created": "now", "owner": ""});
        let got: serde_json::Value = serde_json::from_str(&process_state(&l, 9, state)).unwrap();
        assert_eq!(got["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(
            (got["pid"].as_i64(), got["metadata"].as_str()),
            (Some(9), Some("meta"))
        );
        let keys: Vec<&String> = got["state"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["bundle", "id", "ociVersion", "pid", "status"]);
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
                Ok(_) => {
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
