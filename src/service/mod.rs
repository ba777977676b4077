//! Background duties of a long-running service that are not systemd's:
//! noticing new signatures ([`dbwatch`]), exiting when unused ([`idle`]) and
//! the PID file ([`pidfile`]).
#![forbid(unsafe_code)]

pub mod dbwatch;
pub mod idle;
pub mod pidfile;
