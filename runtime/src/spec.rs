//! Loading `config.json` and validating it up front, before anything is
//! created, with errors that name the field and the reason.

use oci_spec::runtime::Spec;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Why a bundle's config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("bundle {bundle}: cannot read config.json: {source}")]
    Read {
        bundle: PathBuf,
        source: std::io::Error,
    },
    #[error("config.json: {field}: {reason}")]
    Parse { field: String, reason: String },
    #[error("config.json: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("container id {id:?}: {reason}")]
    Id { id: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads and validates `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    load_with_unknown_caps(bundle).map(|(spec, _)| spec)
}

/// As [`load`], also returning the capability names of
/// `process.capabilities` that were dropped as unknown (runc warns
/// "ignoring unknown or unavailable capabilities" and runs without them).
pub fn load_with_unknown_caps(bundle: &Path) -> Result<(Spec, Vec<String>), SpecError> {
    let data = read_regular(&bundle.join("config.json")).map_err(|source| SpecError::Read {
        bundle: bundle.to_path_buf(),
        source,
    })?;
    let (data, unknown) = drop_unknown_caps(&data);
    let spec = parse(&data)?;
    validate(&spec)?;
    Ok((spec, unknown))
}

/// Removes the names in `process.capabilities.*` that are not capabilities,
/// returning the text to parse and the names removed. Text that is not a
/// JSON object is returned as it is (the parser then says why).
fn drop_unknown_caps(data: &[u8]) -> (std::borrow::Cow<'_, [u8]>, Vec<String>) {
    use serde_json::Value;
    let mut unknown = Vec::new();
    let Ok(mut doc) = serde_json::from_slice::<Value>(data) else {
        return (data.into(), unknown);
    };
    let Some(sets) = doc
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    else {
        return (data.into(), unknown);
    };
    for list in sets.values_mut().filter_map(Value::as_array_mut) {
        list.retain(|name| {
            let known = !name.is_string()
                || serde_json::from_value::<oci_spec::runtime::Capability>(name.clone()).is_ok();
            if !known {
                if let Some(n) = name.as_str().filter(|n| !unknown.iter().any(|u| u == n)) {
                    unknown.push(n.to_string());
                }
            }
            known
        });
    }
    if unknown.is_empty() {
        return (data.into(), unknown);
    }
    match serde_json::to_vec(&doc) {
        Ok(v) => (v.into(), unknown),
        Err(_) => (data.into(), Vec::new()),
    }
}

/// Reads a file that must be a regular one: opened without blocking, so a
/// FIFO (or a device) in its place is refused at once instead of waiting
/// for a writer that never comes.
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut data)?;
    Ok(data)
}

/// Parses config.json text; a type error names the JSON path of the field.
pub fn parse(data: &[u8]) -> Result<Spec, SpecError> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let field = if field == "." || field.is_empty() {
            "(document)".to_string()
        } else {
            field
        };
        SpecError::Parse {
            field,
            reason: inner.to_string(),
        }
    })
}

/// Checks what deserialisation cannot: versions, required sections,
/// absolute paths, duplicate namespaces.
pub fn validate(spec: &Spec) -> Result<(), SpecError> {
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(invalid(
            "ociVersion",
            format!("unsupported version {version:?}, skiff runs 1.x configs"),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing: the bundle must name its rootfs"))?;
    if root.path().as_os_str().is_empty() {
        return Err(invalid("root.path", "empty"));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing: nothing to run"))?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(invalid("process.args", "missing or empty")),
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(
            "process.cwd",
            format!("{:?} is not an absolute path", process.cwd()),
        ));
    }
    if let Some(env) = process.env() {
        for (i, e) in env.iter().enumerate() {
            if !e.contains('=') || e.starts_with('=') {
                return Err(invalid(
                    format!("process.env[{i}]"),
                    format!("{e:?} is not KEY=VALUE"),
                ));
            }
        }
    }
    // A relative mounts[].destination is not refused: runc warns (see
    // `relative_mount_destinations`) and mounts it under the container's `/`.
    if let Some(linux) = spec.linux() {
        let mut seen = HashSet::new();
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            if !seen.insert(ns.typ()) {
                return Err(invalid(
                    format!("linux.namespaces[{i}].type"),
                    format!("namespace {} listed twice", ns.typ()),
                ));
            }
            if let Some(p) = ns.path() {
                if !p.is_absolute() {
                    return Err(invalid(
                        format!("linux.namespaces[{i}].path"),
                        format!("{p:?} is not an absolute path"),
                    ));
                }
            }
        }
        for (i, d) in linux.devices().iter().flatten().enumerate() {
            if !d.path().is_absolute() {
                return Err(invalid(
                    format!("linux.devices[{i}].path"),
                    format!("{:?} is not an absolute path", d.path()),
                ));
            }
        }
    }
    for (field, hooks) in hook_lists(spec) {
        for (i, h) in hooks.iter().enumerate() {
            if !h.path().is_absolute() {
                return Err(invalid(
                    format!("hooks.{field}[{i}].path"),
                    format!("{:?} is not an absolute path", h.path()),
                ));
            }
            if h.timeout().is_some_and(|t| t <= 0) {
                return Err(invalid(
                    format!("hooks.{field}[{i}].timeout"),
                    "must be a positive number of seconds",
                ));
            }
        }
    }
    Ok(())
}

#[allow(deprecated)] // prestart is deprecated in the spec but still honoured.
fn hook_lists(spec: &Spec) -> Vec<(&'static str, &[oci_spec::runtime::Hook])> {
    let Some(h) = spec.hooks() else {
        return Vec::new();
    };
    let mut out: Vec<(&'static str, &[oci_spec::runtime::Hook])> = Vec::new();
    if let Some(l) = h.prestart() {
        out.push(("prestart", l));
    }
    if let Some(l) = h.create_runtime() {
        out.push(("createRuntime", l));
    }
    if let Some(l) = h.create_container() {
        out.push(("createContainer", l));
    }
    if let Some(l) = h.start_container() {
        out.push(("startContainer", l));
    }
    if let Some(l) = h.poststart() {
        out.push(("poststart", l));
    }
    if let Some(l) = h.poststop() {
        out.push(("poststop", l));
    }
    out
}

/// Whether `linux.resources.memory` sets `kernel` or `kernelTCP`, which
/// are ignored (as runc 1.1+ ignores them, warning at `create`).
pub fn sets_kernel_memory(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .is_some_and(|m| m.kernel().is_some() || m.kernel_tcp().is_some())
}

/// The mounts whose destination is relative, by index: runc accepts them
/// with a warning (deprecated) and mounts them under the container's `/`,
/// and so does skiff (`create` warns).
pub fn relative_mount_destinations(spec: &Spec) -> Vec<(usize, PathBuf)> {
    spec.mounts()
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, m)| !m.destination().is_absolute())
        .map(|(i, m)| (i, m.destination().clone()))
        .collect()
}

/// Checks a container id as runc does: letters, digits, `_ + - .`, not `.`
/// or `..`, so it is always a single safe path component.
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let bad = |reason: String| SpecError::Id {
        id: id.to_string(),
        reason,
    };
    if id.is_empty() {
        return Err(bad("empty".into()));
    }
    if id == "." || id == ".." {
        return Err(bad("not a valid name".into()));
    }
    if id.len() > 1024 {
        return Err(bad("longer than 1024 bytes".into()));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        return Err(bad(format!(
            "character {c:?} is not allowed (letters, digits, _ + - . only)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_capability_names_are_dropped_and_reported() {
        let doc = serde_json::json!({"process": {"capabilities": {
            "bounding": ["CAP_KILL", "CAP_FOO"], "effective": ["CAP_FOO", "CAP_BAR"],
            "permitted": ["CAP_CHOWN"]}}});
        let text = serde_json::to_vec(&doc).unwrap();
        let (out, unknown) = drop_unknown_caps(&text);
        assert_eq!(unknown, ["CAP_FOO", "CAP_BAR"]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_KILL"])
        );
        assert_eq!(
            v["process"]["capabilities"]["effective"],
            serde_json::json!([])
        );
        // Nothing unknown, or no JSON at all: the text is left alone.
        let plain = br#"{"process": {"capabilities": {"bounding": ["CAP_KILL"]}}}"#;
        assert_eq!(drop_unknown_caps(plain), (plain[..].into(), vec![]));
        assert_eq!(drop_unknown_caps(b"{nope").1, Vec::<String>::new());
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        })
    }

    fn check(v: serde_json::Value) -> Result<Spec, SpecError> {
        let s = parse(v.to_string().as_bytes())?;
        validate(&s)?;
        Ok(s)
    }

    #[test]
    fn accepts_minimal() {
        check(base()).unwrap();
    }

    #[test]
    fn invalid_json_is_an_error() {
        let e = parse(b"{ not json").unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    #[test]
    fn unknown_namespace_names_field() {
        let mut v = base();
        v["linux"]["namespaces"][0]["type"] = "bogus".into();
        let e = check(v).unwrap_err().to_string();
        assert!(e.contains("linux.namespaces[0].type"), "{e}");
    }

    #[test]
    fn relative_mount_destination_is_accepted_and_named() {
        let mut v = base();
        v["mounts"][0]["destination"] = "proc".into();
        let spec = check(v).unwrap();
        assert_eq!(
            relative_mount_destinations(&spec),
            vec![(0, PathBuf::from("proc"))]
        );
    }

    #[test]
    fn missing_process() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("process");
        let e = check(v).unwrap_err().to_string();
        assert!(e.contains("process"), "{e}");
    }

    #[test]
    fn empty_args_and_relative_cwd() {
        let mut v = base();
        v["process"]["args"] = serde_json::json!([]);
        assert!(check(v).unwrap_err().to_string().contains("process.args"));
        let mut v = base();
        v["process"]["cwd"] = "tmp".into();
        assert!(check(v).unwrap_err().to_string().contains("process.cwd"));
    }

    #[test]
    fn version_must_be_1x() {
        let mut v = base();
        v["ociVersion"] = "2.0.0".into();
        assert!(check(v).unwrap_err().to_string().contains("ociVersion"));
        let mut v = base();
        v["ociVersion"] = "1.2.1".into();
        check(v).unwrap();
    }

    #[test]
    fn duplicate_namespace() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "pid"}]);
        assert!(check(v).unwrap_err().to_string().contains("listed twice"));
    }

    #[test]
    fn hook_path_must_be_absolute() {
        let mut v = base();
        v["hooks"] = serde_json::json!({"poststop": [{"path": "bin/true"}]});
        let e = check(v).unwrap_err().to_string();
        assert!(e.contains("hooks.poststop[0].path"), "{e}");
    }

    #[test]
    fn ids() {
        validate_id("abc-1_2.3+x").unwrap();
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
