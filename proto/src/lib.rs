//! The Task API types shared by the shim and the conversions between them and skiff's world.
//!
//! The generated types come from containerd's own `containerd-shim-protos` crate (synchronous ttrpc
//! only, no async runtime). This crate adds what the crate lacks or what is pure and testable:
//!
//! - [`service`]: one Task implementation registered under both `containerd.task.v2.Task`
//!   (containerd 1.6/1.7) and `containerd.task.v3.Task` (containerd 2.x).
//! - [`convert`]: exit statuses, timestamps, runtime status strings, `Any` packing of events.
//! - [`options`]: the runtime options containerd sends (runc's `Options` or the generic
//!   `runtimeoptions` naming a TOML file) reduced to [`options::RuntimeOptions`].
//! - [`metrics`]: cgroup v1 and v2 files turned into containerd's metrics types.

pub mod convert;
pub mod metrics;
pub mod options;
pub mod service;

pub use containerd_shim_protos as protos;
pub use containerd_shim_protos::api;
pub use containerd_shim_protos::events as event_types;
pub use containerd_shim_protos::protobuf;
pub use containerd_shim_protos::ttrpc;

/// The version the shim reports for `-v`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
