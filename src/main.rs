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
    /// Put this node in maintenance for the load balancer's agent (on), take it out (off), or ask (status).
    Maint {
        /// on, off or status.
        #[arg(value_parser = ["on", "off", "status"])]
        action: String,
        /// The daemon's Unix socket (default: listen.unix of the configuration).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Probes for an orchestrator: `ping` (clamd's PING; exit 0 on PONG) or `ready` (the HAProxy agent's answer; exit 0 when it says ready).
    Probe {
        /// ping or ready.
        #[arg(value_parser = ["ping", "ready"])]
        what: String,
        /// ping: the daemon's Unix socket (default: listen.unix of the configuration).
        #[arg(long, value_name = "PATH", conflicts_with = "tcp")]
        socket: Option<PathBuf>,
        /// ping: a TCP address instead ("127.0.0.1:3310").
        #[arg(long, value_name = "ADDR")]
        tcp: Option<String>,
        /// ready: the agent's address ("127.0.0.1:9907").
        #[arg(long, value_name = "ADDR")]
        agent: Option<String>,
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
    /// Internal: the VirusEvent launcher, started by the supervisor.
    #[command(name = "__virus-event", hide = true)]
    VirusEvent,
    /// Internal: the COMMANDS and OPTIONS sections of clamsentry(8), in
    /// roff, from these definitions (packaging/man/generate.sh).
    #[command(name = "__man", hide = true)]
    Man,
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
        Some(Cmd::Maint { action, socket }) => maint(&action, socket, source),
        Some(Cmd::Probe {
            what,
            socket,
            tcp,
            agent,
        }) => probe(&what, socket, tcp, agent, source),
        Some(Cmd::Clamd { args }) => ExitCode::from(clamsentry::clamd_cli::main(&args)),
        Some(Cmd::Zygote { probe, connect }) => {
            let mode = if probe {
                clamsentry::zygote::Mode::Probe { connect }
            } else {
                clamsentry::zygote::Mode::Serve
            };
            ExitCode::from(clamsentry::zygote::main(mode).clamp(0, 255) as u8)
        }
        Some(Cmd::VirusEvent) => ExitCode::from(clamsentry::launcher::main().clamp(0, 255) as u8),
        Some(Cmd::Observer) => ExitCode::from(clamsentry::observer::main().clamp(0, 255) as u8),
        Some(Cmd::Man) => man_sections(),
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

/// `maint on|off|status`: prints `maintenance on` or `maintenance off`
/// (exit 0), or why it could not ask (exit 1; 2 for a configuration that
/// does not load).
fn maint(action: &str, socket: Option<PathBuf>, source: ConfigSource) -> ExitCode {
    use clamsentry::node_cli::{run, Request};
    let Some(request) = Request::parse(action) else {
        return ExitCode::from(2);
    };
    let socket = match socket {
        Some(s) => s,
        None => match source.load() {
            Ok(loaded) => match loaded.config.unix_path() {
                Some(p) => p.to_path_buf(),
                None => {
                    eprintln!("clamsentry: the configuration has no Unix socket (listen.unix): give one with --socket");
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprintln!("clamsentry: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match run(request, &socket) {
        Ok(on) => {
            println!("maintenance {}", if on { "on" } else { "off" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clamsentry: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `probe ping|ready`: exit 0 (ping answered PONG; the agent says ready),
/// 1 with the reason on stderr, 2 for a usage or configuration problem.
fn probe(
    what: &str,
    socket: Option<PathBuf>,
    tcp: Option<String>,
    agent: Option<String>,
    source: ConfigSource,
) -> ExitCode {
    use clamsentry::node_cli::{probe_ping, probe_ready, Target};
    let result = match what {
        "ready" => {
            let Some(agent) = agent else {
                eprintln!("clamsentry: probe ready needs --agent ADDR (the agent's agent.listen)");
                return ExitCode::from(2);
            };
            probe_ready(&agent).map(|line| println!("{line}"))
        }
        _ => match (tcp, socket) {
            (Some(a), _) => probe_ping(Target::Tcp(&a)),
            (None, Some(p)) => probe_ping(Target::Unix(&p)),
            (None, None) => match source.load() {
                Ok(loaded) => match loaded.config.unix_path() {
                    Some(p) => probe_ping(Target::Unix(p)),
                    None => Err("the configuration has no Unix socket (listen.unix): give --socket or --tcp".into()),
                },
                Err(e) => {
                    eprintln!("clamsentry: {e}");
                    return ExitCode::from(2);
                }
            },
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clamsentry: {e}");
            ExitCode::FAILURE
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

/// The parts of clamsentry(8) that describe the command line, generated
/// from the clap definitions above so that the page cannot drift from them:
/// every visible command with its arguments, then the global options
/// (rendered by clap_mangen). The rest of the page is prose in
/// packaging/man/generate.sh.
fn man_sections() -> ExitCode {
    use clap::CommandFactory;
    use std::fmt::Write as _;
    let cmd = Cli::command();
    let mut out = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let positionals: Vec<String> = sub
            .get_positionals()
            .map(|a| {
                let name = a.get_id().as_str().to_uppercase();
                match a.get_possible_values().as_slice() {
                    [] => format!("\\fI{}\\fR", roff(&name)),
                    values => values
                        .iter()
                        .map(|v| roff(v.get_name()))
                        .collect::<Vec<_>>()
                        .join("|"),
                }
            })
            .collect();
        let mut head = format!("\\fB{}\\fR", roff(sub.get_name()));
        for p in positionals {
            head = format!("{head} {p}");
        }
        let _ = writeln!(out, ".TP\n{head}\n{}", roff(&about));
        let options: Vec<_> = sub
            .get_arguments()
            .filter(|a| !a.is_positional() && !a.is_global_set())
            .collect();
        if !options.is_empty() {
            out.push_str(".RS\n");
            for a in options {
                let long = a.get_long().unwrap_or_else(|| a.get_id().as_str());
                let value = a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| format!(" \\fI{}\\fR", roff(v)))
                    .unwrap_or_default();
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                let _ = writeln!(
                    out,
                    ".TP\n\\fB\\-\\-{}\\fR{}\n{}",
                    roff(long),
                    value,
                    roff(&help)
                );
            }
            out.push_str(".RE\n");
        }
    }
    let mut options = Vec::new();
    if let Err(e) = clap_mangen::Man::new(cmd).render_options_section(&mut options) {
        eprintln!("clamsentry: cannot render the options: {e}");
        return ExitCode::FAILURE;
    }
    print!("{out}{}", String::from_utf8_lossy(&options));
    ExitCode::SUCCESS
}

/// Roff text (not macros): backslashes and hyphens escaped, and no line
/// that starts with a control character.
fn roff(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with(['.', '\'']) {
        format!("\\&{s}")
    } else {
        s
    }
}
