//! The synthetic signature database and the payloads scanned against it.
//!
//! Everything is generated from a seeded PRNG, so two runs with the same
//! options scan the same bytes against the same signatures.

use std::io::{BufWriter, Write};
use std::path::Path;

/// A small, fast, deterministic PRNG (SplitMix64); good enough for test data.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// The marker scanned to check that a daemon really detects with this
/// database (a positive control), and its signature name.
pub const CONTROL_NAME: &str = "Bench.Positive.Control";
/// The signature added before RELOAD; a daemon that detects it runs the new engine.
pub const RELOAD_NAME: &str = "Bench.Reload.Marker";

/// Bytes that only the control signature matches.
pub fn control_payload() -> Vec<u8> {
    marker(0xC0_47_20_1D)
}

/// Bytes that only the reload signature matches.
pub fn reload_payload() -> Vec<u8> {
    marker(0x2E_10_AD)
}

/// The n-th reload marker (n = 0 is [`reload_payload`]) and the name of the
/// signature that detects it, for a series of reloads that each add a new
/// signature.
pub fn reload_marker(n: u64) -> (String, Vec<u8>) {
    if n == 0 {
        return (RELOAD_NAME.to_string(), reload_payload());
    }
    (format!("{RELOAD_NAME}.{n}"), marker(0x2E_10_AD ^ (n << 32)))
}

fn marker(seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; 4096];
    Rng::new(seed).fill(&mut v);
    v
}

/// The .ndb line that detects `payload` (its bytes 1000..1032).
pub fn ndb_line(name: &str, payload: &[u8]) -> String {
    let mut hex = Vec::new();
    push_hex(&mut hex, &payload[1000..1032]);
    format!("{name}:0:*:{}\n", String::from_utf8_lossy(&hex))
}

/// What was generated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DbInfo {
    pub hdb_signatures: u64,
    pub ndb_signatures: u64,
    pub ndb_with_wildcards: u64,
    pub bytes: u64,
    pub generate_s: f64,
}

/// Writes `bench.hdb` (MD5 signatures), `bench.ndb` (body signatures, about
/// a fifth with wildcards) and `control.ndb` into `dir`. A quarter of the MD5
/// signatures carry a size that one of the payloads has, so libclamav really
/// hashes every payload and looks the hash up.
pub fn generate(
    dir: &Path,
    hdb: u64,
    ndb: u64,
    payload_sizes: &[usize],
) -> std::io::Result<DbInfo> {
    let started = std::time::Instant::now();
    let mut rng = Rng::new(0x5EED_CA11);
    let mut bytes = 0u64;
    {
        let mut w =
            BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("bench.hdb"))?);
        let mut line = Vec::with_capacity(96);
        let mut md5 = [0u8; 16];
        for i in 0..hdb {
            line.clear();
            rng.fill(&mut md5);
            push_hex(&mut line, &md5);
            let size = if i % 4 == 0 && !payload_sizes.is_empty() {
                payload_sizes[(i / 4) as usize % payload_sizes.len()] as u64
            } else {
                1 + rng.below(64 << 20)
            };
            writeln!(line, ":{size}:Bench.Hdb-{i}")?;
            w.write_all(&line)?;
            bytes += line.len() as u64;
        }
        w.flush()?;
        // Written back before anything is measured: without this the
        // write-back of ~120 MB overlapped the engine-only window (other CPU
        // 46 % instead of 22 %, engine-only 10 KiB 2651 instead of 3360/s).
        w.get_ref().sync_all()?;
    }
    let mut wild = 0u64;
    {
        let mut w =
            BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("bench.ndb"))?);
        let mut line = Vec::with_capacity(256);
        let mut part = [0u8; 24];
        for i in 0..ndb {
            line.clear();
            write!(line, "Bench.Ndb-{i}:0:*:")?;
            let n = 10 + rng.below(14) as usize;
            rng.fill(&mut part[..n]);
            push_hex(&mut line, &part[..n]);
            if i % 5 == 0 {
                wild += 1;
                // Every static part stays >= 8 bytes so random data cannot match.
                match (i / 5) % 4 {
                    0 => line.extend_from_slice(b"??"),
                    1 => line.extend_from_slice(b"{0-16}"),
                    2 => line.extend_from_slice(b"*"),
                    _ => {
                        let (a, b) = (rng.below(256) as u8, rng.below(256) as u8);
                        line.push(b'(');
                        push_hex(&mut line, &[a]);
                        line.push(b'|');
                        push_hex(&mut line, &[b]);
                        line.push(b')');
                    }
                }
                let m = 8 + rng.below(8) as usize;
                rng.fill(&mut part[..m]);
                push_hex(&mut line, &part[..m]);
            }
            line.push(b'\n');
            w.write_all(&line)?;
            bytes += line.len() as u64;
        }
        w.flush()?;
        // Written back before anything is measured: without this the
        // write-back of ~120 MB overlapped the engine-only window (other CPU
        // 46 % instead of 22 %, engine-only 10 KiB 2651 instead of 3360/s).
        w.get_ref().sync_all()?;
    }
    std::fs::write(
        dir.join("control.ndb"),
        ndb_line(CONTROL_NAME, &control_payload()),
    )?;
    Ok(DbInfo {
        hdb_signatures: hdb,
        ndb_signatures: ndb,
        ndb_with_wildcards: wild,
        bytes,
        generate_s: started.elapsed().as_secs_f64(),
    })
}

/// A payload of `size` random bytes that matches no signature. Each
/// request stamps a counter into it ([`stamp`]) to make it unique.
pub fn payload(size: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    Rng::new(seed).fill(&mut v);
    v
}

/// Makes `payload` unique for request number `n` (its first 8 bytes), so
/// that libclamav's cache of clean hashes never answers for it.
pub fn stamp(payload: &mut [u8], n: u64) {
    let b = n.to_le_bytes();
    let k = payload.len().min(8);
    payload[..k].copy_from_slice(&b[..k]);
}
