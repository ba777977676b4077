//! Abandoned scans: a client that disconnects in the middle of a directory
//! walk (CONTSCAN, MULTISCAN, ALLMATCHSCAN) or of a slow stream scan.
//!
//! * **walks**: a tree of one-byte files, every directory watched with
//!   inotify (`IN_OPEN`); the client disconnects once `after_opens` files
//!   were opened, and the files opened after that are counted until none
//!   has been opened for 1.5 s. Also measured: the time from the disconnect
//!   until STATS no longer lists the walk (its thread serves again).
//! * **stream**: a ZIP of many small members (libclamav extracts and scans
//!   every member, so it takes seconds) sent with INSTREAM; the client disconnects
//!   once STATS shows the scan running, and the time until STATS no longer
//!   lists it is compared with the time of the same scan for a client that
//!   waits for its reply (different contents each time, so that libclamav's
//!   cache of clean files answers neither).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::daemons::{Daemon, Kind};
use crate::Spawner;

/// Files clamsentry's broker opens per request at most: the walk asks for
/// the next files of a directory in batches of up to this many.
pub const BATCH: usize = clamsentry::ipc::messages::MAX_BATCH;

/// What the cancel part is told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CancelOptions {
    /// Directories of the walked tree...
    pub dirs: usize,
    /// ...each with this many one-byte files.
    pub files_per_dir: usize,
    /// The client disconnects once this many files were opened.
    pub after_opens: usize,
    /// Members of the slow archive, and bytes per member (the archive is
    /// stored, so it must stay below the stream limit, 32 MiB here).
    pub archive_members: usize,
    pub member_size: usize,
    /// Disconnects of each kind per daemon.
    pub runs: usize,
}

/// One abandoned walk.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalkCancel {
    pub daemon: String,
    pub command: String,
    pub run: usize,
    pub opened_before: u64,
    /// Files opened after the client disconnected.
    pub opened_after: u64,
    /// From the disconnect to the last of those opens, ms.
    pub last_open_ms: Option<f64>,
    /// From the disconnect until STATS no longer lists the walk, ms.
    pub thread_free_ms: Option<f64>,
    /// Files in the tree.
    pub files: usize,
}

/// One abandoned stream scan, with the full scan of the same kind of input.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamCancel {
    pub daemon: String,
    pub run: usize,
    /// The whole scan, for a client that waits for its reply, ms.
    pub full_scan_ms: f64,
    /// From the disconnect until STATS no longer lists the scan, ms.
    pub thread_free_ms: Option<f64>,
    /// How long the scan had run when the client disconnected, ms.
    pub disconnected_after_ms: f64,
    pub archive_bytes: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CancelResult {
    pub options: Option<CancelOptions>,
    pub walks: Vec<WalkCancel>,
    pub streams: Vec<StreamCancel>,
}

/// Inotify watches on every directory of a tree, counting `IN_OPEN`.
struct Opens {
    fd: std::os::fd::OwnedFd,
}

impl Opens {
    fn watch(dirs: &[PathBuf]) -> std::io::Result<Opens> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: inotify_init1 takes flags only; the descriptor it returns
        // is new and ours.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by inotify_init1 and has no owner.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        for d in dirs {
            let c = std::ffi::CString::new(d.as_os_str().as_bytes())?;
            use std::os::fd::AsRawFd;
            // SAFETY: a valid inotify descriptor and a NUL-terminated path.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_OPEN) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Opens { fd })
    }

    /// Opens reported since the last call.
    fn take(&self) -> u64 {
        use std::os::fd::AsRawFd;
        let mut n = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // SAFETY: reading into a buffer of `buf.len()` bytes that we own,
            // from our own non-blocking inotify descriptor.
            let len = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if len <= 0 {
                return n;
            }
            let len = len as usize;
            let mut i = 0;
            while i + 16 <= len {
                let name_len =
                    u32::from_ne_bytes([buf[i + 12], buf[i + 13], buf[i + 14], buf[i + 15]])
                        as usize;
                n += 1;
                i += 16 + name_len;
            }
        }
    }
}

/// The tasks STATS lists now for `command` (lines `\t<COMMAND> <secs> ...`).
async fn running(d: &Daemon, command: &str) -> Option<usize> {
    let reply = crate::load::request_to_eof(
        &d.socket,
        b"zSTATS\0",
        Instant::now() + Duration::from_secs(5),
        1 << 20,
    )
    .await
    .ok()?;
    let text = String::from_utf8_lossy(&reply);
    let prefix = format!("\t{command} ");
    Some(text.lines().filter(|l| l.starts_with(&prefix)).count())
}

/// Polls STATS until `command` is no longer listed; ms since `from`.
async fn until_free(d: &Daemon, command: &str, from: Instant, limit: Duration) -> Option<f64> {
    while from.elapsed() < limit {
        if running(d, command).await == Some(0) {
            return Some(from.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn build_tree(root: &Path, dirs: usize, files: usize) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(root);
    let mut all = vec![root.to_path_buf()];
    std::fs::create_dir_all(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f:06}")), [(f % 256) as u8])?;
        }
        all.push(dir);
    }
    Ok(all)
}

/// A ZIP archive of `members` text files of `size` bytes each, unique to
/// `seed`, stored without compression (written here: headers and CRC-32).
/// libclamav extracts and scans every member, so the scan takes long, and
/// each member is a layer of its own (a callback between members).
pub fn slow_archive(members: usize, size: usize, seed: u64) -> Vec<u8> {
    let mut zip = Vec::with_capacity(members * (size + 80) + 64);
    let mut central = Vec::new();
    for i in 0..members {
        let mut body = Vec::with_capacity(size + 64);
        while body.len() < size {
            body.extend_from_slice(
                format!("archive {seed} member {i} line {} ", body.len()).as_bytes(),
            );
        }
        body.truncate(size);
        let name = format!("m{i:06}.txt");
        let crc = crc32(&body);
        let offset = zip.len() as u32;
        let head = |sig: u32, central: bool| {
            let mut h = Vec::with_capacity(64);
            h.extend_from_slice(&sig.to_le_bytes());
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // needed to extract
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u32.to_le_bytes()); // time, date
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(body.len() as u32).to_le_bytes());
            h.extend_from_slice(&(body.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&[0u8; 8]); // comment, disk, attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        zip.extend_from_slice(&head(0x0403_4b50, false));
        zip.extend_from_slice(&body);
        central.extend_from_slice(&head(0x0201_4b50, true));
    }
    let at = zip.len() as u32;
    let n = members.min(u16::MAX as usize) as u16;
    zip.extend_from_slice(&central);
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    zip.extend_from_slice(&[0u8; 4]); // disks
    zip.extend_from_slice(&n.to_le_bytes());
    zip.extend_from_slice(&n.to_le_bytes());
    zip.extend_from_slice(&(central.len() as u32).to_le_bytes());
    zip.extend_from_slice(&at.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip
}

/// CRC-32 (IEEE), as ZIP records it.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

async fn walk_cancel(
    d: &Daemon,
    command: &str,
    run: usize,
    dirs: &[PathBuf],
    files: usize,
    after: usize,
) -> Result<WalkCancel, String> {
    use std::os::unix::ffi::OsStrExt;
    let opens = Opens::watch(dirs).map_err(|e| format!("inotify: {e}"))?;
    let _ = opens.take();
    let mut s = crate::load::connect(&d.socket, Instant::now() + Duration::from_secs(10))
        .await
        .map_err(|e| format!("{}: connect: {e}", d.kind.name()))?;
    let mut cmd = format!("z{command} ").into_bytes();
    cmd.extend_from_slice(dirs[0].as_os_str().as_bytes());
    cmd.push(0);
    s.write_all(&cmd).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut before = 0u64;
    while before < after as u64 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        before += opens.take();
    }
    drop(s);
    let gone = Instant::now();
    before += opens.take();
    let mut out = WalkCancel {
        daemon: d.kind.name().into(),
        command: command.into(),
        run,
        opened_before: before,
        files,
        ..WalkCancel::default()
    };
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(1500)
        && gone.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let n = opens.take();
        if n > 0 {
            out.opened_after += n;
            out.last_open_ms = Some(gone.elapsed().as_secs_f64() * 1000.0);
            quiet_since = Instant::now();
        }
        if out.thread_free_ms.is_none() && running(d, command).await == Some(0) {
            out.thread_free_ms = Some(gone.elapsed().as_secs_f64() * 1000.0);
        }
    }
    if out.thread_free_ms.is_none() {
        out.thread_free_ms = until_free(d, command, gone, Duration::from_secs(600)).await;
    }
    eprintln!(
        "cancel: {} {command}: {} files opened before the disconnect, {} after (last after {} ms); thread free after {} ms",
        d.kind.name(),
        out.opened_before,
        out.opened_after,
        out.last_open_ms.map_or("-".into(), |v| format!("{v:.0}")),
        out.thread_free_ms.map_or("-".into(), |v| format!("{v:.0}"))
    );
    Ok(out)
}

async fn stream_cancel(
    d: &Daemon,
    run: usize,
    opts: &CancelOptions,
    seed: &mut u64,
) -> Result<StreamCancel, String> {
    let next = |seed: &mut u64| {
        *seed += 1;
        Ok::<Vec<u8>, String>(slow_archive(opts.archive_members, opts.member_size, *seed))
    };
    // The whole scan, for reference.
    let archive = next(seed)?;
    let req = crate::load::Request::new(&archive, 65536);
    let t = Instant::now();
    let reply = crate::load::request(&d.socket, &req.bytes, t + Duration::from_secs(600))
        .await
        .map_err(|e| format!("{}: INSTREAM: {e}", d.kind.name()))?;
    let full_scan_ms = t.elapsed().as_secs_f64() * 1000.0;
    if !reply.starts_with(b"stream: ") {
        return Err(format!(
            "{}: unexpected reply {:?}",
            d.kind.name(),
            String::from_utf8_lossy(&reply)
        ));
    }
    // The same kind of input again; the client leaves during the scan.
    let archive = next(seed)?;
    let req = crate::load::Request::new(&archive, 65536);
    let mut s = crate::load::connect(&d.socket, Instant::now() + Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(&req.bytes).await.map_err(|e| e.to_string())?;
    let sent = Instant::now();
    while running(d, "INSTREAM").await.unwrap_or(0) == 0 && sent.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let disconnected_after_ms = sent.elapsed().as_secs_f64() * 1000.0;
    drop(s);
    let gone = Instant::now();
    let thread_free_ms = until_free(d, "INSTREAM", gone, Duration::from_secs(600)).await;
    eprintln!(
        "cancel: {} INSTREAM of {} members: whole scan {full_scan_ms:.0} ms; abandoned after {disconnected_after_ms:.0} ms, thread free {} ms after the disconnect",
        d.kind.name(),
        opts.archive_members,
        thread_free_ms.map_or("-".into(), |v| format!("{v:.0}"))
    );
    Ok(StreamCancel {
        daemon: d.kind.name().into(),
        run,
        full_scan_ms,
        thread_free_ms,
        disconnected_after_ms,
        archive_bytes: archive.len(),
    })
}

/// Every daemon: `runs` abandoned walks of each command, `runs` abandoned
/// stream scans; each daemon started fresh.
pub async fn run(
    starter: &Spawner<'_>,
    daemons: &[(Kind, PathBuf)],
    work: &Path,
    opts: &CancelOptions,
) -> Result<CancelResult, String> {
    let mut out = CancelResult {
        options: Some(opts.clone()),
        ..CancelResult::default()
    };
    eprintln!(
        "cancel: creating {} directories of {} one-byte files ...",
        opts.dirs, opts.files_per_dir
    );
    let root = work.join("cancel-tree");
    let dirs = build_tree(&root, opts.dirs, opts.files_per_dir)
        .map_err(|e| format!("cannot build the tree: {e}"))?;
    let files = opts.dirs * opts.files_per_dir;
    let mut seed = 0u64;
    for run in 0..opts.runs.max(1) {
        let mut order: Vec<Kind> = daemons.iter().map(|(k, _)| *k).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let d = starter.start_in(kind, "cancel").await?;
            for command in ["CONTSCAN", "MULTISCAN", "ALLMATCHSCAN"] {
                out.walks
                    .push(walk_cancel(&d, command, run, &dirs, files, opts.after_opens).await?);
            }
            out.streams
                .push(stream_cancel(&d, run, opts, &mut seed).await?);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(out)
}
