//! OCI bundles whose root filesystem is Debian's static busybox.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::spec::default_spec;

/// Where the static busybox comes from: `$SKIFF_BUSYBOX`, else Debian's `busybox-static` package.
pub fn busybox_path() -> PathBuf {
    std::env::var_os("SKIFF_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// The applet paths (`bin/sh`, `usr/bin/id`, ...) busybox reports with `--list-full`, asked once.
fn applets() -> Result<&'static [String]> {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    if let Some(list) = APPLETS.get() {
        return Ok(list);
    }
    let busybox = busybox_path();
    let out = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .with_context(|| {
            format!(
                "running {} --list-full (install Debian's busybox-static package)",
                busybox.display()
            )
        })?;
    if !out.status.success() {
        bail!("{} --list-full failed: {}", busybox.display(), out.status);
    }
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Ok(APPLETS.get_or_init(|| list))
}

/// Fill `rootfs` with busybox, its applet links, the usual top-level directories and an
/// `/etc/passwd` and `/etc/group` that know `root` and `nobody`.
pub fn build_rootfs(rootfs: &Path) -> Result<()> {
    let busybox = busybox_path();
    if !busybox.is_file() {
        bail!(
            "{} not found: install Debian's busybox-static package (or set SKIFF_BUSYBOX)",
            busybox.display()
        );
    }
    for dir in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        fs::create_dir_all(rootfs.join(dir))
            .with_context(|| format!("creating {}", rootfs.join(dir).display()))?;
    }
    fs::set_permissions(rootfs, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let target = rootfs.join("bin/busybox");
    fs::copy(&busybox, &target)
        .with_context(|| format!("copying {} to {}", busybox.display(), target.display()))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    for applet in applets()? {
        let link = rootfs.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("linking {}", link.display()))?;
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")?;
    Ok(())
}

/// A bundle directory: `config.json` plus a busybox rootfs.
///
/// The configuration is kept as a [`serde_json::Value`]; every mutation through [`Bundle::edit`] (or
/// the helpers built on it) rewrites `config.json` at once, so the file on disk is always current.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    config: Value,
}

impl Bundle {
    /// Build a bundle in `path` (created) with `config` written to `config.json`.
    pub fn create(path: &Path, config: Value) -> Result<Bundle> {
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        build_rootfs(&path.join("rootfs"))?;
        let bundle = Bundle {
            path: path.to_path_buf(),
            config,
        };
        bundle.write_config()?;
        Ok(bundle)
    }

    /// Build a bundle with the default configuration ([`default_spec`]).
    pub fn with_default_spec(path: &Path) -> Result<Bundle> {
        Bundle::create(path, default_spec())
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bundle directory as a string (for command lines).
    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// The root filesystem named by `root.path` (relative to the bundle, or absolute).
    pub fn rootfs(&self) -> PathBuf {
        let root = self.config["root"]["path"].as_str().unwrap_or("rootfs");
        self.path.join(root)
    }

    /// The current configuration.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// Mutate the configuration and rewrite `config.json`.
    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) -> Result<&mut Self> {
        f(&mut self.config);
        self.write_config()?;
        Ok(self)
    }

    /// Write the configuration to `config.json`.
    pub fn write_config(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.config)?;
        let file = self.path.join("config.json");
        fs::write(&file, text).with_context(|| format!("writing {}", file.display()))
    }

    /// Set `process.args`.
    pub fn args(&mut self, args: &[&str]) -> Result<&mut Self> {
        self.edit(|c| c["process"]["args"] = json!(args))
    }

    /// Set `process.args` to `sh -c SCRIPT`.
    pub fn sh(&mut self, script: &str) -> Result<&mut Self> {
        self.args(&["sh", "-c", script])
    }

    /// Append an entry to `mounts`.
    pub fn add_mount(&mut self, mount: Value) -> Result<&mut Self> {
        self.edit(|c| {
            if let Some(mounts) = c["mounts"].as_array_mut() {
                mounts.push(mount);
            } else {
                c["mounts"] = json!([mount]);
            }
        })
    }

    /// Bind-mount the host directory `source` at `destination` (read-write unless `readonly`).
    pub fn bind(&mut self, source: &Path, destination: &str, readonly: bool) -> Result<&mut Self> {
        let mode = if readonly { "ro" } else { "rw" };
        self.add_mount(json!({
            "destination": destination,
            "type": "bind",
            "source": source.display().to_string(),
            "options": ["rbind", mode]
        }))
    }

    /// Append a variable (`NAME=value`) to `process.env`.
    pub fn add_env(&mut self, var: &str) -> Result<&mut Self> {
        self.edit(|c| {
            if let Some(env) = c["process"]["env"].as_array_mut() {
                env.push(json!(var));
            } else {
                c["process"]["env"] = json!([var]);
            }
        })
    }

    /// Remove the namespace of `kind` from `linux.namespaces`.
    pub fn remove_namespace(&mut self, kind: &str) -> Result<&mut Self> {
        self.edit(|c| {
            if let Some(list) = c["linux"]["namespaces"].as_array_mut() {
                list.retain(|ns| ns["type"] != kind);
            }
        })
    }

    /// Add (or replace) the namespace of `kind`, joining `path` when given.
    pub fn set_namespace(&mut self, kind: &str, path: Option<&Path>) -> Result<&mut Self> {
        self.remove_namespace(kind)?;
        let mut ns = json!({ "type": kind });
        if let Some(path) = path {
            ns["path"] = json!(path.display().to_string());
        }
        self.edit(|c| {
            if let Some(list) = c["linux"]["namespaces"].as_array_mut() {
                list.push(ns);
            } else {
                c["linux"]["namespaces"] = json!([ns]);
            }
        })
    }

    /// Add a hook of `kind` (`prestart`, `createRuntime`, ...).
    pub fn add_hook(&mut self, kind: &str, hook: Value) -> Result<&mut Self> {
        self.edit(|c| {
            if !c["hooks"].is_object() {
                c["hooks"] = json!({});
            }
            if let Some(list) = c["hooks"][kind].as_array_mut() {
                list.push(hook);
            } else {
                c["hooks"][kind] = json!([hook]);
            }
        })
    }

    /// `linux.cgroupsPath`, if set.
    pub fn cgroups_path(&self) -> Option<String> {
        self.config["linux"]["cgroupsPath"]
            .as_str()
            .map(str::to_string)
    }
}
