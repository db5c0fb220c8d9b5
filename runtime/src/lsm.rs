//! Linux security module labels: the AppArmor profile and the SELinux
//! process, keyring and mount labels a container runs with.
//!
//! The process labels are set "on exec": the init (and an `exec`'d
//! process) writes them to its own `/proc/thread-self/attr/...` files just
//! before it gives up its privileges, and the kernel applies them at the
//! `execve` of the user's program, so the runtime's own remaining steps are
//! never confined by the container's profile. Those files are reached
//! through a procfs handle verified with `fstatfs`, never through a path the
//! rootfs could redirect.
//!
//! What runc 1.1.5 does, and so do we:
//! - `process.apparmorProfile`: written as `exec <profile>` to
//!   `attr/apparmor/exec` (or the older `attr/exec`). Not checked up
//!   front: where AppArmor is off the kernel refuses the write, and the
//!   container fails to start with that error.
//! - `process.selinuxLabel`: refused up front where SELinux is not enabled;
//!   else written to `attr/exec`, and to `attr/keycreate` before the
//!   session keyring is created, so the keyring carries the label too.
//! - `linux.mountLabel`: `context="<label>"` added to the data of the
//!   filesystems mounted for the container (not proc, sysfs, cgroup or
//!   binds; mqueue gets the label on its root directory instead, since its
//!   superblock exists before the mount), and of the tmpfs that masks a
//!   directory or holds the cgroup v1 hierarchies.

use crate::procfs::{Procfs, ProcfsError};
use crate::sys::{self, AsFdBorrowed};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// `SELINUX_MAGIC` of `statfs(2)`: selinuxfs.
const SELINUX_MAGIC: i64 = 0xf97c_ff8c;

/// Applying a label failed.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("{field} {label:?}: {path}: {source}{hint}")]
    Write {
        field: &'static str,
        label: String,
        path: PathBuf,
        source: std::io::Error,
        /// Why the kernel may have refused it, when that is likely.
        hint: &'static str,
    },
    #[error("{field}: {source}")]
    Procfs {
        field: &'static str,
        source: ProcfsError,
    },
    #[error("linux.mountLabel {label:?}: label {path}: {source}")]
    FileLabel {
        label: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The labels a process is started with (empty settings are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// `process.apparmorProfile` (`exec --apparmor`).
    pub apparmor: Option<String>,
    /// `process.selinuxLabel` (`exec --process-label`).
    pub selinux: Option<String>,
}

impl Labels {
    /// Fills what this process does not set from `base` (an `exec`'d
    /// process falls back to the container's labels, as in runc).
    pub fn or(self, base: &Labels) -> Labels {
        Labels {
            apparmor: self.apparmor.or_else(|| base.apparmor.clone()),
            selinux: self.selinux.or_else(|| base.selinux.clone()),
        }
    }
}

/// Whether AppArmor is enabled on this host (runc's test: its securityfs
/// directory exists and the module says it is enabled).
pub fn apparmor_enabled() -> bool {
    Path::new("/sys/kernel/security/apparmor").exists()
        && sys::read_text("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'))
}

/// Whether SELinux is enabled on this host (as go-selinux decides: a
/// selinuxfs is mounted and our own label is not the bare `kernel` one).
pub fn selinux_enabled() -> bool {
    let fs = sys::open(
        Path::new("/sys/fs/selinux"),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    );
    let Ok(fs) = fs else {
        return false;
    };
    if fs_magic(fs.as_fd_borrowed()).ok() != Some(SELINUX_MAGIC) {
        return false;
    }
    sys::read_text("/proc/self/attr/current")
        .is_ok_and(|c| !c.trim_end_matches(['\0', '\n']).is_empty() && c.trim() != "kernel")
}

/// `data` with the `context=` option for `label`, as runc's
/// `label.FormatMountLabel`: the label quoted, since an MLS range holds
/// commas.
pub fn mount_data(data: &str, label: Option<&str>) -> String {
    match label.filter(|l| !l.is_empty()) {
        None => data.to_string(),
        Some(l) if data.is_empty() => format!("context=\"{l}\""),
        Some(l) => format!("{data},context=\"{l}\""),
    }
}

/// Whether a new filesystem of `fstype` gets `context=` in its data (as in
/// runc's `mountToRootfs`): proc and sysfs keep their own labels, mqueue is
/// labelled after the mount ([`label_file`]), cgroup hierarchies and binds
/// are not new filesystems of the container's.
pub fn takes_context(fstype: &str) -> bool {
    !matches!(
        fstype,
        "proc" | "sysfs" | "mqueue" | "cgroup" | "cgroup2" | "bind"
    )
}

/// Sets the SELinux label of the file `fd` (the root of an mqueue mount),
/// where SELinux is enabled, as runc's `label.SetFileLabel` does.
pub fn label_file(fd: BorrowedFd<'_>, label: &str, shown: &Path) -> Result<(), LsmError> {
    if label.is_empty() || !selinux_enabled() {
        return Ok(());
    }
    let path = sys::cstr(sys::fd_path(fd)).map_err(|source| LsmError::FileLabel {
        label: label.into(),
        path: shown.into(),
        source,
    })?;
    // SAFETY: valid C strings and buffer for the duration of the call.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"security.selinux".as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    if r < 0 {
        return Err(LsmError::FileLabel {
            label: label.into(),
            path: shown.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn fs_magic(fd: BorrowedFd<'_>) -> std::io::Result<i64> {
    // SAFETY: a zeroed statfs is valid; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// This task's LSM attribute files, reached through a verified procfs
/// handle ([`crate::procfs`]): never through a path the rootfs could
/// redirect (a fake `/proc`, an overmount of `attr/exec`).
struct ProcAttr {
    proc: Procfs,
    field: &'static str,
}

impl ProcAttr {
    fn open(field: &'static str) -> Result<ProcAttr, LsmError> {
        let proc = Procfs::open().map_err(|source| LsmError::Procfs { field, source })?;
        Ok(ProcAttr { proc, field })
    }

    /// Writes `value` to the first of `names` (under `thread-self/attr`)
    /// that exists.
    fn write(&self, names: &[&str], label: &str, value: &str) -> Result<(), LsmError> {
        let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
        let mut shown = String::new();
        for name in names {
            let rel = Path::new("thread-self/attr").join(name);
            shown = format!("write /proc/{}", rel.display());
            match self.proc.open_file(&rel, libc::O_WRONLY) {
                Ok(fd) => {
                    return sys::write_all(fd.as_fd_borrowed(), value.as_bytes())
                        .map_err(|e| self.error(label, &shown, e))
                }
                Err(ProcfsError::Open { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    last = source
                }
                Err(source) => {
                    return Err(LsmError::Procfs {
                        field: self.field,
                        source,
                    })
                }
            }
        }
        Err(self.error(label, &shown, last))
    }

    fn error(&self, label: &str, path: &str, source: std::io::Error) -> LsmError {
        let hint = match (self.field, source.raw_os_error()) {
            ("process.apparmorProfile", Some(libc::EINVAL)) if !apparmor_enabled() => {
                " (AppArmor is not enabled on this host)"
            }
            ("process.apparmorProfile", Some(libc::ENOENT)) => {
                " (is the profile loaded? see apparmor_parser)"
            }
            _ => "",
        };
        LsmError::Write {
            field: self.field,
            label: label.into(),
            path: path.into(),
            source,
            hint,
        }
    }
}

/// Makes the next `execve` of this task run with `labels` (AppArmor's
/// change-on-exec, SELinux's exec context).
pub fn set_exec_labels(labels: &Labels) -> Result<(), LsmError> {
    if let Some(profile) = &labels.apparmor {
        ProcAttr::open("process.apparmorProfile")?.write(
            &["apparmor/exec", "exec"],
            profile,
            &apparmor_exec_command(profile),
        )?;
    }
    if let Some(label) = &labels.selinux {
        ProcAttr::open("process.selinuxLabel")?.write(&["exec"], label, label)?;
    }
    Ok(())
}

/// Labels the keys this task creates (its session keyring) with the
/// process's SELinux label, as runc does before joining the keyring.
pub fn set_keyring_label(labels: &Labels) -> Result<(), LsmError> {
    let Some(label) = &labels.selinux else {
        return Ok(());
    };
    match ProcAttr::open("process.selinuxLabel")?.write(&["keycreate"], label, label) {
        // No keycreate attribute: nothing to label (as in go-selinux).
        Err(LsmError::Write { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        r => r,
    }
}

/// The AppArmor attr command that switches profile at the next exec.
pub fn apparmor_exec_command(profile: &str) -> String {
    format!("exec {profile}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_data_adds_a_quoted_context() {
        assert_eq!(mount_data("mode=755", None), "mode=755");
        assert_eq!(mount_data("mode=755", Some("")), "mode=755");
        assert_eq!(
            mount_data("", Some("system_u:object_r:container_file_t:s0")),
            "context=\"system_u:object_r:container_file_t:s0\""
        );
        assert_eq!(
            mount_data("mode=755,size=65536k", Some("s:o:t:s0:c1,c2")),
            "mode=755,size=65536k,context=\"s:o:t:s0:c1,c2\""
        );
    }

    #[test]
    fn context_goes_on_new_filesystems_as_in_runc() {
        for t in ["tmpfs", "devpts", "overlay", "ramfs"] {
            assert!(takes_context(t), "{t}");
        }
        for t in ["proc", "sysfs", "mqueue", "cgroup", "cgroup2", "bind"] {
            assert!(!takes_context(t), "{t}");
        }
    }

    #[test]
    fn exec_labels_fall_back_to_the_containers() {
        let base = Labels {
            apparmor: Some("base-aa".into()),
            selinux: Some("base-se".into()),
        };
        let own = Labels {
            apparmor: Some("own".into()),
            selinux: None,
        };
        assert_eq!(
            own.or(&base),
            Labels {
                apparmor: Some("own".into()),
                selinux: Some("base-se".into())
            }
        );
        assert_eq!(
            apparmor_exec_command("docker-default"),
            "exec docker-default"
        );
    }

    #[test]
    fn the_attr_files_are_reached_through_a_verified_procfs() {
        let p = ProcAttr::open("process.apparmorProfile").unwrap();
        // A missing attribute file is tried after the next; the last error names it.
        let err = p
            .write(&["no-such-attr", "nor-this"], "x", "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("process.apparmorProfile \"x\": write /proc/thread-self/attr/nor-this"),
            "{err}"
        );
        // Nothing outside the procfs is reached.
        let err = p.write(&["../../../../../etc/passwd"], "x", "x");
        assert!(matches!(err, Err(LsmError::Procfs { .. })), "{err:?}");
    }
}
