//! The create path: the parent (stage 0) clones the init directly; there is
//! no re-exec of the runtime binary. Only a container that joins an existing
//! user namespace by path has a second, short-lived process between them
//! ([`first_stage`]), since its new namespaces must be made inside that one.

pub mod channel;
pub mod exec;
pub mod first_stage;
pub mod init;
pub mod parent;
