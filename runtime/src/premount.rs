//! Bind mounts the runtime makes for the init before the clone, as detached
//! trees (`open_tree(OPEN_TREE_CLONE)`) that the init moves into place with
//! `move_mount` instead of binding the source itself.
//!
//! An init in a user namespace (new, or joined by path) works with the ids
//! of that namespace: a bind source that only the host's root may reach (a
//! volume under kubelet's 0750 pod directories, a bundle under a 0700
//! directory) is out of its reach, and runc 1.1 opens such sources for its
//! init for this reason. The runtime, still the host's root, clones the
//! tree instead; the kernel lets the init attach a detached tree in its
//! own mount namespace. The tree gets the propagation a bind made inside
//! the container's mount namespace would have had (private, or a slave of
//! the host's mount under `rslave`), so nothing mounted under it reaches
//! the host.
//!
//! Idmapped bind mounts (`mounts[].uidMappings`/`gidMappings`, runc's
//! `idmap`/`ridmap`) are made here for every container: the tree is
//! idmapped with `mount_setattr(MOUNT_ATTR_IDMAP)` while it is detached, as
//! the kernel requires, with a user namespace made for the mapping (a
//! helper process unshares it, the runtime writes the mapping into its
//! maps, keeps a descriptor of the namespace and kills the helper). A file
//! owned by id N on disk then shows as the host id the mapping gives N,
//! whatever user namespace the container has.
//!
//! Other bind mounts of a container without a user namespace are made by
//! the init itself, as before.

use crate::mountfd;
use crate::plan::{Idmap, MountKind, MountOp, Plan};
use crate::sys::{self, AsFdBorrowed};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A bind source could not be made into a tree.
#[derive(Debug, thiserror::Error)]
pub enum PremountError {
    #[error("mounts: source {path} of {dest}: {source}")]
    Source {
        path: PathBuf,
        dest: PathBuf,
        source: std::io::Error,
    },
    #[error("mounts: idmapped mount of {path} on {dest}: {what}: {source}")]
    Idmap {
        path: PathBuf,
        dest: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

/// The trees made for the init, by index in `plan.mounts`.
#[derive(Debug, Default)]
pub struct Trees(Vec<Option<OwnedFd>>);

impl Trees {
    /// The detached tree to attach for `plan.mounts[index]`, if the runtime
    /// made one.
    pub fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.0
            .get(index)
            .and_then(|t| t.as_ref())
            .map(|t| t.as_fd_borrowed())
    }
}

/// The source path of a bind mount: relative ones are in the bundle.
pub fn source_path(plan: &Plan, op: &MountOp) -> PathBuf {
    let src = op.source.clone().unwrap_or_default();
    if src.is_absolute() {
        src
    } else {
        plan.bundle.join(src)
    }
}

/// Whether the init works in a user namespace of its own or a joined one.
pub fn init_in_userns(plan: &Plan) -> bool {
    plan.namespaces.new_user
        || plan
            .namespaces
            .joins
            .iter()
            .any(|(k, _)| *k == crate::namespaces::NsKind::User)
}

/// Makes the trees the init needs: every bind mount's for an init in a
/// user namespace, the idmapped ones' in any case (none, and no system
/// call, for the common container).
pub fn make(plan: &Plan) -> Result<Trees, PremountError> {
    let all = init_in_userns(plan);
    if !all && plan.mounts.iter().all(|op| op.idmap.is_none()) {
        return Ok(Trees::default());
    }
    let mut userns = Vec::new();
    let mut trees = Vec::with_capacity(plan.mounts.len());
    for op in &plan.mounts {
        let tree = match op.kind {
            MountKind::Bind { recursive } if all || op.idmap.is_some() => {
                Some(make_tree(plan, op, recursive, &mut userns)?)
            }
            _ => None,
        };
        trees.push(tree);
    }
    Ok(Trees(trees))
}

/// The user namespaces made for mappings so far, by mapping.
type MappingNamespaces = Vec<(Idmap, OwnedFd)>;

fn make_tree(
    plan: &Plan,
    op: &MountOp,
    recursive: bool,
    userns: &mut MappingNamespaces,
) -> Result<OwnedFd, PremountError> {
    let src = source_path(plan, op);
    let err = |source| PremountError::Source {
        path: src.clone(),
        dest: op.destination.clone(),
        source,
    };
    let fd = sys::open(&src, libc::O_PATH, 0).map_err(err)?;
    let tree = mountfd::clone_tree(fd.as_fd_borrowed(), recursive).map_err(err)?;
    if let Some(idmap) = &op.idmap {
        let idmap_err = |what| {
            let src = src.clone();
            move |source| PremountError::Idmap {
                path: src,
                dest: op.destination.clone(),
                what,
                source,
            }
        };
        let ns = match userns.iter().position(|(m, _)| m == idmap) {
            Some(i) => &userns[i].1,
            None => {
                let fd = mapping_namespace(idmap)
                    .map_err(idmap_err("a user namespace for the mapping"))?;
                userns.push((idmap.clone(), fd));
                &userns[userns.len() - 1].1
            }
        };
        mountfd::set_idmap(
            tree.as_fd_borrowed(),
            ns.as_fd_borrowed(),
            idmap.recursive && recursive,
        )
        .map_err(idmap_err(
            "mount_setattr(MOUNT_ATTR_IDMAP) (does the filesystem support idmapped mounts?)",
        ))?;
    }
    if let Some(p) = propagation(plan.root_propagation) {
        mountfd::set_propagation(tree.as_fd_borrowed(), p, true).map_err(err)?;
    }
    Ok(tree)
}

/// A user namespace whose maps are `idmap`'s: a helper cloned into a new
/// one waits while we write its maps and open it, then is killed and
/// reaped (the descriptor keeps the namespace).
fn mapping_namespace(idmap: &Idmap) -> std::io::Result<OwnedFd> {
    let parent = std::process::id() as libc::pid_t;
    let pid = match sys::clone_fork(libc::CLONE_NEWUSER as u64, None)? {
        sys::Forked::Child => {
            // Dies with us, so a runtime killed now leaves no helper.
            let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
            // SAFETY: getppid, pause and _exit have no preconditions.
            unsafe {
                if libc::getppid() == parent {
                    loop {
                        libc::pause();
                    }
                }
                libc::_exit(0)
            }
        }
        sys::Forked::Parent(pid) => pid,
    };
    let text = |maps: &[crate::plan::IdMap]| -> String {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
            .collect()
    };
    let made = std::fs::write(format!("/proc/{pid}/uid_map"), text(&idmap.uid))
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), text(&idmap.gid)))
        .and_then(|()| {
            sys::open(
                Path::new(&format!("/proc/{pid}/ns/user")),
                libc::O_RDONLY,
                0,
            )
        });
    // SAFETY: our own helper, killed and reaped once.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    made
}

/// The propagation a bind made inside the container's mount namespace
/// would get, after `root_propagation` was applied to its `/`: a clone of
/// a shared host mount is its peer, a slave under `rslave`, private
/// otherwise; `None` keeps the clone's (a peer, under `rshared`).
fn propagation(root_propagation: libc::c_ulong) -> Option<libc::c_ulong> {
    if root_propagation & libc::MS_SLAVE != 0 {
        Some(libc::MS_SLAVE)
    } else if root_propagation & libc::MS_SHARED != 0 {
        None
    } else {
        Some(libc::MS_PRIVATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_take_the_propagation_of_the_containers_root() {
        let rec = libc::MS_REC;
        assert_eq!(propagation(rec | libc::MS_PRIVATE), Some(libc::MS_PRIVATE));
        assert_eq!(propagation(rec | libc::MS_SLAVE), Some(libc::MS_SLAVE));
        assert_eq!(propagation(rec | libc::MS_SHARED), None);
        assert_eq!(propagation(0), Some(libc::MS_PRIVATE));
    }
}
