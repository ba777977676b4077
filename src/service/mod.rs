//! Background duties of a long-running service that are not systemd's:
//! noticing new signatures ([`dbwatch`]) and exiting when unused ([`idle`]).
#![forbid(unsafe_code)]

pub mod dbwatch;
pub mod idle;
