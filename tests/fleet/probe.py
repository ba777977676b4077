#!/usr/bin/env python3
"""One-off clients for tests/fleet.rs, run in the client namespace. Each
prints one line the test checks.

  probe.py direct-proxy SRC HOST PORT
      connects from SRC straight to a node's PROXY port (not through the
      balancer), claims to be 10.77.0.99 in a PROXY v2 header, sends PING;
      prints the reply, or "closed" when the node closes without one.
  probe.py ping SRC HOST PORT
      PING from SRC through the balancer; the reply or "closed".
  probe.py hold SRC HOST PORT N
      opens up to N sessions from SRC through the balancer, each
      IDSESSION + PING and kept open; prints "held H refused R" (a
      session is refused when it closes without its PONG), then closes
      them all.
"""
import socket
import struct
import sys

SIG = b"\r\n\r\n\0\r\nQUIT\n"


def connect(src, host, port, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect((host, int(port)))
    return s


def read_all(s):
    out = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                break
            out += b
    except OSError:
        pass
    return out


def show(b):
    return b.decode(errors="replace").replace("\0", "\\0") if b else "closed"


def main():
    cmd, src, host, port = sys.argv[1:5]
    if cmd == "direct-proxy":
        s = connect(src, host, port)
        header = SIG + b"\x21\x11\x00\x0c" + socket.inet_aton("10.77.0.99") + \
            socket.inet_aton(host) + struct.pack(">HH", 40000, int(port))
        try:
            s.sendall(header + b"zPING\0")
        except OSError:
            pass
        print(show(read_all(s)))
    elif cmd == "ping":
        s = connect(src, host, port)
        try:
            s.sendall(b"zPING\0")
        except OSError:
            pass
        print(show(read_all(s)))
    elif cmd == "hold":
        n = int(sys.argv[5])
        held = []
        for _ in range(n):
            s = connect(src, host, port)
            try:
                s.sendall(b"zIDSESSION\0zPING\0")
                got = b""
                while not got.endswith(b"\0"):
                    b = s.recv(64)
                    if not b:
                        break
                    got += b
            except OSError:
                got = b""
            if got == b"1: PONG\0":
                held.append(s)
            else:
                s.close()
        # Still open? (A node at the cap may have closed one of this
        # client's own sessions to make room instead of refusing.)
        alive = 0
        for s in held:
            try:
                s.sendall(b"zPING\0")
                if s.recv(64) == b"2: PONG\0":
                    alive += 1
            except OSError:
                pass
        print("held %d refused %d" % (alive, n - alive))
        for s in held:
            s.close()


if __name__ == "__main__":
    main()
