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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::CheckConfig) => match clamsentry::daemon::check_config(cli.config.as_deref()) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("clamsentry: {e}");
                ExitCode::from(2)
            }
        },
        None => match clamsentry::daemon::run(cli.config.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("clamsentry: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
