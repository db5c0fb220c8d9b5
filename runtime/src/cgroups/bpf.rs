//! The cgroup v2 device filter: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` built from the device rules and attached to
//! the container's cgroup.
//!
//! Built here with two raw `bpf(2)` calls through libc rather than a crate:
//! the program is a handful of fixed instruction shapes (load, mask, compare,
//! return), so an assembler or an eBPF loader crate (aya, libbpf-rs with its
//! C library) would be far more code than the feature, and would bring
//! threads or build-time C into a runtime that forks. The generator is pure
//! and unit-tested; only [`attach`] touches the kernel.
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }`, where `access_type` is `(access << 16) | type`. Rules are
//! checked from the last to the first, so the last matching rule decides (the
//! OCI order); nothing matching means deny. An allow rule matches when every
//! requested access is in the rule; a deny rule matches when any requested
//! access is in it.

use super::resources::{DevKind, DeviceRule, ACC_MKNOD, ACC_READ, ACC_WRITE};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes: class | op | source.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// The context's encoding (include/uapi/linux/bpf.h).
const DEVCG_DEV_BLOCK: i32 = 1;
const DEVCG_DEV_CHAR: i32 = 2;
const DEVCG_ACC_MKNOD: i32 = 1;
const DEVCG_ACC_READ: i32 = 2;
const DEVCG_ACC_WRITE: i32 = 4;

// Registers: r1 = ctx (then scratch), r2 = type, r3 = access, r4 = major,
// r5 = minor, r0 = verdict.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

fn devcg_access(bits: u8) -> i32 {
    let mut a = 0;
    if bits & ACC_READ != 0 {
        a |= DEVCG_ACC_READ;
    }
    if bits & ACC_WRITE != 0 {
        a |= DEVCG_ACC_WRITE;
    }
    if bits & ACC_MKNOD != 0 {
        a |= DEVCG_ACC_MKNOD;
    }
    a
}

/// A jump to the end of the current rule's block, patched once the block's
/// length is known.
struct Block {
    insns: Vec<Insn>,
    exits: Vec<usize>,
}

impl Block {
    fn skip_unless_eq(&mut self, reg: u8, value: i32) {
        self.exits.push(self.insns.len());
        self.insns.push(insn(JMP_JNE_K, reg, 0, 0, value));
    }

    fn finish(mut self) -> Vec<Insn> {
        let end = self.insns.len();
        for i in self.exits {
            self.insns[i].off = (end - i - 1) as i16;
        }
        self.insns
    }
}

/// One rule's block: fall through to its verdict when it matches.
fn rule_block(r: &DeviceRule) -> Vec<Insn> {
    let mut b = Block {
        insns: Vec::new(),
        exits: Vec::new(),
    };
    match r.kind {
        DevKind::All => {}
        DevKind::Char => b.skip_unless_eq(R2, DEVCG_DEV_CHAR),
        DevKind::Block => b.skip_unless_eq(R2, DEVCG_DEV_BLOCK),
    }
    let acc = devcg_access(r.access);
    if acc != 7 {
        b.insns.push(insn(ALU32_MOV_X, R1, R3, 0, 0));
        if r.allow {
            // Any requested access outside the rule: not this rule.
            b.insns.push(insn(ALU32_AND_K, R1, 0, 0, !acc & 7));
            b.exits.push(b.insns.len());
            b.insns.push(insn(JMP_JNE_K, R1, 0, 0, 0));
        } else {
            // No requested access inside the rule: not this rule.
            b.insns.push(insn(ALU32_AND_K, R1, 0, 0, acc));
            b.exits.push(b.insns.len());
            b.insns.push(insn(JMP_JEQ_K, R1, 0, 0, 0));
        }
    }
    if let Some(m) = r.major {
        b.skip_unless_eq(R4, m as i32);
    }
    if let Some(m) = r.minor {
        b.skip_unless_eq(R5, m as i32);
    }
    b.insns
        .push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(r.allow)));
    b.insns.push(insn(JMP_EXIT, 0, 0, 0, 0));
    b.finish()
}

/// The program for `rules` (in OCI order).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for r in rules.iter().rev() {
        p.extend(rule_block(r));
        if r.is_everything() {
            // Rules before an unconditional one can never decide.
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Evaluates `prog` on one access, as the kernel would: an interpreter for
/// the instructions [`program`] emits, for tests and for checking a program
/// before it is loaded.
pub fn evaluate(prog: &[Insn], kind: DevKind, major: u32, minor: u32, access: u8) -> Option<bool> {
    let ty = match kind {
        DevKind::Block => DEVCG_DEV_BLOCK,
        DevKind::Char => DEVCG_DEV_CHAR,
        DevKind::All => 0,
    } as u32;
    let ctx = [(devcg_access(access) as u32) << 16 | ty, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    while let Some(i) = prog.get(pc) {
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        let imm = i.imm as u32 as u64;
        pc += 1;
        match i.code {
            LDX_MEM_W => r[dst] = u64::from(*ctx.get(i.off as usize / 4)?),
            ALU32_AND_K => r[dst] = (r[dst] as u32 & imm as u32) as u64,
            ALU32_RSH_K => r[dst] = (r[dst] as u32 >> imm) as u64,
            ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
            ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
            JMP_JNE_K if r[dst] != imm => pc += i.off as usize,
            JMP_JEQ_K if r[dst] == imm => pc += i.off as usize,
            JMP_JNE_K | JMP_JEQ_K => {}
            JMP_EXIT => return Some(r[0] != 0),
            _ => return None,
        }
    }
    None
}

// bpf(2) commands and constants.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr` (the kernel accepts a
/// shorter attr than its own and zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly laid out bpf_attr prefix of the
    // given size; the pointers inside it point to live buffers.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// Loads the program for `rules` and attaches it to the cgroup open at
/// `cgroup` (alongside any others: the kernel allows an access only when
/// every attached program does). The program stays attached while the
/// cgroup exists.
pub fn attach(cgroup: BorrowedFd<'_>, rules: &[DeviceRule]) -> std::io::Result<()> {
    let prog = program(rules);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"skiff_devs");
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &mut load) {
        Ok(fd) => fd,
        Err(e) => {
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            if text.is_empty() {
                return Err(e);
            }
            return Err(std::io::Error::new(
                e.kind(),
                format!("{e}: verifier: {text}"),
            ));
        }
    };
    // SAFETY: the kernel just returned this new descriptor to us.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut at = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut at)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::resources::{default_allowed, ACC_ALL};

    fn deny_all() -> DeviceRule {
        DeviceRule {
            allow: false,
            kind: DevKind::All,
            major: None,
            minor: None,
            access: ACC_ALL,
        }
    }

    fn c(major: u32, minor: Option<u32>, access: u8, allow: bool) -> DeviceRule {
        DeviceRule {
            allow,
            kind: DevKind::Char,
            major: Some(major),
            minor,
            access,
        }
    }

    #[test]
    fn default_allowlist() {
        let mut rules = vec![deny_all()];
        rules.extend(default_allowed());
        let p = program(&rules);
        let ev = |k, ma, mi, a| evaluate(&p, k, ma, mi, a).unwrap();
        assert!(ev(DevKind::Char, 1, 3, ACC_READ | ACC_WRITE)); // /dev/null
        assert!(ev(DevKind::Char, 136, 7, ACC_READ)); // a pty
        assert!(ev(DevKind::Char, 5, 2, ACC_ALL)); // ptmx
        assert!(!ev(DevKind::Char, 1, 11, ACC_READ)); // /dev/kmsg
        assert!(!ev(DevKind::Block, 8, 0, ACC_READ)); // a disk
        assert!(ev(DevKind::Block, 8, 0, ACC_MKNOD)); // mknod of anything
        assert!(!ev(DevKind::Block, 8, 0, ACC_MKNOD | ACC_READ));
    }

    #[test]
    fn last_match_wins() {
        let rules = vec![
            deny_all(),
            c(1, Some(11), ACC_READ, true),
            c(1, None, ACC_WRITE, false),
        ];
        let p = program(&rules);
        assert_eq!(evaluate(&p, DevKind::Char, 1, 11, ACC_READ), Some(true));
        assert_eq!(
            evaluate(&p, DevKind::Char, 1, 11, ACC_READ | ACC_WRITE),
            Some(false)
        );
        assert_eq!(evaluate(&p, DevKind::Char, 1, 12, ACC_READ), Some(false));
    }

    #[test]
    fn allow_all_short_circuits() {
        let rules = vec![
            c(1, Some(3), ACC_ALL, false),
            DeviceRule {
                allow: true,
                ..deny_all()
            },
        ];
        let p = program(&rules);
        // The prologue, then one unconditional block.
        assert_eq!(p.len(), 6 + 2);
        assert_eq!(evaluate(&p, DevKind::Char, 1, 3, ACC_READ), Some(true));
    }

    #[test]
    fn jumps_land_on_the_next_block() {
        let p = program(&[c(10, Some(200), ACC_READ, true)]);
        // prologue 6; block: jne type, mov, and, jne, jne major, jne minor,
        // mov r0, exit = 8; epilogue 2.
        assert_eq!(p.len(), 16);
        assert_eq!(p[6].code, JMP_JNE_K);
        assert_eq!(p[6].off, 7);
        assert_eq!(p[11].off, 2);
        assert_eq!(p[14], insn(ALU64_MOV_K, R0, 0, 0, 0));
    }
}
