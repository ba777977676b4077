//! Configuration: one TOML file, every key optional with a documented default
//! (see `etc/clamsentry.toml`, which lists them all).
//!
//! Parsing rejects unknown keys (`deny_unknown_fields`) so that a typo is an
//! error instead of a silently ignored setting; semantic checks run after
//! parsing and name the file, the line and the key.
#![forbid(unsafe_code)]

pub mod clamd_conf;
mod size;
mod span;

pub use size::ByteSize;
pub use span::Span;

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
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: String,
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
    pub listen: String,
    /// Networks (CIDR) that may connect over TCP.
    pub tcp_allow: Vec<String>,
    /// Also the `clamav_*` names of sergeymakinen/clamav_exporter.
    pub compat_names: bool,
    /// The N most frequent full signature names (0: categories only).
    pub top_detections: u32,
    /// Open connections to the metrics listener; more are closed at once.
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers.
    pub header_timeout: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: String::new(),
            tcp_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
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
    pub listen: String,
    /// Networks (CIDR) that may connect: the load balancers.
    pub tcp_allow: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: String::new(),
            tcp_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

/// The built-in self-test: the EICAR string through a worker, as a
/// client's stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SelftestConfig {
    /// Seconds between self-tests; 0 = off.
    pub interval: u64,
    /// Seconds a self-test may take before it counts as failed.
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
    pub command: String,
    /// The user the launcher and the command run as (`""`: the default,
    /// [`DEFAULT_VIRUS_EVENT_USER`]). Never root, never `sandbox.user`.
    pub user: String,
    /// Seconds before the command's process group is killed.
    pub timeout: u64,
    /// Commands running at once; one client gets all but one alone, half
    /// beside other clients.
    pub max_concurrent: u32,
    /// Commands started per minute, in all.
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
    pub landlock: String,
    /// "identity": a worker per client identity (a uid; TCP clients
    /// together); "connection": a worker per connection.
    pub isolation: String,
    /// "required": refuse to start when the workers' system-call filter
    /// (no sockets, no connect, …) cannot be installed; "best-effort": run
    /// without it and say so in the status.
    pub seccomp: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            user: "clamsentry".into(),
            landlock: "required".into(),
            isolation: "identity".into(),
            seccomp: "required".into(),
        }
    }
}

impl SandboxConfig {
    /// Whether start-up must fail when Landlock cannot be applied.
    pub fn landlock_required(&self) -> bool {
        self.landlock == "required"
    }

    /// Whether start-up must fail when the system-call filter cannot be
    /// installed.
    pub fn seccomp_required(&self) -> bool {
        self.seccomp == "required"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DatabaseConfig {
    /// Signature directory (what freshclam fills).
    pub directory: PathBuf,
    /// Seconds between checks of the directory for changed signature files
    /// (clamd's SelfCheck); 0 turns the check off.
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
    pub unix_mode: String,
    /// Owner of the Unix socket file clamsentry creates (a user name or a
    /// number), who creates it (as clamd's User); empty: the user
    /// clamsentry runs as.
    pub unix_owner: String,
    /// Group of the Unix socket file (clamd's LocalSocketGroup); empty: the
    /// owner's primary group when `unix_owner` is set, else the group
    /// clamsentry runs as.
    pub unix_group: String,
    /// Length of the queue of connections not yet accepted, for the sockets
    /// clamsentry binds itself (clamd's MaxConnectionQueueLength).
    pub backlog: u32,
    /// TCP listen addresses, "addr:port".
    pub tcp: Vec<String>,
    /// Networks (CIDR) that may connect to the TCP listeners.
    pub tcp_allow: Vec<String>,
    /// TCP listen addresses where every connection comes from a load
    /// balancer in `proxy_from` and starts with a PROXY protocol v2 header
    /// naming the real client (see `supervisor::proxied`).
    pub tcp_proxy: Vec<String>,
    /// Networks (CIDR) of the load balancers trusted to say who the client
    /// is; empty: no PROXY listener may be configured.
    pub proxy_from: Vec<String>,
    /// Seconds a balancer's connection may take to send its whole PROXY
    /// header.
    pub proxy_timeout: u64,
    /// PROXY headers being read at once from one balancer address.
    pub proxy_pending: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LimitsConfig {
    pub stream_max_length: ByteSize,
    /// Replaced by `max-workers` and `standby-workers`; read only to say so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// Client identities that may have a worker process at once.
    pub max_workers: u32,
    /// Workers forked ahead of need, bound to the next client identity
    /// that needs one.
    pub standby_workers: u32,
    /// Seconds a draining worker (reload, stop, release) may take to finish
    /// its requests before it is ended.
    pub drain_timeout: u64,
    /// Memory that must stay available beyond what the current engine took
    /// to load before a reload loads a second one (see
    /// `supervisor::headroom`).
    pub reload_headroom: ByteSize,
    /// Whether a reload checks for memory headroom first.
    pub reload_memory_check: bool,
    /// Seconds before a reload deferred for lack of memory is tried again
    /// (doubling each time, up to 16 times this).
    pub reload_retry: u64,
    /// Scans the whole daemon runs at once, split between client identities.
    pub max_threads: u32,
    pub max_queue: u32,
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
    pub max_connections_per_client: u32,
    /// Connections of all TCP clients of one /16 (IPv4) or /48 (IPv6)
    /// together: many /24s of one owner share this.
    pub max_connections_per_aggregate: u32,
    /// Leading bits of an IPv4 / IPv6 address that make one TCP client.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub stream_memory: ByteSize,
    /// Seconds from connect until the first command must be complete.
    pub command_read_timeout: u64,
    /// Seconds from the first byte of a later command (inside IDSESSION)
    /// until it must be complete.
    pub command_timeout: u64,
    /// Seconds of silence allowed inside a stream.
    pub read_timeout: u64,
    /// Least average rate of an INSTREAM, in bytes per second, measured over
    /// each `stream_rate_window`; 0 turns the check off.
    pub stream_min_rate: ByteSize,
    pub stream_rate_window: u64,
    /// Milliseconds one reply may take to be written (clamd's SendBufTimeout).
    pub send_timeout: u64,
    /// Milliseconds a connection the daemon ends keeps reading (and
    /// dropping) what the client still sends, so that the client gets the
    /// replies rather than a reset; it ends sooner when the client closes.
    pub close_linger: u64,
    pub idle_timeout: u64,
    pub max_command_length: ByteSize,
    pub max_session_commands: u32,
    /// Seconds an IDSESSION may last; it ends at the next command boundary
    /// after this (the reply in progress is sent first). 0: no bound.
    pub max_session_seconds: u64,
    /// Scanning threads per worker beyond its share of `max_threads`, which
    /// only run jobs of a client that has fewer running scans than its fair
    /// share: one client's slow inputs cannot hold every thread.
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
    pub bytecode_security: String,
    /// "Auto", "ForceJIT", "ForceInterpreter" or "Test".
    pub bytecode_mode: String,
    pub official_database_only: bool,
    pub detect_pua: bool,
    /// PUA categories not to load (clamd's ExcludePUA), with `detect_pua`.
    pub exclude_pua: Vec<String>,
    /// The only PUA categories to load (clamd's IncludePUA), with `detect_pua`.
    pub include_pua: Vec<String>,
    /// Entries of libclamav's cache of clean files (clamd's CacheSize).
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
    pub level: String,
    /// Refusals, client errors and warnings logged per client identity and
    /// minute (supervisor and workers together); more are counted and
    /// summarised ("suppressed=N").
    pub peer_lines_per_minute: u32,
    /// Scan results and debug lines logged per client identity and minute.
    pub result_lines_per_minute: u32,
    /// Bytes of the lines of `peer_lines_per_minute` per client identity
    /// and minute (a line costs `log::limiter::cost`): long paths and
    /// names get fewer lines, not more bytes.
    pub peer_bytes_per_minute: ByteSize,
    /// Bytes of the lines of `result_lines_per_minute` per client identity
    /// and minute.
    pub result_bytes_per_minute: ByteSize,
    /// Bytes of refusal, error and warning lines about all TCP clients
    /// together per minute (beyond each one's own budget): many /24s cannot
    /// write many budgets' worth.
    pub tcp_peer_bytes_per_minute: ByteSize,
    /// Bytes of scan-result and debug lines about all TCP clients together
    /// per minute.
    pub tcp_result_bytes_per_minute: ByteSize,
    /// Log clean scan results at info (otherwise at debug).
    pub clean: bool,
    /// Where log lines go: "auto" (journald when stderr is connected to the
    /// journal, else stderr), "journald" or "stderr".
    pub target: String,
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
    pub sockets: std::collections::BTreeMap<String, String>,
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
            unix_mode: "0660".into(),
            unix_owner: String::new(),
            unix_group: String::new(),
            backlog: 200,
            tcp: Vec::new(),
            tcp_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
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
            bytecode_security: "TrustSigned".into(),
            bytecode_mode: "Auto".into(),
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
            level: "info".into(),
            peer_lines_per_minute: 30,
            result_lines_per_minute: 6000,
            peer_bytes_per_minute: ByteSize(32 << 10),
            result_bytes_per_minute: ByteSize(2 << 20),
            tcp_peer_bytes_per_minute: ByteSize(256 << 10),
            tcp_result_bytes_per_minute: ByteSize(8 << 20),
            clean: false,
            target: "auto".into(),
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
            ConfigError::Parse { path, message } if clamd_conf::looks_like_clamd_conf(&text) => {
                ConfigError::Parse {
                    path,
                    message: format!(
                        "{message}\n(this looks like a clamd.conf: read it with --clamd-conf {shown}, or run `clamsentry clamd -c {shown}`)"
                    ),
                }
            }
            e => e,
        })?;
        Ok(Loaded {
            config,
            source: Some(path),
            text,
            notes: Vec::new(),
        })
    }

    /// Parses and validates TOML text; `shown` names the file in errors.
    pub fn parse(text: &str, shown: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: shown.to_string(),
                line: line_of(text, key),
                key: key.to_string(),
                message,
            })?;
        Ok(config)
    }

    /// The configuration as TOML with every key written out; [`Config::parse`]
    /// reads it back to an equal value (checked by the `config` fuzz target).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let l = &self.limits;
        if l.max_threads == 0 || l.max_threads > 1024 {
            return Err(("limits.max-threads", "must be between 1 and 1024".into()));
        }
        if l.max_queue == 0 {
            return Err(("limits.max-queue", "must be at least 1".into()));
        }
        if l.max_connections == 0 {
            return Err(("limits.max-connections", "must be at least 1".into()));
        }
        if l.stream_max_length.0 == 0 || l.stream_max_length.0 > u64::from(u32::MAX) {
            return Err((
                "limits.stream-max-length",
                "must be between 1 byte and 4G - 1 (the protocol's chunk counter is 32 bits)"
                    .into(),
            ));
        }
        if l.max_command_length.0 < 64 || l.max_command_length.0 > 1 << 20 {
            return Err((
                "limits.max-command-length",
                "must be between 64 bytes and 1M (clamd uses 4104)".into(),
            ));
        }
        if l.send_timeout == 0 || l.send_timeout > 3_600_000 {
            return Err((
                "limits.send-timeout",
                "must be between 1 and 3600000 milliseconds".into(),
            ));
        }
        if l.close_linger > 60_000 {
            return Err((
                "limits.close-linger",
                "must be between 0 and 60000 milliseconds".into(),
            ));
        }
        for (key, v) in [
            ("limits.command-read-timeout", l.command_read_timeout),
            ("limits.command-timeout", l.command_timeout),
            ("limits.read-timeout", l.read_timeout),
            ("limits.idle-timeout", l.idle_timeout),
            ("limits.stream-rate-window", l.stream_rate_window),
        ] {
            if v == 0 || v > 86_400 {
                return Err((key, "must be between 1 and 86400 seconds".into()));
            }
        }
        if l.max_session_commands == 0 {
            return Err(("limits.max-session-commands", "must be at least 1".into()));
        }
        if l.max_session_seconds > 86_400 {
            return Err((
                "limits.max-session-seconds",
                "must be between 1 and 86400 seconds, or 0 for no bound".into(),
            ));
        }
        if l.reserve_threads > 64 {
            return Err((
                "limits.reserve-threads",
                "must be between 0 and 64 (threads per worker beyond its share of limits.max-threads)".into(),
            ));
        }
        if l.max_connections_per_client == 0 {
            return Err((
                "limits.max-connections-per-client",
                "must be at least 1".into(),
            ));
        }
        if l.max_connections_per_aggregate == 0 {
            return Err((
                "limits.max-connections-per-aggregate",
                "must be at least 1 (connections of all TCP clients of one /16 or /48 together)"
                    .into(),
            ));
        }
        if l.workers.is_some() {
            return Err((
                "limits.workers",
                "was replaced: every client identity now has a worker of its own; \
                 set limits.max-workers (identities with a worker at once) and \
                 limits.standby-workers (workers forked ahead of need) instead"
                    .into(),
            ));
        }
        if l.max_workers == 0 || l.max_workers > 4096 {
            return Err(("limits.max-workers", "must be between 1 and 4096".into()));
        }
        if l.standby_workers > l.max_workers {
            return Err((
                "limits.standby-workers",
                "must be at most limits.max-workers".into(),
            ));
        }
        if l.drain_timeout == 0 || l.drain_timeout > 86_400 {
            return Err((
                "limits.drain-timeout",
                "must be between 1 and 86400 seconds".into(),
            ));
        }
        if l.reload_retry == 0 || l.reload_retry > 86_400 {
            return Err((
                "limits.reload-retry",
                "must be between 1 and 86400 seconds".into(),
            ));
        }
        if l.ipv4_prefix > 32 {
            return Err(("limits.ipv4-prefix", "must be between 0 and 32".into()));
        }
        if l.ipv6_prefix > 128 {
            return Err(("limits.ipv6-prefix", "must be between 0 and 128".into()));
        }
        if l.stream_memory < l.stream_max_length {
            return Err((
                "limits.stream-memory",
                format!(
                    "must be at least limits.stream-max-length ({}), or no stream could reach its limit",
                    l.stream_max_length
                ),
            ));
        }
        self.unix_mode().map_err(|m| ("listen.unix-mode", m))?;
        for (key, name) in [
            ("listen.unix-owner", &self.listen.unix_owner),
            ("listen.unix-group", &self.listen.unix_group),
        ] {
            if name.trim() != name || name.contains(['\0', ':', '/']) {
                return Err((
                    key,
                    format!("{name:?} is not a user or group name or number"),
                ));
            }
        }
        if self.listen.backlog == 0 || self.listen.backlog > 65_535 {
            return Err(("listen.backlog", "must be between 1 and 65535".into()));
        }
        let addrs = self.tcp_addrs().map_err(|m| ("listen.tcp", m))?;
        let allow = self.tcp_allow().map_err(|m| ("listen.tcp-allow", m))?;
        if !addrs.is_empty() && allow.is_empty() {
            return Err((
                "listen.tcp-allow",
                "is empty, so no client could connect over TCP: list the networks that may (e.g. [\"127.0.0.0/8\"])".into(),
            ));
        }
        if let Some(open) = addrs
            .iter()
            .find(|a| !crate::policy::peer::canonical(a.ip()).is_loopback())
        {
            if allow.iter().all(|n| n.addr().is_loopback()) {
                return Err((
                    "listen.tcp-allow",
                    format!(
                        "listen.tcp binds {open}, reachable from the network, but only loopback may connect: \
                         list the client networks in listen.tcp-allow (e.g. [\"192.0.2.0/24\"])"
                    ),
                ));
            }
        }
        self.validate_proxy(&addrs, &allow)?;
        for (key, words) in [
            ("policy.unix.commands", &self.policy.unix.commands),
            ("policy.tcp.commands", &self.policy.tcp.commands),
        ] {
            if let Some(bad) = words
                .iter()
                .find(|w| crate::policy::commands::parse_word(w).is_none())
            {
                return Err((
                    key,
                    format!("{bad:?} is not a clamd command (use the words VERSIONCOMMANDS lists, in capitals)"),
                ));
            }
        }
        if !matches!(
            self.scan.bytecode_security.as_str(),
            "TrustSigned" | "Paranoid"
        ) {
            return Err((
                "scan.bytecode-security",
                format!(
                    "{:?} is not a choice: use \"TrustSigned\" or \"Paranoid\"",
                    self.scan.bytecode_security
                ),
            ));
        }
        if !matches!(
            self.scan.bytecode_mode.as_str(),
            "Auto" | "ForceJIT" | "ForceInterpreter" | "Test"
        ) {
            return Err((
                "scan.bytecode-mode",
                format!(
                    "{:?} is not a choice: use \"Auto\", \"ForceJIT\", \"ForceInterpreter\" or \"Test\"",
                    self.scan.bytecode_mode
                ),
            ));
        }
        if !self.scan.exclude_pua.is_empty() && !self.scan.include_pua.is_empty() {
            return Err((
                "scan.include-pua",
                "cannot be used together with scan.exclude-pua (as clamd's IncludePUA and ExcludePUA)"
                    .into(),
            ));
        }
        for (key, cats) in [
            ("scan.exclude-pua", &self.scan.exclude_pua),
            ("scan.include-pua", &self.scan.include_pua),
        ] {
            if let Some(bad) = cats
                .iter()
                .find(|c| c.is_empty() || c.contains(['.', '\0']))
            {
                return Err((
                    key,
                    format!("{bad:?} is not a PUA category name (like \"NetTool\")"),
                ));
            }
        }
        if self.scan.cache_size == 0 {
            return Err(("scan.cache-size", "must be at least 1".into()));
        }
        for pattern in &self.scan.exclude_path {
            regex::bytes::Regex::new(pattern).map_err(|e| {
                (
                    "scan.exclude-path",
                    format!("{pattern:?} is not a valid regular expression: {e}"),
                )
            })?;
        }
        if !matches!(
            self.log.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err((
                "log.level",
                format!(
                    "{:?} is not a level: use error, warn, info, debug or trace",
                    self.log.level
                ),
            ));
        }
        if !matches!(self.sandbox.isolation.as_str(), "identity" | "connection") {
            return Err((
                "sandbox.isolation",
                format!(
                    "{:?} is not a choice: use \"identity\" or \"connection\"",
                    self.sandbox.isolation
                ),
            ));
        }
        if !matches!(self.sandbox.landlock.as_str(), "required" | "best-effort") {
            return Err((
                "sandbox.landlock",
                format!(
                    "{:?} is not a choice: use \"required\" or \"best-effort\"",
                    self.sandbox.landlock
                ),
            ));
        }
        if !matches!(self.sandbox.seccomp.as_str(), "required" | "best-effort") {
            return Err((
                "sandbox.seccomp",
                format!(
                    "{:?} is not a choice: use \"required\" or \"best-effort\"",
                    self.sandbox.seccomp
                ),
            ));
        }
        if self.log.peer_lines_per_minute == 0 {
            return Err(("log.peer-lines-per-minute", "must be at least 1".into()));
        }
        if self.log.result_lines_per_minute == 0 {
            return Err(("log.result-lines-per-minute", "must be at least 1".into()));
        }
        for (key, size) in [
            ("log.peer-bytes-per-minute", self.log.peer_bytes_per_minute),
            (
                "log.result-bytes-per-minute",
                self.log.result_bytes_per_minute,
            ),
            (
                "log.tcp-peer-bytes-per-minute",
                self.log.tcp_peer_bytes_per_minute,
            ),
            (
                "log.tcp-result-bytes-per-minute",
                self.log.tcp_result_bytes_per_minute,
            ),
        ] {
            if size.0 < 1024 {
                return Err((
                    key,
                    format!(
                        "{size} is less than 1K: a line costs at least {} bytes",
                        crate::log::limiter::LINE_COST
                    ),
                ));
            }
        }
        if !matches!(self.log.target.as_str(), "auto" | "journald" | "stderr") {
            return Err((
                "log.target",
                format!(
                    "{:?} is not a log target: use auto, journald or stderr",
                    self.log.target
                ),
            ));
        }
        if self.database.self_check > 86_400 {
            return Err((
                "database.self-check",
                "must be between 0 (off) and 86400 seconds".into(),
            ));
        }
        let v = &self.virus_event;
        if v.command.contains('\0') || v.command.len() > 4096 {
            return Err((
                "virus-event.command",
                "must be at most 4096 bytes, without NUL".into(),
            ));
        }
        if matches!(v.user.as_str(), "root" | "0") {
            return Err((
                "virus-event.user",
                "the command never runs as root: name an unprivileged user".into(),
            ));
        }
        if !v.command.is_empty() && v.effective_user() == self.sandbox.user {
            return Err((
                "virus-event.user",
                format!(
                    "{:?} is sandbox.user: the command would run as the scanning workers, outside their sandbox; name a user of its own (default {DEFAULT_VIRUS_EVENT_USER})",
                    self.sandbox.user
                ),
            ));
        }
        if v.timeout == 0 || v.timeout > 3600 {
            return Err((
                "virus-event.timeout",
                "must be between 1 and 3600 seconds".into(),
            ));
        }
        if v.max_concurrent == 0 || v.max_concurrent > 64 {
            return Err((
                "virus-event.max-concurrent",
                "must be between 1 and 64".into(),
            ));
        }
        if v.max_per_minute == 0 || v.max_per_minute > 100_000 {
            return Err((
                "virus-event.max-per-minute",
                "must be between 1 and 100000".into(),
            ));
        }
        if v.max_per_minute_per_peer > v.max_per_minute {
            return Err((
                "virus-event.max-per-minute-per-peer",
                format!(
                    "must be at most virus-event.max-per-minute ({}); 0 is a quarter of it",
                    v.max_per_minute
                ),
            ));
        }
        for (name, kind) in &self.service.sockets {
            if !matches!(kind.as_str(), "unix" | "tcp" | "tcp-proxy") {
                return Err((
                    "service.sockets",
                    format!(
                        "socket {name:?} maps to {kind:?}: use \"unix\", \"tcp\" or \"tcp-proxy\""
                    ),
                ));
            }
            if matches!(name.as_str(), "metrics" | "agent") {
                return Err((
                    "service.sockets",
                    format!(
                        "socket {name:?} is the {name} listener's own name and cannot be mapped"
                    ),
                ));
            }
        }
        self.validate_observer()
    }

    fn validate_observer(&self) -> Result<(), (&'static str, String)> {
        let m = &self.metrics;
        let metrics = self.metrics_listen().map_err(|e| ("metrics.listen", e))?;
        let allow = allow_list(&m.tcp_allow).map_err(|e| ("metrics.tcp-allow", e))?;
        if let Some(ObserverListen::Tcp(addr)) = metrics {
            open_to_network("metrics.tcp-allow", addr, &allow)?;
        }
        if m.top_detections > crate::ipc::observe::MAX_TOP as u32 {
            return Err((
                "metrics.top-detections",
                format!(
                    "must be between 0 (off) and {}",
                    crate::ipc::observe::MAX_TOP
                ),
            ));
        }
        if m.max_connections == 0 || m.max_connections > 4096 {
            return Err((
                "metrics.max-connections",
                "must be between 1 and 4096".into(),
            ));
        }
        if m.header_timeout == 0 || m.header_timeout > 300 {
            return Err((
                "metrics.header-timeout",
                "must be between 1 and 300 seconds".into(),
            ));
        }
        let agent = self.agent_listen().map_err(|e| ("agent.listen", e))?;
        let allow = allow_list(&self.agent.tcp_allow).map_err(|e| ("agent.tcp-allow", e))?;
        if let Some(addr) = agent {
            open_to_network("agent.tcp-allow", addr, &allow)?;
        }
        if self.selftest.interval > 86_400 {
            return Err((
                "selftest.interval",
                "must be between 0 (off) and 86400 seconds".into(),
            ));
        }
        if self.selftest.timeout == 0 || self.selftest.timeout > 3600 {
            return Err((
                "selftest.timeout",
                "must be between 1 and 3600 seconds".into(),
            ));
        }
        Ok(())
    }

    /// The PROXY protocol keys: a PROXY listener needs balancers to trust,
    /// and its clients are checked against `tcp-allow` as direct ones are.
    fn validate_proxy(
        &self,
        tcp: &[SocketAddr],
        allow: &[ipnet::IpNet],
    ) -> Result<(), (&'static str, String)> {
        let l = &self.listen;
        let proxied = self
            .tcp_proxy_addrs()
            .map_err(|m| ("listen.tcp-proxy", m))?;
        let from = self.proxy_from().map_err(|m| ("listen.proxy-from", m))?;
        if let Some(both) = proxied.iter().find(|a| tcp.contains(a)) {
            return Err((
                "listen.tcp-proxy",
                format!("{both} is also in listen.tcp: a port either expects PROXY headers or not"),
            ));
        }
        let activated_proxy = self.service.sockets.values().any(|k| k == "tcp-proxy");
        if (!proxied.is_empty() || activated_proxy) && from.is_empty() {
            return Err((
                "listen.proxy-from",
                "is empty, so every connection to a PROXY listener (listen.tcp-proxy) would be refused: \
                 list the load balancers' networks (e.g. [\"192.0.2.10/32\"])"
                    .into(),
            ));
        }
        if !proxied.is_empty() && allow.is_empty() {
            return Err((
                "listen.tcp-allow",
                "is empty, so no client behind the balancer could connect: list the client networks".into(),
            ));
        }
        if let Some(open) = proxied.iter().find(|a| !a.ip().is_loopback()) {
            if allow.iter().all(|n| n.addr().is_loopback()) {
                return Err((
                    "listen.tcp-allow",
                    format!(
                        "listen.tcp-proxy binds {open} for a load balancer, but only loopback clients may connect: \
                         list the client networks behind the balancer in listen.tcp-allow"
                    ),
                ));
            }
        }
        if l.proxy_timeout == 0 || l.proxy_timeout > 300 {
            return Err((
                "listen.proxy-timeout",
                "must be between 1 and 300 seconds".into(),
            ));
        }
        if l.proxy_pending == 0 || l.proxy_pending > 65_535 {
            return Err(("listen.proxy-pending", "must be between 1 and 65535".into()));
        }
        Ok(())
    }

    /// The addresses of the PROXY listeners.
    pub fn tcp_proxy_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        parse_addrs(&self.listen.tcp_proxy)
    }

    /// The networks of the trusted load balancers.
    pub fn proxy_from(&self) -> Result<Vec<ipnet::IpNet>, String> {
        allow_list(&self.listen.proxy_from)
    }

    /// `metrics.listen`, parsed: `None` when off.
    pub fn metrics_listen(&self) -> Result<Option<ObserverListen>, String> {
        let text = self.metrics.listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if text.starts_with('/') {
            if text.contains('\0') || text.len() > 107 {
                return Err(format!(
                    "{text:?} is not a usable Unix socket path (at most 107 bytes)"
                ));
            }
            return Ok(Some(ObserverListen::Unix(PathBuf::from(text))));
        }
        text.parse::<SocketAddr>()
            .map(|a| Some(ObserverListen::Tcp(a)))
            .map_err(|_| {
                format!("{text:?} is not an address like \"127.0.0.1:9906\" nor an absolute Unix socket path")
            })
    }

    /// `agent.listen`, parsed: `None` when off.
    pub fn agent_listen(&self) -> Result<Option<SocketAddr>, String> {
        let text = self.agent.listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse::<SocketAddr>().map(Some).map_err(|_| {
            format!(
                "{text:?} is not an address like \"0.0.0.0:9907\" (HAProxy's agent-check uses TCP)"
            )
        })
    }

    pub fn metrics_allow(&self) -> Vec<ipnet::IpNet> {
        allow_list(&self.metrics.tcp_allow).unwrap_or_default()
    }

    pub fn agent_allow(&self) -> Vec<ipnet::IpNet> {
        allow_list(&self.agent.tcp_allow).unwrap_or_default()
    }

    /// The Unix socket path, if one is configured.
    pub fn unix_path(&self) -> Option<&Path> {
        self.listen
            .unix
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }

    pub fn unix_mode(&self) -> Result<u32, String> {
        let m = self.listen.unix_mode.trim_start_matches("0o");
        u32::from_str_radix(m, 8)
            .ok()
            .filter(|v| *v <= 0o777)
            .ok_or_else(|| {
                format!(
                    "{:?} is not an octal mode like \"0660\"",
                    self.listen.unix_mode
                )
            })
    }

    pub fn tcp_allow(&self) -> Result<Vec<ipnet::IpNet>, String> {
        allow_list(&self.listen.tcp_allow)
    }

    pub fn tcp_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        parse_addrs(&self.listen.tcp)
    }
}

/// Networks of an allow-list (`listen.tcp-allow` and its kin).
fn allow_list(list: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    list.iter()
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{n:?} is not a network like \"127.0.0.0/8\" or an address"))
        })
        .collect()
}

fn parse_addrs(list: &[String]) -> Result<Vec<SocketAddr>, String> {
    list.iter()
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                format!("{a:?} is not an address like \"127.0.0.1:3310\" or \"[::1]:3310\"")
            })
        })
        .collect()
}

/// A listener reachable from the network needs client networks in its
/// allow-list (as `listen.tcp`).
fn open_to_network(
    key: &'static str,
    addr: SocketAddr,
    allow: &[ipnet::IpNet],
) -> Result<(), (&'static str, String)> {
    if allow.is_empty() {
        return Err((key, "is empty, so no client could connect: list the networks that may (e.g. [\"127.0.0.0/8\"])".into()));
    }
    if !addr.ip().is_loopback() && allow.iter().all(|n| n.addr().is_loopback()) {
        return Err((
            key,
            format!("the listener binds {addr}, reachable from the network, but only loopback may connect: list the client networks (e.g. [\"192.0.2.0/24\"])"),
        ));
    }
    Ok(())
}

/// The 1-based line where `table.key` is set, or 0 if the file does not set it.
fn line_of(text: &str, dotted: &str) -> usize {
    let (table, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim().to_string();
            continue;
        }
        if current == table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    return i + 1;
                }
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.limits.stream_max_length, ByteSize(100 << 20));
        assert_eq!(c.unix_mode().unwrap(), 0o660);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = Config::parse("[limits]\nmax-thread = 4\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml: "), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("max-thread"), "{err}");
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
            "t.toml:5: limits.max-threads: must be between 1 and 1024"
        );
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
        assert_eq!(c.tcp_proxy_addrs().unwrap().len(), 1);
        assert_eq!(c.proxy_from().unwrap()[0].to_string(), "192.0.2.10/32");
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
        assert_eq!(err, "t:2: policy.tcp.commands: \"scan\" is not a clamd command (use the words VERSIONCOMMANDS lists, in capitals)");
    }

    #[test]
    fn service_keys_are_checked() {
        let c = Config::parse(
            "[service]\nexit-when-idle = 30\nsockets = { scanners = \"tcp\" }\n[database]\nself-check = 0\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.service.exit_when_idle, 30);
        assert_eq!(c.service.sockets["scanners"], "tcp");
        assert_eq!(c.database.self_check, 0);
        assert_eq!(Config::default().database.self_check, 60);
        assert_eq!(Config::default().log.target, "auto");
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
            "t:2: log.target: \"syslog\" is not a log target: use auto, journald or stderr"
        );
    }

    #[test]
    fn observer_keys_are_checked() {
        let c = Config::default();
        assert_eq!(c.metrics_listen().unwrap(), None);
        assert_eq!(c.selftest.interval, 60);
        assert_eq!(c.database.max_age, Span(7 * 86_400));
        let c = Config::parse(
            "[metrics]\nlisten = \"127.0.0.1:9906\"\ntop-detections = 10\n[agent]\nlisten = \"0.0.0.0:9907\"\ntcp-allow = [\"192.0.2.0/24\"]\n[database]\nmax-age = \"36h\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.metrics_listen().unwrap(),
            Some(ObserverListen::Tcp("127.0.0.1:9906".parse().unwrap()))
        );
        assert_eq!(
            c.agent_listen().unwrap(),
            Some("0.0.0.0:9907".parse().unwrap())
        );
        assert_eq!(c.database.max_age, Span(36 * 3600));
        let c = Config::parse("[metrics]\nlisten = \"/run/cs/metrics.sock\"\n", "t").unwrap();
        assert_eq!(
            c.metrics_listen().unwrap(),
            Some(ObserverListen::Unix("/run/cs/metrics.sock".into()))
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
