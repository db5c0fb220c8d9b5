//! LSM labels applied for real: an AppArmor profile that denies something observable confines
//! the container and its exec'd processes (and nothing else), and SELinux process and mount labels
//! are the ones the container actually gets; each compared with runc. These need a kernel with the
//! LSM enabled (the VM of `scripts/vm-test.sh`, see its SKIFF_VM_APPEND) and skip with a message
//! elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use skiff_integration::{Bundle, Harness};

fn apparmor_on() -> bool {
    Path::new("/sys/kernel/security/apparmor").exists()
        && fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'))
}

/// Whether a test of `lsm` may skip because the kernel does not run it: not when
/// `SKIFF_REQUIRE_LSM` names it (scripts/test.sh's VM steps boot the LSM and set it, so a guest that
/// failed to enable it fails the step instead of passing it with nothing tested).
fn may_skip(lsm: &str, why: &str) -> bool {
    let required = std::env::var("SKIFF_REQUIRE_LSM").unwrap_or_default();
    assert!(
        !required.split(',').any(|r| r == lsm),
        "SKIFF_REQUIRE_LSM={required}, but {why}"
    );
    eprintln!("skipped: {why}");
    true
}

fn selinux_on() -> bool {
    fs::read_to_string("/proc/self/attr/current").is_ok_and(|c| {
        Path::new("/sys/fs/selinux/enforce").exists() && c.trim_end_matches('\0').trim() != "kernel"
    })
}

/// An AppArmor profile loaded into the kernel for the test's lifetime.
struct Profile {
    name: String,
    file: PathBuf,
}

impl Profile {
    /// Loads a profile named `name` that allows everything a container does but reading
    /// `/secret` (as the container sees it).
    fn load(h: &Harness, name: &str) -> Result<Profile> {
        let file = h.path(&format!("{name}.profile"));
        let text = format!(
            "profile {name} flags=(attach_disconnected,mediate_deleted) {{\n\
             \x20 file,\n  capability,\n  network,\n  signal,\n  ptrace,\n  unix,\n\
             \x20 mount,\n  umount,\n  pivot_root,\n\
             \x20 deny /secret r,\n}}\n"
        );
        fs::write(&file, text)?;
        let out = Command::new("apparmor_parser")
            .arg("-r")
            .arg(&file)
            .output()
            .context("apparmor_parser (Debian's apparmor package)")?;
        if !out.status.success() {
            bail!(
                "apparmor_parser -r: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Profile {
            name: name.into(),
            file,
        })
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = Command::new("apparmor_parser")
            .arg("-R")
            .arg(&self.file)
            .output();
    }
}

/// What a process reports about its confinement: its label and whether it read `/secret`.
const REPORT: &str = "cat /proc/self/attr/current; echo; cat /secret 2>/dev/null || echo denied";

fn secret_bundle(h: &Harness, profile: Option<&str>, args: &[&str]) -> Result<Bundle> {
    let mut b = h.bundle()?;
    fs::write(b.rootfs().join("secret"), "the-secret\n")?;
    b.args(args)?;
    if let Some(p) = profile {
        b.edit(|c| c["process"]["apparmorProfile"] = p.into())?;
    }
    Ok(b)
}

/// Runs `REPORT` in a container (confined by `profile` or not), and in `exec`s into a second
/// container started with the same profile: with the container's, and with `--apparmor`.
fn apparmor_observations(h: &Harness, profile: &str) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    for p in [Some(profile), None] {
        let b = secret_bundle(h, p, &["sh", "-c", REPORT])?;
        seen.push(h.run_ok(&b)?.replace('\0', ""));
    }
    let b = secret_bundle(h, None, &["sleep", "600"])?;
    let id = h.create_and_start("aa", &b)?;
    for flags in [&[][..], &["--apparmor", profile][..]] {
        let out = h.exec_in(&id, flags, &["sh", "-c", REPORT])?.ok()?;
        seen.push(out.stdout.replace('\0', ""));
    }
    let b = secret_bundle(h, Some(profile), &["sleep", "600"])?;
    let id = h.create_and_start("aa", &b)?;
    let out = h.exec_in(&id, &[], &["sh", "-c", REPORT])?.ok()?;
    seen.push(out.stdout.replace('\0', ""));
    Ok(seen)
}

#[test]
fn an_apparmor_profile_confines_the_container_and_its_execs_as_under_runc() -> Result<()> {
    if !apparmor_on() {
        may_skip(
            "apparmor",
            "AppArmor is not enabled on this kernel (run it in scripts/vm-test.sh)",
        );
        return Ok(());
    }
    let h = Harness::new()?;
    let profile = Profile::load(&h, &format!("skiff-test-{}", h.tag()))?;
    let seen = apparmor_observations(&h, &profile.name)?;
    eprintln!("skiff: {seen:?}");
    let confined = format!("{} (enforce)\n\ndenied\n", profile.name);
    let free = "unconfined\n\nthe-secret\n".to_string();
    assert_eq!(
        seen,
        [
            confined.clone(),
            free.clone(),
            free,
            confined.clone(),
            confined
        ],
        "init confined, init unconfined, exec (unconfined container), exec --apparmor, \
         exec (confined container)"
    );
    let runc = Harness::runc()?;
    assert_eq!(apparmor_observations(&runc, &profile.name)?, seen, "runc");
    Ok(())
}

#[test]
fn an_apparmor_profile_that_is_not_loaded_fails_the_create_naming_it() -> Result<()> {
    if !apparmor_on() {
        may_skip(
            "apparmor",
            "AppArmor is not enabled on this kernel (run it in scripts/vm-test.sh)",
        );
        return Ok(());
    }
    let h = Harness::new()?;
    let name = format!("skiff-missing-{}", h.tag());
    let b = secret_bundle(&h, Some(&name), &["true"])?;
    let id = h.id("aa");
    let out = h.try_create(&id, &b, &[])?;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("process.apparmorProfile"), "{out}");
    assert!(out.stderr.contains(&name), "{out}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

/// A type the loaded policy knows: the first of `candidates` that the kernel accepts as a
/// context (`/sys/fs/selinux/context` validates one).
fn valid_context(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|c| fs::write("/sys/fs/selinux/context", c).is_ok())
        .map(|c| c.to_string())
}

fn xattr(path: &Path, name: &str) -> Result<String> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let n = std::ffi::CString::new(name)?;
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        bail!(
            "getxattr {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    buf.truncate(r as usize);
    Ok(String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .to_string())
}

/// The labels a running container got, read from the host: its init's, an exec'd process's, the
/// context of its /dev, /dev/pts and /dev/shm mounts, of the tmpfs masking a directory and of its
/// mqueue root.
fn selinux_observations(h: &Harness, process: &str, mount: &str) -> Result<Vec<String>> {
    let mut b = h.bundle()?;
    b.args(&["sleep", "600"])?;
    fs::create_dir_all(b.rootfs().join("masked"))?;
    b.edit(|c| {
        c["process"]["selinuxLabel"] = process.into();
        c["linux"]["mountLabel"] = mount.into();
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .push("/masked".into());
    })?;
    let id = h.create_and_start("se", &b)?;
    let pid = h.pid(&id)?;
    let mut seen = vec![fs::read_to_string(format!("/proc/{pid}/attr/current"))?
        .trim_end_matches('\0')
        .to_string()];
    let out = h
        .exec_in(&id, &[], &["cat", "/proc/self/attr/current"])?
        .ok()?;
    seen.push(out.stdout.trim_end_matches('\0').to_string());
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    for dest in [
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/masked",
        "/dev/mqueue",
        "/proc",
    ] {
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(dest))
            .with_context(|| format!("no {dest} in {mountinfo}"))?;
        let has = line.contains(&format!("context={mount}"))
            || line.contains(&format!("context=\"{mount}\""));
        seen.push(format!("{dest} context: {has}"));
    }
    seen.push(xattr(
        &PathBuf::from(format!("/proc/{pid}/root/dev/mqueue")),
        "security.selinux",
    )?);
    Ok(seen)
}

#[test]
fn selinux_process_and_mount_labels_are_the_ones_the_container_gets_as_under_runc() -> Result<()> {
    if !selinux_on() {
        may_skip(
            "selinux",
            "SELinux is not enabled on this kernel (scripts/vm-test.sh with SKIFF_VM_APPEND)",
        );
        return Ok(());
    }
    let process = valid_context(&[
        "system_u:system_r:container_t:s0:c1,c2",
        "system_u:system_r:container_t:s0",
        "system_u:system_r:unconfined_t:s0:c1,c2",
        "system_u:system_r:unconfined_t:s0",
    ])
    .context("no process context the policy accepts")?;
    let mount = valid_context(&[
        "system_u:object_r:container_file_t:s0:c1,c2",
        "system_u:object_r:container_file_t:s0",
        "system_u:object_r:tmp_t:s0:c1,c2",
        "system_u:object_r:tmp_t:s0",
    ])
    .context("no file context the policy accepts")?;
    let own = fs::read_to_string("/proc/self/attr/current")?;
    let mode = fs::read_to_string("/sys/fs/selinux/enforce").unwrap_or_default();
    eprintln!("labels: process {process}, mounts {mount}; ours {own}, enforce {mode}");
    assert_ne!(
        own.trim_end_matches('\0'),
        process,
        "the label must be one we do not have"
    );
    let h = Harness::new()?;
    let seen = selinux_observations(&h, &process, &mount)?;
    assert_eq!(
        seen,
        [
            process.clone(),
            process.clone(),
            "/dev context: true".into(),
            "/dev/pts context: true".into(),
            "/dev/shm context: true".into(),
            "/masked context: true".into(),
            "/dev/mqueue context: false".into(),
            "/proc context: false".into(),
            mount.clone(),
        ]
    );
    eprintln!("skiff: {seen:?}");
    let runc = Harness::runc()?;
    assert_eq!(selinux_observations(&runc, &process, &mount)?, seen, "runc");
    Ok(())
}

/// `ctr run --apparmor-profile` through containerd with `runtime` (our shim, or runc's): the
/// label the container's process reports.
fn ctr_apparmor_label(
    c: &skiff_integration::containerd::Containerd,
    runtime: &str,
    profile: &str,
    id: &str,
) -> Result<String> {
    use skiff_integration::containerd::IMAGE;
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        runtime,
        "--apparmor-profile",
        profile,
        IMAGE,
        id,
        "cat",
        "/proc/self/attr/current",
    ])?;
    assert_eq!(out.exit_code(), 0, "{out}\n{}", c.log_tail());
    Ok(out.stdout.replace('\0', ""))
}

#[test]
fn an_apparmor_profile_reaches_the_container_through_the_shim_as_through_runcs() -> Result<()> {
    use skiff_integration::containerd::{Containerd, SKIFF_RUNTIME};
    if !apparmor_on() {
        may_skip(
            "apparmor",
            "AppArmor is not enabled on this kernel (run it in scripts/vm-test.sh)",
        );
        return Ok(());
    }
    let h = Harness::new()?;
    let profile = Profile::load(&h, &format!("skiff-shim-{}", h.tag()))?;
    let c = Containerd::start()?;
    c.import_busybox()?;
    let ours = ctr_apparmor_label(&c, SKIFF_RUNTIME, &profile.name, "aa-skiff")?;
    assert_eq!(ours, format!("{} (enforce)\n", profile.name));
    let theirs = ctr_apparmor_label(&c, "io.containerd.runc.v2", &profile.name, "aa-runc")?;
    assert_eq!(theirs, ours, "runc's shim");
    Ok(())
}
