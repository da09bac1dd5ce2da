//! Runtime backends: the host services appunit drives.

pub mod containerd;
pub mod oci;
pub mod systemd;
