//! Logging to journald with structured fields.
//!
//! `tracing-journald` prefixes user fields with `F_` by default and emits
//! span fields too; we turn the prefix off so that event fields (COMMAND,
//! SCAN_RESULT, VIRUS_NAME, BYTES, DURATION_MS, ...) and the fields of the
//! enclosing `conn` span (ID, PEER, LISTENER) are top-level journal fields
//! with those exact names: `journalctl -u clamsentry SCAN_RESULT=found`.

use std::os::fd::AsRawFd;

/// The journald layer, or an error when the journal socket is not there.
pub fn layer() -> std::io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier("clamsentry".into()))
}

/// True when stderr is a stream to journald (systemd sets `JOURNAL_STREAM`
/// to the device and inode of that stream for services).
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}
