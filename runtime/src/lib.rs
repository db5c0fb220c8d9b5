//! skiff: a runc-compatible OCI container runtime.
//!
//! The binary is a short-lived command like runc: each call reads the state
//! directory, does one thing and exits. The library is split the way the
//! work is: a pure plan from the spec, then small modules that apply it.

pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod commands;
pub mod copyup;
pub mod exeseal;
pub mod hooks;
pub mod log;
pub mod lsm;
pub mod mountfd;
pub mod namespaces;
pub mod netdev;
pub mod numa;
pub mod plan;
pub mod premount;
pub mod process;
pub mod procfs;
pub mod procmount;
pub mod rootfs;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod state;
pub mod stdio;
pub mod sys;
pub mod syscalls;
pub mod tty;
pub mod user;
