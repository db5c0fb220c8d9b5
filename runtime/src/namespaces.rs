//! Namespace kinds and joining existing namespaces by path.

use crate::sys;
use oci_spec::runtime::LinuxNamespaceType;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A namespace could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("open {kind} namespace {path}: {source}")]
    Open {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setns into {kind} namespace {path}: {source}")]
    Setns {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unshare {kind} namespace: {source}")]
    Unshare {
        kind: &'static str,
        source: std::io::Error,
    },
}

/// The Linux namespace kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsKind {
    User,
    Mount,
    Cgroup,
    Uts,
    Ipc,
    Net,
    Pid,
    Time,
}

impl NsKind {
    pub fn from_oci(t: LinuxNamespaceType) -> Self {
        match t {
            LinuxNamespaceType::User => NsKind::User,
            LinuxNamespaceType::Mount => NsKind::Mount,
            LinuxNamespaceType::Cgroup => NsKind::Cgroup,
            LinuxNamespaceType::Uts => NsKind::Uts,
            LinuxNamespaceType::Ipc => NsKind::Ipc,
            LinuxNamespaceType::Network => NsKind::Net,
            LinuxNamespaceType::Pid => NsKind::Pid,
            LinuxNamespaceType::Time => NsKind::Time,
        }
    }

    /// The `CLONE_NEW*` flag.
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            NsKind::User => libc::CLONE_NEWUSER,
            NsKind::Mount => libc::CLONE_NEWNS,
            NsKind::Cgroup => libc::CLONE_NEWCGROUP,
            NsKind::Uts => libc::CLONE_NEWUTS,
            NsKind::Ipc => libc::CLONE_NEWIPC,
            NsKind::Net => libc::CLONE_NEWNET,
            NsKind::Pid => libc::CLONE_NEWPID,
            NsKind::Time => 0x80, // CLONE_NEWTIME
        }
    }

    /// The name used in /proc/<pid>/ns and in messages.
    pub fn name(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Mount => "mnt",
            NsKind::Cgroup => "cgroup",
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Net => "net",
            NsKind::Pid => "pid",
            NsKind::Time => "time",
        }
    }

    /// Order in which joined namespaces are entered: the user namespace
    /// first (it grants the rights for the others), mount last (after it
    /// the joining paths of the others might no longer resolve).
    pub fn join_order(self) -> u8 {
        match self {
            NsKind::User => 0,
            NsKind::Pid => 1,
            NsKind::Time => 2,
            NsKind::Ipc => 3,
            NsKind::Uts => 4,
            NsKind::Net => 5,
            NsKind::Cgroup => 6,
            NsKind::Mount => 7,
        }
    }
}

/// Opens a namespace file to join later.
pub fn open(kind: NsKind, path: &Path) -> Result<OwnedFd, NsError> {
    sys::open(path, libc::O_RDONLY, 0).map_err(|source| NsError::Open {
        kind: kind.name(),
        path: path.to_path_buf(),
        source,
    })
}

/// Joins the namespace held by `fd`.
pub fn join(kind: NsKind, path: &Path, fd: &OwnedFd) -> Result<(), NsError> {
    sys::setns(fd.as_fd(), kind.clone_flag()).map_err(|source| NsError::Setns {
        kind: kind.name(),
        path: path.to_path_buf(),
        source,
    })
}

/// Creates a new namespace of `kind` for the calling process.
pub fn unshare(kind: NsKind) -> Result<(), NsError> {
    sys::unshare(kind.clone_flag()).map_err(|source| NsError::Unshare {
        kind: kind.name(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_namespace_joins_first_mount_last() {
        let mut v = vec![NsKind::Mount, NsKind::Net, NsKind::User, NsKind::Pid];
        v.sort_by_key(|k| k.join_order());
        assert_eq!(
            v,
            vec![NsKind::User, NsKind::Pid, NsKind::Net, NsKind::Mount]
        );
    }

    #[test]
    fn flags_match_oci() {
        for t in [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::User,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Time,
        ] {
            assert_eq!(NsKind::from_oci(t).clone_flag(), t as libc::c_int);
        }
    }
}
