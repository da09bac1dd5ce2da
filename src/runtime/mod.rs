//! Runtime backends: the host services appunit drives.

pub mod containerd;
pub mod journal;
pub mod net;
pub mod oci;
pub mod seccomp;
pub mod systemd;
