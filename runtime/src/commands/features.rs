//! `skiff features`: what this runtime supports, in the OCI "features"
//! document that containerd and other callers query (runtime-spec
//! features.md), so they can adapt instead of failing at create.

use crate::syscalls;
use serde_json::{json, Value};

/// The mount options `plan` understands (the `r*` attributes apply to bind
/// mounts, `tmpcopyup` to tmpfs, `idmap`/`ridmap` to bind mounts, as in
/// runc 1.2).
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "idmap",
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
    "ridmap",
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
    "tmpcopyup",
    "unbindable",
];

/// The features document.
pub fn features() -> Value {
    let mut caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    caps.sort();
    let arch: Vec<&str> = if syscalls::SYSCALLS.is_empty() {
        vec![]
    } else {
        let mut names: Vec<&str> = crate::seccomp::Abi::supported()
            .iter()
            .map(|a| a.scmp_name())
            .collect();
        // Sorted, as runc lists them.
        names.sort_unstable();
        names
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
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
                            "SCMP_ACT_TRAP"],
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
            "mountExtensions": {"idmap": {"enabled": true}},
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
        // Idmapped bind mounts (crate::premount), as runc 1.2 lists them.
        let v = super::features();
        assert_eq!(v["linux"]["mountExtensions"]["idmap"]["enabled"], true);
        let opts = f.mount_options().clone().unwrap();
        assert!(opts.contains(&"idmap".to_string()) && opts.contains(&"ridmap".to_string()));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn seccomp_lists_notify_and_the_three_x86_abis() {
        let v = super::features();
        let s = &v["linux"]["seccomp"];
        assert!(s["actions"]
            .as_array()
            .unwrap()
            .contains(&"SCMP_ACT_NOTIFY".into()));
        assert_eq!(
            s["archs"],
            serde_json::json!(["SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"])
        );
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
