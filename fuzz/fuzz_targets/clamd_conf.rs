//! The clamd.conf reader and translator: `ClamdConf::read_text` and
//! `translate` on arbitrary bytes (names resolved by a fixed fake, so no
//! DNS or user database is consulted).
//!
//! Properties:
//! * never panics; a problem names the file it was given;
//! * a translation without problems is a valid clamsentry configuration:
//!   written as TOML it parses back to an equal configuration, and so does
//!   the commented TOML `convert-clamd-conf` prints;
//! * it never opens a TCP listener on an address that is not loopback, and
//!   never names root as the workers' user.
#![no_main]

use std::net::IpAddr;
use std::path::PathBuf;

use clamsentry::config::clamd_conf::{ClamdConf, Env};
use clamsentry::config::Config;
use libfuzzer_sys::fuzz_target;

fn env() -> Env {
    Env {
        cwd: PathBuf::from("/fuzz"),
        resolve: |host| match host {
            None => Ok(vec!["0.0.0.0".parse().unwrap()]),
            Some("localhost") => Ok(vec!["127.0.0.1".parse().unwrap()]),
            Some(h) => h
                .parse::<IpAddr>()
                .map(|ip| vec![ip])
                .map_err(|_| format!("cannot resolve {h:?}")),
        },
        uid_of: |name| match name {
            "root" | "0" => Some(0),
            "clamav" => Some(105),
            _ => name.parse().ok(),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut conf = ClamdConf::new("fuzz.conf");
    if let Err(p) = conf.read_text(data) {
        assert!(p.to_string().starts_with("fuzz.conf:"), "{p}");
        return;
    }
    let t = conf.translate(&env());
    if !t.problems.is_empty() {
        for p in &t.problems {
            assert!(p.to_string().starts_with("fuzz.conf"), "{p}");
        }
        return;
    }
    let c = &t.config;
    for a in c.tcp_addrs() {
        assert!(a.ip().is_loopback(), "{a}");
    }
    assert_ne!(c.sandbox.user, "root");
    let back = Config::parse(&c.to_toml().unwrap(), "fuzz.toml").unwrap();
    assert_eq!(&back, c);
    let commented = t.to_commented_toml("fuzz.conf").unwrap();
    let back = Config::parse(&commented, "converted.toml").unwrap_or_else(|e| panic!("{e}\n{commented}"));
    assert_eq!(&back, c);
});
