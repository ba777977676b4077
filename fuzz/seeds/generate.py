#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ from the clamd request
transcripts in shared/reference/clamd-protocol.md (what clamdscan, clamdtop,
clamav-milter, freshclam, python-clamd, pyclamd, npm clamscan, ... send).

Run from anywhere: python3 fuzz/seeds/generate.py. The files are small and
committed; re-running rewrites them identically. No seed contains the EICAR
test string: streams carry plain text only."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def chunks(data, size):
    out = b""
    for i in range(0, len(data), size):
        c = data[i:i + size]
        out += struct.pack(">I", len(c)) + c
    return out + b"\0\0\0\0"


CLEAN = b"just a clean text file for the scanner\n" * 4

# Whole-connection transcripts: a list of reads as the client sends them.
TRANSCRIPTS = {
    "ping_z": [b"zPING\0"],
    "ping_n": [b"nPING\n"],
    "ping_legacy": [b"PING"],
    "ping_echo_nc": [b"PING\n"],
    "ping_crlf": [b"nPING\r\n"],
    "version_n": [b"nVERSION\n"],
    "versioncommands_z": [b"zVERSIONCOMMANDS\0"],
    "reload_freshclam": [b"RELOAD\0"],
    "reload_z": [b"zRELOAD\0"],
    "shutdown_z": [b"zSHUTDOWN\0"],
    "quit_perl": [b"QUIT"],
    "scan_legacy_greenbone": [b"SCAN /foo/f4a9c2.txt"],
    "contscan_clamdscan": [b"zCONTSCAN /tmp/some dir/file\0"],
    "multiscan_z": [b"zMULTISCAN /var/tmp\0"],
    "allmatchscan_z": [b"zALLMATCHSCAN /tmp/x\0"],
    "scan_n_relative": [b"nSCAN relative/path\n"],
    "stats_n": [b"nSTATS\n"],
    "stats_legacy": [b"STATS\n"],
    "detstats": [b"DETSTATS"],
    "stream_removed": [b"STREAM"],
    "rawscan_go": [b"nRAWSCAN /tmp/x\n"],
    "end_outside": [b"zEND\0"],
    "fildes_clamdscan": [b"zFILDES\0", b"\0"],
    "fildes_milter": [b"nFILDES\n", b"X"],
    "instream_clamdscan": [b"zINSTREAM\0" + chunks(CLEAN, 8188)],
    "instream_python": [b"nINSTREAM\n", chunks(CLEAN, 1024)],
    "instream_empty": [b"zINSTREAM\0\0\0\0\0"],
    "clamdtop": [b"nIDSESSION\nnVERSION\n", b"nSTATS\n", b"nSTATS\n", b"nEND\n"],
    "clamdscan_multi_fdpass": [b"zIDSESSION\0zFILDES\0", b"\0", b"zFILDES\0", b"\0", b"zEND\0"],
    "clamdscan_multi_stream": [
        b"zIDSESSION\0zINSTREAM\0" + chunks(CLEAN, 8188),
    ],
    "session_ping_version": [b"zIDSESSION\0zPING\0zVERSION\0zEND\0"],
    "session_legacy_inside": [b"zIDSESSION\0", b"PING\n"],
    "session_invalid_cmd": [b"nIDSESSION\n", b"nSHUTDOWN\n"],
    "session_mixed": [b"zIDSESSION\0nPING\nzSCAN /etc/hostname\0", b"nEND\n"],
    "pipelined_after_scan": [b"zSCAN /tmp\0zPING\0"],
    "c_icap_reuse": [b"zIDSESSION\0zFILDES\0\0zPING\0zEND\0"],
    "nul_inside_n": [b"nPI\0NG\n"],
    "garbage": [b"\xff\xfe\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
}

for name, reads in TRANSCRIPTS.items():
    # command: the whole connection as one buffer.
    write("command", name, b"".join(reads))
    # session (raw mode): mode 0, buffer size byte, then [len][bytes] reads.
    data = b"\x00\xff"
    for r in reads:
        for i in range(0, len(r), 255):
            part = r[i:i + 255]
            data += bytes([len(part)]) + part
    write("session", name, data)

# session (structured mode): mode 1, then command choices.
write("session", "structured_pings", b"\x01\x00\x00\x01\x02\x03\x80\x81")
write("session", "structured_scan", b"\x01\x01\x04\x08/tmp/a b\x05\x05\x00")

# Regression: the first failure the session target found (legacy "FILDES\r"
# waiting for its payload byte was not restored as clamd restores it).
write("session", "regress_legacy_fildes_cr", b"0nRFILDES\r")

# instream: 3-byte limit, then the wire bytes after INSTREAM.
def limit(n):
    return struct.pack(">I", n)[1:]

write("instream", "clamdscan_8188", limit(1 << 20) + chunks(CLEAN, 8188))
write("instream", "python_1024", limit(1 << 20) + chunks(CLEAN * 8, 1024))
write("instream", "rust_4096", limit(1 << 20) + chunks(CLEAN * 8, 4096))
write("instream", "pyclamd_extra_zero", limit(1 << 20) + chunks(CLEAN, 64) + b"\0\0\0\0")
write("instream", "exactly_limit", limit(len(CLEAN)) + chunks(CLEAN, 100))
write("instream", "one_over_limit", limit(len(CLEAN) - 1) + chunks(CLEAN, 100))
write("instream", "all_ones", limit(1 << 20) + b"\xff\xff\xff\xff")
write("instream", "empty", limit(1) + b"\0\0\0\0")
write("instream", "truncated", limit(1 << 20) + struct.pack(">I", 100) + b"short")

# config: the shipped example, the demo, and small snippets.
for src, name in [("etc/clamsentry.toml", "shipped"), ("demo/clamsentry.toml", "demo")]:
    with open(os.path.join(ROOT, src), "rb") as f:
        write("config", name, f.read())
write("config", "limits", b'[limits]\nstream-max-length = "10M"\nmax-command-length = 4104\n'
      b'command-read-timeout = 2\nread-timeout = 3\nidle-timeout = 3\n')
write("config", "listen", b'[listen]\nunix = "/run/x.sock"\nunix-mode = "0o660"\n'
      b'tcp = ["127.0.0.1:3310", "[::1]:3310"]\n')
write("config", "scan", b'[scan]\nexclude-path = ["^/proc/", "\\\\.git/"]\n'
      b'max-scan-size = "100M"\nmax-file-size = 1024\nbytecode = false\n')
write("config", "bad_key", b"[limits]\nmax-thread = 4\n")
write("config", "empty", b"")

# logrec: a byte picking the marks, then a log record as a worker sends it
# (see src/ipc/logrec.rs): honest ones (a FOUND with its connection's span
# fields, a path refusal with a hostile path), and forgeries (reserved
# names, a message that looks like a line of the supervisor's).
def logrec(level, message, fields, target=b"clamsentry::worker::conn", file=b"src/worker/conn.rs", line=7, flags=0, dropped=0):
    out = bytes([1, level, flags]) + struct.pack("<I", dropped)
    out += struct.pack("<I", len(target)) + target + struct.pack("<I", len(file)) + file
    out += struct.pack("<I", line) + struct.pack("<I", len(message)) + message + bytes([len(fields)])
    for name, value in fields:
        out += bytes([len(name)]) + name + struct.pack("<I", len(value)) + value
    return out

CONN = [(b"id", b"7"), (b"peer", b"unix uid=1000 pid=42"), (b"listener", b"unix")]
write("logrec", "found", b"\x00" + logrec(2, b"virus found", CONN + [
    (b"command", b"SCAN"), (b"scan_target", b"/home/a b/x"), (b"scan_result", b"found"),
    (b"virus_name", b"Win.Test.EICAR_HDB-1"), (b"bytes", b"68"), (b"duration_ms", b"3")]))
write("logrec", "path_failure", b"\x05" + logrec(3, b"file path check failure", CONN + [
    (b"path", b"/tmp/x uid=0 command=\"SHUTDOWN\"\n\x1b[2J\xff\"\\"), (b"suppressed", b"3")],
    flags=1, dropped=9))
write("logrec", "forged", b"\x0e" + logrec(1, b"2026-01-01T00:00:00.000000Z  INFO path refused", [
    (b"source", b"supervisor"), (b"worker", b"0"), (b"pid", b"1"), (b"syslog_identifier", b"sshd"),
    (b"priority", b"0"), (b"message", b"x")], target=b"clamsentry::supervisor", file=b"", line=0))
write("logrec", "empty_message", b"\x01" + logrec(4, b"", [], target=b"x", file=b"", line=0))

# observe: written by a Rust test, since the snapshot's layout is long:
#   cargo test --lib write_observe_seeds -- --ignored
