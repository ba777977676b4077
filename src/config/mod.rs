//! Configuration: one TOML file, every key optional with a documented default
//! (see `etc/clamsentry.toml`, which lists them all).
//!
//! Parsing rejects unknown keys (`deny_unknown_fields`) so that a typo is an
//! error instead of a silently ignored setting; semantic checks run after
//! parsing and name the file, the line and the key.
#![forbid(unsafe_code)]

pub mod clamd_conf;
mod place;
mod rules;
mod size;
mod span;

pub use rules::Mode;
pub use size::ByteSize;
pub use span::Span;

use place::Place;
use rules::choice;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/clamsentry/clamsentry.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A file clamsentry cannot use: `path:line:column: key: message`,
    /// without the place when the key is not in the file (a default) and
    /// without the key when the text is not TOML.
    #[error("{}", show_invalid(.path, .place, .key, .message))]
    Invalid {
        path: String,
        /// Where the offending value (or key, or syntax) is.
        place: Option<Place>,
        /// The dotted key (`limits.max-threads`).
        key: Option<String>,
        /// The rule, and what to write instead.
        message: String,
    },
    /// A clamd.conf clamd refuses, or with options clamsentry refuses: one
    /// line per problem.
    #[error("{}", clamd_conf::show_problems(.0))]
    ClamdConf(Vec<clamd_conf::Problem>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub listen: ListenConfig,
    pub limits: LimitsConfig,
    pub scan: ScanConfig,
    pub policy: PolicyConfig,
    pub sandbox: SandboxConfig,
    pub log: LogConfig,
    pub service: ServiceConfig,
    pub virus_event: VirusEventConfig,
    pub metrics: MetricsConfig,
    pub agent: AgentConfig,
    pub selftest: SelftestConfig,
}

/// The metrics and status page listener (read by the observer, an
/// unprivileged sandboxed process).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MetricsConfig {
    /// A TCP address ("127.0.0.1:9906") or a Unix socket path; empty: off
    /// (unless systemd passes a socket named `metrics`).
    #[serde(deserialize_with = "metrics_listen", serialize_with = "optional")]
    pub listen: Option<ObserverListen>,
    /// Networks (CIDR) that may connect over TCP.
    #[serde(deserialize_with = "rules::nets", serialize_with = "rules::as_strings")]
    pub tcp_allow: Vec<ipnet::IpNet>,
    /// Also the `clamav_*` names of sergeymakinen/clamav_exporter.
    pub compat_names: bool,
    /// The N most frequent full signature names (0: categories only).
    #[serde(deserialize_with = "rules::count::<0, { crate::ipc::observe::MAX_TOP as u64 }, _, _>")]
    pub top_detections: u32,
    /// Open connections to the metrics listener; more are closed at once.
    #[serde(deserialize_with = "rules::count::<1, 4096, _, _>")]
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers.
    #[serde(deserialize_with = "rules::seconds::<1, 300, _, _>")]
    pub header_timeout: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            tcp_allow: loopback(),
            compat_names: false,
            top_detections: 0,
            max_connections: 64,
            header_timeout: 5,
        }
    }
}

/// HAProxy's `agent-check` responder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AgentConfig {
    /// A TCP address ("0.0.0.0:9907"); empty: off (unless systemd passes a
    /// socket named `agent`).
    #[serde(deserialize_with = "agent_listen", serialize_with = "optional")]
    pub listen: Option<SocketAddr>,
    /// Networks (CIDR) that may connect: the load balancers.
    #[serde(deserialize_with = "rules::nets", serialize_with = "rules::as_strings")]
    pub tcp_allow: Vec<ipnet::IpNet>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: None,
            tcp_allow: loopback(),
        }
    }
}

/// The built-in self-test: the EICAR string through a worker, as a
/// client's stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SelftestConfig {
    /// Seconds between self-tests; 0 = off.
    #[serde(deserialize_with = "rules::seconds::<0, 86_400, _, _>")]
    pub interval: u64,
    /// Seconds a self-test may take before it counts as failed.
    #[serde(deserialize_with = "rules::seconds::<1, 3600, _, _>")]
    pub timeout: u64,
}

impl Default for SelftestConfig {
    fn default() -> Self {
        SelftestConfig {
            interval: 60,
            timeout: 30,
        }
    }
}

/// Where a metrics or agent listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObserverListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ObserverListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObserverListen::Tcp(a) => write!(f, "{a}"),
            ObserverListen::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

choice! {
    /// `sandbox.landlock` and `sandbox.seccomp`: whether start-up fails
    /// when the layer cannot be applied.
    pub enum Requirement {
        Required = "required",
        BestEffort = "best-effort",
    }
}

choice! {
    /// `sandbox.isolation`: a worker per client identity or per connection.
    pub enum Isolation {
        Identity = "identity",
        Connection = "connection",
    }
}

choice! {
    /// `scan.bytecode-security` (clamd's BytecodeSecurity).
    pub enum BytecodeSecurity {
        TrustSigned = "TrustSigned",
        Paranoid = "Paranoid",
    }
}

choice! {
    /// `scan.bytecode-mode` (clamd's BytecodeMode).
    pub enum BytecodeMode {
        Auto = "Auto",
        ForceJit = "ForceJIT",
        ForceInterpreter = "ForceInterpreter",
        Test = "Test",
    }
}

choice! {
    /// `log.level`.
    pub enum LogLevel {
        Error = "error",
        Warn = "warn",
        Info = "info",
        Debug = "debug",
        Trace = "trace",
    }
}

choice! {
    /// `log.target`: where log lines go.
    pub enum LogTarget {
        Auto = "auto",
        Journald = "journald",
        Stderr = "stderr",
    }
}

choice! {
    /// What an activated socket named in `service.sockets` is.
    pub enum SocketKind {
        Unix = "unix",
        Tcp = "tcp",
        TcpProxy = "tcp-proxy",
    }
}

/// The user VirusEvent commands run as by default: a user of their own,
/// created by the Debian package (never root, never `sandbox.user`).
pub const DEFAULT_VIRUS_EVENT_USER: &str = "clamsentry-event";

/// A command run on each detection, clamd's VirusEvent (see
/// `crate::launcher` for how it runs, and `supervisor::virus_event` for
/// which detections may run one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct VirusEventConfig {
    /// Shell command (`/bin/sh -c`); `%v` is replaced by the virus name,
    /// the file name is in `$CLAM_VIRUSEVENT_FILENAME`. Empty: none.
    #[serde(deserialize_with = "event_command")]
    pub command: String,
    /// The user the launcher and the command run as (`""`: the default,
    /// [`DEFAULT_VIRUS_EVENT_USER`]). Never root, never `sandbox.user`.
    #[serde(deserialize_with = "event_user")]
    pub user: String,
    /// Seconds before the command's process group is killed.
    #[serde(deserialize_with = "rules::seconds::<1, 3600, _, _>")]
    pub timeout: u64,
    /// Commands running at once; one client gets all but one alone, half
    /// beside other clients.
    #[serde(deserialize_with = "rules::count::<1, 64, _, _>")]
    pub max_concurrent: u32,
    /// Commands started per minute, in all.
    #[serde(deserialize_with = "rules::count::<1, 100_000, _, _>")]
    pub max_per_minute: u32,
    /// Commands started per minute for one client (a Unix uid, or a TCP
    /// /24 or /64); 0: a quarter of `max_per_minute`, rounded up.
    pub max_per_minute_per_peer: u32,
}

impl Default for VirusEventConfig {
    fn default() -> Self {
        VirusEventConfig {
            command: String::new(),
            user: DEFAULT_VIRUS_EVENT_USER.into(),
            timeout: 30,
            max_concurrent: 4,
            max_per_minute: 60,
            max_per_minute_per_peer: 0,
        }
    }
}

impl VirusEventConfig {
    /// `user`, or the default user when it is empty.
    pub fn effective_user(&self) -> &str {
        if self.user.is_empty() {
            DEFAULT_VIRUS_EVENT_USER
        } else {
            &self.user
        }
    }

    /// Commands one client may start per minute.
    pub fn per_peer_per_minute(&self) -> u32 {
        match self.max_per_minute_per_peer {
            0 => self.max_per_minute.div_ceil(4).max(1),
            n => n,
        }
    }
}

/// The scanning worker's identity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SandboxConfig {
    /// The user the engine holder and the workers run as when the daemon
    /// starts as root.
    pub user: String,
    /// "required": refuse to start when Landlock cannot be applied;
    /// "best-effort": run without it and say so in the status.
    pub landlock: Requirement,
    /// "identity": a worker per client identity (a uid; TCP clients
    /// together); "connection": a worker per connection.
    pub isolation: Isolation,
    /// "required": refuse to start when the workers' system-call filter
    /// (no sockets, no connect, …) cannot be installed; "best-effort": run
    /// without it and say so in the status.
    pub seccomp: Requirement,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            user: "clamsentry".into(),
            landlock: Requirement::Required,
            isolation: Isolation::Identity,
            seccomp: Requirement::Required,
        }
    }
}

impl SandboxConfig {
    /// Whether start-up must fail when Landlock cannot be applied.
    pub fn landlock_required(&self) -> bool {
        self.landlock == Requirement::Required
    }

    /// Whether start-up must fail when the system-call filter cannot be
    /// installed.
    pub fn seccomp_required(&self) -> bool {
        self.seccomp == Requirement::Required
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DatabaseConfig {
    /// Signature directory (what freshclam fills).
    pub directory: PathBuf,
    /// Seconds between checks of the directory for changed signature files
    /// (clamd's SelfCheck); 0 turns the check off.
    #[serde(deserialize_with = "rules::seconds::<0, 86_400, _, _>")]
    pub self_check: u64,
    /// A database built longer ago than this makes the HAProxy agent answer
    /// `drain` and `ready` 0; 0 = no limit.
    pub max_age: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ListenConfig {
    /// Unix socket path; empty string disables it.
    pub unix: Option<PathBuf>,
    /// Octal permission bits of the Unix socket.
    pub unix_mode: Mode,
    /// Owner of the Unix socket file clamsentry creates (a user name or a
    /// number), who creates it (as clamd's User); empty: the user
    /// clamsentry runs as.
    #[serde(deserialize_with = "account")]
    pub unix_owner: String,
    /// Group of the Unix socket file (clamd's LocalSocketGroup); empty: the
    /// owner's primary group when `unix_owner` is set, else the group
    /// clamsentry runs as.
    #[serde(deserialize_with = "account")]
    pub unix_group: String,
    /// Length of the queue of connections not yet accepted, for the sockets
    /// clamsentry binds itself (clamd's MaxConnectionQueueLength).
    #[serde(deserialize_with = "rules::count::<1, 65_535, _, _>")]
    pub backlog: u32,
    /// TCP listen addresses, "addr:port".
    #[serde(
        deserialize_with = "rules::addrs",
        serialize_with = "rules::as_strings"
    )]
    pub tcp: Vec<SocketAddr>,
    /// Networks (CIDR) that may connect to the TCP listeners.
    #[serde(deserialize_with = "rules::nets", serialize_with = "rules::as_strings")]
    pub tcp_allow: Vec<ipnet::IpNet>,
    /// TCP listen addresses where every connection comes from a load
    /// balancer in `proxy_from` and starts with a PROXY protocol v2 header
    /// naming the real client (see `supervisor::proxied`).
    #[serde(
        deserialize_with = "rules::addrs",
        serialize_with = "rules::as_strings"
    )]
    pub tcp_proxy: Vec<SocketAddr>,
    /// Networks (CIDR) of the load balancers trusted to say who the client
    /// is; empty: no PROXY listener may be configured.
    #[serde(deserialize_with = "rules::nets", serialize_with = "rules::as_strings")]
    pub proxy_from: Vec<ipnet::IpNet>,
    /// Seconds a balancer's connection may take to send its whole PROXY
    /// header.
    #[serde(deserialize_with = "rules::seconds::<1, 300, _, _>")]
    pub proxy_timeout: u64,
    /// PROXY headers being read at once from one balancer address.
    #[serde(deserialize_with = "rules::count::<1, 65_535, _, _>")]
    pub proxy_pending: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LimitsConfig {
    #[serde(deserialize_with = "rules::size::<1, 0xFFFF_FFFF, _>")]
    pub stream_max_length: ByteSize,
    /// Replaced by `max-workers` and `standby-workers`; read only to say so.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "replaced_workers")]
    pub workers: Option<u32>,
    /// Client identities that may have a worker process at once.
    #[serde(deserialize_with = "rules::count::<1, 4096, _, _>")]
    pub max_workers: u32,
    /// Workers forked ahead of need, bound to the next client identity
    /// that needs one.
    pub standby_workers: u32,
    /// Seconds a draining worker (reload, stop, release) may take to finish
    /// its requests before it is ended.
    #[serde(deserialize_with = "rules::seconds::<1, 86_400, _, _>")]
    pub drain_timeout: u64,
    /// Memory that must stay available beyond what the current engine took
    /// to load before a reload loads a second one (see
    /// `supervisor::headroom`).
    pub reload_headroom: ByteSize,
    /// Whether a reload checks for memory headroom first.
    pub reload_memory_check: bool,
    /// Seconds before a reload deferred for lack of memory is tried again
    /// (doubling each time, up to 16 times this).
    #[serde(deserialize_with = "rules::seconds::<1, 86_400, _, _>")]
    pub reload_retry: u64,
    /// Scans the whole daemon runs at once, split between client identities.
    #[serde(deserialize_with = "rules::count::<1, 1024, _, _>")]
    pub max_threads: u32,
    #[serde(deserialize_with = "rules::at_least::<1, _, _>")]
    pub max_queue: u32,
    #[serde(deserialize_with = "rules::at_least::<1, _, _>")]
    pub max_connections: u32,
    /// Connections that only Unix-socket clients may use: TCP clients can
    /// hold at most `max_connections - unix_reserve` (the reserve is capped
    /// at half of `max_connections`).
    pub unix_reserve: u32,
    /// Connections only administrators (root, admin-users, admin-groups)
    /// may use (capped at half of `max_connections`).
    pub admin_reserve: u32,
    /// Connections of one client: a Unix uid, or a TCP address prefix.
    #[serde(alias = "max-connections-per-address")]
    #[serde(deserialize_with = "rules::at_least::<1, _, _>")]
    pub max_connections_per_client: u32,
    /// Connections of all TCP clients of one /16 (IPv4) or /48 (IPv6)
    /// together: many /24s of one owner share this.
    #[serde(deserialize_with = "rules::at_least::<1, _, _>")]
    pub max_connections_per_aggregate: u32,
    /// Leading bits of an IPv4 / IPv6 address that make one TCP client.
    #[serde(deserialize_with = "rules::count::<0, 32, _, _>")]
    pub ipv4_prefix: u8,
    #[serde(deserialize_with = "rules::count::<0, 128, _, _>")]
    pub ipv6_prefix: u8,
    pub stream_memory: ByteSize,
    /// Seconds from connect until the first command must be complete.
    #[serde(deserialize_with = "rules::seconds::<1, 86_400, _, _>")]
    pub command_read_timeout: u64,
    /// Seconds from the first byte of a later command (inside IDSESSION)
    /// until it must be complete.
    #[serde(deserialize_with = "rules::seconds::<1, 86_400, _, _>")]
    pub command_timeout: u64,
    /// Seconds of silence allowed inside a stream.
    #[serde(deserialize_with = "rules::seconds::<1, 86_400, _, _>")]
    pub read_timeout: u64,
    /// Least average rate of an INSTREAM, in bytes per second, measured over
    /// each `stream_rate_window`; 0 turns the check off.
    pub stream_min_rate: ByteSize,
    #[serde(deserialize_with = "rules::seconds::<1, 86_400, _, _>")]
    pub stream_rate_window: u64,
    /// Milliseconds one reply may take to be written (clamd's SendBufTimeout).
    #[serde(deserialize_with = "rules::millis::<1, 3_600_000, _, _>")]
    pub send_timeout: u64,
    /// Milliseconds a connection the daemon ends keeps reading (and
    /// dropping) what the client still sends, so that the client gets the
    /// replies rather than a reset; it ends sooner when the client closes.
    #[serde(deserialize_with = "rules::millis::<0, 60_000, _, _>")]
    pub close_linger: u64,
    #[serde(deserialize_with = "rules::seconds::<1, 86_400, _, _>")]
    pub idle_timeout: u64,
    #[serde(deserialize_with = "rules::size::<64, { 1 << 20 }, _>")]
    pub max_command_length: ByteSize,
    #[serde(deserialize_with = "rules::at_least::<1, _, _>")]
    pub max_session_commands: u32,
    /// Seconds an IDSESSION may last; it ends at the next command boundary
    /// after this (the reply in progress is sent first). 0: no bound.
    #[serde(deserialize_with = "rules::seconds::<0, 86_400, _, _>")]
    pub max_session_seconds: u64,
    /// Scanning threads per worker beyond its share of `max_threads`, which
    /// only run jobs of a client that has fewer running scans than its fair
    /// share: one client's slow inputs cannot hold every thread.
    #[serde(deserialize_with = "rules::count::<0, 64, _, _>")]
    pub reserve_threads: u32,
}

impl LimitsConfig {
    /// How TCP client addresses are grouped into clients.
    pub fn prefixes(&self) -> crate::policy::Prefixes {
        crate::policy::Prefixes {
            v4: self.ipv4_prefix,
            v6: self.ipv6_prefix,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ScanConfig {
    pub temporary_directory: PathBuf,
    pub max_scan_size: ByteSize,
    pub max_file_size: ByteSize,
    pub max_recursion: u32,
    pub max_files: u32,
    pub max_scan_time: u32,
    pub max_embedded_pe: ByteSize,
    pub max_html_normalize: ByteSize,
    pub max_html_no_tags: ByteSize,
    pub max_script_normalize: ByteSize,
    pub max_zip_type_rcg: ByteSize,
    pub max_partitions: u32,
    pub max_icons_pe: u32,
    pub max_rec_hwp3: u32,
    pub pcre_match_limit: u32,
    pub pcre_recmatch_limit: u32,
    pub pcre_max_file_size: ByteSize,
    pub bytecode: bool,
    pub bytecode_unsigned: bool,
    pub bytecode_timeout: u32,
    /// Which bytecode signatures may run: "TrustSigned" (signed ones, and
    /// unsigned ones when `bytecode_unsigned`) or "Paranoid" (none).
    pub bytecode_security: BytecodeSecurity,
    /// "Auto", "ForceJIT", "ForceInterpreter" or "Test".
    pub bytecode_mode: BytecodeMode,
    pub official_database_only: bool,
    pub detect_pua: bool,
    /// PUA categories not to load (clamd's ExcludePUA), with `detect_pua`.
    #[serde(deserialize_with = "pua_categories")]
    pub exclude_pua: Vec<String>,
    /// The only PUA categories to load (clamd's IncludePUA), with `detect_pua`.
    #[serde(deserialize_with = "pua_categories")]
    pub include_pua: Vec<String>,
    /// Entries of libclamav's cache of clean files (clamd's CacheSize).
    #[serde(deserialize_with = "rules::at_least::<1, _, _>")]
    pub cache_size: u32,
    pub disable_cache: bool,
    /// Skip Authenticode checks of PE files (clamd's DisableCertCheck).
    pub disable_cert_check: bool,
    pub heuristic_alerts: bool,
    pub heuristic_scan_precedence: bool,
    pub scan_archive: bool,
    pub scan_pe: bool,
    pub scan_elf: bool,
    pub scan_ole2: bool,
    pub scan_pdf: bool,
    pub scan_swf: bool,
    pub scan_html: bool,
    pub scan_xmldocs: bool,
    pub scan_hwp3: bool,
    pub scan_onenote: bool,
    pub scan_mail: bool,
    pub scan_partial_messages: bool,
    pub scan_image: bool,
    pub scan_image_fuzzy_hash: bool,
    pub phishing_signatures: bool,
    pub phishing_scan_urls: bool,
    pub alert_broken_executables: bool,
    pub alert_broken_media: bool,
    pub alert_encrypted: bool,
    pub alert_encrypted_archive: bool,
    pub alert_encrypted_doc: bool,
    pub alert_ole2_macros: bool,
    pub alert_exceeds_max: bool,
    pub alert_phishing_ssl_mismatch: bool,
    pub alert_phishing_cloak: bool,
    pub alert_partition_intersection: bool,
    pub structured_data_detection: bool,
    pub structured_min_credit_card_count: u32,
    pub structured_min_ssn_count: u32,
    /// Credit card numbers only, no debit or private-label cards.
    pub structured_cc_only: bool,
    /// Social security numbers written 123-45-6789.
    pub structured_ssn_format_normal: bool,
    /// Social security numbers written 123456789.
    pub structured_ssn_format_stripped: bool,
    pub allow_all_match_scan: bool,
    pub follow_directory_symlinks: bool,
    pub follow_file_symlinks: bool,
    pub cross_filesystems: bool,
    pub max_directory_recursion: u32,
    #[serde(deserialize_with = "regexes")]
    pub exclude_path: Vec<String>,
}

/// Command profiles of the two listener kinds, and where path commands may look.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PolicyConfig {
    /// Path commands only reach files that resolve inside these directories.
    pub scan_roots: Vec<PathBuf>,
    pub unix: UnixPolicy,
    pub tcp: TcpPolicy,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            scan_roots: vec![PathBuf::from("/")],
            unix: UnixPolicy::default(),
            tcp: TcpPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct UnixPolicy {
    /// Commands the Unix socket accepts.
    #[serde(deserialize_with = "command_words")]
    pub commands: Vec<String>,
    /// Users (besides root and the daemon's own user) allowed RELOAD/SHUTDOWN/QUIT.
    pub admin_users: Vec<String>,
    /// Groups whose members are allowed RELOAD/SHUTDOWN/QUIT.
    pub admin_groups: Vec<String>,
    /// Refuse clients that run as the service user (`sandbox.user`): only
    /// the daemon's own workers do, unless the user is shared (clamd.conf's
    /// `User clamav`, which clamav-milter and freshclam run as too).
    pub refuse_service_user: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TcpPolicy {
    /// Commands TCP listeners accept.
    #[serde(deserialize_with = "command_words")]
    pub commands: Vec<String>,
}

impl Default for UnixPolicy {
    fn default() -> Self {
        UnixPolicy {
            commands: crate::policy::commands::all_words(),
            admin_users: vec!["clamav".into()],
            admin_groups: Vec::new(),
            refuse_service_user: true,
        }
    }
}

impl Default for TcpPolicy {
    fn default() -> Self {
        TcpPolicy {
            commands: crate::policy::commands::TCP_DEFAULT
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogConfig {
    /// error, warn, info, debug or trace.
    pub level: LogLevel,
    /// Refusals, client errors and warnings logged per client identity and
    /// minute (supervisor and workers together); more are counted and
    /// summarised ("suppressed=N").
    #[serde(deserialize_with = "rules::at_least::<1, _, _>")]
    pub peer_lines_per_minute: u32,
    /// Scan results and debug lines logged per client identity and minute.
    #[serde(deserialize_with = "rules::at_least::<1, _, _>")]
    pub result_lines_per_minute: u32,
    /// Bytes of the lines of `peer_lines_per_minute` per client identity
    /// and minute (a line costs `log::limiter::cost`): long paths and
    /// names get fewer lines, not more bytes.
    #[serde(deserialize_with = "rules::size::<1024, { u64::MAX }, _>")]
    pub peer_bytes_per_minute: ByteSize,
    /// Bytes of the lines of `result_lines_per_minute` per client identity
    /// and minute.
    #[serde(deserialize_with = "rules::size::<1024, { u64::MAX }, _>")]
    pub result_bytes_per_minute: ByteSize,
    /// Bytes of refusal, error and warning lines about all TCP clients
    /// together per minute (beyond each one's own budget): many /24s cannot
    /// write many budgets' worth.
    #[serde(deserialize_with = "rules::size::<1024, { u64::MAX }, _>")]
    pub tcp_peer_bytes_per_minute: ByteSize,
    /// Bytes of scan-result and debug lines about all TCP clients together
    /// per minute.
    #[serde(deserialize_with = "rules::size::<1024, { u64::MAX }, _>")]
    pub tcp_result_bytes_per_minute: ByteSize,
    /// Log clean scan results at info (otherwise at debug).
    pub clean: bool,
    /// Where log lines go: "auto" (journald when stderr is connected to the
    /// journal, else stderr), "journald" or "stderr".
    pub target: LogTarget,
}

/// Running as a service: socket activation, on-demand mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServiceConfig {
    /// Seconds without any connection after which the daemon exits cleanly
    /// (socket activation starts it again); 0 = never.
    pub exit_when_idle: u64,
    /// Extra `FileDescriptorName=` values of activated sockets and the
    /// listener settings they get: "unix" or "tcp". The names "unix" and
    /// "tcp" are always known.
    #[serde(deserialize_with = "socket_names")]
    pub sockets: std::collections::BTreeMap<String, SocketKind>,
    /// File the daemon writes its process id to (clamd's PidFile); empty:
    /// none. Only a regular file of the daemon's own user there is replaced.
    pub pid_file: PathBuf,
}

impl ServiceConfig {
    /// The PID file, if one is configured.
    pub fn pid_file(&self) -> Option<&Path> {
        Some(self.pid_file.as_path()).filter(|p| !p.as_os_str().is_empty())
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            directory: PathBuf::from("/var/lib/clamav"),
            self_check: 60,
            max_age: Span(7 * 86_400),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            unix: Some(PathBuf::from("/run/clamsentry/clamd.sock")),
            unix_mode: Mode(0o660),
            unix_owner: String::new(),
            unix_group: String::new(),
            backlog: 200,
            tcp: Vec::new(),
            tcp_allow: loopback(),
            tcp_proxy: Vec::new(),
            proxy_from: Vec::new(),
            proxy_timeout: 5,
            proxy_pending: 64,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            stream_max_length: ByteSize(100 << 20),
            workers: None,
            max_workers: 16,
            standby_workers: 1,
            drain_timeout: 30,
            reload_headroom: ByteSize(64 << 20),
            reload_memory_check: true,
            reload_retry: 30,
            max_threads: 10,
            max_queue: 100,
            max_connections: 1024,
            unix_reserve: 64,
            admin_reserve: 16,
            max_connections_per_client: 64,
            max_connections_per_aggregate: 256,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            stream_memory: ByteSize(256 << 20),
            command_read_timeout: 30,
            command_timeout: 30,
            read_timeout: 120,
            stream_min_rate: ByteSize(1024),
            stream_rate_window: 30,
            send_timeout: 500,
            close_linger: 2000,
            idle_timeout: 120,
            max_command_length: ByteSize(4104),
            max_session_commands: 10_000,
            max_session_seconds: 600,
            reserve_threads: 2,
        }
    }
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            temporary_directory: std::env::temp_dir(),
            max_scan_size: ByteSize(400 << 20),
            max_file_size: ByteSize(100 << 20),
            max_recursion: 17,
            max_files: 10_000,
            max_scan_time: 120_000,
            max_embedded_pe: ByteSize(40 << 20),
            max_html_normalize: ByteSize(40 << 20),
            max_html_no_tags: ByteSize(8 << 20),
            max_script_normalize: ByteSize(20 << 20),
            max_zip_type_rcg: ByteSize(1 << 20),
            max_partitions: 50,
            max_icons_pe: 100,
            max_rec_hwp3: 16,
            pcre_match_limit: 100_000,
            pcre_recmatch_limit: 2_000,
            pcre_max_file_size: ByteSize(100 << 20),
            bytecode: true,
            bytecode_unsigned: false,
            bytecode_timeout: 10_000,
            bytecode_security: BytecodeSecurity::TrustSigned,
            bytecode_mode: BytecodeMode::Auto,
            official_database_only: false,
            detect_pua: false,
            exclude_pua: Vec::new(),
            include_pua: Vec::new(),
            cache_size: 65_536,
            disable_cache: false,
            disable_cert_check: false,
            heuristic_alerts: true,
            heuristic_scan_precedence: false,
            scan_archive: true,
            scan_pe: true,
            scan_elf: true,
            scan_ole2: true,
            scan_pdf: true,
            scan_swf: true,
            scan_html: true,
            scan_xmldocs: true,
            scan_hwp3: true,
            scan_onenote: true,
            scan_mail: true,
            scan_partial_messages: false,
            scan_image: true,
            scan_image_fuzzy_hash: true,
            phishing_signatures: true,
            phishing_scan_urls: true,
            alert_broken_executables: false,
            alert_broken_media: false,
            alert_encrypted: false,
            alert_encrypted_archive: false,
            alert_encrypted_doc: false,
            alert_ole2_macros: false,
            alert_exceeds_max: false,
            alert_phishing_ssl_mismatch: false,
            alert_phishing_cloak: false,
            alert_partition_intersection: false,
            structured_data_detection: false,
            structured_min_credit_card_count: 3,
            structured_min_ssn_count: 3,
            structured_cc_only: false,
            structured_ssn_format_normal: true,
            structured_ssn_format_stripped: false,
            allow_all_match_scan: true,
            follow_directory_symlinks: false,
            follow_file_symlinks: false,
            cross_filesystems: true,
            max_directory_recursion: 15,
            exclude_path: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LogLevel::Info,
            peer_lines_per_minute: 30,
            result_lines_per_minute: 6000,
            peer_bytes_per_minute: ByteSize(32 << 10),
            result_bytes_per_minute: ByteSize(2 << 20),
            tcp_peer_bytes_per_minute: ByteSize(256 << 10),
            tcp_result_bytes_per_minute: ByteSize(8 << 20),
            clean: false,
            target: LogTarget::Auto,
        }
    }
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file read, or `None` for built-in defaults.
    pub source: Option<PathBuf>,
    /// The configuration as TOML (the file read, the translation of a
    /// clamd.conf, or empty for defaults), handed to workers as is.
    pub text: String,
    /// How a clamd.conf was translated (empty for TOML): logged at start.
    pub notes: Vec<clamd_conf::Note>,
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// [`DEFAULT_PATH`] if present, else built-in defaults.
    Default,
    /// A clamsentry TOML file.
    Toml(PathBuf),
    /// A clamd.conf, translated (see [`clamd_conf`]).
    ClamdConf(PathBuf),
    /// Read already (by the clamd command line).
    Loaded(Box<Loaded>),
}

impl From<Option<&Path>> for ConfigSource {
    /// `--config PATH`, or nothing.
    fn from(path: Option<&Path>) -> ConfigSource {
        match path {
            Some(p) => ConfigSource::Toml(p.to_path_buf()),
            None => ConfigSource::Default,
        }
    }
}

impl ConfigSource {
    pub fn load(self) -> Result<Loaded, ConfigError> {
        match self {
            ConfigSource::Default => Config::load(None),
            ConfigSource::Toml(p) => Config::load(Some(&p)),
            ConfigSource::ClamdConf(p) => {
                clamd_conf::load(&p, clamd_conf::ClamdConf::new("")).map(|(loaded, _)| loaded)
            }
            ConfigSource::Loaded(l) => Ok(*l),
        }
    }
}

/// A configuration that cannot be used: what, and which key (if the
/// problem is one key's); [`Config::parse`] adds where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub key: Option<String>,
    pub message: String,
}

impl Fault {
    fn key(key: &str, message: impl Into<String>) -> Fault {
        Fault {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

fn show_invalid(path: &str, place: &Option<Place>, key: &Option<String>, message: &str) -> String {
    let mut out = path.to_string();
    if let Some(p) = place {
        out.push_str(&format!(":{p}"));
    }
    out.push_str(": ");
    if let Some(k) = key {
        out.push_str(&format!("{k}: "));
    }
    out + message
}

impl Config {
    /// Reads `path`, or [`DEFAULT_PATH`] if present, or built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => {
                return Ok(Loaded {
                    config: Config::default(),
                    source: None,
                    text: String::new(),
                    notes: Vec::new(),
                })
            }
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config = Config::parse(&text, &shown).map_err(|e| match e {
            ConfigError::Invalid {
                path,
                place,
                key: None,
                message,
            } if clamd_conf::looks_like_clamd_conf(&text) => ConfigError::Invalid {
                path,
                place,
                key: None,
                message: format!(
                    "{message}\n(this looks like a clamd.conf: read it with --clamd-conf {shown}, or run `clamsentry clamd -c {shown}`)"
                ),
            },
            e => e,
        })?;
        Ok(Loaded {
            config,
            source: Some(path),
            text,
            notes: Vec::new(),
        })
    }

    /// Parses and validates TOML text; `shown` names the file in errors,
    /// which say where (`shown:line:column`), which key, the rule broken
    /// and what to write instead.
    pub fn parse(text: &str, shown: &str) -> Result<Config, ConfigError> {
        let invalid = |place, key, message| ConfigError::Invalid {
            path: shown.to_string(),
            place,
            key,
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| s.start);
            invalid(
                at.map(|at| Place::of(text, at)),
                at.and_then(|at| place::key_at(text, at)),
                place::one_line(e.message()),
            )
        })?;
        config.validate().map_err(|f| {
            let place = f.key.as_deref().and_then(|k| place::value_of(text, k));
            invalid(place, f.key, f.message)
        })?;
        Ok(config)
    }

    /// Every rule, for a configuration built in code (a translated
    /// clamd.conf): it is written as TOML and read back, so the rules of
    /// single keys run as for a file.
    pub fn check(&self) -> Result<(), Fault> {
        let text = self
            .to_toml()
            .map_err(|message| Fault { key: None, message })?;
        Config::parse(&text, "").map(drop).map_err(|e| match e {
            ConfigError::Invalid { key, message, .. } => Fault { key, message },
            e => Fault {
                key: None,
                message: e.to_string(),
            },
        })
    }

    /// The configuration as TOML with every key written out; [`Config::parse`]
    /// reads it back to an equal value (checked by the `config` fuzz target).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }

    /// The rules that relate several keys (the rules of single keys are in
    /// the types and run while the file is read; see `rules`).
    fn validate(&self) -> Result<(), Fault> {
        let l = &self.limits;
        if l.standby_workers > l.max_workers {
            return Err(Fault::key(
                "limits.standby-workers",
                format!(
                    "must be at most limits.max-workers ({}), not {}",
                    l.max_workers, l.standby_workers
                ),
            ));
        }
        if l.stream_memory < l.stream_max_length {
            return Err(Fault::key(
                "limits.stream-memory",
                format!(
                    "must be at least limits.stream-max-length ({}), or no stream could reach its limit",
                    l.stream_max_length
                ),
            ));
        }
        let addrs = &self.listen.tcp;
        let allow = &self.listen.tcp_allow;
        if !addrs.is_empty() && allow.is_empty() {
            return Err(Fault::key(
                "listen.tcp-allow",
                "is empty, so no client could connect over TCP: list the networks that may (e.g. [\"127.0.0.0/8\"])",
            ));
        }
        if let Some(open) = addrs
            .iter()
            .find(|a| !crate::policy::peer::canonical(a.ip()).is_loopback())
        {
            if allow.iter().all(|n| n.addr().is_loopback()) {
                return Err(Fault::key(
                    "listen.tcp-allow",
                    format!(
                        "listen.tcp binds {open}, reachable from the network, but only loopback may connect: \
                         list the client networks in listen.tcp-allow (e.g. [\"192.0.2.0/24\"])"
                    ),
                ));
            }
        }
        self.validate_proxy()?;
        if !self.scan.exclude_pua.is_empty() && !self.scan.include_pua.is_empty() {
            return Err(Fault::key(
                "scan.include-pua",
                "cannot be used together with scan.exclude-pua (as clamd's IncludePUA and ExcludePUA)",
            ));
        }
        let v = &self.virus_event;
        if !v.command.is_empty() && v.effective_user() == self.sandbox.user {
            return Err(Fault::key(
                "virus-event.user",
                format!(
                    "{:?} is sandbox.user: the command would run as the scanning workers, outside their sandbox; name a user of its own (default {DEFAULT_VIRUS_EVENT_USER})",
                    self.sandbox.user
                ),
            ));
        }
        if v.max_per_minute_per_peer > v.max_per_minute {
            return Err(Fault::key(
                "virus-event.max-per-minute-per-peer",
                format!(
                    "must be at most virus-event.max-per-minute ({}); 0 is a quarter of it",
                    v.max_per_minute
                ),
            ));
        }
        if let Some(ObserverListen::Tcp(addr)) = self.metrics.listen {
            open_to_network("metrics.tcp-allow", addr, &self.metrics.tcp_allow)?;
        }
        if let Some(addr) = self.agent.listen {
            open_to_network("agent.tcp-allow", addr, &self.agent.tcp_allow)?;
        }
        Ok(())
    }

    /// The PROXY protocol keys: a PROXY listener needs balancers to trust,
    /// and its clients are checked against `tcp-allow` as direct ones are.
    fn validate_proxy(&self) -> Result<(), Fault> {
        let l = &self.listen;
        if let Some(both) = l.tcp_proxy.iter().find(|a| l.tcp.contains(a)) {
            return Err(Fault::key(
                "listen.tcp-proxy",
                format!("{both} is also in listen.tcp: a port either expects PROXY headers or not"),
            ));
        }
        let activated_proxy = self
            .service
            .sockets
            .values()
            .any(|k| *k == SocketKind::TcpProxy);
        if (!l.tcp_proxy.is_empty() || activated_proxy) && l.proxy_from.is_empty() {
            return Err(Fault::key(
                "listen.proxy-from",
                "is empty, so every connection to a PROXY listener (listen.tcp-proxy) would be refused: \
                 list the load balancers' networks (e.g. [\"192.0.2.10/32\"])",
            ));
        }
        if !l.tcp_proxy.is_empty() && l.tcp_allow.is_empty() {
            return Err(Fault::key(
                "listen.tcp-allow",
                "is empty, so no client behind the balancer could connect: list the client networks",
            ));
        }
        if let Some(open) = l.tcp_proxy.iter().find(|a| !a.ip().is_loopback()) {
            if l.tcp_allow.iter().all(|n| n.addr().is_loopback()) {
                return Err(Fault::key(
                    "listen.tcp-allow",
                    format!(
                        "listen.tcp-proxy binds {open} for a load balancer, but only loopback clients may connect: \
                         list the client networks behind the balancer in listen.tcp-allow"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The addresses of the PROXY listeners.
    pub fn tcp_proxy_addrs(&self) -> &[SocketAddr] {
        &self.listen.tcp_proxy
    }

    /// The networks of the trusted load balancers.
    pub fn proxy_from(&self) -> &[ipnet::IpNet] {
        &self.listen.proxy_from
    }

    /// `metrics.listen`: `None` when off.
    pub fn metrics_listen(&self) -> Option<&ObserverListen> {
        self.metrics.listen.as_ref()
    }

    /// `agent.listen`: `None` when off.
    pub fn agent_listen(&self) -> Option<SocketAddr> {
        self.agent.listen
    }

    pub fn metrics_allow(&self) -> Vec<ipnet::IpNet> {
        self.metrics.tcp_allow.clone()
    }

    pub fn agent_allow(&self) -> Vec<ipnet::IpNet> {
        self.agent.tcp_allow.clone()
    }

    /// The Unix socket path, if one is configured.
    pub fn unix_path(&self) -> Option<&Path> {
        self.listen
            .unix
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }

    /// `listen.unix-mode`'s permission bits.
    pub fn unix_mode(&self) -> u32 {
        self.listen.unix_mode.0
    }

    pub fn tcp_allow(&self) -> &[ipnet::IpNet] {
        &self.listen.tcp_allow
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.listen.tcp
    }
}

/// The default allow-lists: loopback.
fn loopback() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|n| n.parse().expect("a network"))
        .collect()
}

/// A listener reachable from the network needs client networks in its
/// allow-list (as `listen.tcp`).
fn open_to_network(key: &str, addr: SocketAddr, allow: &[ipnet::IpNet]) -> Result<(), Fault> {
    if allow.is_empty() {
        return Err(Fault::key(key, "is empty, so no client could connect: list the networks that may (e.g. [\"127.0.0.0/8\"])"));
    }
    if !addr.ip().is_loopback() && allow.iter().all(|n| n.addr().is_loopback()) {
        return Err(Fault::key(
            key,
            format!("the listener binds {addr}, reachable from the network, but only loopback may connect: list the client networks (e.g. [\"192.0.2.0/24\"])"),
        ));
    }
    Ok(())
}

// ---- rules of single keys that are not a range or a choice ----

use serde::de::{Deserializer, Error as _};

/// A string that passes `check`.
fn checked<'de, D: Deserializer<'de>>(
    d: D,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(D::Error::custom)?;
    Ok(s)
}

/// A list of strings, each passing `check`.
fn checked_list<'de, D: Deserializer<'de>>(
    d: D,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for s in &list {
        check(s).map_err(D::Error::custom)?;
    }
    Ok(list)
}

/// `listen.unix-owner`, `listen.unix-group`.
fn account<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |name| {
        if name.trim() != name || name.contains(['\0', ':', '/']) {
            return Err(format!("{name:?} is not a user or group name or number"));
        }
        Ok(())
    })
}

/// `virus-event.command`.
fn event_command<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |c| {
        if c.contains('\0') || c.len() > 4096 {
            return Err("must be at most 4096 bytes, without NUL".into());
        }
        Ok(())
    })
}

/// `virus-event.user`.
fn event_user<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |u| {
        if matches!(u, "root" | "0") {
            return Err("the command never runs as root: name an unprivileged user".into());
        }
        Ok(())
    })
}

/// `scan.exclude-pua`, `scan.include-pua`.
fn pua_categories<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    checked_list(d, |c| {
        if c.is_empty() || c.contains(['.', '\0']) {
            return Err(format!(
                "{c:?} is not a PUA category name (like \"NetTool\")"
            ));
        }
        Ok(())
    })
}

/// `scan.exclude-path`.
fn regexes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    checked_list(d, |p| {
        regex::bytes::Regex::new(p)
            .map(drop)
            .map_err(|e| format!("{p:?} is not a valid regular expression: {e}"))
    })
}

/// `policy.unix.commands`, `policy.tcp.commands`.
fn command_words<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    checked_list(d, |w| match crate::policy::commands::parse_word(w) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{w:?} is not a clamd command (use the words VERSIONCOMMANDS lists, in capitals)"
        )),
    })
}

/// `service.sockets`: the observer's own names cannot be mapped.
fn socket_names<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, SocketKind>, D::Error> {
    let map = std::collections::BTreeMap::<String, SocketKind>::deserialize(d)?;
    if let Some(name) = map
        .keys()
        .find(|n| matches!(n.as_str(), "metrics" | "agent"))
    {
        return Err(D::Error::custom(format!(
            "socket {name:?} is the {name} listener's own name and cannot be mapped"
        )));
    }
    Ok(map)
}

/// `limits.workers`, which only says what replaced it.
fn replaced_workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let _ = serde::de::IgnoredAny::deserialize(d)?;
    Err(D::Error::custom(
        "was replaced: every client identity now has a worker of its own; \
         set limits.max-workers (identities with a worker at once) and \
         limits.standby-workers (workers forked ahead of need) instead",
    ))
}

/// `metrics.listen`: a TCP address or an absolute Unix socket path; "": off.
fn metrics_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ObserverListen>, D::Error> {
    let s = String::deserialize(d)?;
    let text = s.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.starts_with('/') {
        if text.contains('\0') || text.len() > 107 {
            return Err(D::Error::custom(format!(
                "{text:?} is not a usable Unix socket path (at most 107 bytes)"
            )));
        }
        return Ok(Some(ObserverListen::Unix(PathBuf::from(text))));
    }
    text.parse::<SocketAddr>()
        .map(|a| Some(ObserverListen::Tcp(a)))
        .map_err(|_| {
            D::Error::custom(format!("{text:?} is not an address like \"127.0.0.1:9906\" nor an absolute Unix socket path"))
        })
}

/// `agent.listen`: a TCP address; "": off.
fn agent_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    let text = s.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<SocketAddr>().map(Some).map_err(|_| {
        D::Error::custom(format!(
            "{text:?} is not an address like \"0.0.0.0:9907\" (HAProxy's agent-check uses TCP)"
        ))
    })
}

/// Writes an optional listener as its text, `""` when off.
fn optional<S: serde::Serializer, T: std::fmt::Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_str(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.limits.stream_max_length, ByteSize(100 << 20));
        assert_eq!(c.unix_mode(), 0o660);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = Config::parse("[limits]\nmax-thread = 4\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.toml:2:1: limits.max-thread: unknown field `max-thread`"),
            "{err}"
        );
    }

    #[test]
    fn semantic_errors_name_the_line() {
        let err = Config::parse(
            "[log]\nlevel = \"info\"\n[limits]\n\nmax-threads = 0\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "t.toml:5:15: limits.max-threads: must be between 1 and 1024, not 0"
        );
    }

    #[test]
    fn bad_values_name_line_column_and_key() {
        let text = "# comment\n[sandbox]\nisolation = \"process\"\n";
        let err = Config::parse(text, "f.toml").unwrap_err().to_string();
        assert_eq!(
            err,
            "f.toml:3:13: sandbox.isolation: \"process\" is not a choice: use \"identity\" or \"connection\""
        );
        let err = Config::parse("[limits]\nread-timeout = -5\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f.toml:2:16: limits.read-timeout: must be between 1 and 86400 seconds, not -5"
        );
        let err = Config::parse("[limits]\nmax-command-length = \"2M\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f.toml:2:22: limits.max-command-length: must be between 64 and 1M bytes, not 2M"
        );
        let err = Config::parse("[listen]\ntcp-allow = [\"::1\", \"x/8\"]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f.toml:2:13: listen.tcp-allow: \"x/8\" is not a network like \"127.0.0.0/8\" or an address"
        );
        let err = Config::parse("[limits]\nmax-threads = \"4\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.toml:2:15: limits.max-threads: invalid type: string \"4\", expected a whole number (must be between 1 and 1024)"),
            "{err}"
        );
        // Not TOML: the place, no key.
        let err = Config::parse("[limits\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.toml:1:8: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn cross_key_errors_name_the_key_and_where_it_is() {
        let text = "[limits]\nmax-workers = 4\nstandby-workers = 5\n";
        let err = Config::parse(text, "f.toml").unwrap_err().to_string();
        assert_eq!(
            err,
            "f.toml:3:19: limits.standby-workers: must be at most limits.max-workers (4), not 5"
        );
        // A key the file does not set (its default is what conflicts): the
        // key, no place.
        let err = Config::parse("[listen]\ntcp = [\"0.0.0.0:3310\"]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.toml: listen.tcp-allow: listen.tcp binds 0.0.0.0:3310"),
            "{err}"
        );
        let err = Config::parse(
            "[virus-event]\ncommand = \"true\"\nuser = \"scan\"\n[sandbox]\nuser = \"scan\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("f.toml:3:8: virus-event.user: \"scan\" is sandbox.user"),
            "{err}"
        );
    }

    #[test]
    fn replaced_and_every_single_key_rule_hold_for_code_built_configs() {
        let err = Config::parse("[limits]\nworkers = 4\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.toml:2:11: limits.workers: was replaced"),
            "{err}"
        );
        let mut c = Config::default();
        c.limits.max_threads = 0;
        assert_eq!(
            c.check(),
            Err(Fault {
                key: Some("limits.max-threads".into()),
                message: "must be between 1 and 1024, not 0".into()
            })
        );
        c.limits.max_threads = 4;
        c.check().unwrap();
    }

    #[test]
    fn sizes_accept_suffixes() {
        let c = Config::parse("[limits]\nstream-max-length = \"10M\"\n", "t").unwrap();
        assert_eq!(c.limits.stream_max_length.0, 10 << 20);
        let c = Config::parse("[limits]\nstream-max-length = 1000\n", "t").unwrap();
        assert_eq!(c.limits.stream_max_length.0, 1000);
    }

    #[test]
    fn identity_budgets_have_defaults_and_bounds() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.limits.max_connections_per_aggregate, 256);
        assert_eq!(c.log.peer_bytes_per_minute, ByteSize(32 << 10));
        assert_eq!(c.log.result_bytes_per_minute, ByteSize(2 << 20));
        assert_eq!(c.log.tcp_peer_bytes_per_minute, ByteSize(256 << 10));
        assert_eq!(c.log.tcp_result_bytes_per_minute, ByteSize(8 << 20));
        let c = Config::parse("[log]\npeer-bytes-per-minute = \"64K\"\n", "t").unwrap();
        assert_eq!(c.log.peer_bytes_per_minute.0, 64 << 10);
        for (text, key) in [
            (
                "[limits]\nmax-connections-per-aggregate = 0\n",
                "limits.max-connections-per-aggregate",
            ),
            (
                "[log]\npeer-bytes-per-minute = 100\n",
                "log.peer-bytes-per-minute",
            ),
            (
                "[log]\ntcp-result-bytes-per-minute = 0\n",
                "log.tcp-result-bytes-per-minute",
            ),
        ] {
            let err = Config::parse(text, "t").unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn bad_tcp_address() {
        let err = Config::parse("[listen]\ntcp = [\"localhost\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.tcp"), "{err}");
    }

    #[test]
    fn public_tcp_needs_an_allow_list() {
        let err = Config::parse("[listen]\ntcp = [\"0.0.0.0:3310\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.tcp-allow"), "{err}");
        Config::parse(
            "[listen]\ntcp = [\"0.0.0.0:3310\"]\ntcp-allow = [\"192.0.2.0/24\"]\n",
            "t",
        )
        .unwrap();
        let err = Config::parse(
            "[listen]\ntcp = [\"127.0.0.1:3310\"]\ntcp-allow = []\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn proxy_listeners_need_balancers_and_client_networks() {
        let err = Config::parse("[listen]\ntcp-proxy = [\"127.0.0.1:3311\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.proxy-from: is empty"), "{err}");
        let ok = "[listen]\ntcp-proxy = [\"0.0.0.0:3311\"]\nproxy-from = [\"192.0.2.10\"]\n\
                  tcp-allow = [\"198.51.100.0/24\"]\n";
        let c = Config::parse(ok, "t").unwrap();
        assert_eq!(c.tcp_proxy_addrs().len(), 1);
        assert_eq!(c.proxy_from()[0].to_string(), "192.0.2.10/32");
        assert_eq!((c.listen.proxy_timeout, c.listen.proxy_pending), (5, 64));
        let err = Config::parse(
            "[listen]\ntcp-proxy = [\"0.0.0.0:3311\"]\nproxy-from = [\"192.0.2.10\"]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("listen.tcp-allow") && err.contains("behind the balancer"),
            "{err}"
        );
        let err = Config::parse(
            "[listen]\ntcp = [\"127.0.0.1:3311\"]\ntcp-proxy = [\"127.0.0.1:3311\"]\nproxy-from = [\"127.0.0.2\"]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("listen.tcp-proxy: 127.0.0.1:3311 is also in listen.tcp"),
            "{err}"
        );
        let err = Config::parse("[listen]\nproxy-from = [\"balancer\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen.proxy-from: \"balancer\" is not a network"),
            "{err}"
        );
        let err = Config::parse("[listen]\nproxy-timeout = 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.proxy-timeout"), "{err}");
        let err = Config::parse("[service]\nsockets = { lb = \"tcp-proxy\" }\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.proxy-from"), "{err}");
    }

    #[test]
    fn reload_memory_keys() {
        let d = Config::default().limits;
        assert_eq!(
            (d.reload_memory_check, d.reload_headroom, d.reload_retry),
            (true, ByteSize(64 << 20), 30)
        );
        let err = Config::parse("[limits]\nreload-retry = 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.reload-retry"), "{err}");
    }

    #[test]
    fn policy_words_are_checked() {
        let err = Config::parse("[policy.tcp]\ncommands = [\"PING\", \"scan\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "t:2:12: policy.tcp.commands: \"scan\" is not a clamd command (use the words VERSIONCOMMANDS lists, in capitals)");
    }

    #[test]
    fn service_keys_are_checked() {
        let c = Config::parse(
            "[service]\nexit-when-idle = 30\nsockets = { scanners = \"tcp\" }\n[database]\nself-check = 0\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.service.exit_when_idle, 30);
        assert_eq!(c.service.sockets["scanners"], SocketKind::Tcp);
        assert_eq!(c.database.self_check, 0);
        assert_eq!(Config::default().database.self_check, 60);
        assert_eq!(Config::default().log.target, LogTarget::Auto);
        let err = Config::parse("[service]\nsockets = { x = \"udp\" }\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("service.sockets") && err.contains("\"udp\""),
            "{err}"
        );
        let err = Config::parse("[log]\ntarget = \"syslog\"\n", "t")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t:2:10: log.target: \"syslog\" is not a choice: use \"auto\", \"journald\" or \"stderr\""
        );
    }

    #[test]
    fn observer_keys_are_checked() {
        let c = Config::default();
        assert_eq!(c.metrics_listen(), None);
        assert_eq!(c.selftest.interval, 60);
        assert_eq!(c.database.max_age, Span(7 * 86_400));
        let c = Config::parse(
            "[metrics]\nlisten = \"127.0.0.1:9906\"\ntop-detections = 10\n[agent]\nlisten = \"0.0.0.0:9907\"\ntcp-allow = [\"192.0.2.0/24\"]\n[database]\nmax-age = \"36h\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.metrics_listen(),
            Some(&ObserverListen::Tcp("127.0.0.1:9906".parse().unwrap()))
        );
        assert_eq!(c.agent_listen(), Some("0.0.0.0:9907".parse().unwrap()));
        assert_eq!(c.database.max_age, Span(36 * 3600));
        let c = Config::parse("[metrics]\nlisten = \"/run/cs/metrics.sock\"\n", "t").unwrap();
        assert_eq!(
            c.metrics_listen(),
            Some(&ObserverListen::Unix("/run/cs/metrics.sock".into()))
        );
        for (text, key) in [
            (
                "[metrics]\nlisten = \"0.0.0.0:9906\"\n",
                "metrics.tcp-allow",
            ),
            ("[metrics]\nlisten = \"metrics.sock\"\n", "metrics.listen"),
            (
                "[metrics]\ntop-detections = 101\n",
                "metrics.top-detections",
            ),
            ("[agent]\nlisten = \"/run/agent.sock\"\n", "agent.listen"),
            ("[agent]\nlisten = \"0.0.0.0:9907\"\n", "agent.tcp-allow"),
            ("[selftest]\ntimeout = 0\n", "selftest.timeout"),
            ("[database]\nmax-age = \"7w\"\n", "max-age"),
            (
                "[service]\nsockets = { metrics = \"tcp\" }\n",
                "service.sockets",
            ),
        ] {
            let err = Config::parse(text, "t").unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../etc/clamsentry.toml");
        Config::parse(text, "etc/clamsentry.toml").unwrap();
    }

    #[test]
    fn written_config_reads_back_equal() {
        let text = include_str!("../../etc/clamsentry.toml");
        let c = Config::parse(text, "etc/clamsentry.toml").unwrap();
        let again = Config::parse(&c.to_toml().unwrap(), "written").unwrap();
        assert_eq!(again, c);
        let d = Config::default();
        assert_eq!(Config::parse(&d.to_toml().unwrap(), "written").unwrap(), d);
    }
}
