//! The `clamsentry` command: thin; everything lives in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Internal: the engine holder, started by the supervisor.
    #[command(name = "__zygote", hide = true)]
    Zygote {
        #[arg(long)]
        probe: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::CheckConfig) => match clamsentry::supervisor::check_config(cli.config.as_deref())
        {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("clamsentry: {e}");
                ExitCode::from(2)
            }
        },
        Some(Cmd::Zygote { probe }) => {
            let mode = if probe {
                clamsentry::zygote::Mode::Probe
            } else {
                clamsentry::zygote::Mode::Serve
            };
            ExitCode::from(clamsentry::zygote::main(mode).clamp(0, 255) as u8)
        }
        Some(Cmd::SandboxCheck) => {
            match clamsentry::supervisor::sandbox_check(cli.config.as_deref()) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("clamsentry: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => match clamsentry::supervisor::run(cli.config.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("clamsentry: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
