//! runc's command line: global flags and subcommands, parsed with clap.
//! Every error becomes one message (stderr and the `--log` file) and exit
//! status 1, as with runc.

use crate::commands;
use crate::log::Logger;
use clap::{Args, Parser, Subcommand};
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
    /// AppArmor profile (refused: the host has no AppArmor support here).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux process label (refused likewise).
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
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => 1,
            };
            let _ = e.print();
            return code;
        }
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
            eprintln!(
                "skiff: --log {}: {e}",
                cli.log.as_deref().unwrap_or_else(|| "".as_ref()).display()
            );
            return 1;
        }
    };
    let Some(cmd) = &cli.command else {
        eprintln!("skiff: no command given; see skiff --help");
        return 1;
    };
    match commands::dispatch(&cli, cmd, &mut log) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e.to_string());
            1
        }
    }
}
