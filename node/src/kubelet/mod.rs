//! The kubelet: runs the pods bound to this node through a container runtime.

pub mod sync;
