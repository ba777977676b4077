#!/usr/bin/env python3
"""A stand-in HAProxy agent for one scenario of tests/fleet.rs: a node whose
database is older than database.max-age. The node's own agent (the observer
process) decides that from the build time in daily.cvd's header, and a test
cannot make a signed daily.cvd (libclamav refuses a hand-made container
header), so HAProxy is pointed here for that scenario and back after it.

It answers each connection with the content of ANSWER_FILE (one line, the
observer's words for that state), or "up ready 100%" when there is none.

usage: agent.py ADDRESS PORT ANSWER_FILE
"""
import socket
import sys

ADDRESS, PORT, ANSWER = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def answer():
    try:
        with open(ANSWER) as f:
            return f.read().strip() + "\n"
    except FileNotFoundError:
        return "up ready 100%\n"


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
