//! End-to-end test harness for skiff (or any runc-compatible runtime).
//!
//! The tests in `tests/` run real containers and therefore need root. Everything they need lives here:
//!
//! - [`spec`]: the default `config.json` (what `runc spec` writes, with `terminal: false`).
//! - [`bundle`]: a bundle builder whose rootfs is Debian's static busybox with its applet links.
//! - [`harness`]: the runtime driver. Each [`Harness`] has its own `--root`, its own temp dir and its own
//!   container ids; every command runs under a timeout, and dropping the harness force-deletes what the
//!   test created, so a failing test still cleans up.
//! - [`console`]: a `--console-socket` listener that receives the pty master over `SCM_RIGHTS`.
//! - [`host`]: what the host sees: mountinfo, cgroup directories (v1, hybrid or v2), namespaces, processes.
//! - [`caps`]: capability names to the bit masks shown in `/proc/<pid>/status`.
//! - [`procfs`]: `/proc` text printed in a container: status fields, fd listings, id maps.
//! - [`ptrace`]: fault injection: a runtime command SIGKILLed on entry to its N-th system call.
//! - [`userns`]: a user namespace held by a process of its own, for containers to join by path.
//!
//! The binary under test is `$SKIFF_BIN` when set, else the `skiff` cargo built beside the test binary (`target/x86_64-unknown-linux-gnu/debug/skiff`) (build it
//! first; the harness never builds it). Pointing `SKIFF_BIN` at `/usr/sbin/runc` runs the same tests
//! against runc, which is how the tests themselves are validated:
//!
//! ```text
//! cargo build -p skiff && cargo test -p skiff-integration -- --test-threads=2      # as root
//! SKIFF_BIN=/usr/sbin/runc cargo test -p skiff-integration -- --test-threads=2
//! ```
//!
//! Other knobs: `SKIFF_IT_TIMEOUT` (seconds a runtime command may take before it is killed, default
//! 30), `SKIFF_BUSYBOX` (the static busybox to copy, default `/bin/busybox` from `busybox-static`),
//! and `TMPDIR` (where bundles, state roots and outputs go; it must allow mounts and `pivot_root`).

pub mod bundle;
pub mod caps;
pub mod cgroup_helpers;
pub mod console;
pub mod containerd;
pub mod cri;
pub mod harness;
pub mod host;
pub mod procfs;
pub mod ptrace;
pub mod seccomp_agent;
pub mod spec;
pub mod userns;

pub use bundle::Bundle;
pub use console::ConsoleSocket;
pub use harness::{exec_args, wait_for_content, wait_for_file, Harness, Opts, Output, Spawned};
