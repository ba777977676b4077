//! clamd's command line, for clamsentry started as `clamd` (through a
//! symlink, so that scripts and units that run `clamd` keep working) or as
//! `clamsentry clamd ARGS…`.
//!
//! * `-c FILE`, `--config-file=FILE`: the clamd.conf to read (default
//!   `/etc/clamav/clamd.conf`); it is read as clamd reads it and translated
//!   (see `crate::config::clamd_conf`); any option's long name works too
//!   (`--datadir=DIR`, `--pid=FILE`, `--max-scansize=10M`), and the command
//!   line wins over the file, as in clamd;
//! * `-V`, `--version`: clamd's version line, `ClamAV 1.4.6` or
//!   `ClamAV 1.4.6/<daily version>/<daily build time>` from the database
//!   directory's `daily.cvd`/`daily.cld` header, exactly as clamd prints it;
//! * `-F`, `--foreground`, or `Foreground yes`: stay in the foreground;
//!   otherwise fork into the background once the daemon serves, the command
//!   returning 0 (or the start-up error and status), as clamd;
//! * `--debug`: log at debug level, keep the working directory;
//! * `-h`, `--help`.
//!
//! Errors are printed as clamd prints them (`ERROR: …`) and exit 1.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::config::clamd_conf::{self, ClamdConf, Env};
use crate::config::{ConfigSource, Loaded, LogTarget};
use crate::daemonize::{self, Forked, Readiness};

/// Runs clamd's command line (`args` without the program name); returns the
/// exit status.
pub fn main(args: &[String]) -> u8 {
    let mut conf = ClamdConf::new("");
    if let Err(p) = conf.read_args(args) {
        eprintln!("ERROR: {p}");
        eprintln!("ERROR: Can't parse command line options");
        return 1;
    }
    if conf.enabled("help") {
        print!("{}", help());
        return 0;
    }
    let file = conf.config_file();
    let conf = match conf.read_file(&file) {
        Ok(c) => c,
        Err(p) => {
            eprintln!("ERROR: {p}");
            eprintln!("ERROR: Can't open/parse the config file {}", file.display());
            return 1;
        }
    };
    if conf.enabled("version") {
        print!("{}", version_line(&conf.database_directory()));
        return 0;
    }
    let translation = conf.translate(&Env::system());
    if !translation.problems.is_empty() {
        for p in &translation.problems {
            eprintln!("ERROR: {p}");
        }
        eprintln!(
            "ERROR: clamsentry cannot use {} as it is (`clamsentry convert-clamd-conf {}` shows the whole translation)",
            file.display(),
            file.display()
        );
        return 1;
    }
    let mut config = translation.config.clone();
    let mut notes = translation.notes.clone();
    let background = !translation.foreground;
    if background && config.log.target == LogTarget::Auto && Path::new(JOURNAL_SOCKET).exists() {
        // stderr goes to /dev/null once the daemon is in the background.
        config.log.target = LogTarget::Journald;
        notes.push(clamd_conf::Note {
            origin: clamd_conf::Origin::Absent,
            option: "Foreground".into(),
            level: clamd_conf::NoteLevel::Info,
            message: "in the background, so clamsentry logs to journald (log.target)".into(),
        });
    }
    let text = match config.to_toml() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return 1;
        }
    };
    let loaded = Loaded {
        config,
        source: Some(file.clone()),
        text,
        notes,
    };
    let readiness = if background {
        match daemonize::daemonize(conf.enabled("debug")) {
            Ok(Forked::Parent(status)) => return status,
            Ok(Forked::Child(r)) => r,
            Err(e) => {
                eprintln!("ERROR: daemonize() failed: {e}");
                return 1;
            }
        }
    } else {
        Readiness::foreground()
    };
    match crate::supervisor::run(ConfigSource::Loaded(Box::new(loaded)), &readiness) {
        Ok(()) => 0,
        Err(e) => {
            // In the background the waiting parent prints it.
            if !readiness.is_daemonized() {
                eprintln!("clamsentry: {e}");
            }
            1
        }
    }
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// What `clamd -V` prints: `ClamAV <version>\n`, or with the newest of
/// `daily.cvd` and `daily.cld` in `dbdir`: `ClamAV <version>/<daily
/// version>/<build time as ctime(3)>` (ctime's newline included).
pub fn version_line(dbdir: &Path) -> String {
    let mut best: Option<(u32, u64)> = None;
    for name in ["daily.cvd", "daily.cld"] {
        if let Some((v, t)) = crate::engine::cvd_head(&dbdir.join(name)) {
            if best.map_or(true, |(b, _)| v > b) {
                best = Some((v, t));
            }
        }
    }
    let version = crate::engine::version();
    match best {
        Some((v, t)) if v != 0 => format!("ClamAV {version}/{v}/{}\n", ctime(t)),
        _ => format!("ClamAV {version}\n"),
    }
}

/// `ctime(3)` without its newline, in local time.
fn ctime(secs: u64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(secs as i64, 0).single() {
        Some(t) => t.format("%a %b %e %H:%M:%S %Y").to_string(),
        None => secs.to_string(),
    }
}

fn help() -> String {
    format!(
        "
                      clamsentry {} in clamd's place
           (clamd's command line; libclamav {})

    clamd [options]

    --help                   -h             Show this help
    --version                -V             Show version number (as clamd)
    --foreground             -F             Run in foreground; do not daemonize
    --debug                                 Log at debug level; keep the working directory
    --log=FILE               -l FILE        Accepted; clamsentry logs to journald or stderr
    --config-file=FILE       -c FILE        Read configuration from FILE (a clamd.conf)
    --datadir=DIRECTORY                     Load signatures from DIRECTORY
    --pid=FILE               -p FILE        Write the daemon's pid to FILE

Every clamd.conf option is read as clamd reads it; see
`clamsentry convert-clamd-conf FILE` for what each line becomes, and
`clamsentry --help` for clamsentry's own command line.

",
        env!("CARGO_PKG_VERSION"),
        crate::engine::version()
    )
}
