//! The only door to libclamav. Every `unsafe` block of the scanning path lives
//! in this module, each with a `// SAFETY:` comment.
//!
//! An [`Engine`] is loaded and compiled once, then shared read-only by any
//! number of scanning threads (libclamav allows concurrent scans on a
//! compiled engine). A reload builds a new `Engine` next to the old one; the
//! old one is freed when the last scan holding an `Arc` to it finishes.
//!
//! Decisions:
//! * INSTREAM data is scanned straight from memory (`cl_fmap_open_memory` +
//!   `cl_scanmap_callback`): no temporary file, no copy.
//! * Files are scanned through descriptors the caller opened
//!   (`cl_scandesc_callback`), so the caller decides what may be opened.
//! * ALLMATCH results come from the virus-found callback, which libclamav
//!   calls once per match; other scans use the name libclamav returns.
//! * A scan whose client has gone is abandoned at libclamav's next
//!   `pre_cache` or `pre_scan` callback: it makes both for every layer it
//!   scans (the file itself, each archive member, each embedded object),
//!   `pre_cache` before the layer's hash, `pre_scan` after it and before
//!   the pattern match. The callback answers CL_VIRUS, which stops the
//!   scan and keeps it out of libclamav's cache of clean files (libclamav
//!   1.4 `cli_magic_scan` caches a layer only when its verdict is clean,
//!   and `clean_cache_add` adds nothing once the scan has an alert;
//!   CL_BREAK there would mean "clean" and be cached). The detection is
//!   discarded: [`Verdict::Abandoned`]. Within one layer (the pattern match
//!   over a single large file) libclamav makes no callback, so that match
//!   finishes first. Nothing stops it sooner without a risk to the cache:
//!   a read that fails, or `CL_ENGINE_MAX_SCANTIME`, ends the match early
//!   but libclamav then calls the layer clean and caches it under the hash
//!   it took before (one client could make a virus answer OK for others).
#![allow(unsafe_code)]

mod options;

pub use options::{EngineSettings, ScanFlags};

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use clamav_sys as sys;

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("libclamav failed to initialise: {0}")]
    Init(String),
    #[error("libclamav could not allocate a new engine (out of memory?)")]
    Alloc,
    #[error("cannot load signatures from {dir}: {reason}. Check that the directory exists, is readable, and holds valid .cvd/.cld/.hdb/.ndb/.ldb files (freshclam fills it)")]
    Load { dir: String, reason: String },
    #[error("no signatures found in {dir}: run freshclam, or put signature files there")]
    Empty { dir: String },
    #[error("cannot compile the signature database: {0}")]
    Compile(String),
    #[error("invalid engine setting {name}: {reason}")]
    Setting { name: &'static str, reason: String },
}

/// Facts about a loaded engine, for VERSION, STATS and logs.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// Number of signatures loaded.
    pub signatures: u32,
    /// Database version from the daily/main headers; 0 when none was loaded.
    pub db_version: u32,
    /// Database build time (seconds since the epoch); 0 when unknown.
    pub db_time: u64,
}

/// How far a load has got, for status lines and start-up timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    pub phase: LoadPhase,
    /// Items done so far (libclamav's own unit: signatures while loading,
    /// a rough estimate of work while compiling).
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPhase {
    Loading,
    Compiling,
}

impl LoadProgress {
    /// Percent done, 0..=100 (the engine holder's numbers: whatever they
    /// are, no overflow; u128 holds any product of two u64s and 100).
    pub fn percent(&self) -> u64 {
        (u128::from(self.done.min(self.total)) * 100)
            .checked_div(u128::from(self.total))
            .map_or(0, |p| p as u64)
    }
}

/// Receives [`LoadProgress`] reports, on the loading thread, while
/// [`Engine::load_with_progress`] runs.
pub type ProgressFn<'a> = dyn FnMut(LoadProgress) + 'a;

/// The outcome of one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// One name, or every name with ALLMATCH.
    Found(Vec<String>),
    /// libclamav's own message for the error (`cl_strerror`).
    Error {
        code: u32,
        message: String,
    },
    /// The client went away and the scan was stopped before its end: no
    /// verdict (nothing was found, nothing may be said to be clean).
    Abandoned,
}

impl Verdict {
    /// libclamav could not open the file because of its permissions.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, Verdict::Error { code, .. } if *code == sys::cl_error_t::CL_EACCES.0)
    }

    /// What kind of error a scan ended in (the metrics' reasons).
    pub fn error_kind(&self) -> Option<ScanErrorKind> {
        use sys::cl_error_t as e;
        let Verdict::Error { code, .. } = self else {
            return None;
        };
        let c = *code;
        let is = |list: &[sys::cl_error_t]| list.iter().any(|x| x.0 == c);
        Some(if is(&[e::CL_EACCES]) {
            ScanErrorKind::Access
        } else if is(&[e::CL_ETMPDIR, e::CL_ETMPFILE]) {
            ScanErrorKind::TemporaryDirectory
        } else if is(&[
            e::CL_EOPEN,
            e::CL_ECREAT,
            e::CL_EUNLINK,
            e::CL_ESTAT,
            e::CL_EREAD,
            e::CL_ESEEK,
            e::CL_EWRITE,
            e::CL_EDUP,
            e::CL_EMAP,
        ]) {
            ScanErrorKind::Io
        } else if is(&[e::CL_EMEM]) {
            ScanErrorKind::Memory
        } else if is(&[e::CL_EFORMAT, e::CL_EPARSE, e::CL_EUNPACK]) {
            ScanErrorKind::Format
        } else if is(&[e::CL_ETIMEOUT]) {
            ScanErrorKind::MaxScanTime
        } else if is(&[e::CL_EMAXREC]) {
            ScanErrorKind::MaxRecursion
        } else if is(&[e::CL_EMAXSIZE]) {
            ScanErrorKind::MaxScanSize
        } else if is(&[e::CL_EMAXFILES]) {
            ScanErrorKind::MaxFiles
        } else if is(&[e::CL_EBYTECODE, e::CL_EBYTECODE_TESTFAIL]) {
            ScanErrorKind::Bytecode
        } else {
            ScanErrorKind::Other
        })
    }

    /// The scan failed because the temporary directory was unusable.
    pub fn is_temp_failure(&self) -> bool {
        matches!(self, Verdict::Error { code, .. } if [
            sys::cl_error_t::CL_ETMPDIR.0,
            sys::cl_error_t::CL_ETMPFILE.0,
            sys::cl_error_t::CL_EWRITE.0,
        ]
        .contains(code))
    }

    /// The verdict for a scan written off for running past
    /// `scan.max-scan-time` (libclamav did not stop it): what libclamav
    /// itself reports when it stops a scan at its time limit —
    /// `Heuristics.Limits.Exceeded.MaxScanTime` with
    /// `scan.alert-exceeds-max`, else its error for the limit (`Exceeded
    /// time limit`; clamd 1.4.6 turns a stopped scan into `OK` instead,
    /// which would be a clean verdict for a file nobody scanned).
    pub fn time_limit(alert_exceeds_max: bool) -> Verdict {
        if alert_exceeds_max {
            Verdict::Found(vec!["Heuristics.Limits.Exceeded.MaxScanTime".into()])
        } else {
            let code = sys::cl_error_t::CL_ETIMEOUT.0;
            Verdict::Error {
                code,
                message: strerror(code),
            }
        }
    }
}

/// Kinds of libclamav scan errors (`cl_error_t`), by what an operator
/// would do about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanErrorKind {
    Io,
    Access,
    TemporaryDirectory,
    Memory,
    Format,
    /// `scan.max-scan-time` (CL_ETIMEOUT).
    MaxScanTime,
    /// `scan.max-recursion` (CL_EMAXREC).
    MaxRecursion,
    /// `scan.max-scan-size` (CL_EMAXSIZE).
    MaxScanSize,
    /// `scan.max-files` (CL_EMAXFILES).
    MaxFiles,
    Bytecode,
    Other,
}

static INIT: OnceLock<u32> = OnceLock::new();

/// Initialises libclamav once per process and routes its messages to our log.
pub fn init() -> Result<(), EngineError> {
    let code = *INIT.get_or_init(|| {
        // SAFETY: cl_init and cl_set_clcb_msg run once (guarded by OnceLock)
        // before any other libclamav function is used; on_message is a plain
        // function that lives for the whole program.
        unsafe {
            sys::cl_set_clcb_msg(Some(on_message));
            sys::cl_init(sys::CL_INIT_DEFAULT).0
        }
    });
    if code == sys::cl_error_t::CL_SUCCESS.0 {
        Ok(())
    } else {
        Err(EngineError::Init(strerror(code)))
    }
}

/// libclamav's version string, e.g. `1.4.6`.
pub fn version() -> String {
    // SAFETY: cl_retver returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::cl_retver()) }
        .to_string_lossy()
        .into_owned()
}

/// The version and build time (seconds since the epoch) in the header of a
/// signature container (`daily.cvd`, `daily.cld`), read as libclamav's
/// `cl_cvdhead` reads it: the first 512 bytes up to the first line end,
/// trailing blanks cut, parsed by `cl_cvdparse`. `None` when the file is
/// missing, unreadable, not a container, or not a regular file (never a
/// link, FIFO or device: `clamd -V` runs as root in freshclam's directory;
/// see [`crate::safe_fs::open_regular`]).
pub fn cvd_head(path: &Path) -> Option<(u32, u64)> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    crate::safe_fs::open_regular(path)
        .ok()?
        .take(512)
        .read_to_end(&mut head)
        .ok()?;
    if head.is_empty() {
        return None;
    }
    if let Some(end) = head
        .iter()
        .position(|&b| b == 0 || b == b'\n' || b == b'\r')
    {
        head.truncate(end);
    }
    while head.len() > 1 && head.last() == Some(&b' ') {
        head.pop();
    }
    let c = CString::new(head).ok()?;
    // SAFETY: `c` is a valid C string that outlives the call; cl_cvdparse
    // returns NULL or a struct it allocated, which cl_cvdfree releases after
    // the two plain fields are copied out.
    unsafe {
        let cvd = sys::cl_cvdparse(c.as_ptr());
        if cvd.is_null() {
            return None;
        }
        let found = ((*cvd).version, u64::from((*cvd).stime));
        sys::cl_cvdfree(cvd);
        Some(found)
    }
}

/// libclamav's message for an error code.
pub fn strerror(code: u32) -> String {
    // SAFETY: cl_strerror returns a pointer to a static NUL-terminated string
    // for any code, known or not.
    unsafe { CStr::from_ptr(sys::cl_strerror(sys::cl_error_t(code))) }
        .to_string_lossy()
        .into_owned()
}

/// A compiled, immutable libclamav engine.
pub struct Engine {
    raw: NonNull<sys::cl_engine>,
    flags: ScanFlags,
    info: EngineInfo,
    /// Freed on drop (see [`Engine::keep_until_exit`]).
    free_on_drop: bool,
}

// SAFETY: a compiled cl_engine is documented as safe to share between threads
// for scanning; it is only mutated before compile (in `load`) and freed once
// in Drop, when no other reference exists.
unsafe impl Send for Engine {}
// SAFETY: see Send; scanning functions take `const struct cl_engine *`.
unsafe impl Sync for Engine {}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.free_on_drop {
            return;
        }
        // SAFETY: `raw` came from cl_engine_new and is freed exactly once here;
        // no scan can be running because scans borrow `&self`.
        unsafe {
            sys::cl_engine_free(self.raw.as_ptr());
        }
    }
}

impl Engine {
    /// The engine is never freed: the process exits with it. For the engine
    /// holder and the workers it forks, which share the compiled engine's
    /// pages copy-on-write: `cl_engine_free` writes to those pages, so each
    /// exiting process would first copy them — a reload's old generation
    /// would briefly double its memory, and exit slower — while the kernel
    /// frees them anyway.
    pub fn keep_until_exit(&mut self) {
        self.free_on_drop = false;
    }

    /// Loads every signature file in `dir`, applies the limits, compiles.
    pub fn load(dir: &Path, settings: &EngineSettings) -> Result<Engine, EngineError> {
        Engine::load_with_progress(dir, settings, &mut |_| {})
    }

    /// Like [`load`](Self::load), reporting progress to `progress` while
    /// libclamav loads and compiles (systemd status and start-up timeouts).
    pub fn load_with_progress(
        dir: &Path,
        settings: &EngineSettings,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Engine, EngineError> {
        init()?;
        // SAFETY: cl_init succeeded; cl_engine_new returns NULL or a fresh engine.
        let raw = NonNull::new(unsafe { sys::cl_engine_new() }).ok_or(EngineError::Alloc)?;
        let mut engine = Engine {
            raw,
            flags: settings.flags,
            info: EngineInfo {
                signatures: 0,
                db_version: 0,
                db_time: 0,
            },
            free_on_drop: true,
        };
        engine.apply(settings)?;
        let mut reporter = Reporter { progress };
        // From here on `reporter` is reached only through `ctx`.
        let ctx = (&mut reporter as *mut Reporter<'_, '_>).cast::<c_void>();
        // SAFETY: `reporter` outlives every call that may invoke the
        // callbacks (cl_load and cl_engine_compile below, on this thread);
        // the callbacks are removed again before `reporter` goes away.
        unsafe {
            sys::cl_engine_set_clcb_sigload_progress(engine.raw.as_ptr(), Some(on_load), ctx);
            sys::cl_engine_set_clcb_engine_compile_progress(
                engine.raw.as_ptr(),
                Some(on_compile),
                ctx,
            );
        }
        let loaded = engine.load_dir(dir, settings.db_options);
        let rc = if loaded.is_ok() {
            // SAFETY: the engine is fully configured and loaded, and not
            // shared yet.
            unsafe { sys::cl_engine_compile(engine.raw.as_ptr()) }
        } else {
            sys::cl_error_t::CL_SUCCESS
        };
        // SAFETY: removes the callbacks installed above, so libclamav keeps
        // no pointer to `reporter`; the engine is not shared yet.
        unsafe {
            sys::cl_engine_set_clcb_sigload_progress(
                engine.raw.as_ptr(),
                None,
                std::ptr::null_mut(),
            );
            sys::cl_engine_set_clcb_engine_compile_progress(
                engine.raw.as_ptr(),
                None,
                std::ptr::null_mut(),
            );
        }
        loaded?;
        if rc != sys::cl_error_t::CL_SUCCESS {
            return Err(EngineError::Compile(strerror(rc.0)));
        }
        engine.info.db_version = engine.get_num(sys::cl_engine_field::CL_ENGINE_DB_VERSION) as u32;
        engine.info.db_time = engine.get_num(sys::cl_engine_field::CL_ENGINE_DB_TIME);
        Ok(engine)
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Points the engine's temporary files at `dir`. Used by a worker on its
    /// own copy of the engine, right after it was forked and before any scan
    /// (libclamav reads the setting at the start of each scan).
    pub fn set_temp_dir(&mut self, dir: &Path) -> Result<(), EngineError> {
        let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| EngineError::Setting {
            name: "temporary-directory",
            reason: "contains a NUL byte".into(),
        })?;
        // SAFETY: `&mut self` means no scan uses this engine now; libclamav
        // copies the string (into the engine's pool); `c` outlives the call.
        let rc = unsafe {
            sys::cl_engine_set_str(
                self.raw.as_ptr(),
                sys::cl_engine_field::CL_ENGINE_TMPDIR,
                c.as_ptr(),
            )
        };
        if rc != sys::cl_error_t::CL_SUCCESS {
            return Err(EngineError::Setting {
                name: "temporary-directory",
                reason: strerror(rc.0),
            });
        }
        Ok(())
    }

    fn apply(&mut self, settings: &EngineSettings) -> Result<(), EngineError> {
        for &(name, field, value) in &settings.numbers {
            // SAFETY: the engine is not compiled nor shared; field is a valid
            // cl_engine_field taken from the bindings.
            let rc = unsafe { sys::cl_engine_set_num(self.raw.as_ptr(), field, value) };
            if rc != sys::cl_error_t::CL_SUCCESS {
                return Err(EngineError::Setting {
                    name,
                    reason: strerror(rc.0),
                });
            }
        }
        if let Some(tmp) = &settings.temp_dir {
            self.set_str(
                "temporary-directory",
                sys::cl_engine_field::CL_ENGINE_TMPDIR,
                tmp.as_os_str().as_bytes(),
            )?;
        }
        if let Some(categories) = &settings.pua_categories {
            self.set_str(
                "scan.exclude-pua/include-pua",
                sys::cl_engine_field::CL_ENGINE_PUA_CATEGORIES,
                categories.as_bytes(),
            )?;
        }
        // SAFETY: installs plain function pointers; the engine is not shared.
        unsafe {
            sys::cl_engine_set_clcb_virus_found(self.raw.as_ptr(), Some(on_virus_found));
            sys::cl_engine_set_clcb_pre_cache(self.raw.as_ptr(), Some(on_layer));
            sys::cl_engine_set_clcb_pre_scan(self.raw.as_ptr(), Some(on_layer));
        }
        Ok(())
    }

    fn set_str(
        &mut self,
        name: &'static str,
        field: sys::cl_engine_field,
        value: &[u8],
    ) -> Result<(), EngineError> {
        let c = CString::new(value).map_err(|_| EngineError::Setting {
            name,
            reason: "contains a NUL byte".into(),
        })?;
        // SAFETY: libclamav copies the string; `c` outlives the call; the
        // engine is not compiled nor shared; field is a string field.
        let rc = unsafe { sys::cl_engine_set_str(self.raw.as_ptr(), field, c.as_ptr()) };
        if rc != sys::cl_error_t::CL_SUCCESS {
            return Err(EngineError::Setting {
                name,
                reason: strerror(rc.0),
            });
        }
        Ok(())
    }

    fn load_dir(&mut self, dir: &Path, db_options: u32) -> Result<(), EngineError> {
        let shown = dir.display().to_string();
        let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| EngineError::Load {
            dir: shown.clone(),
            reason: "path contains a NUL byte".into(),
        })?;
        let mut sigs: c_uint = 0;
        LOAD_ERRORS.with(|k| *k.borrow_mut() = Some(Vec::new()));
        // SAFETY: `c` is a valid C string, `sigs` a valid out-pointer, and the
        // engine is not compiled nor shared.
        let rc = unsafe { sys::cl_load(c.as_ptr(), self.raw.as_ptr(), &mut sigs, db_options) };
        let details = LOAD_ERRORS
            .with(|k| k.borrow_mut().take())
            .unwrap_or_default();
        if rc != sys::cl_error_t::CL_SUCCESS {
            let mut reason = strerror(rc.0);
            if !details.is_empty() {
                reason = format!("{reason} ({})", details.join("; "));
            }
            return Err(EngineError::Load { dir: shown, reason });
        }
        for d in details {
            tracing::warn!(library = "libclamav", "{d}");
        }
        if sigs == 0 {
            return Err(EngineError::Empty { dir: shown });
        }
        self.info.signatures = sigs;
        Ok(())
    }

    fn get_num(&self, field: sys::cl_engine_field) -> u64 {
        let mut err: c_int = 0;
        // SAFETY: reading a numeric field of a valid engine.
        let v = unsafe { sys::cl_engine_get_num(self.raw.as_ptr(), field, &mut err) };
        if err != 0 {
            0
        } else {
            v as u64
        }
    }

    /// Scans a buffer in memory (INSTREAM).
    pub fn scan_bytes(&self, data: &[u8], allmatch: bool) -> Verdict {
        self.scan_bytes_unless(data, allmatch, None)
    }

    /// Scans an open file descriptor (FILDES and path scans).
    pub fn scan_fd(&self, fd: BorrowedFd<'_>, name: &Path, allmatch: bool) -> Verdict {
        self.scan_fd_unless(fd, name, allmatch, None)
    }

    /// [`scan_bytes`](Self::scan_bytes), abandoned once `gone` is set.
    pub fn scan_bytes_unless(
        &self,
        data: &[u8],
        allmatch: bool,
        gone: Option<&AtomicBool>,
    ) -> Verdict {
        if data.is_empty() {
            // libclamav refuses an empty map; clamd answers OK for an empty stream.
            return Verdict::Clean;
        }
        // SAFETY: `data` stays borrowed (alive and unmodified) until the map is
        // closed below; cl_fmap_open_memory does not take ownership.
        let map = unsafe { sys::cl_fmap_open_memory(data.as_ptr().cast::<c_void>(), data.len()) };
        if map.is_null() {
            return Verdict::Error {
                code: sys::cl_error_t::CL_EMEM.0,
                message: strerror(sys::cl_error_t::CL_EMEM.0),
            };
        }
        let verdict = self.scan_with(allmatch, gone, |virname, opts, ctx| {
            // SAFETY: map is a valid fmap; the out-pointers and ctx are valid
            // for the duration of the call; the engine is compiled.
            unsafe {
                sys::cl_scanmap_callback(
                    map,
                    c"stream".as_ptr(),
                    virname,
                    std::ptr::null_mut::<c_ulong>(),
                    self.raw.as_ptr(),
                    opts,
                    ctx,
                )
            }
        });
        // SAFETY: map was opened above and is closed exactly once.
        unsafe { sys::cl_fmap_close(map) };
        verdict
    }

    /// [`scan_fd`](Self::scan_fd), abandoned once `gone` is set.
    pub fn scan_fd_unless(
        &self,
        fd: BorrowedFd<'_>,
        name: &Path,
        allmatch: bool,
        gone: Option<&AtomicBool>,
    ) -> Verdict {
        let cname = CString::new(name.as_os_str().as_bytes()).unwrap_or_default();
        self.scan_with(allmatch, gone, |virname, opts, ctx| {
            // SAFETY: fd is a valid open descriptor borrowed for the call;
            // cname, the out-pointers and ctx are valid for the call.
            unsafe {
                sys::cl_scandesc_callback(
                    fd.as_raw_fd(),
                    cname.as_ptr(),
                    virname,
                    std::ptr::null_mut::<c_ulong>(),
                    self.raw.as_ptr(),
                    opts,
                    ctx,
                )
            }
        })
    }

    fn scan_with(
        &self,
        allmatch: bool,
        gone: Option<&AtomicBool>,
        scan: impl FnOnce(*mut *const c_char, *mut sys::cl_scan_options, *mut c_void) -> sys::cl_error_t,
    ) -> Verdict {
        if gone.is_some_and(|g| g.load(Ordering::Relaxed)) {
            return Verdict::Abandoned;
        }
        let mut opts = self.flags.to_options(allmatch);
        let mut found = Matches {
            names: Vec::new(),
            limit: MAX_MATCHES,
            gone: gone.map_or(std::ptr::null(), |g| g as *const AtomicBool),
            abandoned: false,
        };
        let mut virname: *const c_char = std::ptr::null();
        SCAN_TEMP_FAILURE.with(|f| f.set(None));
        let rc = scan(
            &mut virname,
            &mut opts,
            (&mut found as *mut Matches).cast::<c_void>(),
        );
        let temp_failure = SCAN_TEMP_FAILURE.with(|f| f.take());
        if found.abandoned {
            // Stopped by `on_layer` with a detection of its own making:
            // whatever libclamav answered, it is not a verdict.
            return Verdict::Abandoned;
        }
        if let (Some(code), sys::cl_error_t::CL_CLEAN) = (temp_failure, rc) {
            if !allmatch || found.names.is_empty() {
                // libclamav 1.4 does not always stop when its temporary
                // directory fails it: scan_common returns CL_CLEAN without
                // scanning when it cannot create the scan's directory, and
                // several parsers (7z, ARJ, mail, HTML) drop a member they
                // could not write and go on. A clean verdict is then
                // unfounded: it must reach the client as an error, never OK.
                tracing::error!(
                    error = strerror(code).as_str(),
                    "scan incomplete: libclamav could not use its temporary directory \
                     (check that scan.temporary-directory exists, is writable and has space)"
                );
                return Verdict::Error {
                    code,
                    message: strerror(code),
                };
            }
        }
        if rc == sys::cl_error_t::CL_CLEAN {
            if allmatch && !found.names.is_empty() {
                return Verdict::Found(found.names);
            }
            return Verdict::Clean;
        }
        if rc == sys::cl_error_t::CL_VIRUS {
            if allmatch && !found.names.is_empty() {
                return Verdict::Found(found.names);
            }
            if virname.is_null() {
                return Verdict::Error {
                    code: sys::cl_error_t::CL_EMEM.0,
                    message: strerror(sys::cl_error_t::CL_EMEM.0),
                };
            }
            // SAFETY: on CL_VIRUS libclamav sets virname to a NUL-terminated
            // string owned by the engine, valid while the engine lives.
            let name = unsafe { CStr::from_ptr(virname) }
                .to_string_lossy()
                .into_owned();
            return Verdict::Found(vec![name]);
        }
        Verdict::Error {
            code: rc.0,
            message: strerror(rc.0),
        }
    }
}

/// ALLMATCH can report at most this many names per scan; the rest are counted
/// but not kept (a crafted file must not make the reply grow without bound).
const MAX_MATCHES: usize = 1000;

/// What the scan callbacks reach through libclamav's context pointer.
struct Matches {
    names: Vec<String>,
    limit: usize,
    /// Set when the client has gone (null: never abandoned).
    gone: *const AtomicBool,
    /// `on_layer` stopped the scan.
    abandoned: bool,
}

thread_local! {
    /// Set by [`on_message`] when libclamav reports, during a scan on this
    /// thread, that it could not create or write a temporary directory or
    /// file: the libclamav error code that failure stands for (the first).
    static SCAN_TEMP_FAILURE: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
    /// While loading, libclamav's error messages are kept here so that a load
    /// failure can name the file and line libclamav complained about.
    static LOAD_ERRORS: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

unsafe extern "C" fn on_message(
    severity: sys::cl_msg,
    _full: *const c_char,
    msg: *const c_char,
    _ctx: *mut c_void,
) {
    if msg.is_null() {
        return;
    }
    // SAFETY: libclamav passes a valid NUL-terminated message.
    let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
    let text = text.trim_end();
    if severity == sys::cl_msg::CL_MSG_ERROR {
        if let Some(code) = temp_failure_code(text) {
            SCAN_TEMP_FAILURE.with(|f| {
                if f.get().is_none() {
                    f.set(Some(code));
                }
            });
        }
        let kept = LOAD_ERRORS.with(|k| match k.borrow_mut().as_mut() {
            Some(v) if v.len() < 8 => {
                v.push(text.to_string());
                true
            }
            Some(_) => true,
            None => false,
        });
        if !kept {
            tracing::warn!(library = "libclamav", "{text}");
        }
    } else if severity == sys::cl_msg::CL_MSG_WARN {
        tracing::info!(library = "libclamav", "{text}");
    } else {
        tracing::trace!(library = "libclamav", "{text}");
    }
}

/// What the progress callbacks reach through their context pointer.
struct Reporter<'a, 'b> {
    progress: &'a mut ProgressFn<'b>,
}

unsafe extern "C" fn on_load(total: usize, done: usize, context: *mut c_void) -> sys::cl_error_t {
    // SAFETY: libclamav passes back the context of `load_with_progress`.
    unsafe { report(LoadPhase::Loading, total, done, context) }
}

unsafe extern "C" fn on_compile(
    total: usize,
    done: usize,
    context: *mut c_void,
) -> sys::cl_error_t {
    // SAFETY: libclamav passes back the context of `load_with_progress`.
    unsafe { report(LoadPhase::Compiling, total, done, context) }
}

/// # Safety
/// `context` is null or the `Reporter` installed by `load_with_progress`.
unsafe fn report(
    phase: LoadPhase,
    total: usize,
    done: usize,
    context: *mut c_void,
) -> sys::cl_error_t {
    if context.is_null() {
        return sys::cl_error_t::CL_SUCCESS;
    }
    // SAFETY: context is the `Reporter` installed by `load_with_progress`,
    // alive for the whole load, reached only through this pointer, and used
    // only from the loading thread (libclamav calls back synchronously).
    let reporter = unsafe { &mut *context.cast::<Reporter<'_, '_>>() };
    let report = LoadProgress {
        phase,
        done: done as u64,
        total: total as u64,
    };
    // A panic must not unwind into libclamav.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (reporter.progress)(report)));
    sys::cl_error_t::CL_SUCCESS
}

/// The libclamav error a message stands for, if it says that the temporary
/// directory failed the scan (the words of libclamav 1.4's `cli_errmsg`s).
fn temp_failure_code(message: &str) -> Option<u32> {
    if message.starts_with("Can't create temporary directory for scan") {
        Some(sys::cl_error_t::CL_ETMPDIR.0)
    } else if message.contains("reate temporary file") {
        Some(sys::cl_error_t::CL_ETMPFILE.0)
    } else if message.starts_with("cli_writen: write error") {
        Some(sys::cl_error_t::CL_EWRITE.0)
    } else {
        None
    }
}

/// Called by libclamav twice for each layer it scans (`pre_cache` before
/// its hash, `pre_scan` after it), with the context of `scan_with`: a scan
/// whose client has gone is stopped here, as a detection, so that nothing
/// from it is cached as clean.
unsafe extern "C" fn on_layer(
    _fd: c_int,
    _type: *const c_char,
    context: *mut c_void,
) -> sys::cl_error_t {
    if context.is_null() {
        return sys::cl_error_t::CL_CLEAN;
    }
    // SAFETY: context is the `Matches` passed by `scan_with`, alive and
    // exclusively ours for the duration of the scan call that invokes us.
    let found = unsafe { &mut *context.cast::<Matches>() };
    if found.abandoned {
        return sys::cl_error_t::CL_VIRUS;
    }
    // SAFETY: `gone` is null or points to the flag borrowed by `scan_with`
    // for the whole scan call.
    let gone = unsafe { found.gone.as_ref() };
    if gone.is_some_and(|g| g.load(Ordering::Relaxed)) {
        found.abandoned = true;
        return sys::cl_error_t::CL_VIRUS;
    }
    sys::cl_error_t::CL_CLEAN
}

unsafe extern "C" fn on_virus_found(_fd: c_int, virname: *const c_char, context: *mut c_void) {
    if virname.is_null() || context.is_null() {
        return;
    }
    // SAFETY: context is the `Matches` passed by `scan_with`, alive and
    // exclusively ours for the duration of the scan call that invokes us.
    let found = unsafe { &mut *context.cast::<Matches>() };
    if found.abandoned {
        return;
    }
    if found.names.len() < found.limit {
        // SAFETY: libclamav passes a valid NUL-terminated name.
        let name = unsafe { CStr::from_ptr(virname) };
        found.names.push(name.to_string_lossy().into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_from_any_numbers_is_a_percent() {
        let p = |done, total| {
            LoadProgress {
                phase: LoadPhase::Loading,
                done,
                total,
            }
            .percent()
        };
        assert_eq!(p(1, 4), 25);
        assert_eq!(p(5, 0), 0);
        assert_eq!(p(u64::MAX, u64::MAX), 100);
        assert_eq!(p(u64::MAX, 7), 100);
    }

    #[test]
    fn version_looks_like_libclamav() {
        let v = version();
        assert!(v.starts_with("1."), "{v}");
    }

    #[test]
    fn strerror_has_text() {
        assert_eq!(strerror(0), "No viruses detected");
    }

    #[test]
    fn temporary_directory_failures_are_recognised() {
        assert_eq!(
            temp_failure_code("Can't create temporary directory for scan: /x/y."),
            Some(sys::cl_error_t::CL_ETMPDIR.0)
        );
        assert_eq!(
            temp_failure_code("cli_untar: Can't create temporary file /x: No space left on device"),
            Some(sys::cl_error_t::CL_ETMPFILE.0)
        );
        assert_eq!(
            temp_failure_code("cli_pdf: can't create temporary file /x: Permission denied"),
            Some(sys::cl_error_t::CL_ETMPFILE.0)
        );
        assert_eq!(
            temp_failure_code("cli_writen: write error: No space left on device"),
            Some(sys::cl_error_t::CL_EWRITE.0)
        );
        assert_eq!(temp_failure_code("cli_scanpe: broken PE file"), None);
    }
}
