//! The commands behind the CLI: each reads the state directory, does one
//! thing and returns the exit status. `lifecycle` holds runc's container
//! lifecycle (create, start, run, state, kill, delete, list, spec).

pub mod cgroup;
pub mod exec;
pub mod features;
pub mod lifecycle;

use crate::cgroups::CgroupError;
use crate::cli::{Cli, Command};
use crate::hooks::HookError;
use crate::log::Logger;
use crate::plan::PlanError;
use crate::process::parent::CreateError;
use crate::signal::{self, SignalError};
use crate::spec::SpecError;
use crate::state::{Container, StateError};
use std::path::PathBuf;

/// A command failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    SubCgroup(#[from] crate::cgroups::sub::SubCgroupError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("container {id}: cannot {action} a container that is {status}")]
    BadStatus {
        id: String,
        action: &'static str,
        status: &'static str,
    },
    #[error("container {0} not running")]
    NotRunning(String),
    #[error("container {0}: init exited before start")]
    InitGone(String),
    #[error("ps: {reason}")]
    Ps { reason: String },
    #[error("--resources: {field}: {reason}")]
    BadResources { field: String, reason: String },
    #[error("bundle {0}: config.json exists; remove it first")]
    SpecExists(PathBuf),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CmdError {
    let what = what.into();
    move |source| CmdError::Io { what, source }
}

/// Writes `text` and a newline to stdout. A reader that went away (`skiff
/// features | head -1`) is not an error: what it wanted it has.
pub(crate) fn print_line(text: &str) -> Result<(), CmdError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(io_err("stdout")),
    }
}

/// Runs `cmd`; Ok carries the exit status.
pub fn dispatch(cli: &Cli, cmd: &Command, log: &mut Logger) -> Result<i32, CmdError> {
    match cmd {
        Command::Exec(a) => exec::exec(cli, a, log),
        Command::Features => {
            let f = serde_json::to_string_pretty(&features::features())
                .map_err(|e| io_err("features JSON")(std::io::Error::other(e)))?;
            print_line(&f)?;
            Ok(0)
        }
        Command::Create(a) => {
            lifecycle::create(cli, a, false, log)?;
            Ok(0)
        }
        Command::Start { id } => {
            let c = Container::load(&cli.root, id)?;
            lifecycle::start(c, log)?;
            Ok(0)
        }
        Command::Run { args, detach, keep } => lifecycle::run(cli, args, *detach, *keep, log),
        Command::State { id } => {
            let (record, status) = Container::inspect(&cli.root, id)?;
            let s = serde_json::to_string_pretty(&record.oci_state(status))
                .map_err(|e| io_err("state JSON")(std::io::Error::other(e)))?;
            print_line(&s)?;
            Ok(0)
        }
        Command::Kill { id, signal, all } => {
            let sig = signal::parse(signal.as_deref().unwrap_or("SIGTERM"))?;
            let c = Container::load(&cli.root, id)?;
            lifecycle::kill(&c, sig, *all)?;
            Ok(0)
        }
        Command::Delete { id, force } => {
            let c = match Container::load(&cli.root, id) {
                Ok(c) => c,
                // runc: deleting a missing container with --force succeeds;
                // debris of a command killed half-way goes with it.
                Err(StateError::NotFound(_)) if *force => {
                    crate::state::clear_debris(&cli.root, id, true)?;
                    return Ok(0);
                }
                Err(e) => return Err(e.into()),
            };
            lifecycle::delete(c, *force, log)?;
            Ok(0)
        }
        Command::List { format, quiet } => {
            lifecycle::list(&cli.root, format, *quiet)?;
            Ok(0)
        }
        Command::Spec { bundle } => {
            lifecycle::write_spec(bundle)?;
            Ok(0)
        }
        Command::Pause { id } => cgroup::pause(cli, id).map(|()| 0),
        Command::Resume { id } => cgroup::resume(cli, id).map(|()| 0),
        Command::Ps(a) => cgroup::ps(cli, a).map(|()| 0),
        Command::Events(a) => cgroup::events(cli, a).map(|()| 0),
        Command::Update(a) => cgroup::update(cli, a).map(|()| 0),
    }
}
