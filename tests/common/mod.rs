//! Shared harness of the end-to-end tests.
#![allow(unreachable_pub)]

pub mod cluster;
pub mod nodes;
