//! Every option clamd 1.4 reads: the `OPT_CLAMD` entries of ClamAV's
//! `common/optparser.c` (rel/1.4), which include everything
//! `etc/clamd.conf.sample` shows, with clamd's compiled-in default, the value
//! the sample shows, and what clamsentry does with it. One row per option,
//! in optparser's order (which matters: a name is looked up first by its
//! config name, then by its long command-line name, in this order).
//!
//! `tests` iterate [`OPTIONS`]: every option of the sample and of `clamconf
//! --generate-config=clamd.conf` must be here, and every one that is set must
//! be mapped (it changes the configuration), named in a note, or refused
//! with its name in the message.

/// How clamd's parser reads an option's argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `yes`/`no`, `true`/`false`, `1`/`0` (any case).
    Bool,
    /// Decimal digits.
    Number,
    /// Digits with an optional `K`, `M` or `G` (any case); 0 means "no limit".
    Size,
    /// As `Size`, 64-bit.
    Size64,
    /// Any text (a leading `"` is stripped up to the last `"`).
    Str,
    /// Text that must be one of these words (checked ignoring case, as clamd).
    Choice(&'static [&'static str]),
}

/// What clamsentry does with an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Honoured: translated to the clamsentry setting named here.
    Mapped(&'static str),
    /// clamsentry has no such behaviour: a value that asks for it refuses
    /// the file, with this message.
    Refused(&'static str),
    /// Read, and named once in the log with this reason: it concerns clamd's
    /// own logging or platform, another program, or a debugging aid.
    Logged(&'static str),
    /// Deprecated: clamd 1.4 itself ignores it (with a warning), and so does
    /// clamsentry.
    Ignored,
}

/// One option of clamd's parser.
#[derive(Debug, Clone, Copy)]
pub struct ClamdOption {
    name: &'static str,
    long: &'static str,
    /// `'\0'`: none.
    short: char,
    pub kind: Kind,
    /// clamd's default number (`-1`: unset), for Bool, Number and Size.
    pub default_num: i64,
    default_str: &'static str,
    flags: u8,
    sample: &'static str,
    pub disposition: Disposition,
}

const MULTIPLE: u8 = 1;
const REQUIRED: u8 = 2;
const DEPRECATED: u8 = 4;

/// Debian's clamd: `DATADIR` and `CONFDIR_CLAMD`.
pub const DATADIR: &str = "/var/lib/clamav";
pub const CONFIG_FILE: &str = "/etc/clamav/clamd.conf";

impl ClamdOption {
    /// The name in clamd.conf; `None` for command-line-only options.
    pub fn name(&self) -> Option<&'static str> {
        (!self.name.is_empty()).then_some(self.name)
    }
    /// The long command-line name (`--datadir`); clamd also accepts it as a
    /// name in the file.
    pub fn long(&self) -> Option<&'static str> {
        (!self.long.is_empty()).then_some(self.long)
    }
    pub fn short(&self) -> Option<char> {
        (self.short != '\0').then_some(self.short)
    }
    /// How the option is shown: its clamd.conf name, else `--long`.
    pub fn shown(&self) -> String {
        match self.name() {
            Some(n) => n.to_string(),
            None => format!("--{}", self.long),
        }
    }
    pub fn default_str(&self) -> Option<&'static str> {
        (!self.default_str.is_empty()).then_some(self.default_str)
    }
    /// May be given more than once (every value counts).
    pub fn multiple(&self) -> bool {
        self.flags & MULTIPLE != 0
    }
    /// On the command line the argument may not be left out.
    pub fn required(&self) -> bool {
        self.flags & REQUIRED != 0
    }
    pub fn deprecated(&self) -> bool {
        self.flags & DEPRECATED != 0
    }
    /// The value `etc/clamd.conf.sample` shows, if the sample has the option.
    pub fn sample(&self) -> Option<&'static str> {
        (!self.sample.is_empty()).then_some(self.sample)
    }
}

#[allow(clippy::too_many_arguments)]
const fn o(
    name: &'static str,
    long: &'static str,
    short: char,
    kind: Kind,
    default_num: i64,
    default_str: &'static str,
    flags: u8,
    sample: &'static str,
    disposition: Disposition,
) -> ClamdOption {
    ClamdOption {
        name,
        long,
        short,
        kind,
        default_num,
        default_str,
        flags,
        sample,
        disposition,
    }
}

use Disposition::{Ignored, Logged, Mapped, Refused};
use Kind::{Bool, Choice, Number, Size, Size64, Str};

/// clamd 1.4's options, in optparser's order.
#[rustfmt::skip]
pub static OPTIONS: &[ClamdOption] = &[
    o("", "help", 'h', Bool, 0, "", 0, "", Mapped("the clamd command line: -h shows the help")),
    o("", "config-file", 'c', Str, 0, CONFIG_FILE, REQUIRED, "", Mapped("the clamd command line: -c names the clamd.conf")),
    o("", "version", 'V', Bool, 0, "", 0, "", Mapped("the clamd command line: -V prints clamd's version line")),
    o("", "debug", '\0', Bool, 0, "", 0, "", Mapped("log.level (\"debug\")")),
    o("", "gen-json", '\0', Bool, 0, "", 0, "", Logged("clamd 1.4 does not use it")),
    o("", "install-service", '\0', Bool, 0, "", 0, "", Logged("used by clamd on Windows only")),
    o("", "uninstall-service", '\0', Bool, 0, "", 0, "", Logged("used by clamd on Windows only")),
    o("", "daemon", 'd', Bool, 0, "", 0, "", Logged("used by clamd on Windows only")),
    o("", "service-mode", '\0', Bool, 0, "", 0, "", Logged("used by clamd on Windows only")),
    o("AlertExceedsMax", "alert-exceeds-max", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-exceeds-max")),
    o("CacheSize", "cache-size", '\0', Number, 65536, "", 0, "65536", Mapped("scan.cache-size")),
    o("PreludeEnable", "prelude-enable", '\0', Bool, 0, "", 0, "yes", Logged("Prelude IDS logging is not available in clamsentry (Debian's clamd is built without it too)")),
    o("PreludeAnalyzerName", "prelude-analyzer-name", '\0', Str, -1, "", 0, "ClamAV", Logged("Prelude IDS logging is not available in clamsentry")),
    o("LogFile", "log", 'l', Str, -1, "", 0, "/tmp/clamd.log", Logged("clamsentry writes no log file: it logs to journald or stderr (log.target)")),
    o("LogFileUnlock", "", '\0', Bool, 0, "", 0, "yes", Logged("concerns clamd's log file; clamsentry writes none: it logs to journald or stderr (log.target)")),
    o("LogFileMaxSize", "", '\0', Size, 1048576, "", 0, "2M", Logged("concerns clamd's log file; clamsentry writes none: it logs to journald or stderr (log.target)")),
    o("LogTime", "", '\0', Bool, 0, "", 0, "yes", Logged("clamsentry's log lines always carry the time")),
    o("LogClean", "", '\0', Bool, 0, "", 0, "yes", Mapped("log.clean")),
    o("LogSyslog", "", '\0', Bool, 0, "", 0, "yes", Mapped("log.target (\"journald\")")),
    o("LogFacility", "", '\0', Str, -1, "LOG_LOCAL6", REQUIRED, "LOG_MAIL", Logged("concerns syslog; clamsentry logs to journald with structured fields")),
    o("LogVerbose", "", '\0', Bool, 0, "", 0, "yes", Logged("clamsentry's log lines carry structured fields; log.level = \"debug\" shows more")),
    o("LogRotate", "log-rotate", '\0', Bool, 0, "", 0, "yes", Logged("concerns clamd's log file; clamsentry writes none: it logs to journald or stderr (log.target)")),
    o("ExtendedDetectionInfo", "", '\0', Bool, 0, "", 0, "yes", Logged("clamsentry's FOUND lines carry the size (BYTES) but not the file's hash")),
    o("PidFile", "pid", 'p', Str, -1, "", 0, "/run/clamav/clamd.pid", Mapped("service.pid-file")),
    o("TemporaryDirectory", "tempdir", '\0', Str, -1, "", 0, "/var/tmp", Mapped("scan.temporary-directory")),
    o("DatabaseDirectory", "datadir", '\0', Str, -1, DATADIR, 0, "/var/lib/clamav", Mapped("database.directory")),
    o("OfficialDatabaseOnly", "official-db-only", '\0', Bool, 0, "", 0, "no", Mapped("scan.official-database-only")),
    o("FailIfCvdOlderThan", "fail-if-cvd-older-than", '\0', Number, -1, "", 0, "7", Refused("clamsentry does not check the age of the database at start: remove the line and watch the database's age elsewhere (freshclam warns about outdated databases; `sigtool --info daily.cld` shows its build time)")),
    o("LocalSocket", "", '\0', Str, -1, "", 0, "/run/clamav/clamd.sock", Mapped("listen.unix")),
    o("LocalSocketGroup", "", '\0', Str, -1, "", 0, "virusgroup", Mapped("listen.unix-group")),
    o("LocalSocketMode", "", '\0', Str, -1, "", 0, "660", Mapped("listen.unix-mode")),
    o("FixStaleSocket", "", '\0', Bool, 1, "", 0, "no", Logged("clamsentry always replaces a stale socket file of the socket's owner (never a file that is not a socket, nor another user's socket)")),
    o("TCPSocket", "", '\0', Number, -1, "", 0, "3310", Mapped("listen.tcp")),
    o("TCPAddr", "", '\0', Str, -1, "", MULTIPLE, "localhost", Mapped("listen.tcp")),
    o("MaxConnectionQueueLength", "", '\0', Number, 200, "", 0, "30", Mapped("listen.backlog")),
    o("StreamMaxLength", "", '\0', Size, 104857600, "", 0, "25M", Mapped("limits.stream-max-length (and limits.stream-memory when it is larger)")),
    o("StreamMinPort", "", '\0', Number, 1024, "", 0, "30000", Logged("ports of the STREAM command, which clamd 1.4 no longer has")),
    o("StreamMaxPort", "", '\0', Number, 2048, "", 0, "32000", Logged("ports of the STREAM command, which clamd 1.4 no longer has")),
    o("MaxThreads", "", '\0', Number, 10, "", 0, "20", Mapped("limits.max-threads")),
    o("ReadTimeout", "", '\0', Number, 120, "", 0, "300", Mapped("limits.read-timeout and limits.idle-timeout")),
    o("CommandReadTimeout", "", '\0', Number, 30, "", 0, "30", Mapped("limits.command-read-timeout")),
    o("SendBufTimeout", "", '\0', Number, 500, "", 0, "200", Mapped("limits.send-timeout")),
    o("MaxQueue", "", '\0', Number, 100, "", 0, "200", Mapped("limits.max-queue")),
    o("IdleTimeout", "", '\0', Number, 30, "", 0, "60", Logged("the idle time after which clamd ends a scanning thread; clamsentry's scanning threads are a fixed pool (an idle IDSESSION ends after ReadTimeout, as in clamd)")),
    o("ExcludePath", "", '\0', Str, -1, "", MULTIPLE, "^/proc/", Mapped("scan.exclude-path")),
    o("MaxDirectoryRecursion", "max-dir-recursion", '\0', Number, 15, "", 0, "20", Mapped("scan.max-directory-recursion")),
    o("FollowDirectorySymlinks", "", '\0', Bool, 0, "", 0, "yes", Mapped("scan.follow-directory-symlinks")),
    o("FollowFileSymlinks", "", '\0', Bool, 0, "", 0, "yes", Mapped("scan.follow-file-symlinks")),
    o("CrossFilesystems", "cross-fs", '\0', Bool, 1, "", 0, "no", Mapped("scan.cross-filesystems")),
    o("SelfCheck", "", '\0', Number, 600, "", 0, "600", Mapped("database.self-check")),
    o("ConcurrentDatabaseReload", "", '\0', Bool, 1, "", 0, "no", Logged("clamsentry always reloads blue/green (a new worker loads while the old one serves, as clamd's `yes`); memory peaks at about twice the engine during a reload")),
    o("DisableCache", "disable-cache", '\0', Bool, 0, "", 0, "yes", Mapped("scan.disable-cache")),
    o("VirusEvent", "", '\0', Str, -1, "", 0, "/opt/send_virus_alert_sms.sh", Mapped("virus-event.command")),
    o("ExitOnOOM", "", '\0', Bool, 0, "", 0, "yes", Logged("a worker that runs out of memory is replaced by the supervisor; clamsentry does not stop")),
    o("AllowAllMatchScan", "", '\0', Bool, 1, "", 0, "no", Mapped("scan.allow-all-match-scan")),
    o("Foreground", "foreground", 'F', Bool, 0, "", 0, "yes", Mapped("the clamd command line (`clamd`, `clamsentry clamd`): fork into the background unless set")),
    o("Debug", "", '\0', Bool, 0, "", 0, "yes", Mapped("log.level (\"debug\")")),
    o("LeaveTemporaryFiles", "", '\0', Bool, 0, "", 0, "yes", Logged("a debugging aid of clamd: clamsentry always removes its temporary files")),
    o("GenerateMetadataJson", "", '\0', Bool, 0, "", 0, "yes", Logged("a debugging aid of clamd: clamsentry collects no scan metadata")),
    o("User", "", '\0', Str, -1, "", 0, "clamav", Mapped("sandbox.user and listen.unix-owner")),
    o("Bytecode", "bytecode", '\0', Bool, 1, "", 0, "no", Mapped("scan.bytecode")),
    o("BytecodeSecurity", "", '\0', Choice(&["TrustSigned", "Paranoid"]), -1, "TrustSigned", 0, "TrustSigned", Mapped("scan.bytecode-security")),
    o("BytecodeTimeout", "bytecode-timeout", '\0', Number, 10000, "", 0, "", Mapped("scan.bytecode-timeout")),
    o("BytecodeUnsigned", "bytecode-unsigned", '\0', Bool, 0, "", 0, "yes", Mapped("scan.bytecode-unsigned")),
    o("BytecodeMode", "bytecode-mode", '\0', Choice(&["Auto", "ForceJIT", "ForceInterpreter", "Test"]), -1, "Auto", REQUIRED, "", Mapped("scan.bytecode-mode")),
    o("DetectPUA", "detect-pua", '\0', Bool, 0, "", 0, "yes", Mapped("scan.detect-pua")),
    o("ExcludePUA", "exclude-pua", '\0', Str, -1, "", MULTIPLE, "NetTool", Mapped("scan.exclude-pua")),
    o("IncludePUA", "include-pua", '\0', Str, -1, "", MULTIPLE, "Spy", Mapped("scan.include-pua")),
    o("ScanPE", "scan-pe", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-pe")),
    o("ScanELF", "scan-elf", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-elf")),
    o("ScanMail", "scan-mail", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-mail")),
    o("ScanPartialMessages", "", '\0', Bool, 0, "", 0, "yes", Mapped("scan.scan-partial-messages")),
    o("PhishingSignatures", "phishing-sigs", '\0', Bool, 1, "", 0, "no", Mapped("scan.phishing-signatures")),
    o("PhishingScanURLs", "phishing-scan-urls", '\0', Bool, 1, "", 0, "no", Mapped("scan.phishing-scan-urls")),
    o("HeuristicAlerts", "heuristic-alerts", '\0', Bool, 1, "", 0, "no", Mapped("scan.heuristic-alerts")),
    o("HeuristicScanPrecedence", "heuristic-scan-precedence", '\0', Bool, 0, "", 0, "yes", Mapped("scan.heuristic-scan-precedence")),
    o("StructuredDataDetection", "detect-structured", '\0', Bool, 0, "", 0, "yes", Mapped("scan.structured-data-detection")),
    o("StructuredMinCreditCardCount", "structured-cc-count", '\0', Number, 3, "", 0, "5", Mapped("scan.structured-min-credit-card-count")),
    o("StructuredMinSSNCount", "structured-ssn-count", '\0', Number, 3, "", 0, "5", Mapped("scan.structured-min-ssn-count")),
    o("StructuredSSNFormatNormal", "", '\0', Bool, 1, "", 0, "no", Mapped("scan.structured-ssn-format-normal")),
    o("StructuredSSNFormatStripped", "", '\0', Bool, 0, "", 0, "yes", Mapped("scan.structured-ssn-format-stripped")),
    o("ScanHTML", "scan-html", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-html")),
    o("ScanOLE2", "scan-ole2", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-ole2")),
    o("AlertBrokenExecutables", "alert-broken", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-broken-executables")),
    o("AlertBrokenMedia", "alert-broken-media", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-broken-media")),
    o("AlertEncrypted", "alert-encrypted", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-encrypted")),
    o("StructuredCCOnly", "structured-cc-mode", '\0', Bool, 0, "", 0, "yes", Mapped("scan.structured-cc-only")),
    o("AlertEncryptedArchive", "alert-encrypted-archive", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-encrypted-archive")),
    o("AlertEncryptedDoc", "alert-encrypted-doc", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-encrypted-doc")),
    o("AlertOLE2Macros", "alert-macros", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-ole2-macros")),
    o("AlertPhishingSSLMismatch", "alert-phishing-ssl", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-phishing-ssl-mismatch")),
    o("AlertPhishingCloak", "alert-phishing-cloak", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-phishing-cloak")),
    o("AlertPartitionIntersection", "alert-partition-intersection", '\0', Bool, 0, "", 0, "yes", Mapped("scan.alert-partition-intersection")),
    o("ScanPDF", "scan-pdf", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-pdf")),
    o("ScanSWF", "scan-swf", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-swf")),
    o("ScanXMLDOCS", "scan-xmldocs", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-xmldocs")),
    o("ScanHWP3", "scan-hwp3", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-hwp3")),
    o("ScanOneNote", "scan-onenote", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-onenote")),
    o("ScanArchive", "scan-archive", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-archive")),
    o("ScanImage", "scan-image", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-image")),
    o("ScanImageFuzzyHash", "scan-image-fuzzy-hash", '\0', Bool, 1, "", 0, "no", Mapped("scan.scan-image-fuzzy-hash")),
    o("ForceToDisk", "force-to-disk", '\0', Bool, 0, "", 0, "yes", Refused("clamsentry scans streams from memory and never writes them to disk (a stream cannot fill the disk); ForceToDisk is a debugging aid: remove the line or set it to no")),
    o("MaxScanTime", "max-scantime", '\0', Number, 0, "", 0, "300000", Mapped("scan.max-scan-time")),
    o("MaxScanSize", "max-scansize", '\0', Size64, 419430400, "", 0, "1000M", Mapped("scan.max-scan-size")),
    o("MaxFileSize", "max-filesize", '\0', Size, 104857600, "", 0, "400M", Mapped("scan.max-file-size")),
    o("MaxRecursion", "max-recursion", '\0', Number, 17, "", 0, "10", Mapped("scan.max-recursion")),
    o("MaxFiles", "max-files", '\0', Number, 10000, "", 0, "15000", Mapped("scan.max-files")),
    o("MaxEmbeddedPE", "max-embeddedpe", '\0', Size, 41943040, "", 0, "100M", Mapped("scan.max-embedded-pe")),
    o("MaxHTMLNormalize", "max-htmlnormalize", '\0', Size, 41943040, "", 0, "100M", Mapped("scan.max-html-normalize")),
    o("MaxHTMLNoTags", "max-htmlnotags", '\0', Size, 8388608, "", 0, "16M", Mapped("scan.max-html-no-tags")),
    o("MaxScriptNormalize", "max-scriptnormalize", '\0', Size, 20971520, "", 0, "50M", Mapped("scan.max-script-normalize")),
    o("MaxZipTypeRcg", "max-ziptypercg", '\0', Size, 1048576, "", 0, "1M", Mapped("scan.max-zip-type-rcg")),
    o("MaxPartitions", "max-partitions", '\0', Number, 50, "", 0, "128", Mapped("scan.max-partitions")),
    o("MaxIconsPE", "max-iconspe", '\0', Number, 100, "", 0, "200", Mapped("scan.max-icons-pe")),
    o("MaxRecHWP3", "max-rechwp3", '\0', Number, 16, "", 0, "16", Mapped("scan.max-rec-hwp3")),
    o("PCREMatchLimit", "pcre-match-limit", '\0', Number, 100000, "", 0, "20000", Mapped("scan.pcre-match-limit")),
    o("PCRERecMatchLimit", "pcre-recmatch-limit", '\0', Number, 2000, "", 0, "10000", Mapped("scan.pcre-recmatch-limit")),
    o("PCREMaxFileSize", "pcre-max-filesize", '\0', Size, 104857600, "", 0, "400M", Mapped("scan.pcre-max-file-size")),
    o("OnAccessMountPath", "", '\0', Str, -1, "", MULTIPLE, "/", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessIncludePath", "", '\0', Str, -1, "", MULTIPLE, "/home", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessExcludePath", "", '\0', Str, -1, "", MULTIPLE, "/home/user", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessExcludeRootUID", "", '\0', Bool, -1, "", 0, "no", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessExcludeUID", "", '\0', Number, -1, "", MULTIPLE, "-1", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessExcludeUname", "", '\0', Str, -1, "", MULTIPLE, "clamav", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessMaxFileSize", "", '\0', Size, 5242880, "", 0, "10M", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessDisableDDD", "", '\0', Bool, 0, "", 0, "yes", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessPrevention", "", '\0', Bool, 0, "", 0, "yes", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessExtraScanning", "", '\0', Bool, 0, "", 0, "yes", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessCurlTimeout", "", '\0', Number, 5000, "", 0, "", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessMaxThreads", "", '\0', Number, 5, "", 0, "10", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessRetryAttempts", "", '\0', Number, 0, "", 0, "3", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("OnAccessDenyOnError", "", '\0', Bool, 0, "", 0, "yes", Logged("read by clamonacc (on-access scanning), not by the daemon")),
    o("DevACOnly", "dev-ac-only", '\0', Bool, -1, "", 0, "", Logged("a hidden developer option of clamd; clamsentry ignores it")),
    o("DevACDepth", "dev-ac-depth", '\0', Number, -1, "", 0, "", Logged("a hidden developer option of clamd; clamsentry ignores it")),
    o("DevCollectHashes", "dev-collect-hashes", '\0', Bool, -1, "", 0, "", Logged("a hidden developer option of clamd; clamsentry ignores it")),
    o("DevPerformance", "dev-performance", '\0', Bool, -1, "", 0, "", Logged("a hidden developer option of clamd; clamsentry ignores it")),
    o("DevLiblog", "dev-liblog", '\0', Bool, -1, "", 0, "", Logged("a hidden developer option of clamd; clamsentry ignores it")),
    o("DisableCertCheck", "nocerts", '\0', Bool, 0, "", 0, "yes", Mapped("scan.disable-cert-check")),
    o("DetectBrokenExecutables", "detect-broken", '\0', Bool, 0, "", DEPRECATED, "", Ignored),
    o("AlgorithmicDetection", "algorithmic-detection", '\0', Bool, 1, "", 0, "", Mapped("scan.heuristic-alerts (clamd's older name)")),
    o("BlockMax", "block-max", '\0', Bool, 0, "", 0, "", Mapped("scan.alert-exceeds-max (clamd's older name)")),
    o("PhishingAlwaysBlockSSLMismatch", "phishing-ssl", '\0', Bool, 0, "", 0, "", Mapped("scan.alert-phishing-ssl-mismatch (clamd's older name)")),
    o("PhishingAlwaysBlockCloak", "phishing-cloak", '\0', Bool, 0, "", 0, "", Mapped("scan.alert-phishing-cloak (clamd's older name)")),
    o("PartitionIntersection", "partition-intersection", '\0', Bool, 0, "", 0, "", Mapped("scan.alert-partition-intersection (clamd's older name)")),
    o("OLE2BlockMacros", "block-macros", '\0', Bool, 0, "", 0, "", Mapped("scan.alert-ole2-macros (clamd's older name)")),
    o("ArchiveBlockEncrypted", "block-encrypted", '\0', Bool, 0, "", 0, "", Mapped("scan.alert-encrypted (clamd's older name)")),
    o("MailMaxRecursion", "", '\0', Number, -1, "", DEPRECATED, "", Ignored),
    o("ArchiveMaxScanSize", "", '\0', Size, -1, "", DEPRECATED, "", Ignored),
    o("ArchiveMaxRecursion", "", '\0', Number, -1, "", DEPRECATED, "", Ignored),
    o("ArchiveMaxFiles", "", '\0', Number, -1, "", DEPRECATED, "", Ignored),
    o("ArchiveMaxCompressionRatio", "", '\0', Number, -1, "", DEPRECATED, "", Ignored),
    o("ArchiveBlockMax", "", '\0', Bool, -1, "", DEPRECATED, "", Ignored),
    o("ArchiveLimitMemoryUsage", "", '\0', Bool, -1, "", DEPRECATED, "", Ignored),
    o("MailFollowURLs", "mail-follow-urls", '\0', Bool, -1, "", DEPRECATED, "", Ignored),
    o("AllowSupplementaryGroups", "", '\0', Bool, 0, "", DEPRECATED, "", Ignored),
    o("ScanOnAccess", "", '\0', Bool, -1, "", DEPRECATED, "", Ignored),
];

/// The option a name in clamd.conf (or a long option) stands for: the first
/// whose config name or long name is `name`, case-sensitively, as clamd's
/// `optget`.
pub fn lookup(name: &str) -> Option<(usize, &'static ClamdOption)> {
    OPTIONS
        .iter()
        .enumerate()
        .find(|(_, o)| o.name == name || (!o.long.is_empty() && o.long == name))
}

/// The option named `name` in clamd.conf (config names only).
pub fn by_name(name: &str) -> Option<(usize, &'static ClamdOption)> {
    OPTIONS.iter().enumerate().find(|(_, o)| o.name == name)
}

/// The table as Markdown (`docs/clamd-conf.md`, kept current by a test):
/// every option, its clamd default and what clamsentry does with it.
pub fn markdown() -> String {
    let mut out = String::from(
        "# clamd.conf options in clamsentry\n\n\
         Generated from `src/config/clamd_conf/table.rs` (the test \
         `config::clamd_conf::tests::docs_table_is_current` rewrites it when \
         `CLAMSENTRY_UPDATE_DOCS=1` is set). Every option clamd 1.4 reads \
         (the `OPT_CLAMD` entries of ClamAV's `common/optparser.c`), in \
         optparser's order, with clamd's compiled-in default and what \
         clamsentry does when a clamd.conf sets it:\n\n\
         * **mapped**: honoured, as the clamsentry setting named;\n\
         * **refused**: clamsentry does not do this; a clamd.conf that asks \
         for it is refused at start with this message;\n\
         * **noted**: read, and named once in the log: it concerns clamd's \
         own logging or platform, another program, or a debugging aid;\n\
         * **ignored**: deprecated; clamd 1.4 ignores it too.\n\n\
         Options without a clamd.conf name exist only on clamd's command \
         line (clamd also accepts any long name, `--datadir=DIR`, and in the \
         file, `datadir DIR`). clamd hands an engine limit (`Max…`, \
         `PCRE…`) to libclamav only when the file sets it, so the limit in \
         effect otherwise is libclamav's, which equals the default below \
         except for `MaxScanTime` (120000 ms, not 0). A size of 0 means no \
         limit.\n\n\
         | option | long name | value | clamd default | clamsentry |\n\
         |---|---|---|---|---|\n",
    );
    for o in OPTIONS {
        let kind = match o.kind {
            Kind::Bool => "yes/no".to_string(),
            Kind::Number => "number".to_string(),
            Kind::Size | Kind::Size64 => "size".to_string(),
            Kind::Str => "text".to_string(),
            Kind::Choice(words) => words.join(" \\| "),
        };
        let default = match (o.kind, o.default_str(), o.default_num) {
            (_, Some(s), _) => format!("`{s}`"),
            (Kind::Bool, None, 0) => "no".into(),
            (Kind::Bool, None, 1) => "yes".into(),
            (_, None, -1) | (Kind::Str, None, _) | (Kind::Choice(_), None, _) => "unset".into(),
            (Kind::Size | Kind::Size64, None, n) => format!("{}", super::ByteSize(n as u64)),
            (_, None, n) => n.to_string(),
        };
        let what = match o.disposition {
            Disposition::Mapped(s) => format!("mapped: {s}"),
            Disposition::Refused(s) => format!("refused: {s}"),
            Disposition::Logged(s) => format!("noted: {s}"),
            Disposition::Ignored => "ignored (deprecated)".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {kind} | {default} | {} |\n",
            o.name().map_or_else(String::new, |n| format!("`{n}`")),
            o.long().map_or_else(String::new, |l| format!("`--{l}`")),
            what.replace('|', "\\|")
        ));
    }
    let count = |f: fn(&Disposition) -> bool| OPTIONS.iter().filter(|o| f(&o.disposition)).count();
    out.push_str(&format!(
        "\n{} options: {} mapped, {} refused, {} noted, {} ignored.\n",
        OPTIONS.len(),
        count(|d| matches!(d, Disposition::Mapped(_))),
        count(|d| matches!(d, Disposition::Refused(_))),
        count(|d| matches!(d, Disposition::Logged(_))),
        count(|d| matches!(d, Disposition::Ignored)),
    ));
    out
}
