//! The container's record under `--root`: `<root>/<id>/state.json` (the
//! OCI state plus what later commands need), `<root>/<id>/exec.fifo` while
//! the container is `created`, and a `flock` on the directory that
//! serialises commands on one container.
//!
//! The status is derived, never trusted: a recorded init whose process is
//! gone, a zombie, or whose start time differs (a reused pid) is `stopped`.
//!
//! Any instant of a command is recoverable. `create` claims the id with a
//! `mkdir`, locks the directory and writes a record with stage `creating`
//! before it makes anything else, and keeps the lock until the record says
//! `created`: everything on the host (cgroups and the parents it made, the
//! fifo, the init once cloned) is named by the record by the time it
//! exists. A `creating` record whose lock is free belongs to a create that
//! died: the container is `stopped` and `delete` removes all of it. A
//! directory without a record (a create killed before its first write, a
//! delete killed after removing the record) is debris: `delete --force`
//! and a new `create` of the id remove it.

use crate::hooks::Hook;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The OCI spec version the runtime implements and reports.
pub const OCI_VERSION: &str = "1.2.1";
const STATE_FILE: &str = "state.json";
/// The fifo the init blocks on until `start` opens it.
pub const EXEC_FIFO: &str = "exec.fifo";

/// A state-directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container with id {0} already exists")]
    AlreadyExists(String),
    /// An id that is not a plain name (`../x`, `x/y`, empty) names no
    /// container: refused as runc does, never looked up.
    #[error(transparent)]
    BadId(Box<crate::spec::SpecError>),
    #[error("state root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state of container {id}: {path}: {source}")]
    Io {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state of container {id}: {path}: corrupt: {source}")]
    Corrupt {
        id: String,
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The lifecycle of a container as the OCI spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }

    /// `start` releases a container that is only created.
    pub fn can_start(self) -> bool {
        self == Status::Created
    }

    /// Signals go to a live init.
    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }

    /// `delete` without `--force` takes stopped containers, and created ones
    /// (whose user process never ran), as runc does.
    pub fn can_delete(self) -> bool {
        matches!(self, Status::Stopped | Status::Created)
    }
}

/// How far `create` got: the record is written first, as `Creating`, and
/// becomes `Created` when the container is complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Creating,
    #[default]
    Created,
}

/// What is kept about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    /// Records written before stages existed are complete ones.
    #[serde(default)]
    pub stage: Stage,
    pub pid: i32,
    /// The init's start time in clock ticks since boot (/proc/pid/stat).
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The cgroup directories the container was put in.
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// The cgroup manager mode (`v1` or `v2`).
    #[serde(default)]
    pub cgroup_mode: String,
    /// v1: per directory of `cgroup_dirs`, its hierarchy's controllers
    /// (empty for a hybrid host's unified one), so later commands need not
    /// look into the directories to find the freezer or the memory files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup_controllers: Vec<Vec<String>>,
    /// Ancestors of `cgroup_dirs` that create made, deepest first: removed
    /// with the container when nothing else uses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup_parents: Vec<PathBuf>,
    /// Whether the container has its own pid namespace.
    pub private_pid: bool,
    /// Without a mount namespace of its own: the id of the rootfs bind,
    /// made in the host's, that `delete` detaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rootfs_mount: Option<u64>,
    /// Run by `start`, so it need not read the bundle's config again.
    #[serde(default)]
    pub poststart: Vec<Hook>,
    #[serde(default)]
    pub poststop: Vec<Hook>,
}

/// The OCI state as `skiff state` prints it (runc's field order and extras).
#[derive(Debug, Serialize)]
pub struct OciState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
}

/// The state a hook reads on its stdin: the runtime-spec's `state` and
/// nothing more, as runc's (`specs.State`): no pid once stopped, no
/// annotations when there are none.
#[derive(Debug, Serialize)]
pub struct HookState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub pid: i32,
    pub bundle: &'a Path,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
}

fn is_zero(pid: &i32) -> bool {
    *pid == 0
}

impl Record {
    /// The manager of the container's cgroup, as create recorded it.
    pub fn cgroup(&self) -> crate::cgroups::Manager {
        crate::cgroups::Manager::from_record(
            &self.cgroup_mode,
            &self.cgroup_dirs,
            &self.cgroup_controllers,
        )
    }

    /// The state JSON a hook gets with the given status.
    pub fn hook_state(&self, status: Status) -> Vec<u8> {
        let state = HookState {
            oci_version: OCI_VERSION,
            id: &self.id,
            status: status.as_str(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: &self.bundle,
            annotations: &self.annotations,
        };
        // Strings, a number and a map of strings: serializing cannot fail.
        serde_json::to_vec(&state).unwrap_or_default()
    }

    /// The OCI state for this record with the given status.
    pub fn oci_state(&self, status: Status) -> OciState<'_> {
        OciState {
            oci_version: OCI_VERSION,
            id: &self.id,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status: status.as_str(),
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            owner: &self.owner,
            annotations: &self.annotations,
        }
    }
}

/// A container's state directory, locked for the lifetime of this value.
pub struct Container {
    pub dir: PathBuf,
    pub record: Record,
    _lock: OwnedFd,
}

/// Opens `dir` and takes its `flock`: waiting for it, or (`wait` false)
/// giving `None` when another command holds it.
fn lock_dir(dir: &Path, id: &str, wait: bool) -> Result<Option<OwnedFd>, StateError> {
    let io = |source| StateError::Io {
        id: id.to_string(),
        path: dir.to_path_buf(),
        source,
    };
    let fd = crate::sys::open(dir, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|source| {
        if source.raw_os_error() == Some(libc::ENOENT) {
            return StateError::NotFound(id.to_string());
        }
        io(source)
    })?;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a valid descriptor.
    while unsafe { libc::flock(fd.as_raw_fd(), op) } < 0 {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) => return Ok(None),
            _ => return Err(io(e)),
        }
    }
    // The directory may have been removed, and the id made again, while
    // we waited: the lock must be on the directory the path names now.
    if !names_same_dir(&fd, dir) {
        return Err(StateError::NotFound(id.to_string()));
    }
    Ok(Some(fd))
}

fn names_same_dir(fd: &OwnedFd, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(st) = crate::sys::fstat(std::os::fd::AsFd::as_fd(fd)) else {
        return false;
    };
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.ino() == st.st_ino && m.dev() == st.st_dev)
}

/// The record in `dir`, `None` when there is none.
fn read_record(dir: &Path, id: &str) -> Result<Option<Record>, StateError> {
    let path = dir.join(STATE_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                id: id.to_string(),
                path,
                source,
            })
        }
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|source| StateError::Corrupt {
            id: id.to_string(),
            path,
            source,
        })
}

/// Removes `<root>/<id>` if it is debris: a directory without a record
/// whose lock is free (a create killed before its first record, a delete
/// killed after removing it). `wait`: wait for the lock rather than treat
/// a busy one as a live command. True when nothing is left there.
pub fn clear_debris(root: &Path, id: &str, wait: bool) -> Result<bool, StateError> {
    if wait {
        // Let a live command on the id finish first (its lock is dropped at
        // once: the check below is made under the claim lock).
        match lock_dir(&root.join(id), id, true) {
            Ok(_) | Err(StateError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let _claim = ClaimLock::take(root, id)?;
    clear_debris_claimed(root, id)
}

/// [`clear_debris`] under the root's claim lock, without waiting.
fn clear_debris_claimed(root: &Path, id: &str) -> Result<bool, StateError> {
    let dir = root.join(id);
    let _lock = match lock_dir(&dir, id, false) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Ok(false),
        Err(StateError::NotFound(_)) => return Ok(true),
        Err(e) => return Err(e),
    };
    match std::fs::symlink_metadata(dir.join(STATE_FILE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return Ok(false),
    }
    std::fs::remove_dir_all(&dir).map_err(|source| StateError::Io {
        id: id.to_string(),
        path: dir,
        source,
    })?;
    Ok(true)
}

/// An exclusive `flock` on the state root, held only while an id is
/// claimed (mkdir, then the lock of the new directory) or debris is
/// cleared. Without it a create's fresh directory, made but not yet locked,
/// looks like debris to a second create of the id, which would remove it
/// and make its own; both would then go on as the id's owner.
struct ClaimLock {
    _fd: OwnedFd,
}

impl ClaimLock {
    fn take(root: &Path, id: &str) -> Result<ClaimLock, StateError> {
        let io = |source| StateError::Io {
            id: id.to_string(),
            path: root.to_path_buf(),
            source,
        };
        let fd = crate::sys::open(
            root,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
        .map_err(io)?;
        // SAFETY: flock on a valid descriptor.
        while unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(io(e));
            }
        }
        Ok(ClaimLock { _fd: fd })
    }
}

/// The state directory of a `create` in progress: claimed with `mkdir`
/// (a second create of the id fails there) and locked until the record
/// says `created`. Removed on drop unless committed, so a create that
/// fails leaves nothing behind.
pub struct NewDir {
    pub dir: PathBuf,
    lock: Option<OwnedFd>,
    keep: bool,
}

impl NewDir {
    /// Makes and locks `<root>/<id>`; fails with `AlreadyExists` if a
    /// container (or a live create) has the id. Debris of a dead command is
    /// cleared first.
    pub fn make(root: &Path, id: &str) -> Result<NewDir, StateError> {
        // The root (and any missing parent) is private, 0700 as runc
        // makes it: the records hold pids and bundle paths.
        let mut r = std::fs::DirBuilder::new();
        r.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut r, 0o700);
        r.create(root).map_err(|source| StateError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        let dir = root.join(id);
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o711);
        let claim = ClaimLock::take(root, id)?;
        let mut cleared = false;
        loop {
            match b.create(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if cleared || !clear_debris_claimed(root, id)? {
                        return Err(StateError::AlreadyExists(id.to_string()));
                    }
                    cleared = true;
                }
                Err(source) => {
                    return Err(StateError::Io {
                        id: id.to_string(),
                        path: dir,
                        source,
                    })
                }
            }
        }
        // Locked before anything is made in it, and before the claim lock
        // goes: until then nobody can take the fresh directory for debris,
        // so the lock is on the directory this create made.
        let lock = match lock_dir(&dir, id, false) {
            Ok(Some(lock)) => lock,
            Ok(None) | Err(StateError::NotFound(_)) => {
                return Err(StateError::AlreadyExists(id.to_string()))
            }
            Err(e) => return Err(e),
        };
        drop(claim);
        Ok(NewDir {
            dir,
            lock: Some(lock),
            keep: false,
        })
    }

    /// The lock's descriptor, for the init to close right after the clone:
    /// a copy it kept would hold the lock until its execve.
    pub fn lock_fd(&self) -> Option<RawFd> {
        self.lock.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Writes the record of the create in progress (stage `creating`).
    pub fn write(&self, record: &Record) -> Result<(), StateError> {
        write_record(&self.dir, record)
    }

    /// Writes the complete record and turns the directory into a locked
    /// container.
    pub fn commit(mut self, mut record: Record) -> Result<Container, StateError> {
        record.stage = Stage::Created;
        write_record(&self.dir, &record)?;
        let Some(lock) = self.lock.take() else {
            return Err(StateError::NotFound(record.id));
        };
        self.keep = true;
        Ok(Container {
            dir: self.dir.clone(),
            record,
            _lock: lock,
        })
    }
}

impl Drop for NewDir {
    fn drop(&mut self) {
        // A create that failed leaves nothing behind; the lock is still
        // held while the directory goes.
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_record(dir: &Path, record: &Record) -> Result<(), StateError> {
    let io = |path: &Path, source| StateError::Io {
        id: record.id.clone(),
        path: path.to_path_buf(),
        source,
    };
    let tmp = dir.join(".state.json.tmp");
    let data = serde_json::to_vec(record).map_err(|source| StateError::Corrupt {
        id: record.id.clone(),
        path: tmp.clone(),
        source,
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(&data).map_err(|e| io(&tmp, e))?;
    drop(f);
    let path = dir.join(STATE_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
}

/// The id as a path component, or the error naming why it is not one.
fn checked_id(id: &str) -> Result<(), StateError> {
    crate::spec::validate_id(id).map_err(|e| StateError::BadId(Box::new(e)))
}

impl Container {
    /// Opens and locks an existing container.
    pub fn load(root: &Path, id: &str) -> Result<Container, StateError> {
        checked_id(id)?;
        let dir = root.join(id);
        let lock = lock_dir(&dir, id, true)?.ok_or_else(|| StateError::NotFound(id.to_string()))?;
        // A directory without a record is debris, not a container.
        let record = read_record(&dir, id)?.ok_or_else(|| StateError::NotFound(id.to_string()))?;
        Ok(Container {
            dir,
            record,
            _lock: lock,
        })
    }

    /// The record and status of a container, for `state` and `list`,
    /// without waiting behind another command: while one holds the lock
    /// the record is read as it stands (records are replaced atomically),
    /// and a create in progress is `creating`.
    pub fn inspect(root: &Path, id: &str) -> Result<(Record, Status), StateError> {
        checked_id(id)?;
        let dir = root.join(id);
        let not_found = || StateError::NotFound(id.to_string());
        match lock_dir(&dir, id, false)? {
            Some(lock) => {
                let record = read_record(&dir, id)?.ok_or_else(not_found)?;
                let c = Container {
                    dir,
                    record,
                    _lock: lock,
                };
                let status = c.status();
                Ok((c.record, status))
            }
            None => {
                let record = read_record(&dir, id)?.ok_or_else(not_found)?;
                let status = match record.stage {
                    Stage::Creating => Status::Creating,
                    Stage::Created => derive_status(&dir, &record),
                };
                Ok((record, status))
            }
        }
    }

    /// Reads a container's record without taking its lock, for commands
    /// that only act on the kernel (resume, ps, events) and must not wait
    /// behind one that holds the lock for long (an exec into a paused
    /// container holds it until the container is resumed). Records are
    /// replaced atomically, so one is never seen half-written.
    pub fn peek(root: &Path, id: &str) -> Result<Record, StateError> {
        checked_id(id)?;
        read_record(&root.join(id), id)?.ok_or_else(|| StateError::NotFound(id.to_string()))
    }

    /// The ids of every container under `root`, sorted.
    pub fn list(root: &Path) -> Result<Vec<String>, StateError> {
        let rd = match std::fs::read_dir(root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Root {
                    path: root.to_path_buf(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn exec_fifo(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    /// Whether the recorded init is still the same live process.
    pub fn init_alive(&self) -> bool {
        process_alive(self.record.pid, self.record.init_start_time)
    }

    /// The derived status. A record still `creating` under our lock was
    /// left by a create that died (a live one holds the lock): `stopped`.
    pub fn status(&self) -> Status {
        match self.record.stage {
            Stage::Creating => Status::Stopped,
            Stage::Created => derive_status(&self.dir, &self.record),
        }
    }

    /// Removes the state directory (the lock goes with the value). The
    /// record goes last: a delete killed half-way leaves a record to delete
    /// again, or an empty directory (debris), never a container without one.
    pub fn destroy(self) -> Result<(), StateError> {
        let io = |path: &Path, source| StateError::Io {
            id: self.record.id.clone(),
            path: path.to_path_buf(),
            source,
        };
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        for e in entries {
            let e = e.map_err(|e| io(&self.dir, e))?;
            if e.file_name() == STATE_FILE {
                continue;
            }
            let path = e.path();
            let r = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            r.map_err(|e| io(&path, e))?;
        }
        let record = self.dir.join(STATE_FILE);
        match std::fs::remove_file(&record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&record, e)),
            _ => {}
        }
        std::fs::remove_dir(&self.dir).map_err(|e| io(&self.dir, e))
    }
}

/// The status of a complete record: `stopped` once its init is gone,
/// `paused` while its cgroup is frozen, `created` while the exec fifo is
/// there, else `running`.
fn derive_status(dir: &Path, record: &Record) -> Status {
    if !process_alive(record.pid, record.init_start_time) {
        return Status::Stopped;
    }
    // Frozen first: a created container that was paused is paused (as
    // runc reports it).
    if !record.cgroup_dirs.is_empty() && crate::cgroups::CgroupManager::is_frozen(&record.cgroup())
    {
        return Status::Paused;
    }
    if dir.join(EXEC_FIFO).exists() {
        return Status::Created;
    }
    Status::Running
}

/// Facts about a process from /proc/<pid>/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

/// Parses /proc/<pid>/stat text: the state (field 3) and the start time
/// (field 22). The command name may contain spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    // After the state come fields 4..; start time is field 22, i.e. the
    // 19th after the state.
    let start_time = f.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Reads a live process's stat; `None` when it is gone.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let text = crate::sys::read_text(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// True when `pid` is alive, not a zombie, and started at `start_time`.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some(s) if s.start_time == start_time && s.state != 'Z' && s.state != 'X')
}

/// RFC 3339 UTC with nanoseconds, as runc writes `created`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stat_with_spaces_in_name() {
        let s = "123 (a b) c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(
            parse_stat(s),
            Some(ProcStat {
                state: 'S',
                start_time: 98765
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_reuse_is_detected() {
        let me = std::process::id() as i32;
        let st = proc_stat(me).unwrap();
        assert!(process_alive(me, st.start_time));
        assert!(!process_alive(me, st.start_time + 1));
        assert!(!process_alive(0, 0));
    }

    #[test]
    fn status_transitions() {
        assert!(Status::Created.can_start());
        assert!(!Status::Running.can_start());
        assert!(Status::Running.can_kill() && !Status::Stopped.can_kill());
        assert!(Status::Stopped.can_delete() && Status::Created.can_delete());
        assert!(!Status::Running.can_delete() && !Status::Paused.can_delete());
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5); // 2024-02-29T23:59:59
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
    }

    /// A created container's record, for the state JSON tests.
    fn sample_record() -> Record {
        Record {
            id: "c".into(),
            stage: Stage::Created,
            pid: 42,
            init_start_time: 1,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "x".into(),
            owner: String::new(),
            annotations: BTreeMap::new(),
            cgroup_dirs: vec![],
            cgroup_mode: String::new(),
            cgroup_controllers: vec![],
            cgroup_parents: vec![],
            private_pid: true,
            host_rootfs_mount: None,
            poststart: vec![],
            poststop: vec![],
        }
    }

    #[test]
    fn state_json_shape() {
        let r = sample_record();
        let v = serde_json::to_value(r.oci_state(Status::Running)).unwrap();
        assert_eq!(v["ociVersion"], OCI_VERSION);
        assert_eq!(v["pid"], 42);
        assert_eq!(v["status"], "running");
        assert!(v.get("annotations").is_none());
        let v = serde_json::to_value(r.oci_state(Status::Stopped)).unwrap();
        assert_eq!(v["pid"], 0);
    }

    #[test]
    fn hook_state_is_the_specs_state_only() {
        let mut r = sample_record();
        let v: serde_json::Value = serde_json::from_slice(&r.hook_state(Status::Creating)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ociVersion": OCI_VERSION, "id": "c", "status": "creating",
                               "pid": 42, "bundle": "/b"})
        );
        r.annotations.insert("k".into(), "v".into());
        let v: serde_json::Value = serde_json::from_slice(&r.hook_state(Status::Stopped)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ociVersion": OCI_VERSION, "id": "c", "status": "stopped",
                               "bundle": "/b", "annotations": {"k": "v"}})
        );
    }

    #[test]
    fn the_root_and_its_missing_parents_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let top = std::env::temp_dir().join(format!("skiff-root-{}", std::process::id()));
        let root = top.join("a/b");
        let d = NewDir::make(&root, "c1").unwrap();
        for dir in [&top, &top.join("a"), &root] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        drop(d);
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn dir_lifecycle() {
        let root = std::env::temp_dir().join(format!("skiff-state-{}", std::process::id()));
        let d = NewDir::make(&root, "c1").unwrap();
        assert!(matches!(
            NewDir::make(&root, "c1"),
            Err(StateError::AlreadyExists(_))
        ));
        drop(d);
        assert!(!root.join("c1").exists(), "a failed create leaves nothing");
        assert!(matches!(
            Container::load(&root, "c1"),
            Err(StateError::NotFound(_))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn record(id: &str, stage: Stage) -> Record {
        let mut r: Record = serde_json::from_value(serde_json::json!({
            "id": id, "pid": 0, "initStartTime": 0, "bundle": "/b", "rootfs": "/b/r",
            "created": "", "owner": "", "privatePid": true,
        }))
        .unwrap();
        r.stage = stage;
        r
    }

    /// The protocol of a create, seen by other commands at each instant.
    #[test]
    fn a_create_is_visible_from_its_first_instant_and_recoverable() {
        let root = std::env::temp_dir().join(format!("skiff-state-c-{}", std::process::id()));
        let d = NewDir::make(&root, "c").unwrap();
        assert_eq!(
            serde_json::from_str::<Record>(r#"{"id":"o","pid":1,"initStartTime":1,"bundle":"/","rootfs":"/","created":"","owner":"","privatePid":true}"#)
                .unwrap()
                .stage,
            Stage::Created,
            "an old record without a stage is complete"
        );
        d.write(&record("c", Stage::Creating)).unwrap();
        // While the creator holds the lock: creating, and not waited for.
        let (_, s) = Container::inspect(&root, "c").unwrap();
        assert_eq!(s, Status::Creating);
        // The creator dies (its lock goes, the directory stays).
        std::mem::forget(d);
        close_all_locks_on(&root.join("c"));
        let (_, s) = Container::inspect(&root, "c").unwrap();
        assert_eq!(s, Status::Stopped, "a dead create is stopped");
        let c = Container::load(&root, "c").unwrap();
        assert_eq!(c.status(), Status::Stopped);
        std::fs::write(c.exec_fifo(), "").unwrap();
        c.destroy().unwrap();
        assert!(!root.join("c").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Closes every descriptor of this process open on `dir` (the test's stand-in for a dead
    /// process releasing its lock).
    fn close_all_locks_on(dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        let want = std::fs::metadata(dir).unwrap().ino();
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == want && m.is_dir()) {
                // SAFETY: closing a descriptor this test leaked on purpose.
                unsafe { libc::close(fd) };
            }
        }
    }

    #[test]
    fn debris_is_cleared_by_a_new_create_and_bad_ids_are_refused() {
        let root = std::env::temp_dir().join(format!("skiff-state-d-{}", std::process::id()));
        std::fs::create_dir_all(root.join("c")).unwrap();
        std::fs::write(root.join("c").join(".state.json.tmp"), "{").unwrap();
        assert!(matches!(
            Container::load(&root, "c"),
            Err(StateError::NotFound(_))
        ));
        assert!(Container::list(&root).unwrap().is_empty());
        let d = NewDir::make(&root, "c").expect("debris does not hold the id");
        assert!(!d.dir.join(".state.json.tmp").exists());
        drop(d);
        // A directory with a record is a container, not debris.
        std::fs::create_dir_all(root.join("k")).unwrap();
        write_record(&root.join("k"), &record("k", Stage::Created)).unwrap();
        assert!(!clear_debris(&root, "k", true).unwrap());
        assert!(matches!(
            NewDir::make(&root, "k"),
            Err(StateError::AlreadyExists(_))
        ));
        for bad in ["../x", "", "x/y"] {
            assert!(matches!(
                Container::load(&root, bad),
                Err(StateError::BadId(_))
            ));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
