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
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate the configuration and exit (0 when valid).
    CheckConfig,
    /// Start a worker as in production and show what its sandbox denies.
    SandboxCheck,
    /// Internal: the scanning worker, started by the supervisor.
    #[command(name = "__worker", hide = true)]
    Worker {
        #[arg(long)]
        probe: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::CheckConfig) => {
            match clamsentry::daemon::check_config(ConfigSource::from(cli.config.as_deref())) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("clamsentry: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Cmd::Worker { probe }) => {
            let mode = if probe {
                clamsentry::privsep::worker::Mode::Probe
            } else {
                clamsentry::privsep::worker::Mode::Serve
            };
            ExitCode::from(clamsentry::privsep::worker::main(mode).clamp(0, 255) as u8)
        }
        Some(Cmd::SandboxCheck) => {
            match clamsentry::daemon::sandbox_check(ConfigSource::from(cli.config.as_deref())) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("clamsentry: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let source = ConfigSource::from(cli.config.as_deref());
            let foreground = clamsentry::daemonize::Readiness::foreground();
            match clamsentry::daemon::run(source, &foreground) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("clamsentry: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
