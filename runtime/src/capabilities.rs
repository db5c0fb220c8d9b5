//! The five capability sets of the container process, applied with the
//! `caps` crate.

use caps::{CapSet, Capability, CapsHashSet};
use std::str::FromStr;

/// A capability set could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("capabilities: {action} {set}: {source}")]
    Apply {
        action: &'static str,
        set: &'static str,
        source: caps::errors::CapsError,
    },
}

/// The sets a process gets; `None` for a set leaves it as inherited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: Option<CapsHashSet>,
    pub effective: Option<CapsHashSet>,
    pub inheritable: Option<CapsHashSet>,
    pub permitted: Option<CapsHashSet>,
    pub ambient: Option<CapsHashSet>,
}

fn convert(set: &Option<oci_spec::runtime::Capabilities>) -> CapsHashSet {
    // Names this build of `caps` does not know are skipped, as runc skips
    // capabilities the host kernel lacks.
    set.iter()
        .flatten()
        .filter_map(|c| Capability::from_str(&format!("CAP_{c}")).ok())
        .collect()
}

impl CapSets {
    /// Every set empty.
    pub fn none() -> Self {
        CapSets {
            bounding: Some(CapsHashSet::new()),
            effective: Some(CapsHashSet::new()),
            inheritable: Some(CapsHashSet::new()),
            permitted: Some(CapsHashSet::new()),
            ambient: Some(CapsHashSet::new()),
        }
    }

    /// Translates the spec's sets. A missing set means the empty set, and
    /// so does a missing `capabilities` object: runc then gives the process
    /// no capabilities at all (not even a bounding set), never the runtime's.
    pub fn from_oci(c: Option<&oci_spec::runtime::LinuxCapabilities>) -> Self {
        let Some(c) = c else {
            return CapSets::none();
        };
        CapSets {
            bounding: Some(convert(c.bounding())),
            effective: Some(convert(c.effective())),
            inheritable: Some(convert(c.inheritable())),
            permitted: Some(convert(c.permitted())),
            ambient: Some(convert(c.ambient())),
        }
    }

    /// Drops from the bounding set what the spec does not keep. Runs while
    /// the init still has CAP_SETPCAP, before the uid changes.
    pub fn apply_bounding(&self) -> Result<(), CapError> {
        let Some(keep) = &self.bounding else {
            return Ok(());
        };
        for cap in caps::all() {
            if keep.contains(&cap) || !cap_supported(cap) {
                continue;
            }
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapError::Apply {
                action: "drop from",
                set: "bounding",
                source,
            })?;
        }
        Ok(())
    }

    /// Sets effective, inheritable, permitted and ambient. Runs after the
    /// uid change (with PR_SET_KEEPCAPS), the last step before exec.
    pub fn apply_process_sets(&self) -> Result<(), CapError> {
        let set = |which: CapSet, name: &'static str, v: &Option<CapsHashSet>| {
            if let Some(v) = v {
                caps::set(None, which, v).map_err(|source| CapError::Apply {
                    action: "set",
                    set: name,
                    source,
                })?;
            }
            Ok::<(), CapError>(())
        };
        // Permitted is raised only as far as it already is; effective must
        // stay a subset of it at every step, so narrow effective first.
        if let (Some(e), Some(p)) = (&self.effective, &self.permitted) {
            let narrowed: CapsHashSet = e.intersection(p).copied().collect();
            set(CapSet::Effective, "effective", &Some(narrowed))?;
        }
        set(CapSet::Inheritable, "inheritable", &self.inheritable)?;
        set(CapSet::Permitted, "permitted", &self.permitted)?;
        set(CapSet::Effective, "effective", &self.effective)?;
        if let Some(a) = &self.ambient {
            caps::clear(None, CapSet::Ambient).map_err(|source| CapError::Apply {
                action: "clear",
                set: "ambient",
                source,
            })?;
            for cap in a {
                // Ambient needs the cap in both permitted and inheritable;
                // runc ignores the ones that are not, so do we.
                let _ = caps::raise(None, CapSet::Ambient, *cap);
            }
        }
        Ok(())
    }
}

/// Makes CAP_SYS_ADMIN effective (it must be permitted), for loading a
/// seccomp filter without no_new_privs after the uid change; returns the
/// effective set it replaced.
pub fn raise_sys_admin() -> Result<CapsHashSet, CapError> {
    let err = |action| {
        move |source| CapError::Apply {
            action,
            set: "effective",
            source,
        }
    };
    let before = caps::read(None, CapSet::Effective).map_err(err("read"))?;
    caps::raise(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)
        .map_err(err("raise CAP_SYS_ADMIN in"))?;
    Ok(before)
}

/// Sets the effective set back to `effective` (see [`raise_sys_admin`]).
pub fn set_effective(effective: &CapsHashSet) -> Result<(), CapError> {
    caps::set(None, CapSet::Effective, effective).map_err(|source| CapError::Apply {
        action: "restore",
        set: "effective",
        source,
    })
}

/// Whether the running kernel knows `cap` (`/proc/sys/kernel/cap_last_cap`).
fn cap_supported(cap: Capability) -> bool {
    thread_local! {
        static LAST: u8 = crate::sys::read_text("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
    }
    LAST.with(|last| cap.index() <= *last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_names() {
        let oci: oci_spec::runtime::LinuxCapabilities = serde_json::from_value(serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"]
        }))
        .unwrap();
        let s = CapSets::from_oci(Some(&oci));
        assert_eq!(s.bounding.as_ref().unwrap().len(), 2);
        assert!(s
            .effective
            .as_ref()
            .unwrap()
            .contains(&Capability::CAP_KILL));
        assert_eq!(s.ambient, Some(CapsHashSet::new()));
        // No capabilities object: no capabilities, as in runc.
        assert_eq!(CapSets::from_oci(None), CapSets::none());
        assert!(CapSets::from_oci(None).bounding.unwrap().is_empty());
    }
}
