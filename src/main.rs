//! The `clamsentry` command: thin; everything lives in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clamsentry::config::ConfigSource;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "clamsentry",
    version,
    about = "A clamd-compatible ClamAV daemon"
)]
struct Cli {
    /// Configuration file (default: /etc/clamsentry/clamsentry.toml if present, else built-in defaults).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Read a clamd.conf instead (as clamd 1.4 reads it, translated; see convert-clamd-conf).
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "config")]
    clamd_conf: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate the configuration and exit (0 when valid).
    CheckConfig,
    /// Start a worker as in production and show what its sandbox denies.
    SandboxCheck {
        /// Also try to connect to this Unix socket (repeatable), e.g. /run/dbus/system_bus_socket; the daemon's own socket is always tried.
        #[arg(long, value_name = "PATH")]
        connect: Vec<PathBuf>,
    },
    /// Print the clamsentry configuration a clamd.conf stands for (TOML, one comment per line).
    ConvertClamdConf {
        /// The clamd.conf to translate.
        file: PathBuf,
    },
    /// Run with clamd's command line (-c FILE, -F, -V, --debug), as when started as clamd.
    Clamd {
        /// clamd's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Internal: the engine holder, started by the supervisor.
    #[command(name = "__zygote", hide = true)]
    Zygote {
        #[arg(long)]
        probe: bool,
        #[arg(long)]
        connect: Vec<PathBuf>,
    },
    /// Internal: the observer (metrics, HAProxy agent, self-test), started
    /// by the supervisor.
    #[command(name = "__observer", hide = true)]
    Observer,
}

impl Cli {
    fn source(&self) -> ConfigSource {
        match &self.clamd_conf {
            Some(p) => ConfigSource::ClamdConf(p.clone()),
            None => ConfigSource::from(self.config.as_deref()),
        }
    }
}

fn main() -> ExitCode {
    // Started as clamd (a symlink), or `clamsentry clamd ARGS…`: clamd's
    // command line, read before clap sees it (its global `-c`, clamsentry's
    // --config, would take clamd's `-c FILE`).
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(String::as_str).unwrap_or_default();
    if std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "clamd")
    {
        return ExitCode::from(clamsentry::clamd_cli::main(&args[1..]));
    }
    if args.get(1).map(String::as_str) == Some("clamd") {
        return ExitCode::from(clamsentry::clamd_cli::main(&args[2..]));
    }
    let cli = Cli::parse();
    let source = cli.source();
    match cli.command {
        Some(Cmd::CheckConfig) => match clamsentry::supervisor::check_config(source) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("clamsentry: {e}");
                ExitCode::from(2)
            }
        },
        Some(Cmd::ConvertClamdConf { file }) => convert(&file),
        Some(Cmd::Clamd { args }) => ExitCode::from(clamsentry::clamd_cli::main(&args)),
        Some(Cmd::Zygote { probe, connect }) => {
            let mode = if probe {
                clamsentry::zygote::Mode::Probe { connect }
            } else {
                clamsentry::zygote::Mode::Serve
            };
            ExitCode::from(clamsentry::zygote::main(mode).clamp(0, 255) as u8)
        }
        Some(Cmd::Observer) => ExitCode::from(clamsentry::observer::main().clamp(0, 255) as u8),
        Some(Cmd::SandboxCheck { connect }) => {
            match clamsentry::supervisor::sandbox_check(source, &connect) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("clamsentry: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let foreground = clamsentry::daemonize::Readiness::foreground();
            match clamsentry::supervisor::run(source, &foreground) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("clamsentry: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `convert-clamd-conf FILE`: the TOML on stdout; refused lines are
/// comments there and errors on stderr (exit 2).
fn convert(file: &std::path::Path) -> ExitCode {
    use clamsentry::config::clamd_conf::{ClamdConf, Env};
    let conf = match ClamdConf::new("").read_file(file) {
        Ok(c) => c,
        Err(p) => {
            eprintln!("clamsentry: {p}");
            return ExitCode::from(2);
        }
    };
    let t = conf.translate(&Env::system());
    match t.to_commented_toml(&file.display().to_string()) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("clamsentry: {e}");
            return ExitCode::from(2);
        }
    }
    if t.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for p in &t.problems {
            eprintln!("clamsentry: {p}");
        }
        ExitCode::from(2)
    }
}
