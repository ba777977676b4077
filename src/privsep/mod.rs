//! Process boundary: passing descriptors between processes (SCM_RIGHTS).
//!
//! FILDES clients hand clamsentry an open file over the Unix socket; the
//! privilege-separated broker will hand workers descriptors the same way.
//! Converting received raw descriptors into owned ones is the only `unsafe`
//! here.
#![allow(unsafe_code)]

pub mod broker;
pub mod channel;
pub mod fdpass;
pub mod messages;
pub mod peergroups;
pub mod supervisor;
pub mod worker;
