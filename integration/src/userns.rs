//! A user namespace held by a process of its own (`unshare --user sleep`), with id maps written by
//! the test: something for a container to join by path, made without the runtime under test.

use anyhow::{ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The holder process; killed and reaped on drop.
pub struct UsernsHolder(Child);

impl UsernsHolder {
    /// A new user namespace mapping container ids `0..size` to host ids `host..host+size` (uids
    /// and gids).
    pub fn start(host: u32, size: u32) -> Result<UsernsHolder> {
        let child = Command::new("unshare")
            .args(["--user", "sleep", "3600"])
            .spawn()
            .context("unshare --user (util-linux)")?;
        let holder = UsernsHolder(child);
        let pid = holder.0.id();
        let ours = fs::read_link("/proc/self/ns/user")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_link(format!("/proc/{pid}/ns/user"))? == ours {
            ensure!(Instant::now() < deadline, "unshare --user never unshared");
            std::thread::sleep(Duration::from_millis(5));
        }
        let line = format!("0 {host} {size}\n");
        fs::write(format!("/proc/{pid}/uid_map"), &line)?;
        fs::write(format!("/proc/{pid}/gid_map"), &line)?;
        Ok(holder)
    }

    /// `/proc/<pid>/ns/user` of the holder.
    pub fn path(&self) -> PathBuf {
        Path::new("/proc")
            .join(self.0.id().to_string())
            .join("ns/user")
    }
}

impl Drop for UsernsHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
