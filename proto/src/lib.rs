//! The Task API types shared by the shim and the conversions between them
//! and skiff's state. The generated containerd types arrive with the shim.

/// The version the shim reports for `-v`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
