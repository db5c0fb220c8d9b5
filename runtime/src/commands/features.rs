//! `skiff features`: what this runtime supports, in the OCI "features"
//! document that containerd and other callers query (runtime-spec
//! features.md), so they can adapt instead of failing at create.

use crate::syscalls;
use serde_json::{json, Value};

/// The mount options `plan` understands (the `r*` attributes apply to bind
/// mounts, as in runc).
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// The features document.
pub fn features() -> Value {
    let mut caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    caps.sort();
    let arch = if cfg!(target_arch = "x86_64") {
        vec!["SCMP_ARCH_X86_64"]
    } else if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64"]
    } else {
        vec![]
    };
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": !syscalls::SYSCALLS.is_empty(),
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": arch,
                "knownFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
            },
            // "enabled" means the runtime can apply them, "unrelated to
            // whether the host supports" them (runtime-spec features.md);
            // runc reports true on every host likewise.
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true},
            "intelRdt": {"enabled": false},
            "memoryPolicy": {
                "modes": ["MPOL_DEFAULT", "MPOL_PREFERRED", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_LOCAL",
                          "MPOL_PREFERRED_MANY", "MPOL_WEIGHTED_INTERLEAVE"],
                "flags": ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"]
            },
            "mountExtensions": {"idmap": {"enabled": false}},
            "netDevices": {"enabled": true}
        },
        "annotations": {"io.github.skiff.version": env!("CARGO_PKG_VERSION")}
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_as_oci_features() {
        let v = super::features();
        let f: oci_spec::runtime::Features = serde_json::from_value(v).unwrap();
        assert_eq!(f.oci_version_min(), "1.0.0");
        let linux = f.linux().as_ref().unwrap();
        let modes = linux
            .memory_policy()
            .as_ref()
            .unwrap()
            .modes()
            .clone()
            .unwrap();
        assert!(modes.contains(&"MPOL_BIND".to_string()));
        // skiff applies both LSMs' labels (crate::lsm).
        assert_eq!(linux.apparmor().as_ref().unwrap().enabled(), &Some(true));
        assert_eq!(linux.selinux().as_ref().unwrap().enabled(), &Some(true));
        let net = linux.net_devices().as_ref().unwrap();
        assert_eq!(net.enabled(), &Some(true));
    }

    #[test]
    fn recursive_attributes_are_listed() {
        for opt in [
            "rro",
            "rrw",
            "rnosuid",
            "rsuid",
            "rnodev",
            "rdev",
            "rnoexec",
            "rexec",
            "rnoatime",
            "ratime",
            "rrelatime",
            "rnorelatime",
            "rstrictatime",
            "rnostrictatime",
            "rnodiratime",
            "rdiratime",
            "rnosymfollow",
            "rsymfollow",
        ] {
            assert!(super::MOUNT_OPTIONS.contains(&opt), "{opt}");
        }
    }

    #[test]
    fn every_listed_mount_option_is_understood() {
        // Each option must plan without becoming filesystem data.
        for opt in super::MOUNT_OPTIONS {
            let m: oci_spec::runtime::Mount = serde_json::from_value(serde_json::json!({
                "destination": "/d", "type": "bind", "source": "/s", "options": ["rnoatime", opt]
            }))
            .unwrap();
            let op = crate::plan::mount_op(0, &m).unwrap();
            assert_eq!(op.data, "", "{opt}");
        }
    }
}
