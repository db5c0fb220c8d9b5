//! Per container: the init and exec processes, each a small state machine.
//!
//! ```text
//!         Start   runtime start ok   pause             resume
//! Created ──────▶ Starting ──────▶ Running ─────────▶ Paused ─────────▶ Running
//!    │  ◀─ failed ──┘                  │                  │
//!    └────── exit ─────────────────────┴────── exit ──────┴──▶ Stopped ── delete ──▶ (removed)
//! ```
//!
//! A created process may also be deleted (containerd does so when `Start` is never called).
//! `Starting` is the init while `runtime start` runs: an exit that arrives then is held
//! (`pending_init_exit`) until `Start` has published `TaskStart`, so `TaskExit` comes after it.
//! An exec is `Starting` while it is launched: an init exit then waits for it, since the exec's
//! process may exit (and be reaped) before its pid is recorded.
//! `Exiting` is a process that was reaped and whose exit waits (at most the output grace) for its
//! output to be written before it becomes `Stopped` and `TaskExit` is published: its pid is no
//! longer its own, so nothing signals it, and an init's exit still waits for it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use skiff_proto::api::Status;

use crate::cgroup::Cgroup;
use crate::io::{ProcessIo, StdioPaths};
use crate::runtime::Runtime;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Created,
    /// `runtime start` is running for the init.
    Starting,
    Running,
    Paused,
    /// Reaped; reported once its output is written.
    Exiting,
    Stopped {
        status: u32,
        at: SystemTime,
    },
}

impl ProcState {
    pub fn can_start(self) -> bool {
        self == ProcState::Created
    }
    pub fn can_pause(self) -> bool {
        self == ProcState::Running
    }
    pub fn can_resume(self) -> bool {
        self == ProcState::Paused
    }
    pub fn can_delete(self) -> bool {
        matches!(self, ProcState::Created | ProcState::Stopped { .. })
    }
    pub fn is_alive(self) -> bool {
        matches!(self, ProcState::Running | ProcState::Paused)
    }
    /// Started and its exit not reported yet (alive, or reaped and `Exiting`).
    pub fn is_unreported(self) -> bool {
        self.is_alive() || self == ProcState::Exiting
    }
    /// The exit status and time, once stopped.
    pub fn exit(self) -> Option<(u32, SystemTime)> {
        match self {
            ProcState::Stopped { status, at } => Some((status, at)),
            _ => None,
        }
    }
    /// The Task API status.
    pub fn status(self) -> Status {
        match self {
            ProcState::Created | ProcState::Starting => Status::CREATED,
            ProcState::Running | ProcState::Exiting => Status::RUNNING,
            ProcState::Paused => Status::PAUSED,
            ProcState::Stopped { .. } => Status::STOPPED,
        }
    }
}

/// The init or one exec process.
#[derive(Debug)]
pub struct Process {
    /// Empty for the init.
    pub exec_id: String,
    /// 0 until the process exists (execs before `Start`).
    pub pid: i32,
    pub state: ProcState,
    pub stdio: StdioPaths,
    pub io: Option<ProcessIo>,
    /// An exec's process spec (JSON), kept from `Exec` to `Start`.
    pub spec: Vec<u8>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            state: ProcState::Created,
            stdio,
            io: None,
            spec: Vec::new(),
        }
    }
}

/// One container and its processes.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: Runtime,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    pub cgroup: Option<Cgroup>,
    /// Whether the shim mounted `bundle/rootfs` (and so unmounts it on delete).
    pub rootfs_mounted: bool,
    /// The init's exit, held back until its running execs' exits are reported, or until `Start`
    /// returned.
    pub pending_init_exit: Option<(i32, SystemTime)>,
    /// Held across every call that runs the runtime for this container, so they run one at a
    /// time (never the table lock: other containers' calls go on meanwhile).
    pub op: Arc<Mutex<()>>,
    /// Exits recorded but not yet published, in the order they were reaped: one container's
    /// `TaskExit`s go out in that order even while one of them waits for its output.
    pub exit_queue: VecDeque<QueuedExit>,
    /// Whether a drain of `exit_queue` is under way (inline or on its own thread).
    pub draining: bool,
}

/// An exit waiting in [`Container::exit_queue`]: the exec id (empty: the init), the raw wait
/// status and when it was reaped.
#[derive(Debug, Clone)]
pub struct QueuedExit {
    pub exec_id: String,
    pub raw: i32,
    pub at: SystemTime,
}

impl Container {
    /// The process `exec_id` names (empty: the init).
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// Whether an exec's exit is not reported yet (it runs, or its output is being written).
    /// Whether an exec is being started or has not had its exit reported: the init's exit
    /// waits for them.
    pub fn has_live_execs(&self) -> bool {
        self.execs
            .values()
            .any(|p| p.state.is_unreported() || p.state == ProcState::Starting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let stopped = ProcState::Stopped {
            status: 1,
            at: SystemTime::now(),
        };
        assert!(ProcState::Created.can_start());
        assert!(!ProcState::Running.can_start());
        assert!(!ProcState::Starting.can_start());
        assert!(!ProcState::Starting.can_delete());
        assert!(!ProcState::Starting.is_alive());
        assert!(!ProcState::Exiting.is_alive());
        assert!(ProcState::Exiting.is_unreported());
        assert!(!ProcState::Exiting.can_delete());
        assert_eq!(ProcState::Exiting.exit(), None);
        assert_eq!(ProcState::Starting.status(), Status::CREATED);
        assert!(ProcState::Running.can_pause());
        assert!(ProcState::Paused.can_resume());
        assert!(!ProcState::Running.can_delete());
        assert!(ProcState::Created.can_delete());
        assert!(stopped.can_delete());
        assert_eq!(stopped.exit().map(|e| e.0), Some(1));
        assert_eq!(ProcState::Paused.status(), Status::PAUSED);
    }
}
