#!/usr/bin/env python3
"""Load for tests/fleet.rs: real clients scanning through HAProxy, every
reply checked, every scan recorded (one JSON object a line in OUT).

Clients (--client):
  python     python `clamd` 1.0.2's instream(), one connection a scan, from
             its own source address (a subclass binds it; the library has
             no option for that);
  clamdscan  `clamdscan --stream` (--conf names a clamd.conf with the
             balancer's TCPAddr/TCPSocket);
  pool       pooled IDSESSION sessions (what long-lived clients such as
             MTA filters keep): INSTREAM after INSTREAM on one connection;
             when the daemon ends the session at its bound it says so, as
             clamd ends a session it will not wait for any longer ("COMMAND
             READ TIMED OUT", limits.max-session-seconds) or with an ERROR
             naming limits.max-session-commands, and the client reconnects
             and sends the scan again (a reconnect, not a failure).

Every 10th scan is the EICAR test string (made in code) and must be FOUND;
the others are unique clean text and must be OK.

Bounded: stops when STOP exists, after --count scans in all, or after
--max-seconds, whichever comes first.

usage: load.py --front HOST:PORT --sources A,B,... --threads N --out FILE
               --stop FILE [--client python|clamdscan|pool] [--count N]
               [--timeout S] [--max-seconds S] [--conf CLAMD_CONF]
"""
import argparse
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import clamd

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"
VIRUS = "Win.Test.EICAR_HDB-1.UNOFFICIAL"


class Sourced(clamd.ClamdNetworkSocket):
    """python clamd, connecting from a chosen local address."""

    def __init__(self, host, port, timeout, source):
        super().__init__(host=host, port=port, timeout=timeout)
        self.source = source

    def _init_socket(self):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.bind((self.source, 0))
            s.connect((self.host, self.port))
            self.clamd_socket = s
        except socket.error:
            e = sys.exc_info()[1]
            raise clamd.ConnectionError(self._error_message(e))


def payload(n):
    if n % 10 == 9:
        return EICAR, "found"
    return (b"clean payload %d from the fleet test\n" % n) * 40, "clean"


class Shared:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.next = 0
        self.out = open(args.out, "w")
        self.deadline = time.time() + args.max_seconds

    def take(self):
        with self.lock:
            if self.args.count and self.next >= self.args.count:
                return None
            if os.path.exists(self.args.stop) or time.time() > self.deadline:
                return None
            self.next += 1
            return self.next - 1

    def record(self, **r):
        with self.lock:
            self.out.write(json.dumps(r) + "\n")
            self.out.flush()


def python_client(shared, source):
    a = shared.args
    host, port = a.front.rsplit(":", 1)
    cd = Sourced(host, int(port), a.timeout, source)
    while True:
        n = shared.take()
        if n is None:
            return
        data, kind = payload(n)
        t0 = time.time()
        try:
            reply = cd.instream(io.BytesIO(data))["stream"]
            ok = (kind == "found" and tuple(reply) == ("FOUND", VIRUS)) or (
                kind == "clean" and tuple(reply) == ("OK", None))
            text = repr(reply)
        except Exception as e:  # every failure is recorded, none raised
            ok, text = False, "%s: %s" % (type(e).__name__, e)
        shared.record(t0=t0, t1=time.time(), client="python", src=source,
                      kind=kind, ok=ok, reply=text)


def clamdscan_client(shared, source):
    a = shared.args
    d = tempfile.mkdtemp(prefix="cs-fleet-scan")
    while True:
        n = shared.take()
        if n is None:
            return
        data, kind = payload(n)
        path = os.path.join(d, "f%d" % n)
        with open(path, "wb") as f:
            f.write(data)
        t0 = time.time()
        try:
            p = subprocess.run(["clamdscan", "--config-file=" + a.conf, "--stream",
                                "--no-summary", path], capture_output=True,
                               timeout=a.timeout + 5)
            out = p.stdout.decode(errors="replace").strip()
            want = "%s: %s" % (path, "%s FOUND" % VIRUS if kind == "found" else "OK")
            ok = out == want and p.returncode == (1 if kind == "found" else 0)
            text = "%d %s %s" % (p.returncode, out, p.stderr.decode(errors="replace").strip())
        except Exception as e:
            ok, text = False, "%s: %s" % (type(e).__name__, e)
        os.unlink(path)
        shared.record(t0=t0, t1=time.time(), client="clamdscan", src=source,
                      kind=kind, ok=ok, reply=text)


class Session:
    """One IDSESSION connection and the bytes read past the last reply."""

    def __init__(self, sock):
        self.sock = sock
        self.pending = b""

    def reply(self):
        """The next reply up to its NUL, or the session's end ("COMMAND READ
        TIMED OUT\\n", then close), which may arrive in the same read as
        the reply before it."""
        while True:
            if self.pending.startswith(b"COMMAND READ TIMED OUT"):
                return "COMMAND READ TIMED OUT"
            nul = self.pending.find(b"\0")
            if nul >= 0:
                out, self.pending = self.pending[:nul], self.pending[nul + 1:]
                return out.decode(errors="replace")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed after %r" % self.pending)
            self.pending += chunk

    def close(self):
        self.sock.close()


def session_ended(text):
    return text == "COMMAND READ TIMED OUT" or (
        "limits.max-session" in text and text.endswith("ERROR"))


def pool_client(shared, source):
    a = shared.args
    host, port = a.front.rsplit(":", 1)
    sess, nid, sessions = None, 0, 0
    while True:
        n = shared.take()
        if n is None:
            break
        data, kind = payload(n)
        t0 = time.time()
        reconnects, text, ok = 0, "", False
        for attempt in range(3):
            try:
                if sess is None:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.settimeout(a.timeout)
                    s.bind((source, 0))
                    s.connect((host, int(port)))
                    s.sendall(b"zIDSESSION\0")
                    sess, nid, sessions = Session(s), 0, sessions + 1
                nid += 1
                sess.sock.sendall(b"zINSTREAM\0" + struct.pack(">I", len(data)) + data + b"\0\0\0\0")
                text = sess.reply()
                if session_ended(text):
                    # The session's bound: a new session, the same scan.
                    sess.close()
                    sess, reconnects = None, reconnects + 1
                    continue
                want = "%d: stream: %s" % (nid, "%s FOUND" % VIRUS if kind == "found" else "OK")
                ok = text == want
                if ok and sess.pending.startswith(b"COMMAND READ TIMED OUT"):
                    # Answered, and the session ended right after.
                    sess.close()
                    sess, reconnects = None, reconnects + 1
                break
            except Exception as e:
                text = "%s: %s" % (type(e).__name__, e)
                if sess is not None:
                    sess.close()
                sess = None
                break
        shared.record(t0=t0, t1=time.time(), client="pool", src=source, kind=kind,
                      ok=ok, reply=text, reconnects=reconnects, sessions=sessions)
    if sess is not None:
        try:
            sess.sock.sendall(b"zEND\0")
        except OSError:
            pass
        sess.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--front", required=True)
    p.add_argument("--sources", required=True)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--out", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--client", default="python")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--max-seconds", type=float, default=240.0)
    p.add_argument("--conf", default="")
    a = p.parse_args()
    shared = Shared(a)
    body = {"python": python_client, "clamdscan": clamdscan_client, "pool": pool_client}[a.client]
    sources = a.sources.split(",")
    threads = [threading.Thread(target=body, args=(shared, sources[i % len(sources)]))
               for i in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.out.close()


if __name__ == "__main__":
    main()
