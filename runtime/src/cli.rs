//! runc's command line: global flags and subcommands, parsed with clap.
//! Every error becomes one message (stderr and the `--log` file) and runc's
//! exit status: 1, 255 for `exec`, 3 for an unknown command.

use crate::commands;
use crate::log::Logger;
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// skiff: a runc-compatible OCI container runtime.
#[derive(Debug, Parser)]
#[command(name = "skiff", disable_version_flag = true)]
pub struct Cli {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = "/run/skiff")]
    pub root: PathBuf,
    /// Log file (runc format); errors are always printed to stderr too.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd for cgroups (cgroupsPath slice:prefix:name).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Accepted for runc compatibility (auto, true, false).
    #[arg(long, global = true, hide = true)]
    pub rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags shared by `create` and `run`.
#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// The container id.
    pub id: String,
    /// Path to the bundle (config.json and rootfs).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master of a terminal container.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// File to write the init's pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many extra descriptors (from fd 3) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
}

/// Flags of `exec` (runc's).
#[derive(Debug, Args, Clone)]
pub struct ExecArgs {
    /// The container id.
    pub id: String,
    /// A process.json (OCI `process`) to run instead of the arguments.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket that receives the pty master.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Return once the process has started.
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Working directory in the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment (KEY=VALUE), repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Supplementary group ids, repeatable.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Extra capability, repeatable.
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// AppArmor profile for the process (default: the container's).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label for the process (default: the container's).
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Pass this many extra descriptors (from fd 3) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Run in an existing sub-cgroup of the container: `PATH` (cgroup v2) or
    /// `CONTROLLER[,CONTROLLER...]:PATH` (repeatable, cgroup v1).
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Exec even if the container is paused.
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a new process in a running container.
    Exec(Box<ExecArgs>),
    /// Print the features this runtime supports (JSON, as `runc features`).
    Features,
    /// Create a container, stopped before the user process.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container.
    Run {
        #[command(flatten)]
        args: CreateArgs,
        /// Return after starting instead of waiting for the container.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits (foreground only).
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal to a container's init (default SIGTERM).
    Kill {
        id: String,
        signal: Option<String>,
        /// Signal every process in the container's cgroup.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container.
    Delete {
        id: String,
        /// Kill the container first if it is running.
        #[arg(short, long)]
        force: bool,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        /// table or json.
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Suspend every process of a container.
    Pause { id: String },
    /// Resume a paused container.
    Resume { id: String },
    /// List the processes of a container.
    Ps(crate::commands::cgroup::PsArgs),
    /// Print resource statistics and OOM events as JSON lines.
    Events(crate::commands::cgroup::EventsArgs),
    /// Change a live container's resource limits.
    Update(Box<crate::commands::cgroup::UpdateArgs>),
    /// Write a default config.json.
    Spec {
        /// Bundle directory to write it in.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
}

/// Parses the arguments, runs the command, returns the exit status.
pub fn main() -> i32 {
    main_from(std::env::args_os())
}

/// [`main`] with the command line given (the first item is the program
/// name): what a caller that links the runtime (the shim) runs in a child
/// it forked instead of executing the binary.
pub fn main_from<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    if cli.version {
        println!(
            "skiff version {}\nspec: {}",
            env!("CARGO_PKG_VERSION"),
            crate::state::OCI_VERSION
        );
        return 0;
    }
    let mut log = match Logger::new(cli.log.as_deref(), &cli.log_format, cli.debug) {
        Ok(l) => l,
        Err(e) => {
            let path = cli.log.as_deref().unwrap_or_else(|| "".as_ref());
            Logger::stderr(&cli.log_format).error(&format!("--log {}: {e}", path.display()));
            return 1;
        }
    };
    let Some(cmd) = &cli.command else {
        // As runc: no command prints the help.
        let _ = Cli::command().print_help();
        return 0;
    };
    // Before anything that puts a process of ours in a container: run from
    // a view of the binary that the container cannot write or execute
    // (re-executes this command once).
    if matches!(
        cmd,
        Command::Create(_) | Command::Run { .. } | Command::Exec(_)
    ) {
        if let Err(e) = crate::exeseal::ensure(&cli.root) {
            log.error(&e.to_string());
            return failure_status(cmd);
        }
    }
    match commands::dispatch(&cli, cmd, &mut log) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e.to_string());
            failure_status(cmd)
        }
    }
}

/// The exit status of a failed command: runc's `exec` exits 255 when the
/// process could not be started (its own status otherwise), every other
/// command 1.
fn failure_status(cmd: &Command) -> i32 {
    match cmd {
        Command::Exec(_) => 255,
        _ => 1,
    }
}

/// A command line clap refused: help and version go to stdout (status 0);
/// an error becomes one log line, as runc's, with runc's status (3 for an
/// unknown command, 1 for the rest).
fn usage_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return 0;
        }
        _ => {}
    }
    let (log_path, format) = early_log_options(std::env::args().skip(1));
    let mut log = Logger::new(log_path.as_deref(), &format, false)
        .unwrap_or_else(|_| Logger::stderr(&format));
    log.error(&clap_message(&e.render().to_string()));
    match e.kind() {
        ErrorKind::InvalidSubcommand => 3,
        _ => 1,
    }
}

/// clap's rendered error as one line: its text up to the usage, without
/// the `error: ` prefix.
fn clap_message(rendered: &str) -> String {
    let text = rendered.trim_start().trim_start_matches("error: ");
    let head = text.split("\n\n").next().unwrap_or(text);
    head.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `--log` and `--log-format` from the global flags before the command,
/// for reporting a command line clap refused the way the command would
/// have: containerd reads the error from that log.
fn early_log_options(args: impl Iterator<Item = String>) -> (Option<PathBuf>, String) {
    let mut log = None;
    let mut format = "text".to_string();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            // The command: global flags come before it.
            break;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let takes_value = matches!(name, "root" | "log" | "log-format" | "criu" | "rootless");
        let value = match (takes_value, inline) {
            (true, Some(v)) => Some(v),
            (true, None) => args.next(),
            (false, _) => None,
        };
        match (name, value) {
            ("log", Some(v)) => log = Some(PathBuf::from(v)),
            ("log-format", Some(v)) if v == "json" || v == "text" => format = v,
            _ => {}
        }
    }
    (log, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> impl Iterator<Item = String> {
        v.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn log_options_come_from_the_flags_before_the_command() {
        let (log, format) = early_log_options(strings(&[
            "--root",
            "/r",
            "--log=/l.json",
            "--log-format",
            "json",
            "create",
            "--log",
            "/x",
        ]));
        assert_eq!(log, Some(PathBuf::from("/l.json")));
        assert_eq!(format, "json");
        let (log, format) = early_log_options(strings(&["exec", "--log", "/x"]));
        assert_eq!((log, format.as_str()), (None, "text"));
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <ID>\n\nUsage: skiff create <ID>\n";
        assert_eq!(
            clap_message(rendered),
            "the following required arguments were not provided: <ID>"
        );
    }

    #[test]
    fn exec_fails_with_255_as_runc() {
        let cli = Cli::try_parse_from(["skiff", "exec", "c", "true"]).unwrap();
        assert_eq!(failure_status(cli.command.as_ref().unwrap()), 255);
        let cli = Cli::try_parse_from(["skiff", "state", "c"]).unwrap();
        assert_eq!(failure_status(cli.command.as_ref().unwrap()), 1);
    }
}
