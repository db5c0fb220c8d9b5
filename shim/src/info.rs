//! `containerd-shim-skiff-v2 -info`: what containerd 2.x learns about the runtime before it uses it.
//!
//! containerd runs the shim with `-info`, the runtime options (a protobuf `Any`, as `Create` gets
//! them) on stdin, and reads a `containerd.types.RuntimeInfo` from stdout, as containerd's runc shim
//! prints it:
//!
//! | field | value |
//! | --- | --- |
//! | `name` | `io.containerd.skiff.v2` |
//! | `version` | the shim's version and revision (as `-v` prints them) |
//! | `options` | the options read from stdin, unchanged (absent when stdin was empty) |
//! | `features` | the runtime binary's `features` JSON as an `Any` of type `types.containerd.io/opencontainers/runtime-spec/1/features/Features` (absent when the binary has no `features` command) |
//! | `annotations` | none (the runtime's own annotations are inside `features`) |
//!
//! The runtime binary is the options' `BinaryName`, else skiff beside the shim, as for `Create`.
//! containerd (and CRI) takes from `features` whether the runtime can do recursive read-only
//! mounts, idmapped mounts and the like.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use skiff_proto::convert::type_name;
use skiff_proto::options::{OptionsError, RuntimeOptions, RUNC_OPTIONS, RUNTIME_OPTIONS};
use skiff_proto::protobuf::well_known_types::any::Any;
use skiff_proto::protobuf::{Message, MessageField};
use skiff_proto::protos::bootstrap_api::BootstrapParams;
use skiff_proto::protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::service::default_binary;

/// The runtime name containerd knows the shim by.
pub const NAME: &str = "io.containerd.skiff.v2";
/// The type URL containerd gives the OCI runtime features document (JSON inside an `Any`).
pub const FEATURES_TYPE: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
/// The revision `-v` and `-info` report.
pub const REVISION: &str = "skiff";

/// Why `-info` failed.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("reading the runtime options from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("decoding the runtime options from stdin: {0}")]
    Decode(skiff_proto::protobuf::Error),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("running {binary} features: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding the runtime info: {0}")]
    Encode(skiff_proto::protobuf::Error),
    #[error("writing the runtime info: {0}")]
    Write(std::io::Error),
}

/// `-info`: read the options from stdin, ask the runtime for its features, print `RuntimeInfo`.
pub fn run(shim_dir: Option<&Path>) -> Result<(), InfoError> {
    let options = read_options()?;
    let opts = RuntimeOptions::from_any(options.as_ref())?;
    let binary = opts
        .binary_name
        .map(PathBuf::from)
        .unwrap_or_else(|| default_binary(shim_dir));
    let features = features(&binary)?;
    let info = runtime_info(options, features);
    let bytes = info.write_to_bytes().map_err(InfoError::Encode)?;
    let mut out = std::io::stdout();
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(InfoError::Write)
}

/// What containerd wrote on the shim's stdin: the runtime options, and whether they came inside
/// a `BootstrapParams` (see [`stdin_in`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stdin {
    pub options: Option<Any>,
    /// containerd 2.3+ wrote a `BootstrapParams`: it reads a JSON bootstrap answer from `start`.
    pub bootstrap: bool,
}

/// The runtime options containerd writes on stdin (for `-info` and `start`); none when stdin is
/// empty (or a terminal: a person asking). See [`stdin_in`] for the two shapes.
pub fn read_options() -> Result<Option<Any>, InfoError> {
    read_stdin().map(|s| s.options)
}

/// What containerd wrote on stdin, read to its end.
pub fn read_stdin() -> Result<Stdin, InfoError> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Stdin::default());
    }
    let mut bytes = Vec::new();
    stdin.read_to_end(&mut bytes).map_err(InfoError::Stdin)?;
    stdin_in(&bytes)
}

/// What containerd wrote on stdin, which comes in two shapes:
///
/// | sent by | stdin holds |
/// | --- | --- |
/// | containerd 1.x–2.2, and 2.4 for `-info` | the options `Any` itself (fields 1 and 2 only) |
/// | containerd 2.3+ for `start` | a `containerd.runtime.bootstrap.v1.BootstrapParams` (id, namespace, addresses, ...) whose `extensions` carry the options `Any` among others |
///
/// An `Any` has no field beyond 2, so a message that has one is the bootstrap form; from it the
/// first extension of one of the option types is taken.
pub fn stdin_in(bytes: &[u8]) -> Result<Stdin, InfoError> {
    if bytes.is_empty() {
        return Ok(Stdin::default());
    }
    let any = Any::parse_from_bytes(bytes).map_err(InfoError::Decode)?;
    if any.special_fields.unknown_fields().iter().next().is_none() {
        return Ok(Stdin {
            options: Some(any),
            bootstrap: false,
        });
    }
    let params = BootstrapParams::parse_from_bytes(bytes).map_err(InfoError::Decode)?;
    let options = params
        .extensions
        .into_iter()
        .filter_map(|e| e.value.into_option())
        .find(|v| matches!(type_name(v), RUNC_OPTIONS | RUNTIME_OPTIONS));
    Ok(Stdin {
        options,
        bootstrap: true,
    })
}

/// `BINARY features` as one line of JSON; `None` when the binary fails or prints something else
/// (containerd's runc shim, too, reports no features rather than failing then).
fn features(binary: &Path) -> Result<Option<String>, InfoError> {
    let out = Command::new(binary)
        .arg("features")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| InfoError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        log_line!(
            "containerd-shim-skiff-v2: {} features: {}: {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return Ok(None);
    }
    Ok(compact_json(&out.stdout))
}

/// The JSON document in `bytes`, re-encoded on one line; `None` if it is not JSON.
fn compact_json(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    serde_json::to_string(&value).ok()
}

/// The `RuntimeInfo` message for the given options and features JSON.
pub fn runtime_info(options: Option<Any>, features: Option<String>) -> RuntimeInfo {
    let mut version = RuntimeVersion::new();
    version.version = skiff_proto::VERSION.to_string();
    version.revision = REVISION.to_string();
    let mut info = RuntimeInfo::new();
    info.name = NAME.to_string();
    info.version = MessageField::some(version);
    info.options = options.into();
    info.features = features
        .map(|json| {
            let mut any = Any::new();
            any.type_url = FEATURES_TYPE.to_string();
            any.value = json.into_bytes();
            any
        })
        .into();
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_with_containerds_field_numbers() {
        let mut opts = Any::new();
        opts.type_url = "containerd.runc.v1.Options".into();
        opts.value = vec![0x12, 1, b'x'];
        let json = compact_json(b"{\n  \"ociVersionMin\": \"1.0.0\"\n}\n").unwrap();
        assert_eq!(json, r#"{"ociVersionMin":"1.0.0"}"#);
        let bytes = runtime_info(Some(opts.clone()), Some(json.clone()))
            .write_to_bytes()
            .unwrap();
        // name = 1, as containerd's runc shim writes it first.
        assert_eq!(&bytes[..2], &[0x0a, NAME.len() as u8]);
        let back = RuntimeInfo::parse_from_bytes(&bytes).unwrap();
        assert_eq!(back.name, NAME);
        assert_eq!(back.version.version, skiff_proto::VERSION);
        assert_eq!(*back.options, opts);
        assert_eq!(back.features.type_url, FEATURES_TYPE);
        assert_eq!(back.features.value, json.as_bytes());
        assert!(back.annotations.is_empty());
    }

    fn options_in(bytes: &[u8]) -> Result<Option<Any>, InfoError> {
        stdin_in(bytes).map(|s| s.options)
    }

    #[test]
    fn options_come_bare_or_inside_bootstrap_params() {
        use skiff_proto::protos::bootstrap_api::Extension;
        let mut opts = Any::new();
        opts.type_url = "runtimeoptions.v1.Options".into();
        opts.value = vec![0x12, 2, b'/', b'x'];
        let bare = opts.write_to_bytes().unwrap();
        assert_eq!(options_in(&bare).unwrap(), Some(opts.clone()));
        assert_eq!(options_in(&[]).unwrap(), None);

        let mut other = Any::new();
        other.type_url = "containerd.runtime.boot.v1.RuncV2Extensions".into();
        let mut params = BootstrapParams::new();
        params.instance_id = "c1".into();
        params.namespace = "default".into();
        params.containerd_version = "v2.4.0".into();
        for value in [other, opts.clone()] {
            let mut e = Extension::new();
            e.value = MessageField::some(value);
            params.extensions.push(e);
        }
        let boot = params.write_to_bytes().unwrap();
        assert_eq!(options_in(&boot).unwrap(), Some(opts.clone()));
        assert!(stdin_in(&boot).unwrap().bootstrap);
        assert!(!stdin_in(&bare).unwrap().bootstrap);
        assert!(!stdin_in(&[]).unwrap().bootstrap);
        params.extensions.clear();
        assert!(
            stdin_in(&params.write_to_bytes().unwrap())
                .unwrap()
                .bootstrap
        );
        assert_eq!(options_in(&params.write_to_bytes().unwrap()).unwrap(), None);
    }

    #[test]
    fn absent_options_and_features_stay_absent() {
        let info = runtime_info(None, None);
        assert!(info.options.is_none());
        assert!(info.features.is_none());
        assert_eq!(compact_json(b"usage: x"), None);
    }
}
