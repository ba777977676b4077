use super::*;

/// A system where `localhost` is 127.0.0.1, every other name a public
/// address, and only `clamav` (105) and `root` exist.
fn env() -> Env {
    Env {
        cwd: PathBuf::from("/work/dir"),
        resolve: |host| match host {
            None => Ok(vec!["::".parse().unwrap(), "0.0.0.0".parse().unwrap()]),
            Some("localhost") => Ok(vec!["127.0.0.1".parse().unwrap()]),
            Some(h) => match h.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![ip]),
                Err(_) => Ok(vec!["192.0.2.1".parse().unwrap()]),
            },
        },
        uid_of: |name| match name {
            "clamav" => Some(105),
            "root" => Some(0),
            _ => None,
        },
    }
}

fn read(text: &str) -> Result<ClamdConf, Problem> {
    let mut c = ClamdConf::new("clamd.conf");
    c.read_text(text.as_bytes())?;
    Ok(c)
}

fn translate(text: &str) -> Translation {
    read(text).unwrap().translate(&env())
}

fn ok(text: &str) -> Translation {
    let t = translate(text);
    assert!(t.problems.is_empty(), "{}", show_problems(&t.problems));
    t
}

fn refused(text: &str) -> String {
    let t = translate(text);
    assert!(!t.problems.is_empty(), "{text:?} was accepted");
    show_problems(&t.problems)
}

#[test]
fn lines_are_read_as_clamd_reads_them() {
    let c = read(
        "# a comment\n\
         \n\
         a\n\
         \t  MaxThreads   7  \t\n\
         LogFile \"/var/log/with space.log\" \n\
         VirusEvent /x.sh \"Virus found: %v\" # not a comment\n\
         #MaxQueue 5\n\
         datadir /srv/db\n\
         MaxThreads 9\n\
         TCPAddr 127.0.0.1\n\
         TCPAddr localhost\n",
    )
    .unwrap();
    assert_eq!(c.get("MaxThreads").num, 7, "first value wins");
    assert_eq!(
        c.get("LogFile").text.as_deref(),
        Some("/var/log/with space.log")
    );
    assert_eq!(
        c.get("VirusEvent").text.as_deref(),
        Some("/x.sh \"Virus found: %v\" # not a comment")
    );
    assert!(!c.is_set("MaxQueue"));
    assert_eq!(c.database_directory(), PathBuf::from("/srv/db"));
    assert_eq!(c.entries("TCPAddr").len(), 2);
    let t = c.translate(&env());
    assert!(t.notes.iter().any(|n| n.origin == Origin::Line(9)
        && n.message.contains("clamd uses the first value (line 4)")));
}

#[test]
fn clamds_parse_errors_refuse_the_file() {
    let err = |text: &str| read(text).unwrap_err().to_string();
    assert_eq!(
        err("Example\nLocalSocket /x\n"),
        "clamd.conf:1: Example: the file still has the Example line that clamd refuses (\"Please edit the example config file\"): remove it"
    );
    assert_eq!(
        err("LocalSocket /x\nMaxThread 4\n"),
        "clamd.conf:2: MaxThread: Unknown option (clamd 1.4 refuses the file too)"
    );
    assert_eq!(
        err("Foreground\n"),
        "clamd.conf:1: Missing argument for option"
    );
    // Only lines of one character (and the newline) are skipped.
    assert_eq!(err("ab\n"), "clamd.conf:1: Missing argument for option");
    assert_eq!(
        err("Foreground maybe\n"),
        "clamd.conf:1: Foreground: Incorrect argument format for option (clamd refuses it too)"
    );
    // Option names are case-sensitive.
    assert!(err("maxthreads 4\n").contains("Unknown option"));
    // A CRLF file: the \r stays in the value, as in clamd.
    assert!(err("Foreground yes\r\n").contains("Incorrect argument format"));
    assert!(err("LogFile \"/x\n").contains("Missing closing parenthesis"));
    assert!(err("LogFile \"\"\n").contains("Empty argument"));
    assert!(err("MaxFileSize 10X\n").contains("Incorrect argument format"));
    assert!(err("MaxFileSize 09\n").contains("Can't parse numerical argument"));
    assert!(err(&format!("LogFile /{}\n", "x".repeat(1100))).contains("longer than 1022 bytes"));
}

#[test]
fn values_convert_as_in_clamd() {
    let c = read(
        "Foreground YES\nDebug True\nLogTime 0\nMaxFileSize 10m\nMaxScanSize 010M\n\
         StreamMaxLength 0\nMaxEmbeddedPE 99999999999G\nMaxRecursion 4294967297\nCacheSize 12\n",
    )
    .unwrap();
    assert!(c.enabled("Foreground") && c.enabled("Debug") && !c.enabled("LogTime"));
    assert_eq!(c.get("MaxFileSize").num, 10 << 20);
    assert_eq!(c.get("MaxScanSize").num, 8 << 20, "a leading 0 is octal");
    assert_eq!(c.get("StreamMaxLength").num, i64::MAX, "0 is no limit");
    assert_eq!(c.get("MaxEmbeddedPE").num, i64::MAX);
    assert_eq!(c.get("MaxRecursion").num, 1, "atoi wraps to an int");
    // Defaults when not set.
    assert_eq!(c.get("MaxThreads").num, 10);
    assert!(c.enabled("ScanPE") && !c.enabled("DetectPUA"));
    assert_eq!(
        c.get("BytecodeSecurity").text.as_deref(),
        Some("TrustSigned")
    );
    let t = c.translate(&env());
    assert!(t
        .notes
        .iter()
        .any(|n| n.option == "MaxEmbeddedPE" && n.message.contains("too high")));
}

#[test]
fn every_option_is_mapped_noted_or_refused_by_name() {
    for option in OPTIONS {
        let Some(name) = option.name() else { continue };
        let value = option.sample().unwrap_or(match option.kind {
            Kind::Bool => "yes",
            Kind::Number => "5",
            Kind::Size | Kind::Size64 => "5M",
            Kind::Str => "x",
            Kind::Choice(words) => words[0],
        });
        let text = format!("{name} {value}\n");
        let conf = match read(&text) {
            Ok(c) => c,
            Err(p) => {
                // clamd itself refuses the sample's value (OnAccessExcludeUID -1).
                assert!(p.to_string().contains(name), "{p}");
                continue;
            }
        };
        let t = conf.translate(&env());
        let line = Origin::Line(1);
        let mapped = t.sources.values().any(|o| o.contains(&line));
        let noted = t.notes.iter().any(|n| n.origin == line && n.option == name);
        let refused = t
            .problems
            .iter()
            .any(|p| p.origin == line && p.to_string().contains(name));
        match option.disposition {
            Disposition::Mapped(_) => assert!(
                mapped || noted || refused,
                "{text:?}: mapped, yet it changed nothing and has no note"
            ),
            Disposition::Refused(_) => assert!(
                refused || !conf.enabled(name),
                "{text:?}: should be refused"
            ),
            Disposition::Logged(_) | Disposition::Ignored => {
                assert!(noted, "{text:?}: no note names it: {:?}", t.notes)
            }
        }
        if !t.problems.is_empty() {
            assert!(refused, "{text:?}: {}", show_problems(&t.problems));
        }
    }
}

#[test]
fn mapped_options_name_real_keys() {
    let keys = toml::Value::try_from(Config::default()).unwrap();
    let re = regex::Regex::new(
        r"\b(database|listen|limits|scan|policy|sandbox|log|service|virus-event)\.([a-z0-9-]+)\b",
    )
    .unwrap();
    for option in OPTIONS {
        if let Disposition::Mapped(text) = option.disposition {
            for m in re.captures_iter(text) {
                let (table, key) = (&m[1], &m[2]);
                assert!(
                    keys.get(table).and_then(|t| t.get(key)).is_some(),
                    "{}: {table}.{key} is not a clamsentry key",
                    option.shown()
                );
            }
        }
    }
}

#[test]
fn names_are_unique_and_clamd_1_4_options_are_all_here() {
    let mut seen = std::collections::BTreeSet::new();
    for o in OPTIONS {
        assert!(seen.insert(o.shown()), "{} twice", o.shown());
    }
    let named = OPTIONS.iter().filter(|o| o.name().is_some()).count();
    assert_eq!(named, 147, "the named OPT_CLAMD options of rel/1.4");
    assert_eq!(OPTIONS.len(), 156);
    // What the real clamconf generates (every non-hidden, non-deprecated
    // option of clamd) must be here.
    if let Ok(out) = std::process::Command::new("clamconf")
        .arg("--generate-config=clamd.conf")
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut n = 0;
        for line in text.lines().filter(|l| !l.starts_with("# ")) {
            let l = line.strip_prefix('#').unwrap_or(line);
            let Some((name, _)) = l.split_once(' ') else {
                continue;
            };
            if name.len() > 1
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric())
            {
                assert!(table::by_name(name).is_some(), "clamconf knows {name}");
                n += 1;
            }
        }
        assert!(n >= 131, "only {n} options found in clamconf's output");
    }
    // And every option the sample shows.
    if let Ok(sample) =
        std::fs::read_to_string("/usr/share/doc/clamav-daemon/examples/clamd.conf.sample")
    {
        for line in sample.lines() {
            let l = line.strip_prefix('#').unwrap_or(line);
            let name = l.split(' ').next().unwrap_or("");
            if l.contains(' ')
                && !line.starts_with("# ")
                && name.len() > 2
                && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric())
                && name != "Example"
            {
                let o = table::by_name(name).unwrap_or_else(|| panic!("sample option {name}"));
                assert!(o.1.sample().is_some(), "{name} is in the sample");
            }
        }
    }
}

/// Debian 12's /etc/clamav/clamd.conf as clamav-daemon's postinst writes it.
const DEBIAN: &str = "#Automatically Generated by clamav-daemon postinst
#To reconfigure clamd run #dpkg-reconfigure clamav-daemon
#Please read /usr/share/doc/clamav-daemon/README.Debian.gz for details
LocalSocket /var/run/clamav/clamd.ctl
FixStaleSocket true
LocalSocketGroup clamav
LocalSocketMode 666
# TemporaryDirectory is not set to its default /tmp here to make overriding
# the default with environment variables TMPDIR/TMP/TEMP possible
User clamav
ScanMail true
ScanArchive true
ArchiveBlockEncrypted false
MaxDirectoryRecursion 15
FollowDirectorySymlinks false
FollowFileSymlinks false
ReadTimeout 180
MaxThreads 12
MaxConnectionQueueLength 15
LogSyslog false
LogRotate true
LogFacility LOG_LOCAL6
LogClean false
LogVerbose false
PreludeEnable no
PreludeAnalyzerName ClamAV
DatabaseDirectory /var/lib/clamav
OfficialDatabaseOnly false
SelfCheck 3600
Foreground false
Debug false
ScanPE true
MaxEmbeddedPE 10M
ScanOLE2 true
ScanPDF true
ScanHTML true
MaxHTMLNormalize 10M
MaxHTMLNoTags 2M
MaxScriptNormalize 5M
MaxZipTypeRcg 1M
ScanSWF true
ExitOnOOM false
LeaveTemporaryFiles false
AlgorithmicDetection true
ScanELF true
IdleTimeout 30
CrossFilesystems true
PhishingSignatures true
PhishingScanURLs true
PhishingAlwaysBlockSSLMismatch false
PhishingAlwaysBlockCloak false
PartitionIntersection false
DetectPUA false
ScanPartialMessages false
HeuristicScanPrecedence false
StructuredDataDetection false
CommandReadTimeout 30
SendBufTimeout 200
MaxQueue 100
ExtendedDetectionInfo true
OLE2BlockMacros false
AllowAllMatchScan true
ForceToDisk false
DisableCertCheck false
DisableCache false
MaxScanTime 120000
MaxScanSize 100M
MaxFileSize 25M
MaxRecursion 16
MaxFiles 10000
MaxPartitions 50
MaxIconsPE 100
PCREMatchLimit 10000
PCRERecMatchLimit 5000
PCREMaxFileSize 25M
ScanXMLDOCS true
ScanHWP3 true
MaxRecHWP3 16
StreamMaxLength 25M
LogFile /var/log/clamav/clamav.log
LogTime true
LogFileUnlock false
LogFileMaxSize 0
Bytecode true
BytecodeSecurity TrustSigned
BytecodeTimeout 60000
OnAccessMaxFileSize 5M
";

#[test]
fn debians_clamd_conf_translates() {
    let t = ok(DEBIAN);
    let c = &t.config;
    assert_eq!(
        c.listen.unix.as_deref(),
        Some(Path::new("/var/run/clamav/clamd.ctl"))
    );
    assert_eq!(c.listen.unix_mode.to_string(), "0666");
    assert_eq!(c.listen.unix_group, "clamav");
    assert_eq!(c.listen.unix_owner, "clamav");
    assert_eq!(c.sandbox.user, "clamav");
    assert!(c.listen.tcp.is_empty());
    assert_eq!(c.listen.backlog, 15);
    assert_eq!(c.limits.read_timeout, 180);
    assert_eq!(c.limits.idle_timeout, 180);
    assert_eq!(c.limits.max_threads, 12);
    assert_eq!(c.limits.send_timeout, 200);
    assert_eq!(c.limits.stream_max_length, ByteSize(25 << 20));
    assert_eq!(c.database.self_check, 3600);
    assert_eq!(c.scan.max_file_size, ByteSize(25 << 20));
    assert_eq!(c.scan.max_scan_size, ByteSize(100 << 20));
    assert_eq!(c.scan.max_recursion, 16);
    assert_eq!(c.scan.max_embedded_pe, ByteSize(10 << 20));
    assert_eq!(c.scan.max_html_no_tags, ByteSize(2 << 20));
    assert_eq!(c.scan.pcre_match_limit, 10_000);
    assert_eq!(c.scan.pcre_recmatch_limit, 5_000);
    assert_eq!(c.scan.bytecode_timeout, 60_000);
    assert!(c.scan.heuristic_alerts && !c.scan.alert_encrypted && !c.log.clean);
    assert_eq!(c.log.target, LogTarget::Auto);
    assert!(!t.foreground);
    // The weakening line is a warning; LogFile is named.
    let warn: Vec<_> = t
        .notes
        .iter()
        .filter(|n| n.level == NoteLevel::Warn)
        .collect();
    assert_eq!(warn.len(), 1, "{warn:?}");
    assert_eq!(warn[0].option, "LocalSocketMode");
    assert!(warn[0].message.contains("every local user"), "{}", warn[0]);
    assert!(t
        .notes
        .iter()
        .any(|n| n.option == "LogFile" && n.message.contains("writes no log file")));
    assert!(t.notes.iter().any(|n| n.option == "IdleTimeout"));
    assert!(
        t.notes
            .iter()
            .any(|n| n.option == "ConcurrentDatabaseReload")
            || !read(DEBIAN).unwrap().is_set("ConcurrentDatabaseReload")
    );
}

#[test]
fn the_live_debian_file_translates_if_installed() {
    let Ok(text) = std::fs::read_to_string("/etc/clamav/clamd.conf") else {
        return;
    };
    let t = read(&text).unwrap().translate(&Env::system());
    assert!(t.problems.is_empty(), "{}", show_problems(&t.problems));
}

/// The clamd.conf ClamAV's own tests write (`unit_tests/clamd_test.py` on
/// rel/1.4), indentation included, and the lines later tests add.
fn clamav_test_conf(extra: &str) -> String {
    format!(
        "
            Foreground yes
            PidFile /tmp/clamav-tests/clamd-test.pid
            DatabaseDirectory /tmp/clamav-tests/database
            LogFileMaxSize 0
            LogTime yes
            #Debug yes
            LogClean yes
            LogVerbose yes
            ExitOnOOM yes
            DetectPUA yes
            ScanPDF yes
            CommandReadTimeout 1
            MaxQueue 800
            MaxConnectionQueueLength 1024
            {extra}
                LocalSocket clamd-test.socket
                TCPSocket 3319
                TCPAddr localhost
                "
    )
}

#[test]
fn clamavs_own_test_configurations_are_read_unchanged() {
    let t = ok(&clamav_test_conf(""));
    let c = &t.config;
    assert!(t.foreground);
    assert_eq!(
        c.service.pid_file(),
        Some(Path::new("/tmp/clamav-tests/clamd-test.pid"))
    );
    assert_eq!(
        c.database.directory,
        PathBuf::from("/tmp/clamav-tests/database")
    );
    assert!(c.log.clean && c.scan.detect_pua && c.scan.scan_pdf);
    assert_eq!(c.limits.command_read_timeout, 1);
    assert_eq!(c.limits.max_queue, 800);
    assert_eq!(c.listen.backlog, 1024);
    assert_eq!(
        c.listen.unix.as_deref(),
        Some(Path::new("/work/dir/clamd-test.socket")),
        "relative to the working directory, as clamd binds it"
    );
    assert_eq!(c.listen.tcp, vec!["127.0.0.1:3319".parse().unwrap()]);
    assert_eq!(c.log.level, LogLevel::Info, "#Debug yes is a comment");
    // The variants later tests append.
    let t = ok(&clamav_test_conf("HeuristicScanPrecedence yes"));
    assert!(t.config.scan.heuristic_scan_precedence);
    let t = ok(&clamav_test_conf(
        "VirusEvent /src/unit_tests/input/virusaction-test.sh /tmp/clamav-tests \"Virus found: %v\"",
    ));
    assert_eq!(
        t.config.virus_event.command,
        "/src/unit_tests/input/virusaction-test.sh /tmp/clamav-tests \"Virus found: %v\""
    );
    assert!(t.notes.iter().any(|n| n.option == "VirusEvent"));
    let t = ok(&clamav_test_conf("ExcludePath beta"));
    assert_eq!(t.config.scan.exclude_path, vec!["beta".to_string()]);
    let t = ok(&clamav_test_conf(
        "MaxFileSize 500\nMaxScanSize 500\nAlertExceedsMax yes",
    ));
    assert_eq!(t.config.scan.max_file_size, ByteSize(500));
    assert_eq!(t.config.scan.max_scan_size, ByteSize(500));
    assert!(t.config.scan.alert_exceeds_max);
    for (v, on) in [("yes", true), ("no", false)] {
        let t = ok(&clamav_test_conf(&format!("ScanOneNote {v}")));
        assert_eq!(t.config.scan.scan_onenote, on);
    }
    // The follow-links variant has only the Unix socket.
    let t = ok(&clamav_test_conf("FollowFileSymlinks yes").replace(
        "                TCPSocket 3319\n                TCPAddr localhost\n",
        "",
    ));
    assert!(t.config.scan.follow_file_symlinks && t.config.listen.tcp.is_empty());
}

#[test]
fn network_tcp_listeners_are_refused_with_what_to_do() {
    let m = refused("TCPSocket 3310\n");
    assert!(
        m.starts_with("clamd.conf:1: TCPSocket: without TCPAddr binds every address"),
        "{m}"
    );
    assert!(
        m.contains("TCPAddr 127.0.0.1") && m.contains("listen.tcp-allow"),
        "{m}"
    );
    let m = refused("TCPSocket 3310\nTCPAddr 127.0.0.1\nTCPAddr 0.0.0.0\n");
    assert!(
        m.starts_with("clamd.conf:2: TCPAddr: binds 0.0.0.0:3310"),
        "{m}"
    );
    assert!(refused("TCPSocket 3310\nTCPAddr all\n").contains("TCPAddr"));
    assert!(refused("TCPSocket 3310\nTCPAddr mail.example\n").contains("192.0.2.1"));
    let t = ok("TCPSocket 3310\nTCPAddr 127.0.0.1\nTCPAddr ::1\nTCPAddr localhost\n");
    assert_eq!(
        t.config.listen.tcp,
        ["127.0.0.1:3310", "[::1]:3310"].map(|a| a.parse().unwrap())
    );
    let note = t.notes.iter().find(|n| n.option == "TCPSocket").unwrap();
    assert!(note.message.contains("policy.tcp.commands"), "{note}");
    assert!(ok("TCPAddr 127.0.0.1\n").config.listen.tcp.is_empty());
    assert!(refused("TCPSocket 70000\nTCPAddr 127.0.0.1\n").contains("not a TCP port"));
}

#[test]
fn the_unix_socket_mode_is_honoured_and_weakening_noted() {
    let mode = |m: &str| ok(&format!("LocalSocket /s\nLocalSocketMode {m}\n"));
    assert_eq!(mode("660").config.listen.unix_mode.to_string(), "0660");
    let t = mode("0666");
    assert_eq!(t.config.listen.unix_mode.to_string(), "0666");
    assert!(t
        .notes
        .iter()
        .any(|n| n.level == NoteLevel::Warn && n.option == "LocalSocketMode"));
    assert_eq!(
        mode("777").config.listen.unix_mode.to_string(),
        "0666",
        "clamd masks with 0666"
    );
    assert!(
        refused("LocalSocket /s\nLocalSocketMode 6x6\n").contains("Invalid LocalSocketMode 6x6")
    );
    // Without LocalSocketMode clamsentry keeps 0660 and says so.
    let t = ok("LocalSocket /s\n");
    assert_eq!(t.config.listen.unix_mode.to_string(), "0660");
    assert!(t
        .notes
        .iter()
        .any(|n| n.message.contains("not clamd's 0666")));
    // Without LocalSocket there is no Unix socket, as in clamd.
    assert_eq!(ok("MaxThreads 2\n").config.unix_path(), None);
}

#[test]
fn limits_and_validation_name_the_clamd_option() {
    let t = ok("StreamMaxLength 1G\n");
    assert_eq!(t.config.limits.stream_max_length, ByteSize(1 << 30));
    // One stream of the full length, plus the 1 MiB base lease each of the
    // other 15 workers keeps.
    assert_eq!(
        t.config.limits.stream_memory,
        ByteSize((1 << 30) + (15 << 20))
    );
    assert!(refused("StreamMaxLength 0\n").contains("StreamMaxLength: no limit"));
    assert_eq!(
        refused("LocalSocket /s\nMaxThreads 0\n"),
        "clamd.conf:2: MaxThreads: must be between 1 and 1024, not 0 (as clamsentry's limits.max-threads)"
    );
    assert!(
        refused("ForceToDisk yes\n").contains("ForceToDisk: clamsentry scans streams from memory")
    );
    ok("ForceToDisk no\n");
    assert!(refused("FailIfCvdOlderThan 7\n").contains("FailIfCvdOlderThan"));
    assert!(refused("User root\n").contains("never run as root"));
    assert!(refused("User nosuchuser\n").contains("no user \"nosuchuser\""));
    assert!(refused("StreamMinPort 10\n").contains("Invalid StreamMinPort/StreamMaxPort: 10, 2048"));
    assert!(refused("Bytecode yes\nBytecodeSecurity trustsigned\n")
        .contains("Unable to parse bytecode security"));
    assert_eq!(
        ok("BytecodeMode forcejit\n").config.scan.bytecode_mode,
        BytecodeMode::Auto
    );
    assert_eq!(
        ok("BytecodeMode ForceInterpreter\n")
            .config
            .scan
            .bytecode_mode,
        BytecodeMode::ForceInterpreter
    );
    let m = refused("DetectPUA yes\nExcludePUA NetTool\nIncludePUA Spy\n");
    assert!(m.contains("ExcludePUA and IncludePUA"), "{m}");
    let t = ok("ExcludePUA NetTool\nIncludePUA Spy\n");
    assert!(t.config.scan.exclude_pua.is_empty());
    let t = ok("DetectPUA yes\nExcludePUA NetTool\nExcludePUA PWTool\n");
    assert_eq!(t.config.scan.exclude_pua, vec!["NetTool", "PWTool"]);
}

#[test]
fn older_option_names_combine_as_in_clamd() {
    assert!(
        !ok("AlgorithmicDetection no\nHeuristicAlerts yes\n")
            .config
            .scan
            .heuristic_alerts
    );
    assert!(
        ok("AlgorithmicDetection yes\n")
            .config
            .scan
            .heuristic_alerts
    );
    assert!(
        ok("BlockMax yes\nAlertExceedsMax no\n")
            .config
            .scan
            .alert_exceeds_max
    );
    assert!(ok("OLE2BlockMacros yes\n").config.scan.alert_ole2_macros);
    assert!(
        ok("ArchiveBlockEncrypted yes\n")
            .config
            .scan
            .alert_encrypted
    );
    let t = ok("MailFollowURLs yes\n");
    assert!(t.notes[0].message.contains("deprecated"), "{:?}", t.notes);
}

#[test]
fn virus_event_maps_to_its_table() {
    let t = ok("VirusEvent /usr/local/bin/alert %v\nUser clamav\n");
    assert_eq!(t.config.virus_event.command, "/usr/local/bin/alert %v");
    assert_eq!(
        t.config.virus_event.user, "clamsentry-event",
        "not as User, the workers' user: as a user of its own"
    );
    assert_eq!(t.config.sandbox.user, "clamav");
    assert_eq!(t.sources["virus-event.command"], vec![Origin::Line(1)]);
}

#[test]
fn the_command_line_comes_first_and_wins() {
    let mut c = ClamdConf::new("");
    let operands = c
        .read_args(&[
            "-c".into(),
            "/etc/x.conf".into(),
            "--foreground".into(),
            "--datadir=/db".into(),
            "--max-scansize".into(),
            "1M".into(),
            "-V".into(),
            "file".into(),
        ])
        .unwrap();
    assert_eq!(operands, vec!["file"]);
    assert_eq!(c.config_file(), PathBuf::from("/etc/x.conf"));
    c.read_text(b"Foreground no\nDatabaseDirectory /other\nMaxScanSize 5M\n")
        .unwrap();
    assert!(c.enabled("Foreground") && c.enabled("version"));
    assert_eq!(c.database_directory(), PathBuf::from("/db"));
    assert_eq!(c.get("MaxScanSize").num, 1 << 20);
    let mut c = ClamdConf::new("");
    c.read_args(&["-cF".into()]).unwrap();
    assert_eq!(c.config_file(), PathBuf::from("F"));
    let mut c = ClamdConf::new("");
    c.read_args(&[
        "-F".into(),
        "--config-file".into(),
        "/y".into(),
        "--foreground=no".into(),
    ])
    .unwrap();
    assert!(c.enabled("Foreground"), "the first -F wins");
    assert_eq!(c.config_file(), PathBuf::from("/y"));
    let mut c = ClamdConf::new("");
    assert_eq!(
        c.read_args(&["--bogus".into()]).unwrap_err().to_string(),
        "command line: unrecognized option '--bogus'"
    );
    assert!(c.read_args(&["-c".into()]).is_err());
}

#[test]
fn converted_toml_reads_back_to_the_same_configuration() {
    for text in [
        DEBIAN.to_string(),
        clamav_test_conf("VirusEvent /x.sh \"found: %v\"\nExcludePath ^/proc/\nExcludePath ^/sys/"),
        "LocalSocket /s\nUser clamav\nStreamMaxLength 1G\n".to_string(),
        String::new(),
        "TCPSocket 3310\nTCPAddr 127.0.0.1\n".to_string(),
        // Control characters end up in comments escaped.
        "MaxQueue 800\0junk\nLogFile /x\r\x01\nVirusEvent a\x7fb\n".to_string(),
    ] {
        let t = ok(&text);
        let toml = t.to_commented_toml("clamd.conf").unwrap();
        let back = Config::parse(&toml, "converted").unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(back, t.config, "{toml}");
        // Every line of the file is in a comment.
        for (origin, line) in t.lines() {
            if let Origin::Line(n) = origin {
                let line = printable(line);
                assert!(
                    toml.contains(&format!("# line {n}: {line}")),
                    "line {n} missing:\n{toml}"
                );
            }
        }
    }
    let t = ok(DEBIAN);
    let toml = t.to_commented_toml("/etc/clamav/clamd.conf").unwrap();
    assert!(toml.contains("# line 7: LocalSocketMode 666\n#   LocalSocketMode: 0666 lets every local user connect"), "{toml}");
    assert!(toml.contains("unix-mode = \"0666\""), "{toml}");
    // A refused line is a comment saying so, and the rest still reads back.
    let t = translate("LocalSocket /s\nTCPSocket 3310\n");
    let toml = t.to_commented_toml("clamd.conf").unwrap();
    assert!(toml.contains("REFUSED: TCPSocket"), "{toml}");
    Config::parse(&toml, "converted").unwrap();
}

#[test]
fn clamd_conf_is_recognised_when_given_as_toml() {
    assert!(looks_like_clamd_conf("# comment\nLocalSocket /x\n"));
    assert!(looks_like_clamd_conf("Example\n"));
    assert!(!looks_like_clamd_conf("[listen]\nunix = \"/x\"\n"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clamd.conf");
    std::fs::write(&p, "LocalSocket /x\n").unwrap();
    let err = Config::load(Some(&p)).unwrap_err().to_string();
    assert!(
        err.contains("this looks like a clamd.conf: read it with --clamd-conf"),
        "{err}"
    );
}

#[test]
fn docs_table_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/clamd-conf.md");
    let want = table::markdown();
    if std::env::var_os("CLAMSENTRY_UPDATE_DOCS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/clamd-conf.md is stale: run CLAMSENTRY_UPDATE_DOCS=1 cargo test --lib docs_table_is_current"
    );
}
