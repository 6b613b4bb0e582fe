//! The kubelet: runs the pods bound to this node through a container runtime.

pub mod container;
pub mod logs;
pub mod probe;
pub mod sync;
