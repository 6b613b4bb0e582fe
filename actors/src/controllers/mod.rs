//! The controllers of the controller manager, each a level-triggered reconcile core wrapped by
//! a thin loop over shared informers and a work queue.

pub(crate) mod cidr;
pub(crate) mod deployment;
pub(crate) mod endpoints;
pub(crate) mod gc;
pub(crate) mod namespace;
pub(crate) mod node;
pub(crate) mod replication;
pub(crate) mod serviceaccounts;
