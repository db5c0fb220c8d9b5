//! The launch plan: a pure translation of a validated spec into plain data
//! (namespaces, mount operations, devices, credentials, rlimits, hooks) that
//! the init applies without making decisions. Everything that can be
//! rejected is rejected here, before any fork, and unit-tested without root.

use crate::hooks::Hook;
use crate::namespaces::NsKind;
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, PosixRlimitType, Spec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// A spec the runtime understands but cannot honour as written.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Numa(#[from] crate::numa::NumaError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Options from the command line that shape the launch.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    pub has_console_socket: bool,
}

/// Everything the parent and the init need to build the container.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub rootfs_readonly: bool,
    /// No mount namespace of its own: the rootfs is built in the caller's
    /// (as runc does) under one private bind of the rootfs, which `delete`
    /// detaches, and entered with chroot instead of pivot_root.
    pub rootfs_on_host: bool,
    pub namespaces: NamespacePlan,
    /// Propagation applied to `/` of the new mount namespace before the
    /// rootfs is bound (as runc does; not again after pivot_root).
    pub root_propagation: libc::c_ulong,
    pub mounts: Vec<MountOp>,
    /// Whether /dev is a tmpfs of ours to fill with device nodes and links.
    pub setup_dev: bool,
    pub devices: Vec<Device>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    /// Files under /proc/sys and the values to write there.
    pub sysctl: Vec<(PathBuf, String)>,
    pub process: ProcessPlan,
    pub hooks: HookPlan,
    pub cgroups_path: Option<PathBuf>,
    /// `linux.resources` to apply to the cgroup before the init runs, with
    /// the device list completed (runc's default allowlist and the
    /// container's device nodes).
    pub resources: oci_spec::runtime::LinuxResources,
    pub annotations: BTreeMap<String, String>,
    pub options: LaunchOptions,
    /// The compiled seccomp filters, if the spec has a profile.
    pub seccomp: Option<crate::seccomp::SeccompPlan>,
    /// `linux.memoryPolicy`, checked: set by the init before execve.
    pub mem_policy: Option<crate::numa::MemPolicy>,
    /// `linux.netDevices`: (host name, name in the container), moved by the
    /// parent once the container's network namespace exists.
    pub net_devices: Vec<(String, String)>,
    /// `linux.mountLabel`: already in the data of the mounts that take it;
    /// kept for the mounts the init makes itself (masks, the cgroup v1
    /// tmpfs) and the mqueue root it labels.
    pub mount_label: Option<String>,
}

/// Which namespaces the init gets.
#[derive(Debug, Clone, Default)]
pub struct NamespacePlan {
    /// New namespaces created by the clone itself (never cgroup: see below).
    pub clone_flags: u64,
    /// A new cgroup namespace is unshared by the init after the parent has
    /// put it in its cgroup, so the namespace's root is the container's
    /// cgroup.
    pub unshare_cgroup: bool,
    /// With a new user namespace, a new IPC namespace is unshared by the
    /// init once it is the user namespace's root (as runc's nsexec does):
    /// the namespace's mqueue superblock, made with it, is then owned by
    /// the container's root rather than by an unmapped host uid.
    pub unshare_ipc: bool,
    /// Namespaces joined by path. A pid namespace is joined by the parent
    /// before the clone (it only affects children); the rest by the init.
    pub joins: Vec<(NsKind, PathBuf)>,
    /// Whether the container has its own pid namespace (killing the init
    /// then kills everything in it).
    pub private_pid: bool,
    pub uid_mappings: Vec<IdMap>,
    pub gid_mappings: Vec<IdMap>,
    /// A new user namespace is created with the clone; the parent writes
    /// its id maps before the init goes on.
    pub new_user: bool,
    /// A new time namespace, unshared by the init with these offsets
    /// (`monotonic`/`boottime` → seconds, nanoseconds).
    pub unshare_time: bool,
    pub time_offsets: Vec<(String, i64, u32)>,
}

/// One line of a uid_map or gid_map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// What kind of mount an operation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind (or rbind) of a host path.
    Bind { recursive: bool },
    /// A new filesystem instance (proc, tmpfs, sysfs, devpts, mqueue, ...).
    Fs { fstype: String },
    /// `cgroup`/`cgroup2`: the host's hierarchies as the container sees them.
    Cgroup,
}

/// One entry of `mounts`, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOp {
    pub kind: MountKind,
    pub source: Option<PathBuf>,
    /// Absolute path inside the container, lexically cleaned.
    pub destination: PathBuf,
    /// `MS_*` flags set (without propagation).
    pub flags: libc::c_ulong,
    /// Propagation flags applied after the mount, each as its own call.
    pub propagation: Vec<libc::c_ulong>,
    /// Filesystem-specific options (`mode=755,size=...`).
    pub data: String,
    /// Recursive attributes (`rro`, `rnosuid`, ...) for `mount_setattr(2)`
    /// on the mount and every mount below it; bind mounts only, as in runc
    /// (which accepts and ignores them on other mounts).
    pub rec_attr: Option<RecAttr>,
    /// `tmpcopyup`: a tmpfs gets a copy of what the directory it covers
    /// holds (runc's extension; ignored on other filesystems, as in runc).
    pub copy_up: bool,
    /// An idmapped bind mount (made by the runtime, see `premount`).
    pub idmap: Option<Idmap>,
}

/// The id mapping of an idmapped bind mount: `mounts[].uidMappings` and
/// `gidMappings` (OCI 1.1), or runc 1.2's `idmap`/`ridmap` options, which
/// without mappings of their own take the container's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idmap {
    pub uid: Vec<IdMap>,
    pub gid: Vec<IdMap>,
    /// `ridmap`: the submounts of a recursive bind are idmapped too.
    pub recursive: bool,
}

/// The `MOUNT_ATTR_*` bits `mount_setattr(2)` sets and clears.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecAttr {
    pub set: u64,
    pub clear: u64,
}

/// A device node to create in /dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub path: PathBuf,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: libc::mode_t,
    pub major: u64,
    pub minor: u64,
    pub mode: libc::mode_t,
    pub uid: u32,
    pub gid: u32,
}

/// The container process: who it runs as and with what.
#[derive(Debug, Clone, Default)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub caps: crate::capabilities::CapSets,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    /// AppArmor profile and SELinux label, set for the execve.
    pub labels: crate::lsm::Labels,
    pub console_size: Option<(u16, u16)>,
    /// `personality(2)` persona (`linux.personality`; the init only).
    pub personality: Option<libc::c_ulong>,
    /// `ioprio_set(2)` value (`process.ioPriority`).
    pub io_priority: Option<i32>,
    pub scheduler: Option<SchedAttr>,
    /// `process.execCPUAffinity` (`exec` only: the spec keeps it off the
    /// container's init).
    pub exec_affinity: crate::numa::ExecAffinity,
}

/// `struct sched_attr` of `sched_setattr(2)` (`process.scheduler`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

/// One `setrlimit` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

/// The hooks by the point of the lifecycle at which they run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HookPlan {
    /// prestart (deprecated) then createRuntime: in the runtime's
    /// namespaces, after the container's namespaces exist, before
    /// pivot_root.
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    /// In the container's namespaces, before pivot_root.
    pub create_container: Vec<Hook>,
    /// In the container, right before the user process is executed.
    pub start_container: Vec<Hook>,
    /// In the runtime's namespaces after the process started.
    pub poststart: Vec<Hook>,
    /// In the runtime's namespaces after the container is deleted.
    pub poststop: Vec<Hook>,
}

/// Builds the plan for container `id` from a validated spec.
pub fn build(id: &str, bundle: &Path, spec: &Spec, opts: LaunchOptions) -> Result<Plan, PlanError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let linux = spec.linux().clone().unwrap_or_default();
    let namespaces = namespaces(&linux)?;
    let mount_label = linux.mount_label().clone().filter(|l| !l.is_empty());
    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mounts.push(label_mount(mount_op(i, m)?, mount_label.as_deref()));
    }
    container_idmaps(&mut mounts, &namespaces)?;
    let setup_dev = !mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev") && matches!(m.kind, MountKind::Bind { .. }));
    let root_propagation = match linux.rootfs_propagation() {
        None => libc::MS_SLAVE | libc::MS_REC,
        Some(p) => propagation_flag(p).ok_or_else(|| {
            invalid(
                "linux.rootfsPropagation",
                format!("unknown propagation {p:?}"),
            )
        })?,
    };
    // runc refuses this pair up front, before anything is made.
    if opts.no_pivot && root_propagation & libc::MS_PRIVATE != 0 {
        return Err(invalid(
            "linux.rootfsPropagation",
            "[r]private is not safe without pivot_root (--no-pivot)",
        ));
    }
    refuse_unsupported(&linux)?;
    let mut process = process_plan(spec, &opts)?;
    process.personality = linux.personality().as_ref().map(|p| match p.domain() {
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux => 0x0000,
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008,
    });
    let sysctl = sysctl_plan(&linux, &namespaces)?;
    // Without a mount namespace of its own the container shares the
    // caller's: runc builds the rootfs there and chroots into it, and so do
    // we, but never in a way that changes the host's own mounts.
    let rootfs_on_host = namespaces.clone_flags & libc::CLONE_NEWNS as u64 == 0
        && !namespaces.joins.iter().any(|(k, _)| *k == NsKind::Mount);
    if rootfs_on_host {
        refuse_without_mount_ns(&linux)?;
    }
    // Without a UTS namespace of its own, sethostname would rename the host.
    let has_uts = namespaces.clone_flags & libc::CLONE_NEWUTS as u64 != 0
        || namespaces.joins.iter().any(|(k, _)| *k == NsKind::Uts);
    for (field, value) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        if value.as_ref().is_some_and(|v| !v.is_empty()) && !has_uts {
            return Err(invalid(
                field,
                "setting it needs a uts namespace in linux.namespaces (it would change the host's)",
            ));
        }
    }
    let net_devices = net_devices(&linux, &namespaces)?;
    Ok(Plan {
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        rootfs,
        // runc finalizes the rootfs (the read-only remount) only in a mount
        // namespace of its own: a shared one keeps a writable root.
        rootfs_readonly: root.readonly().unwrap_or(false) && !rootfs_on_host,
        rootfs_on_host,
        namespaces,
        root_propagation,
        mounts,
        setup_dev,
        devices: devices(&linux)?,
        masked_paths: clean_paths(linux.masked_paths()),
        readonly_paths: clean_paths(linux.readonly_paths()),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        sysctl,
        process,
        hooks: hook_plan(spec),
        cgroups_path: linux.cgroups_path().clone(),
        resources: cgroup_resources(&linux)?,
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        options: opts,
        seccomp: linux
            .seccomp()
            .as_ref()
            .map(crate::seccomp::compile)
            .transpose()?,
        mem_policy: linux
            .memory_policy()
            .as_ref()
            .map(crate::numa::mem_policy)
            .transpose()?,
        net_devices,
        mount_label,
    })
}

/// Adds `linux.mountLabel` to the data of a new filesystem that takes it
/// (see [`crate::lsm::takes_context`]).
fn label_mount(mut op: MountOp, label: Option<&str>) -> MountOp {
    if let MountKind::Fs { fstype } = &op.kind {
        if crate::lsm::takes_context(fstype) {
            op.data = crate::lsm::mount_data(&op.data, label);
        }
    }
    op
}

/// `linux.netDevices` checked: valid names, no two devices with one name in
/// the container, and a network namespace that is not the runtime's.
fn net_devices(
    linux: &oci_spec::runtime::Linux,
    ns: &NamespacePlan,
) -> Result<Vec<(String, String)>, PlanError> {
    let Some(devices) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) else {
        return Ok(Vec::new());
    };
    let own_net = ns.clone_flags & libc::CLONE_NEWNET as u64 != 0
        || ns.joins.iter().any(|(k, _)| *k == NsKind::Net);
    if !own_net {
        return Err(invalid(
            "linux.netDevices",
            "needs a network namespace in linux.namespaces (the devices would stay on the host)",
        ));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (host, dev) in devices {
        let inside = dev
            .name()
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or(host.clone());
        for (what, name) in [("", host), (".name", &inside)] {
            if !crate::netdev::valid_name(name) {
                return Err(invalid(
                    format!("linux.netDevices[{host:?}]{what}"),
                    format!("{name:?} is not a valid interface name"),
                ));
            }
        }
        if out.iter().any(|(_, n)| *n == inside) {
            return Err(invalid(
                format!("linux.netDevices[{host:?}].name"),
                format!("{inside:?} is given to two devices"),
            ));
        }
        out.push((host.clone(), inside));
    }
    // Host names first in a stable order, whatever the JSON map's.
    out.sort();
    Ok(out)
}

/// The resources for the cgroup: validated, with runc's default device
/// allowlist.
fn cgroup_resources(
    linux: &oci_spec::runtime::Linux,
) -> Result<oci_spec::runtime::LinuxResources, PlanError> {
    use crate::cgroups::resources::{self, ResourceError};
    resources::for_create(linux.resources().as_ref()).map_err(|e| match e {
        ResourceError::Invalid { field, reason } => PlanError::Invalid { field, reason },
        ResourceError::Unsupported { field, reason, .. } => PlanError::Unsupported {
            field,
            reason: reason.to_string(),
        },
    })
}

fn namespaces(linux: &oci_spec::runtime::Linux) -> Result<NamespacePlan, PlanError> {
    let mut plan = NamespacePlan::default();
    for ns in linux.namespaces().iter().flatten() {
        let kind = NsKind::from_oci(ns.typ());
        if let Some(path) = ns.path() {
            plan.joins.push((kind, path.clone()));
            continue;
        }
        match ns.typ() {
            LinuxNamespaceType::Cgroup => plan.unshare_cgroup = true,
            LinuxNamespaceType::Ipc => plan.unshare_ipc = true,
            // Offsets must be written before any process enters a time
            // namespace: the init unshares it and enters at execve.
            LinuxNamespaceType::Time => plan.unshare_time = true,
            LinuxNamespaceType::User => {
                plan.clone_flags |= kind.clone_flag() as u64;
                plan.new_user = true;
            }
            _ => plan.clone_flags |= kind.clone_flag() as u64,
        }
        if ns.typ() == LinuxNamespaceType::Pid {
            plan.private_pid = true;
        }
    }
    // A new IPC namespace comes with the clone unless there is a new user
    // namespace to create it in (see `unshare_ipc`).
    if !plan.new_user && plan.unshare_ipc {
        plan.unshare_ipc = false;
        plan.clone_flags |= libc::CLONE_NEWIPC as u64;
    }
    // Joined namespaces are entered user namespace first, then the rest in
    // a fixed order, so permissions come from the right owner.
    plan.joins.sort_by_key(|(k, _)| k.join_order());
    let map = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        v.iter()
            .flatten()
            .map(|m| IdMap {
                container: m.container_id(),
                host: m.host_id(),
                size: m.size(),
            })
            .collect()
    };
    // As runc, mappings without a user namespace (new or joined) are ignored.
    let has_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    if has_userns {
        plan.uid_mappings = map(linux.uid_mappings());
        plan.gid_mappings = map(linux.gid_mappings());
    }
    if plan.new_user && (plan.uid_mappings.is_empty() || plan.gid_mappings.is_empty()) {
        return Err(invalid(
            "linux.uidMappings",
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    for (field, maps) in [
        ("linux.uidMappings", &plan.uid_mappings),
        ("linux.gidMappings", &plan.gid_mappings),
    ] {
        if let Some(m) = maps.iter().find(|m| m.size == 0) {
            return Err(invalid(field, format!("mapping {m:?} has size 0")));
        }
    }
    let mut offsets: Vec<(String, i64, u32)> = linux
        .time_offsets()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.secs().unwrap_or(0), v.nanosecs().unwrap_or(0)))
        .collect();
    offsets.sort();
    for (clock, _, ns) in &offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(invalid(
                format!("linux.timeOffsets.{clock}"),
                "only monotonic and boottime can be offset",
            ));
        }
        if *ns >= 1_000_000_000 {
            return Err(invalid(
                format!("linux.timeOffsets.{clock}.nanosecs"),
                "must be below one second",
            ));
        }
    }
    if !offsets.is_empty() && !plan.unshare_time {
        return Err(invalid(
            "linux.timeOffsets",
            "offsets need a new time namespace in linux.namespaces",
        ));
    }
    plan.time_offsets = offsets;
    Ok(plan)
}

/// What a container sharing the host's mount namespace cannot have: runc
/// refuses masked and read-only paths there ("unable to restrict sys
/// entries without a private MNT namespace"), and would apply
/// rootfsPropagation to the host's `/`.
fn refuse_without_mount_ns(linux: &oci_spec::runtime::Linux) -> Result<(), PlanError> {
    for (field, paths) in [
        ("linux.maskedPaths", linux.masked_paths()),
        ("linux.readonlyPaths", linux.readonly_paths()),
    ] {
        if paths.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(invalid(
                field,
                "needs a mount namespace in linux.namespaces (the paths would be covered on the host)",
            ));
        }
    }
    if linux.rootfs_propagation().is_some() {
        return Err(invalid(
            "linux.rootfsPropagation",
            "needs a mount namespace in linux.namespaces (it would change the host's)",
        ));
    }
    Ok(())
}

/// Lexically cleans an absolute container path (`..` cannot climb above `/`).
pub fn clean_abs(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// maskedPaths and readonlyPaths, cleaned. runc applies them from the new
/// root with `/` as its working directory: a relative path is taken from
/// `/` (whatever process.cwd is), and an empty one names nothing (ENOENT,
/// which runc skips).
fn clean_paths(v: &Option<Vec<String>>) -> Vec<PathBuf> {
    v.iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .map(|p| clean_abs(&Path::new("/").join(p)))
        .collect()
}

/// Maps a mount option to (flags to set, flags to clear).
fn option_flag(opt: &str) -> Option<(libc::c_ulong, libc::c_ulong)> {
    use libc::*;
    Some(match opt {
        "defaults" => (0, 0),
        "ro" => (MS_RDONLY, 0),
        "rw" => (0, MS_RDONLY),
        "suid" => (0, MS_NOSUID),
        "nosuid" => (MS_NOSUID, 0),
        "dev" => (0, MS_NODEV),
        "nodev" => (MS_NODEV, 0),
        "exec" => (0, MS_NOEXEC),
        "noexec" => (MS_NOEXEC, 0),
        "sync" => (MS_SYNCHRONOUS, 0),
        "async" => (0, MS_SYNCHRONOUS),
        "dirsync" => (MS_DIRSYNC, 0),
        "remount" => (MS_REMOUNT, 0),
        "mand" => (MS_MANDLOCK, 0),
        "nomand" => (0, MS_MANDLOCK),
        "atime" => (0, MS_NOATIME),
        "noatime" => (MS_NOATIME, 0),
        "diratime" => (0, MS_NODIRATIME),
        "nodiratime" => (MS_NODIRATIME, 0),
        "relatime" => (MS_RELATIME, 0),
        "norelatime" => (0, MS_RELATIME),
        "strictatime" => (MS_STRICTATIME, 0),
        "nostrictatime" => (0, MS_STRICTATIME),
        "lazytime" => (MS_LAZYTIME, 0),
        "nolazytime" => (0, MS_LAZYTIME),
        "silent" => (MS_SILENT, 0),
        "loud" => (0, MS_SILENT),
        _ => return None,
    })
}

/// Maps a propagation option to its `MS_*` flags.
pub fn propagation_flag(opt: &str) -> Option<libc::c_ulong> {
    use libc::*;
    Some(match opt {
        "private" => MS_PRIVATE,
        "rprivate" => MS_PRIVATE | MS_REC,
        "shared" => MS_SHARED,
        "rshared" => MS_SHARED | MS_REC,
        "slave" => MS_SLAVE,
        "rslave" => MS_SLAVE | MS_REC,
        "unbindable" => MS_UNBINDABLE,
        "runbindable" => MS_UNBINDABLE | MS_REC,
        _ => return None,
    })
}

/// Maps a recursive mount option to (whether it clears, its `MOUNT_ATTR_*`
/// bit), as runc's table does.
fn rec_attr_option(opt: &str) -> Option<(bool, u64)> {
    use libc::*;
    Some(match opt {
        "rro" => (false, MOUNT_ATTR_RDONLY),
        "rrw" => (true, MOUNT_ATTR_RDONLY),
        "rnosuid" => (false, MOUNT_ATTR_NOSUID),
        "rsuid" => (true, MOUNT_ATTR_NOSUID),
        "rnodev" => (false, MOUNT_ATTR_NODEV),
        "rdev" => (true, MOUNT_ATTR_NODEV),
        "rnoexec" => (false, MOUNT_ATTR_NOEXEC),
        "rexec" => (true, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (false, MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (true, MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (false, MOUNT_ATTR_RELATIME),
        "rnorelatime" => (true, MOUNT_ATTR_RELATIME),
        "rnoatime" => (false, MOUNT_ATTR_NOATIME),
        "ratime" => (true, MOUNT_ATTR_NOATIME),
        "rstrictatime" => (false, MOUNT_ATTR_STRICTATIME),
        "rnostrictatime" => (true, MOUNT_ATTR_STRICTATIME),
        "rnosymfollow" => (false, MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (true, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Adds one recursive option to `attr` as runc does: bits accumulate (a
/// bit both set and cleared ends up set, since the kernel clears first),
/// and an access-time mode to set also clears the whole access-time field,
/// as `mount_setattr(2)` requires.
fn add_rec_attr(attr: &mut RecAttr, (clear, bit): (bool, u64)) {
    if clear {
        attr.clear |= bit;
    } else {
        attr.set |= bit;
        if bit & libc::MOUNT_ATTR__ATIME == bit {
            attr.clear |= libc::MOUNT_ATTR__ATIME;
        }
    }
}

/// `mount_setattr(2)` refuses to clear one access-time mode alone
/// (`ratime`, `rnostrictatime` without an access-time mode to set): runc
/// hands that to the kernel and fails with EINVAL; refuse it here instead.
fn check_rec_attr(i: usize, attr: &RecAttr, options: &[String]) -> Result<(), PlanError> {
    let atime = attr.clear & libc::MOUNT_ATTR__ATIME;
    if atime == 0 || atime == libc::MOUNT_ATTR__ATIME {
        return Ok(());
    }
    let named: Vec<&str> = options
        .iter()
        .map(String::as_str)
        .filter(|o| matches!(*o, "ratime" | "rnostrictatime"))
        .collect();
    Err(invalid(
        format!("mounts[{i}].options"),
        format!(
            "{} clears one access-time mode without setting another, which mount_setattr(2) \
             refuses: add rrelatime, rnoatime or rstrictatime",
            named.join(", ")
        ),
    ))
}

/// Options runc accepts that change nothing for a kernel mount here.
fn ignored_option(opt: &str) -> bool {
    matches!(opt, "private-bind" | "norbind")
}

pub(crate) fn mount_op(i: usize, m: &oci_spec::runtime::Mount) -> Result<MountOp, PlanError> {
    let fstype = m.typ().clone().unwrap_or_default();
    let mut flags: libc::c_ulong = 0;
    let mut propagation = Vec::new();
    let mut data = Vec::new();
    let mut bind = fstype == "bind";
    let mut recursive = false;
    let mut rec_attr = None;
    let mut copy_up = false;
    let mut idmap_option = None;
    for opt in m.options().iter().flatten() {
        match opt.as_str() {
            "bind" => bind = true,
            "tmpcopyup" => copy_up = true,
            "idmap" => idmap_option = Some(false),
            "ridmap" => idmap_option = Some(true),
            "rbind" => {
                bind = true;
                recursive = true;
            }
            o => {
                if let Some((set, clear)) = option_flag(o) {
                    flags = (flags & !clear) | set;
                } else if let Some(p) = propagation_flag(o) {
                    propagation.push(p);
                } else if let Some(r) = rec_attr_option(o) {
                    add_rec_attr(rec_attr.get_or_insert_with(RecAttr::default), r);
                } else if !ignored_option(o) {
                    data.push(o.to_string());
                }
            }
        }
    }
    let copy_up = copy_up && !bind && fstype == "tmpfs";
    let kind = if bind {
        if m.source().is_none() {
            return Err(invalid(
                format!("mounts[{i}].source"),
                "a bind mount needs a source",
            ));
        }
        if let Some(attr) = &rec_attr {
            check_rec_attr(i, attr, m.options().as_deref().unwrap_or_default())?;
        }
        MountKind::Bind { recursive }
    } else if fstype == "cgroup" || fstype == "cgroup2" {
        MountKind::Cgroup
    } else if fstype.is_empty() {
        return Err(invalid(
            format!("mounts[{i}].type"),
            "missing (and the options name no bind)",
        ));
    } else {
        MountKind::Fs { fstype }
    };
    let idmap = mount_idmap(i, m, bind, idmap_option)?;
    Ok(MountOp {
        kind,
        source: m.source().clone(),
        destination: clean_abs(m.destination()),
        flags,
        propagation,
        data: data.join(","),
        rec_attr: rec_attr.filter(|_| bind),
        copy_up,
        idmap,
    })
}

/// `mounts[i]`'s id mapping, checked: bind mounts only, uid and gid
/// mappings together, none empty or of size 0. With `idmap`/`ridmap` and
/// no mappings both lists stay empty: the container's are filled in by
/// [`container_idmaps`].
fn mount_idmap(
    i: usize,
    m: &oci_spec::runtime::Mount,
    bind: bool,
    option: Option<bool>,
) -> Result<Option<Idmap>, PlanError> {
    let (uid, gid) = (m.uid_mappings(), m.gid_mappings());
    if uid.is_none() && gid.is_none() && option.is_none() {
        return Ok(None);
    }
    let field = match (uid, gid) {
        (None, None) => format!("mounts[{i}].options"),
        (None, Some(_)) => format!("mounts[{i}].gidMappings"),
        _ => format!("mounts[{i}].uidMappings"),
    };
    if !bind {
        return Err(invalid(
            field,
            "only bind mounts can be idmapped (runc refuses it too)",
        ));
    }
    if uid.is_some() != gid.is_some() {
        return Err(invalid(
            field,
            "uidMappings and gidMappings must be given together",
        ));
    }
    let mut lists = Vec::new();
    for (name, list) in [("uidMappings", uid), ("gidMappings", gid)] {
        let list = list.as_deref().unwrap_or_default();
        if uid.is_some() && list.is_empty() {
            return Err(invalid(format!("mounts[{i}].{name}"), "is empty"));
        }
        let mut out = Vec::new();
        for (j, e) in list.iter().enumerate() {
            if e.size() == 0 {
                return Err(invalid(format!("mounts[{i}].{name}[{j}].size"), "is 0"));
            }
            out.push(IdMap {
                container: e.container_id(),
                host: e.host_id(),
                size: e.size(),
            });
        }
        lists.push(out);
    }
    let gid = lists.pop().unwrap_or_default();
    let uid = lists.pop().unwrap_or_default();
    Ok(Some(Idmap {
        uid,
        gid,
        recursive: option == Some(true),
    }))
}

/// `idmap`/`ridmap` without mappings of their own take the container's
/// (`linux.uidMappings`/`gidMappings`), as in runc 1.2.
fn container_idmaps(mounts: &mut [MountOp], ns: &NamespacePlan) -> Result<(), PlanError> {
    for (i, op) in mounts.iter_mut().enumerate() {
        let Some(idmap) = op.idmap.as_mut().filter(|m| m.uid.is_empty()) else {
            continue;
        };
        if ns.uid_mappings.is_empty() || ns.gid_mappings.is_empty() {
            return Err(invalid(
                format!("mounts[{i}].options"),
                "idmap without uidMappings and gidMappings takes the container's, and \
                 linux.uidMappings/gidMappings are not set",
            ));
        }
        idmap.uid = ns.uid_mappings.clone();
        idmap.gid = ns.gid_mappings.clone();
    }
    Ok(())
}

/// The devices every container gets (as runc and the OCI spec list them),
/// in runc's order: in a user namespace each is a bind mount, and the
/// container's mountinfo lists them in this order.
pub fn default_devices() -> Vec<Device> {
    let d = |path: &str, major, minor| Device {
        path: PathBuf::from(path),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    };
    vec![
        d("/dev/null", 1, 3),
        d("/dev/random", 1, 8),
        d("/dev/full", 1, 7),
        d("/dev/tty", 5, 0),
        d("/dev/zero", 1, 5),
        d("/dev/urandom", 1, 9),
    ]
}

fn devices(linux: &oci_spec::runtime::Linux) -> Result<Vec<Device>, PlanError> {
    let mut out = default_devices();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}]");
        let path = clean_abs(d.path());
        if !path.starts_with("/dev") || path == Path::new("/dev") {
            return Err(invalid(
                format!("{field}.path"),
                format!("{:?} is not under /dev", d.path()),
            ));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(invalid(
                    format!("{field}.type"),
                    "\"a\" is only valid in cgroup device rules",
                ))
            }
        };
        if kind != libc::S_IFIFO && (d.major() < 0 || d.minor() < 0) {
            return Err(invalid(
                format!("{field}.major"),
                "major and minor must be non-negative",
            ));
        }
        let dev = Device {
            path,
            kind,
            major: d.major().max(0) as u64,
            minor: d.minor().max(0) as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        // A spec device replaces a default one at the same path.
        out.retain(|e| e.path != dev.path);
        out.push(dev);
    }
    Ok(out)
}

fn rlimit_resource(t: PosixRlimitType) -> i32 {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as i32
}

fn process_plan(spec: &Spec, opts: &LaunchOptions) -> Result<ProcessPlan, PlanError> {
    let p = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing"))?;
    process_from_oci(p, opts)
}

/// Translates an OCI `process` (of config.json, or `exec --process`).
pub fn process_from_oci(
    p: &oci_spec::runtime::Process,
    opts: &LaunchOptions,
) -> Result<ProcessPlan, PlanError> {
    match p.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => return Err(invalid("process.args", "missing or empty")),
    }
    if !p.cwd().is_absolute() {
        return Err(invalid(
            "process.cwd",
            format!("{:?} is not an absolute path", p.cwd()),
        ));
    }
    // Exactly the spec's environment: as in runc, no PATH is added (a bare
    // program name then is not found).
    let env = p.env().clone().unwrap_or_default();
    let mut rlimits = Vec::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        if r.soft() > r.hard() {
            return Err(invalid(
                format!("process.rlimits[{i}]"),
                format!("soft limit {} exceeds hard limit {}", r.soft(), r.hard()),
            ));
        }
        rlimits.push(Rlimit {
            resource: rlimit_resource(r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    let terminal = p.terminal().unwrap_or(false);
    if terminal && !opts.has_console_socket {
        return Err(invalid(
            "process.terminal",
            "a terminal needs --console-socket (or run in the foreground)",
        ));
    }
    if !terminal && opts.has_console_socket {
        return Err(invalid(
            "process.terminal",
            "--console-socket given but process.terminal is false",
        ));
    }
    let labels = labels(p)?;
    let user = p.user();
    Ok(ProcessPlan {
        args: p.args().clone().unwrap_or_default(),
        env,
        cwd: clean_abs(p.cwd()),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        caps: crate::capabilities::CapSets::from_oci(p.capabilities().as_ref()),
        rlimits,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        terminal,
        labels,
        personality: None,
        io_priority: io_priority(p)?,
        scheduler: scheduler(p)?,
        exec_affinity: p
            .exec_cpu_affinity()
            .as_ref()
            .map(crate::numa::exec_affinity)
            .transpose()?
            .unwrap_or_default(),
        console_size: p.console_size().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        }),
    })
}

fn io_priority(p: &oci_spec::runtime::Process) -> Result<Option<i32>, PlanError> {
    use oci_spec::runtime::IOPriorityClass::*;
    let Some(io) = p.io_priority() else {
        return Ok(None);
    };
    let class = match io.class() {
        IoprioClassRt => 1,
        IoprioClassBe => 2,
        IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&io.priority()) {
        return Err(invalid(
            "process.ioPriority.priority",
            format!("{} is not in 0..=7", io.priority()),
        ));
    }
    Ok(Some((class << 13) | io.priority() as i32))
}

fn scheduler(p: &oci_spec::runtime::Process) -> Result<Option<SchedAttr>, PlanError> {
    use oci_spec::runtime::LinuxSchedulerFlag as F;
    use oci_spec::runtime::LinuxSchedulerPolicy::*;
    let Some(s) = p.scheduler() else {
        return Ok(None);
    };
    let policy = match s.policy() {
        SchedOther => 0,
        SchedFifo => 1,
        SchedRr => 2,
        SchedBatch => 3,
        SchedIdle => 5,
        SchedDeadline => 6,
        SchedIso => {
            return Err(PlanError::Unsupported {
                field: "process.scheduler.policy".into(),
                reason: "SCHED_ISO is not implemented by Linux".into(),
            })
        }
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SchedResetOnFork => 0x01,
            F::SchedFlagReclaim => 0x02,
            F::SchedFlagDLOverrun => 0x04,
            F::SchedFlagKeepPolicy => 0x08,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        };
    }
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(invalid(
            "process.scheduler.nice",
            format!("{nice} is not in -20..=19"),
        ));
    }
    let priority = s.priority().unwrap_or(0);
    let realtime = matches!(s.policy(), SchedFifo | SchedRr);
    if realtime && !(1..=99).contains(&priority) || !realtime && priority != 0 {
        return Err(invalid(
            "process.scheduler.priority",
            format!("{priority} does not fit the policy"),
        ));
    }
    Ok(Some(SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice,
        priority: priority as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    }))
}

/// The process's LSM labels. An SELinux label is refused where SELinux is
/// off, as runc's validator does; an AppArmor profile is not checked here:
/// runc leaves that to the kernel, which refuses it at the init.
pub fn labels(p: &oci_spec::runtime::Process) -> Result<crate::lsm::Labels, PlanError> {
    let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let labels = crate::lsm::Labels {
        apparmor: set(p.apparmor_profile()),
        selinux: set(p.selinux_label()),
    };
    if labels.selinux.is_some() && !crate::lsm::selinux_enabled() {
        return Err(PlanError::Unsupported {
            field: "process.selinuxLabel".into(),
            reason:
                "selinux label is specified in config, but selinux is disabled or not supported"
                    .into(),
        });
    }
    Ok(labels)
}

/// Fields of the spec skiff does not implement: refused by name rather
/// than silently ignored.
fn refuse_unsupported(linux: &oci_spec::runtime::Linux) -> Result<(), PlanError> {
    let refuse = |field: &str, what: &str| {
        Err(PlanError::Unsupported {
            field: field.into(),
            reason: format!("{what} is not supported"),
        })
    };
    if linux.intel_rdt().is_some() {
        return refuse("linux.intelRdt", "Intel RDT (resctrl)");
    }
    if linux
        .personality()
        .as_ref()
        .is_some_and(|p| p.flags().as_ref().is_some_and(|f| !f.is_empty()))
    {
        return refuse("linux.personality.flags", "personality flags");
    }
    Ok(())
}

/// Which namespace a sysctl belongs to, following the kernel's list of
/// namespaced sysctls (the ones runc allows).
fn sysctl_namespace(key: &str) -> Option<NsKind> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        return Some(NsKind::Ipc);
    }
    if key.starts_with("net.") {
        return Some(NsKind::Net);
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return Some(NsKind::Uts);
    }
    None
}

fn sysctl_plan(
    linux: &oci_spec::runtime::Linux,
    ns: &NamespacePlan,
) -> Result<Vec<(PathBuf, String)>, PlanError> {
    let has = |k: NsKind| {
        ns.clone_flags & k.clone_flag() as u64 != 0
            || (k == NsKind::Ipc && ns.unshare_ipc)
            || ns.joins.iter().any(|(j, _)| *j == k)
    };
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    let mut keys: Vec<_> = linux.sysctl().iter().flatten().collect();
    keys.sort();
    for (key, value) in keys {
        let field = format!("linux.sysctl[{key:?}]");
        // As runc, a key may be written with slashes (net/ipv4/ip_forward):
        // then the slashes separate the components, and a dot is part of a
        // name (net/ipv4/conf/eth0.100/forwarding).
        let (dotted, rel) = if key.contains('/') {
            (key.replace('/', "."), key.clone())
        } else {
            (key.clone(), key.replace('.', "/"))
        };
        let kind = sysctl_namespace(&dotted).ok_or_else(|| {
            invalid(
                &field,
                "not a namespaced sysctl: it would change the host for everyone",
            )
        })?;
        if !has(kind) {
            return Err(invalid(
                &field,
                format!(
                    "needs the container to have its own {} namespace",
                    kind.name()
                ),
            ));
        }
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(invalid(&field, "invalid key"));
        }
        out.push((Path::new("/proc/sys").join(rel), value.clone()));
    }
    Ok(out)
}

#[allow(deprecated)] // prestart is deprecated but still runs with createRuntime.
fn hook_plan(spec: &Spec) -> HookPlan {
    let Some(h) = spec.hooks() else {
        return HookPlan::default();
    };
    let conv = |v: &Option<Vec<oci_spec::runtime::Hook>>| -> Vec<Hook> {
        v.iter().flatten().map(Hook::from_oci).collect()
    };
    HookPlan {
        prestart: conv(h.prestart()),
        create_runtime: conv(h.create_runtime()),
        create_container: conv(h.create_container()),
        start_container: conv(h.start_container()),
        poststart: conv(h.poststart()),
        poststop: conv(h.poststop()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> Spec {
        crate::spec::parse(v.to_string().as_bytes()).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/data/../x", "type": "none", "source": "/tmp",
                 "options": ["rbind", "ro", "rprivate"]}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"},
                                     {"type": "network", "path": "/var/run/netns/x"}]}
        })
    }

    fn plan(v: serde_json::Value) -> Result<Plan, PlanError> {
        build("c1", Path::new("/b"), &spec(v), LaunchOptions::default())
    }

    #[test]
    fn mount_mappings_become_an_idmap_and_bad_ones_name_the_field() {
        let map = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 10}]);
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = base();
            edit(&mut v["mounts"][2]);
            plan(v)
        };
        let p = with(&|m| {
            m["uidMappings"] = map.clone();
            m["gidMappings"] = map.clone();
            m["options"] = serde_json::json!(["rbind", "ridmap"]);
        })
        .unwrap();
        let want = vec![IdMap {
            container: 0,
            host: 1000,
            size: 10,
        }];
        let idmap = p.mounts[2].idmap.clone().unwrap();
        assert_eq!(
            (idmap.uid, idmap.gid, idmap.recursive),
            (want.clone(), want.clone(), true)
        );
        // `idmap` alone takes the container's mappings.
        let mut v = base();
        v["mounts"][2]["options"] = serde_json::json!(["rbind", "idmap"]);
        v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "user"}]);
        v["linux"]["uidMappings"] = map.clone();
        v["linux"]["gidMappings"] = map.clone();
        let idmap = plan(v).unwrap().mounts[2].idmap.clone().unwrap();
        assert_eq!((idmap.uid, idmap.recursive), (want, false));
        let err = |edit: &dyn Fn(&mut serde_json::Value)| with(edit).unwrap_err().to_string();
        let e = err(&|m| m["options"] = serde_json::json!(["rbind", "idmap"]));
        assert!(e.contains("mounts[2].options"), "{e}");
        let e = err(&|m| m["uidMappings"] = map.clone());
        assert!(
            e.contains("mounts[2].uidMappings") && e.contains("together"),
            "{e}"
        );
        let e = err(&|m| m["gidMappings"] = map.clone());
        assert!(e.contains("mounts[2].gidMappings"), "{e}");
        let e = err(&|m| {
            m["uidMappings"] = serde_json::json!([]);
            m["gidMappings"] = map.clone();
        });
        assert!(
            e.contains("mounts[2].uidMappings") && e.contains("empty"),
            "{e}"
        );
        let e = err(&|m| {
            m["uidMappings"] = map.clone();
            m["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 1, "size": 0}]);
        });
        assert!(e.contains("mounts[2].gidMappings[0].size"), "{e}");
        let mut v = base();
        v["mounts"][1]["uidMappings"] = map.clone();
        v["mounts"][1]["gidMappings"] = map.clone();
        let e = plan(v).unwrap_err().to_string();
        assert!(
            e.contains("mounts[1].uidMappings") && e.contains("bind"),
            "{e}"
        );
    }

    #[test]
    fn rootfs_relative_to_bundle() {
        let p = plan(base()).unwrap();
        assert_eq!(p.rootfs, PathBuf::from("/b/rootfs"));
        assert!(p.rootfs_readonly);
        let mut v = base();
        v["root"]["path"] = "/abs/root".into();
        assert_eq!(plan(v).unwrap().rootfs, PathBuf::from("/abs/root"));
    }

    #[test]
    fn namespaces_split_into_clone_unshare_join() {
        let p = plan(base()).unwrap();
        let ns = &p.namespaces;
        assert_eq!(
            ns.clone_flags,
            (libc::CLONE_NEWPID | libc::CLONE_NEWNS) as u64
        );
        assert!(ns.unshare_cgroup);
        assert!(ns.private_pid);
        assert_eq!(
            ns.joins,
            vec![(NsKind::Net, PathBuf::from("/var/run/netns/x"))]
        );
    }

    #[test]
    fn without_a_mount_namespace_the_rootfs_is_built_on_the_host() {
        assert!(!plan(base()).unwrap().rootfs_on_host);
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}]);
        let p = plan(v.clone()).unwrap();
        assert!(p.rootfs_on_host);
        assert!(!p.rootfs_readonly, "runc leaves the root writable there");
        // What would change the host's own mounts is refused, naming the field.
        for (field, value) in [
            ("maskedPaths", serde_json::json!(["/proc/kcore"])),
            ("readonlyPaths", serde_json::json!(["/proc/sys"])),
            ("rootfsPropagation", serde_json::json!("rprivate")),
        ] {
            let mut w = v.clone();
            w["linux"][field] = value;
            let e = plan(w).unwrap_err().to_string();
            assert!(e.starts_with(&format!("linux.{field}: ")), "{e}");
            assert!(e.contains("mount namespace"), "{e}");
        }
        // Empty lists are fine; a joined mount namespace is the container's own.
        v["linux"]["maskedPaths"] = serde_json::json!([]);
        assert!(plan(v.clone()).unwrap().rootfs_on_host);
        v["linux"]["namespaces"] = serde_json::json!([{"type": "mount", "path": "/proc/1/ns/mnt"}]);
        assert!(!plan(v).unwrap().rootfs_on_host);
    }

    #[test]
    fn a_new_ipc_namespace_is_unshared_in_a_new_user_namespace() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "ipc"}, {"type": "mount"}]);
        let ns = plan(v.clone()).unwrap().namespaces;
        assert!(!ns.unshare_ipc);
        assert_eq!(
            ns.clone_flags,
            (libc::CLONE_NEWIPC | libc::CLONE_NEWNS) as u64
        );
        // The user namespace named after the IPC one, as in runc's default spec.
        v["linux"]["namespaces"] =
            serde_json::json!([{"type": "ipc"}, {"type": "mount"}, {"type": "user"}]);
        let m = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["uidMappings"] = m.clone();
        v["linux"]["gidMappings"] = m;
        v["linux"]["sysctl"] = serde_json::json!({"kernel.msgmax": "4096"});
        let p = plan(v).unwrap();
        assert!(p.namespaces.unshare_ipc);
        assert_eq!(
            p.namespaces.clone_flags,
            (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as u64
        );
        // Its sysctls still count as the container's own.
        assert_eq!(p.sysctl.len(), 1);
    }

    #[test]
    fn user_namespace_needs_mappings() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "user"}, {"type": "mount"}]);
        let e = plan(v.clone()).unwrap_err().to_string();
        assert!(e.contains("linux.uidMappings"), "{e}");
        let m = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["uidMappings"] = m.clone();
        v["linux"]["gidMappings"] = m;
        let p = plan(v).unwrap();
        assert!(p.namespaces.new_user);
        assert_eq!(
            p.namespaces.clone_flags,
            (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as u64
        );
        assert_eq!(
            p.namespaces.uid_mappings,
            vec![IdMap {
                container: 0,
                host: 100000,
                size: 65536
            }]
        );
    }

    #[test]
    fn time_namespace_offsets() {
        let mut v = base();
        v["linux"]["timeOffsets"] = serde_json::json!({"monotonic": {"secs": 86400}});
        assert!(plan(v.clone())
            .unwrap_err()
            .to_string()
            .contains("linux.timeOffsets"));
        v["linux"]["namespaces"] = serde_json::json!([{"type": "time"}, {"type": "mount"}]);
        let p = plan(v.clone()).unwrap();
        assert!(p.namespaces.unshare_time);
        assert_eq!(
            p.namespaces.time_offsets,
            vec![("monotonic".to_string(), 86400, 0)]
        );
        v["linux"]["timeOffsets"] = serde_json::json!({"realtime": {"secs": 1}});
        assert!(plan(v).unwrap_err().to_string().contains("realtime"));
    }

    #[test]
    fn tmpcopyup_is_a_tmpfs_option_and_never_data() {
        let op = |typ: &str, options: &[&str]| {
            let m: oci_spec::runtime::Mount = serde_json::from_value(serde_json::json!({
                "destination": "/etc", "type": typ, "source": "/s", "options": options
            }))
            .unwrap();
            mount_op(0, &m).unwrap()
        };
        let t = op("tmpfs", &["tmpcopyup", "size=1m"]);
        assert!(t.copy_up);
        assert_eq!(t.data, "size=1m");
        // runc ignores it elsewhere.
        assert!(!op("tmpfs", &["size=1m"]).copy_up);
        assert!(!op("proc", &["tmpcopyup"]).copy_up);
        assert!(!op("tmpfs", &["rbind", "tmpcopyup"]).copy_up);
        assert_eq!(op("proc", &["tmpcopyup"]).data, "");
    }

    #[test]
    fn mount_options_become_flags_and_data() {
        let p = plan(base()).unwrap();
        let dev = &p.mounts[1];
        assert_eq!(
            dev.kind,
            MountKind::Fs {
                fstype: "tmpfs".into()
            }
        );
        assert_eq!(dev.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(dev.data, "mode=755,size=65536k");
        let b = &p.mounts[2];
        assert_eq!(b.kind, MountKind::Bind { recursive: true });
        assert_eq!(b.destination, PathBuf::from("/x"));
        assert_eq!(b.flags, libc::MS_RDONLY);
        assert_eq!(b.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert!(p.setup_dev);
    }

    #[test]
    fn the_mount_label_goes_on_new_filesystems_as_in_runc() {
        let mut v = base();
        let label = "system_u:object_r:container_file_t:s0:c1,c2";
        v["linux"]["mountLabel"] = label.into();
        let extra = [
            serde_json::json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                               "options": ["newinstance", "gid=5"]}),
            serde_json::json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"}),
            serde_json::json!({"destination": "/sys", "type": "sysfs", "source": "sysfs"}),
            serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}),
        ];
        v["mounts"].as_array_mut().unwrap().extend(extra);
        let p = plan(v).unwrap();
        let data: Vec<&str> = p.mounts.iter().map(|m| m.data.as_str()).collect();
        let ctx = format!("context=\"{label}\"");
        assert_eq!(
            data,
            [
                "",
                &format!("mode=755,size=65536k,{ctx}"),
                "",
                &format!("newinstance,gid=5,{ctx}"),
                "",
                "",
                ""
            ]
        );
        assert_eq!(p.mount_label.as_deref(), Some(label));
        // Without a label nothing changes.
        let p = plan(base()).unwrap();
        assert_eq!(p.mounts[1].data, "mode=755,size=65536k");
        assert_eq!(p.mount_label, None);
    }

    #[test]
    fn lsm_labels_reach_the_process_plan() {
        let mut v = base();
        v["process"]["apparmorProfile"] = "docker-default".into();
        let p = plan(v).unwrap();
        assert_eq!(p.process.labels.apparmor.as_deref(), Some("docker-default"));
        assert_eq!(p.process.labels.selinux, None);
        // An SELinux label where SELinux is off is refused up front, as runc's validator does.
        let mut v = base();
        v["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into();
        match plan(v) {
            Ok(p) => assert!(crate::lsm::selinux_enabled(), "{:?}", p.process.labels),
            Err(e) => {
                assert!(!crate::lsm::selinux_enabled());
                assert!(e.to_string().contains("process.selinuxLabel"), "{e}");
            }
        }
    }

    fn bind_with(options: &[&str]) -> Result<MountOp, PlanError> {
        let m: oci_spec::runtime::Mount = serde_json::from_value(serde_json::json!({
            "destination": "/data", "type": "bind", "source": "/src", "options": options
        }))
        .unwrap();
        mount_op(3, &m)
    }

    #[test]
    fn recursive_attributes_set_and_clear_as_runc() {
        use libc::*;
        let attr = |o: &[&str]| bind_with(o).unwrap().rec_attr;
        assert_eq!(attr(&["rbind"]), None);
        assert_eq!(
            attr(&[
                "rbind",
                "rro",
                "rnosuid",
                "rnodev",
                "rnoexec",
                "rnosymfollow"
            ]),
            Some(RecAttr {
                set: MOUNT_ATTR_RDONLY
                    | MOUNT_ATTR_NOSUID
                    | MOUNT_ATTR_NODEV
                    | MOUNT_ATTR_NOEXEC
                    | MOUNT_ATTR_NOSYMFOLLOW,
                clear: 0
            })
        );
        let clear = MOUNT_ATTR_RDONLY
            | MOUNT_ATTR_NOSUID
            | MOUNT_ATTR_NODEV
            | MOUNT_ATTR_NOEXEC
            | MOUNT_ATTR_NODIRATIME
            | MOUNT_ATTR_NOSYMFOLLOW;
        assert_eq!(
            attr(&[
                "rbind",
                "rrw",
                "rsuid",
                "rdev",
                "rexec",
                "rdiratime",
                "rsymfollow"
            ]),
            Some(RecAttr { set: 0, clear })
        );
        // Setting an access-time mode clears the whole field first.
        for (opt, mode) in [
            ("rnoatime", MOUNT_ATTR_NOATIME),
            ("rstrictatime", MOUNT_ATTR_STRICTATIME),
            ("rrelatime", MOUNT_ATTR_RELATIME),
        ] {
            assert_eq!(
                attr(&[opt]),
                Some(RecAttr {
                    set: mode,
                    clear: MOUNT_ATTR__ATIME
                }),
                "{opt}"
            );
        }
        // No order: a bit both set and cleared stays set (the kernel clears first), as in runc.
        assert_eq!(
            attr(&["rro", "rrw"]),
            Some(RecAttr {
                set: MOUNT_ATTR_RDONLY,
                clear: MOUNT_ATTR_RDONLY
            })
        );
        // rnorelatime clears nothing (relatime is 0); with a mode to set, ratime is harmless.
        assert_eq!(attr(&["rnorelatime"]), Some(RecAttr::default()));
        assert_eq!(
            attr(&["rnoatime", "ratime"]),
            Some(RecAttr {
                set: MOUNT_ATTR_NOATIME,
                clear: MOUNT_ATTR__ATIME
            })
        );
        // Recursive attributes are not mount data, and apply to binds only (as in runc).
        let m: oci_spec::runtime::Mount = serde_json::from_value(serde_json::json!({
            "destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["rro", "size=1k"]
        }))
        .unwrap();
        let t = mount_op(0, &m).unwrap();
        assert_eq!((t.rec_attr, t.data.as_str()), (None, "size=1k"));
    }

    #[test]
    fn clearing_one_access_time_mode_alone_is_refused() {
        for opts in [&["rbind", "ratime"][..], &["rnostrictatime"][..]] {
            let e = bind_with(opts).unwrap_err().to_string();
            assert!(e.starts_with("mounts[3].options: r"), "{e}");
            assert!(e.contains(opts[opts.len() - 1]), "{e}");
        }
    }

    #[test]
    fn later_option_wins() {
        let mut v = base();
        v["mounts"][1]["options"] = serde_json::json!(["ro", "rw", "nosuid", "suid"]);
        assert_eq!(plan(v).unwrap().mounts[1].flags, 0);
    }

    #[test]
    fn bind_without_source_is_refused() {
        let mut v = base();
        v["mounts"][2].as_object_mut().unwrap().remove("source");
        let e = plan(v).unwrap_err().to_string();
        assert!(e.contains("mounts[2].source"), "{e}");
    }

    #[test]
    fn default_devices_and_overrides() {
        let mut v = base();
        v["linux"]["devices"] = serde_json::json!([
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438},
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "uid": 5}
        ]);
        let p = plan(v).unwrap();
        // runc's order, a spec device replacing a default one at the end.
        let paths: Vec<_> = p.devices.iter().map(|d| d.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/dev/random",
                "/dev/full",
                "/dev/tty",
                "/dev/zero",
                "/dev/urandom",
                "/dev/null",
                "/dev/fuse"
            ]
        );
        let fuse = p
            .devices
            .iter()
            .find(|d| d.path == Path::new("/dev/fuse"))
            .unwrap();
        assert_eq!(
            (fuse.major, fuse.minor, fuse.uid, fuse.mode),
            (10, 229, 5, 0o666)
        );
        let mut v = base();
        v["linux"]["devices"] =
            serde_json::json!([{"path": "/etc/x", "type": "c", "major": 1, "minor": 1}]);
        assert!(plan(v)
            .unwrap_err()
            .to_string()
            .contains("linux.devices[0].path"));
    }

    #[test]
    fn rlimits_and_env() {
        let mut v = base();
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]);
        let p = plan(v).unwrap();
        assert_eq!(
            p.process.rlimits,
            vec![Rlimit {
                resource: libc::RLIMIT_NOFILE as i32,
                soft: 100,
                hard: 200
            }]
        );
        assert!(!p.process.env.iter().any(|e| e.starts_with("PATH=")));
        let mut v = base();
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 300, "hard": 200}]);
        assert!(plan(v)
            .unwrap_err()
            .to_string()
            .contains("process.rlimits[0]"));
    }

    #[test]
    fn id_mappings_without_a_user_namespace_are_ignored() {
        let mut v = base();
        let m = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["uidMappings"] = m.clone();
        v["linux"]["gidMappings"] = m;
        let p = plan(v).unwrap();
        assert!(!p.namespaces.new_user);
        assert!(p.namespaces.uid_mappings.is_empty() && p.namespaces.gid_mappings.is_empty());
    }

    #[test]
    fn sysctl_needs_its_namespace() {
        let mut v = base();
        v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        // network is joined by path in base(): allowed.
        let p = plan(v.clone()).unwrap();
        assert_eq!(
            p.sysctl,
            vec![(PathBuf::from("/proc/sys/net/ipv4/ip_forward"), "1".into())]
        );
        // The slash form, as runc accepts it; a dot there is part of a name.
        v["linux"]["sysctl"] = serde_json::json!({"net/ipv4/conf/eth0.100/forwarding": "1", "net/ipv4/ip_forward": "1"});
        assert_eq!(
            plan(v.clone()).unwrap().sysctl,
            vec![
                (
                    PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding"),
                    "1".into()
                ),
                (PathBuf::from("/proc/sys/net/ipv4/ip_forward"), "1".into())
            ]
        );
        v["linux"]["sysctl"] = serde_json::json!({"net/ipv4/../../vm/swappiness": "1"});
        assert!(plan(v.clone())
            .unwrap_err()
            .to_string()
            .contains("invalid key"));
        v["linux"]["sysctl"] = serde_json::json!({"kernel.shm_rmid_forced": "1"});
        assert!(plan(v.clone())
            .unwrap_err()
            .to_string()
            .contains("ipc namespace"));
        v["linux"]["sysctl"] = serde_json::json!({"vm.swappiness": "1"});
        assert!(plan(v)
            .unwrap_err()
            .to_string()
            .contains("not a namespaced sysctl"));
    }

    #[test]
    fn terminal_needs_console_socket() {
        let mut v = base();
        v["process"]["terminal"] = true.into();
        assert!(plan(v.clone())
            .unwrap_err()
            .to_string()
            .contains("process.terminal"));
        let opts = LaunchOptions {
            has_console_socket: true,
            ..Default::default()
        };
        build("c", Path::new("/b"), &spec(v), opts).unwrap();
    }

    #[test]
    fn personality_ioprio_scheduler() {
        let mut v = base();
        v["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
        v["process"]["ioPriority"] =
            serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 7});
        v["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_BATCH", "nice": 5});
        let p = plan(v.clone()).unwrap().process;
        assert_eq!(p.personality, Some(8));
        assert_eq!(p.io_priority, Some((3 << 13) | 7));
        let s = p.scheduler.unwrap();
        assert_eq!((s.policy, s.nice, s.size), (3, 5, 48));
        v["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_FIFO", "priority": 0});
        assert!(plan(v.clone())
            .unwrap_err()
            .to_string()
            .contains("process.scheduler.priority"));
        v["process"].as_object_mut().unwrap().remove("scheduler");
        v["linux"]["intelRdt"] = serde_json::json!({"closID": "x"});
        assert!(plan(v).unwrap_err().to_string().contains("linux.intelRdt"));
    }

    #[test]
    fn hostname_needs_a_uts_namespace() {
        let mut v = base();
        v["hostname"] = "box".into();
        assert!(plan(v.clone())
            .unwrap_err()
            .to_string()
            .contains("hostname"));
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "uts"}));
        assert_eq!(plan(v).unwrap().hostname.as_deref(), Some("box"));
    }

    #[test]
    fn propagation() {
        let mut v = base();
        assert_eq!(
            plan(v.clone()).unwrap().root_propagation,
            libc::MS_SLAVE | libc::MS_REC
        );
        v["linux"]["rootfsPropagation"] = "shared".into();
        assert_eq!(plan(v.clone()).unwrap().root_propagation, libc::MS_SHARED);
        let no_pivot = LaunchOptions {
            no_pivot: true,
            ..LaunchOptions::default()
        };
        for (mode, ok) in [("rprivate", false), ("private", false), ("rslave", true)] {
            v["linux"]["rootfsPropagation"] = mode.into();
            let r = build("c1", Path::new("/b"), &spec(v.clone()), no_pivot.clone());
            assert_eq!(r.is_ok(), ok, "{mode}");
        }
        v["linux"]["rootfsPropagation"] = "bogus".into();
        assert!(plan(v)
            .unwrap_err()
            .to_string()
            .contains("rootfsPropagation"));
    }

    #[test]
    fn clean_paths_never_climb() {
        assert_eq!(clean_abs(Path::new("/../../etc")), PathBuf::from("/etc"));
        assert_eq!(clean_abs(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }

    #[test]
    fn relative_masked_and_readonly_paths_start_at_the_root() {
        let mut v = base();
        v["process"]["cwd"] = "/data".into();
        v["linux"]["maskedPaths"] = serde_json::json!(["proc/kcore", "../etc/x", "", "/abs"]);
        v["linux"]["readonlyPaths"] = serde_json::json!(["./proc/sys", ""]);
        let p = plan(v).unwrap();
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(p.masked_paths, paths(&["/proc/kcore", "/etc/x", "/abs"]));
        assert_eq!(p.readonly_paths, paths(&["/proc/sys"]));
    }

    #[test]
    fn hooks_keep_their_stage_and_whether_env_was_given() {
        let mut v = base();
        v["hooks"] = serde_json::json!({
            "prestart": [{"path": "/bin/a"}],
            "createRuntime": [{"path": "/bin/b", "timeout": 3, "env": []}],
            "poststop": [{"path": "/bin/c", "args": ["c", "x"], "env": ["A=1"]}]
        });
        let p = plan(v).unwrap();
        assert_eq!(p.hooks.prestart[0].path, PathBuf::from("/bin/a"));
        assert_eq!(p.hooks.prestart[0].env, None);
        assert_eq!(p.hooks.create_runtime[0].path, PathBuf::from("/bin/b"));
        assert_eq!(p.hooks.create_runtime[0].env, Some(vec![]));
        assert_eq!(
            p.hooks.poststop[0].args,
            vec!["c".to_string(), "x".to_string()]
        );
        assert_eq!(p.hooks.poststop[0].env, Some(vec!["A=1".to_string()]));
    }
}

/// What `skiff exec` changes in the container's process (runc's flags).
#[derive(Debug, Clone, Default)]
pub struct ExecOverrides {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub tty: bool,
    /// `--apparmor`.
    pub apparmor: Option<String>,
    /// `--process-label`.
    pub process_label: Option<String>,
}

/// Builds the process of `skiff exec` without `--process`: the container's
/// configured process with the command line's changes.
///
/// An unknown `--cap` is an error here; `exec` first drops those runc
/// would ignore ([`unknown_exec_caps`]).
pub fn exec_process(
    base: &oci_spec::runtime::Process,
    o: &ExecOverrides,
    opts: &LaunchOptions,
) -> Result<ProcessPlan, PlanError> {
    if o.args.is_empty() {
        return Err(invalid("args", "exec needs a command"));
    }
    let mut p = base.clone();
    p.set_args(Some(o.args.clone()));
    let mut env = p.env().clone().unwrap_or_default();
    for (i, kv) in o.env.iter().enumerate() {
        let Some((k, _)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(invalid(
                format!("--env[{i}]"),
                format!("{kv:?} is not KEY=VALUE"),
            ));
        };
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(c) = &o.cwd {
        p.set_cwd(c.clone());
    }
    p.set_terminal(Some(o.tty));
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(a) = o.apparmor.as_ref().filter(|a| !a.is_empty()) {
        p.set_apparmor_profile(Some(a.clone()));
    }
    if let Some(l) = o.process_label.as_ref().filter(|l| !l.is_empty()) {
        p.set_selinux_label(Some(l.clone()));
    }
    let mut plan = process_from_oci(&p, opts)?;
    if let Some(u) = &o.user {
        let (uid, gid) = parse_user(u)?;
        plan.uid = uid;
        if let Some(g) = gid {
            plan.gid = g;
        }
    }
    if !o.additional_gids.is_empty() {
        plan.additional_gids = o.additional_gids.clone();
    }
    for c in &o.caps {
        let cap =
            exec_cap(c).ok_or_else(|| invalid("--cap", format!("unknown capability {c:?}")))?;
        for set in [
            &mut plan.caps.bounding,
            &mut plan.caps.effective,
            &mut plan.caps.permitted,
        ] {
            set.get_or_insert_with(Default::default).insert(cap);
        }
    }
    Ok(plan)
}

/// A `--cap` value (with or without `CAP_`, any case) as a capability.
fn exec_cap(c: &str) -> Option<caps::Capability> {
    let upper = c.to_ascii_uppercase();
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    name.parse().ok()
}

/// The `--cap` values that name no capability: runc warns ("ignoring
/// unknown or unavailable capabilities") and runs the process without them.
pub fn unknown_exec_caps(caps: &[String]) -> Vec<String> {
    caps.iter()
        .filter(|c| exec_cap(c).is_none())
        .cloned()
        .collect()
}

/// Parses `UID[:GID]` (numeric, as the runtime cannot trust the image's
/// /etc/passwd from the host side).
pub fn parse_user(u: &str) -> Result<(u32, Option<u32>), PlanError> {
    let bad = || invalid("--user", format!("{u:?} is not UID[:GID] with numeric ids"));
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((uid, gid))
}

#[cfg(test)]
mod exec_tests {
    use super::*;

    #[test]
    fn exec_flags_override_the_containers_labels() {
        let mut b = base();
        b.set_apparmor_profile(Some("base".into()));
        let o = ExecOverrides {
            args: vec!["true".into()],
            ..Default::default()
        };
        let p = exec_process(&b, &o, &LaunchOptions::default()).unwrap();
        assert_eq!(p.labels.apparmor.as_deref(), Some("base"));
        let o = ExecOverrides {
            apparmor: Some("other".into()),
            ..o
        };
        let p = exec_process(&b, &o, &LaunchOptions::default()).unwrap();
        assert_eq!(p.labels.apparmor.as_deref(), Some("other"));
    }

    fn base() -> oci_spec::runtime::Process {
        serde_json::from_value(serde_json::json!({
            "args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin", "A=1"],
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}
        }))
        .unwrap()
    }

    #[test]
    fn overrides_apply() {
        let o = ExecOverrides {
            args: vec!["id".into()],
            env: vec!["A=2".into(), "B=3".into()],
            cwd: Some("/tmp".into()),
            user: Some("1000:1001".into()),
            caps: vec!["NET_ADMIN".into()],
            ..Default::default()
        };
        let p = exec_process(&base(), &o, &LaunchOptions::default()).unwrap();
        assert_eq!(p.args, vec!["id".to_string()]);
        assert!(p.env.contains(&"A=2".to_string()) && !p.env.contains(&"A=1".to_string()));
        assert!(p.env.contains(&"B=3".to_string()));
        assert_eq!((p.uid, p.gid), (1000, 1001));
        assert_eq!(p.cwd, PathBuf::from("/tmp"));
        assert!(p
            .caps
            .effective
            .unwrap()
            .contains(&caps::Capability::CAP_NET_ADMIN));
    }

    #[test]
    fn bad_inputs() {
        let o = ExecOverrides::default();
        assert!(exec_process(&base(), &o, &LaunchOptions::default()).is_err());
        assert!(parse_user("root").is_err());
        assert_eq!(parse_user("5").unwrap(), (5, None));
        let o = ExecOverrides {
            args: vec!["x".into()],
            caps: vec!["CAP_BOGUS".into()],
            ..Default::default()
        };
        let e = exec_process(&base(), &o, &LaunchOptions::default()).unwrap_err();
        assert!(e.to_string().contains("--cap"), "{e}");
    }
}
