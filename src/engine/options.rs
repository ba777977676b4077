//! Translating configuration into libclamav's numeric settings and scan
//! option bits, the way clamd translates clamd.conf (`clamd/server-th.c`).

use std::path::PathBuf;

use clamav_sys as sys;
use sys::cl_engine_field as F;

use crate::config::{BytecodeMode, BytecodeSecurity, Config, ScanConfig};

/// The scan option bits of `struct cl_scan_options`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanFlags {
    pub general: u32,
    pub parse: u32,
    pub heuristic: u32,
    pub mail: u32,
}

impl ScanFlags {
    pub(super) fn to_options(self, allmatch: bool) -> sys::cl_scan_options {
        let mut general = self.general;
        if allmatch {
            general |= sys::CL_SCAN_GENERAL_ALLMATCHES;
        }
        sys::cl_scan_options {
            general,
            parse: self.parse,
            heuristic: self.heuristic,
            mail: self.mail,
            dev: 0,
        }
    }

    pub fn from_scan_config(s: &ScanConfig) -> ScanFlags {
        let bit = |on: bool, b: u32| if on { b } else { 0 };
        let executables = s.scan_pe || s.scan_elf;
        ScanFlags {
            general: bit(s.heuristic_alerts, sys::CL_SCAN_GENERAL_HEURISTICS)
                | bit(
                    s.heuristic_scan_precedence,
                    sys::CL_SCAN_GENERAL_HEURISTIC_PRECEDENCE,
                ),
            parse: bit(s.scan_archive, sys::CL_SCAN_PARSE_ARCHIVE)
                | bit(s.scan_elf, sys::CL_SCAN_PARSE_ELF)
                | bit(s.scan_pdf, sys::CL_SCAN_PARSE_PDF)
                | bit(s.scan_swf, sys::CL_SCAN_PARSE_SWF)
                | bit(s.scan_hwp3, sys::CL_SCAN_PARSE_HWP3)
                | bit(s.scan_xmldocs, sys::CL_SCAN_PARSE_XMLDOCS)
                | bit(s.scan_mail, sys::CL_SCAN_PARSE_MAIL)
                | bit(s.scan_ole2, sys::CL_SCAN_PARSE_OLE2)
                | bit(s.scan_html, sys::CL_SCAN_PARSE_HTML)
                | bit(s.scan_pe, sys::CL_SCAN_PARSE_PE)
                | bit(s.scan_onenote, sys::CL_SCAN_PARSE_ONENOTE)
                | bit(s.scan_image, sys::CL_SCAN_PARSE_IMAGE)
                | bit(s.scan_image_fuzzy_hash, sys::CL_SCAN_PARSE_IMAGE_FUZZY_HASH),
            heuristic: bit(
                executables && s.alert_broken_executables,
                sys::CL_SCAN_HEURISTIC_BROKEN,
            ) | bit(s.alert_broken_media, sys::CL_SCAN_HEURISTIC_BROKEN_MEDIA)
                | bit(
                    s.alert_encrypted || s.alert_encrypted_archive,
                    sys::CL_SCAN_HEURISTIC_ENCRYPTED_ARCHIVE,
                )
                | bit(
                    s.alert_encrypted || s.alert_encrypted_doc,
                    sys::CL_SCAN_HEURISTIC_ENCRYPTED_DOC,
                )
                | bit(
                    s.scan_ole2 && s.alert_ole2_macros,
                    sys::CL_SCAN_HEURISTIC_MACROS,
                )
                | bit(s.alert_exceeds_max, sys::CL_SCAN_HEURISTIC_EXCEEDS_MAX)
                | bit(
                    s.phishing_scan_urls && s.alert_phishing_ssl_mismatch,
                    sys::CL_SCAN_HEURISTIC_PHISHING_SSL_MISMATCH,
                )
                | bit(
                    s.phishing_scan_urls && s.alert_phishing_cloak,
                    sys::CL_SCAN_HEURISTIC_PHISHING_CLOAK,
                )
                | bit(
                    s.alert_partition_intersection,
                    sys::CL_SCAN_HEURISTIC_PARTITION_INTXN,
                )
                | bit(
                    s.structured_data_detection,
                    sys::CL_SCAN_HEURISTIC_STRUCTURED,
                )
                | bit(
                    s.structured_data_detection && s.structured_cc_only,
                    sys::CL_SCAN_HEURISTIC_STRUCTURED_CC,
                )
                | bit(
                    s.structured_data_detection && s.structured_ssn_format_normal,
                    sys::CL_SCAN_HEURISTIC_STRUCTURED_SSN_NORMAL,
                )
                | bit(
                    s.structured_data_detection && s.structured_ssn_format_stripped,
                    sys::CL_SCAN_HEURISTIC_STRUCTURED_SSN_STRIPPED,
                ),
            mail: bit(
                s.scan_mail && s.scan_partial_messages,
                sys::CL_SCAN_MAIL_PARTIAL_MESSAGE,
            ),
        }
    }
}

// libclamav's `enum bytecode_security` and `enum bytecode_mode` (clamav.h),
// which the bindings do not export.
const BYTECODE_TRUST_SIGNED: i64 = 1;
const BYTECODE_TRUST_NOTHING: i64 = 2;
const BYTECODE_MODE_AUTO: i64 = 0;
const BYTECODE_MODE_JIT: i64 = 1;
const BYTECODE_MODE_INTERPRETER: i64 = 2;
const BYTECODE_MODE_TEST: i64 = 3;

/// Everything an engine needs before it loads signatures.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// `(config key, libclamav field, value)`; the key names the setting in errors.
    pub numbers: Vec<(&'static str, F, i64)>,
    pub temp_dir: Option<PathBuf>,
    /// `CL_ENGINE_PUA_CATEGORIES` (".Cat1.Cat2."), when PUA categories are chosen.
    pub pua_categories: Option<String>,
    pub db_options: u32,
    pub flags: ScanFlags,
}

impl EngineSettings {
    pub fn from_config(c: &Config) -> EngineSettings {
        let s = &c.scan;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let numbers = vec![
            (
                "scan.max-scan-size",
                F::CL_ENGINE_MAX_SCANSIZE,
                n(s.max_scan_size.0),
            ),
            (
                "scan.max-file-size",
                F::CL_ENGINE_MAX_FILESIZE,
                n(s.max_file_size.0),
            ),
            (
                "scan.max-recursion",
                F::CL_ENGINE_MAX_RECURSION,
                i64::from(s.max_recursion),
            ),
            (
                "scan.max-files",
                F::CL_ENGINE_MAX_FILES,
                i64::from(s.max_files),
            ),
            (
                "scan.max-scan-time",
                F::CL_ENGINE_MAX_SCANTIME,
                i64::from(s.max_scan_time),
            ),
            (
                "scan.max-embedded-pe",
                F::CL_ENGINE_MAX_EMBEDDEDPE,
                n(s.max_embedded_pe.0),
            ),
            (
                "scan.max-html-normalize",
                F::CL_ENGINE_MAX_HTMLNORMALIZE,
                n(s.max_html_normalize.0),
            ),
            (
                "scan.max-html-no-tags",
                F::CL_ENGINE_MAX_HTMLNOTAGS,
                n(s.max_html_no_tags.0),
            ),
            (
                "scan.max-script-normalize",
                F::CL_ENGINE_MAX_SCRIPTNORMALIZE,
                n(s.max_script_normalize.0),
            ),
            (
                "scan.max-zip-type-rcg",
                F::CL_ENGINE_MAX_ZIPTYPERCG,
                n(s.max_zip_type_rcg.0),
            ),
            (
                "scan.max-partitions",
                F::CL_ENGINE_MAX_PARTITIONS,
                i64::from(s.max_partitions),
            ),
            (
                "scan.max-icons-pe",
                F::CL_ENGINE_MAX_ICONSPE,
                i64::from(s.max_icons_pe),
            ),
            (
                "scan.max-rec-hwp3",
                F::CL_ENGINE_MAX_RECHWP3,
                i64::from(s.max_rec_hwp3),
            ),
            (
                "scan.pcre-match-limit",
                F::CL_ENGINE_PCRE_MATCH_LIMIT,
                i64::from(s.pcre_match_limit),
            ),
            (
                "scan.pcre-recmatch-limit",
                F::CL_ENGINE_PCRE_RECMATCH_LIMIT,
                i64::from(s.pcre_recmatch_limit),
            ),
            (
                "scan.pcre-max-file-size",
                F::CL_ENGINE_PCRE_MAX_FILESIZE,
                n(s.pcre_max_file_size.0),
            ),
            (
                "scan.bytecode-timeout",
                F::CL_ENGINE_BYTECODE_TIMEOUT,
                i64::from(s.bytecode_timeout),
            ),
            (
                "scan.structured-min-credit-card-count",
                F::CL_ENGINE_MIN_CC_COUNT,
                i64::from(s.structured_min_credit_card_count),
            ),
            (
                "scan.structured-min-ssn-count",
                F::CL_ENGINE_MIN_SSN_COUNT,
                i64::from(s.structured_min_ssn_count),
            ),
            (
                "scan.cache-size",
                F::CL_ENGINE_CACHE_SIZE,
                i64::from(s.cache_size),
            ),
            (
                "scan.bytecode-security",
                F::CL_ENGINE_BYTECODE_SECURITY,
                match s.bytecode_security {
                    BytecodeSecurity::Paranoid => BYTECODE_TRUST_NOTHING,
                    BytecodeSecurity::TrustSigned => BYTECODE_TRUST_SIGNED,
                },
            ),
            (
                "scan.bytecode-mode",
                F::CL_ENGINE_BYTECODE_MODE,
                match s.bytecode_mode {
                    BytecodeMode::ForceJit => BYTECODE_MODE_JIT,
                    BytecodeMode::ForceInterpreter => BYTECODE_MODE_INTERPRETER,
                    BytecodeMode::Test => BYTECODE_MODE_TEST,
                    BytecodeMode::Auto => BYTECODE_MODE_AUTO,
                },
            ),
        ];
        // As clamd: these two are only ever switched on (switching the
        // cache "off" again would allocate it).
        let mut numbers = numbers;
        if s.disable_cache {
            numbers.push(("scan.disable-cache", F::CL_ENGINE_DISABLE_CACHE, 1));
        }
        if s.disable_cert_check {
            numbers.push(("scan.disable-cert-check", F::CL_ENGINE_DISABLE_PE_CERTS, 1));
        }
        let categories = if !s.exclude_pua.is_empty() {
            &s.exclude_pua
        } else {
            &s.include_pua
        };
        let pua_categories =
            (s.detect_pua && !categories.is_empty()).then(|| format!(".{}.", categories.join(".")));
        let bit = |on: bool, b: u32| if on { b } else { 0 };
        let db_options = bit(s.phishing_signatures, sys::CL_DB_PHISHING)
            | bit(s.phishing_scan_urls, sys::CL_DB_PHISHING_URLS)
            | bit(s.detect_pua, sys::CL_DB_PUA)
            | bit(s.bytecode, sys::CL_DB_BYTECODE)
            | bit(
                s.bytecode && s.bytecode_unsigned,
                sys::CL_DB_BYTECODE_UNSIGNED,
            )
            | bit(s.official_database_only, sys::CL_DB_OFFICIAL_ONLY)
            | bit(
                s.detect_pua && !s.exclude_pua.is_empty(),
                sys::CL_DB_PUA_EXCLUDE,
            )
            | bit(
                s.detect_pua && s.exclude_pua.is_empty() && !s.include_pua.is_empty(),
                sys::CL_DB_PUA_INCLUDE,
            );
        EngineSettings {
            numbers,
            temp_dir: Some(s.temporary_directory.clone()),
            pua_categories,
            db_options,
            flags: ScanFlags::from_scan_config(s),
        }
    }
}
