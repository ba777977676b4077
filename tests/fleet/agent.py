#!/usr/bin/env python3
"""A stand-in for clamsentry's HAProxy agent-check responder, used by
tests/fleet.rs until the observer process (which answers from the
supervisor's snapshot) is on the same branch. Say so in every answer.

It answers each connection with one line, as HAProxy 2.6 reads it:
  * the content of OVERRIDE_FILE when it exists (the test writes e.g.
    "up drain #database older than database.max-age (stub agent)" there,
    standing in for the observer's database.max-age rule);
  * otherwise the node's own word, asked on its Unix socket with
    clamsentry's MAINT command (as root, an administrator):
    "MAINT ON" -> "up maint", "MAINT OFF" -> "up ready 100%";
  * no answer within 1.5 s (the daemon stops, restarts or is stopped
    with SIGSTOP) -> "up drain", as the observer says while the daemon
    stops.

usage: agent.py ADDRESS PORT UNIX_SOCKET OVERRIDE_FILE
"""
import socket
import sys

ADDRESS, PORT, UNIX, OVERRIDE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def ask_node():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.5)
    try:
        s.connect(UNIX)
        s.sendall(b"zMAINT\0")
        reply = b""
        while not reply.endswith(b"\0") and len(reply) < 256:
            chunk = s.recv(256)
            if not chunk:
                break
            reply += chunk
    finally:
        s.close()
    return reply


def answer():
    try:
        with open(OVERRIDE) as f:
            return f.read().strip() + "\n"
    except FileNotFoundError:
        pass
    try:
        reply = ask_node()
    except OSError:
        return "up drain #daemon not answering (stub agent)\n"
    if reply == b"MAINT ON\0":
        return "up maint #maintenance requested (stub agent)\n"
    if reply == b"MAINT OFF\0":
        return "up ready 100%\n"
    return "up drain #unexpected answer %r (stub agent)\n" % reply


def main():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ADDRESS, PORT))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        try:
            conn.sendall(answer().encode())
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
