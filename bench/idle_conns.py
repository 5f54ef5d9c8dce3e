#!/usr/bin/env python3
"""Opens N keep-alive connections to 127.0.0.1:PORT, sends one request on
each and reads its response, then keeps them all open and idle.

    usage: idle_conns.py PORT N HOLD_SECONDS [HEADER ...]

Prints "open N" (or "open K failed ..." when fewer could be made) once
every connection has had its answer, then holds them for HOLD_SECONDS (or
until it is killed) and exits, closing them.
Used by bench/memory.sh; talks to 127.0.0.1 only.
"""
import socket
import sys
import time


def read_response(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    if status != b"200":
        raise ConnectionError(f"status {status.decode()}")


def main():
    port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    headers = "".join(f"{h}\r\n" for h in sys.argv[4:])
    request = (f"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n").encode()
    conns = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(request)
            read_response(s)
            conns.append(s)
    except (OSError, ConnectionError) as e:
        print(f"open {len(conns)} failed after {len(conns)} of {n}: {e}", flush=True)
    else:
        print(f"open {len(conns)}", flush=True)
    time.sleep(hold)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
