//! Keelson's Jepsen-style fault-injection suite: a cluster of masters in network namespaces,
//! concurrent clients recording every operation, nemeses that inject faults on a schedule,
//! checkers that can fail, and a report a person can read.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod control;
pub mod etcd;
pub mod history;
pub mod lazyfs;
pub mod nemesis;
pub mod net;
pub mod recorder;
pub mod report;
pub mod run;
pub mod workload;
