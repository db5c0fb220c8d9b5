//! The create path: the parent (stage 0) clones the init directly; there is
//! no re-exec of the runtime binary and no second stage.

pub mod channel;
pub mod exec;
pub mod init;
pub mod parent;
