#!/usr/bin/env python3
"""Lab traffic for vagrant/bench.sh (standard library only, runs on the client).

    load.py cps HOST PORT SECONDS [--workers N]   HTTP/1.0 GETs, one connection each
    load.py udp HOST PORT SECONDS [--flows N]     64-byte-frame UDP datagrams

Prints one line `cps <per second> ok=<n> failed=<n>` or `sent <n>`.
"""
import argparse
import os
import socket
import sys
import time


def cps_worker(host, port, seconds, wfd):
    ok = failed = 0
    req = b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=3) as s:
                s.sendall(req)
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            if b"This is service" in data:
                ok += 1
            else:
                failed += 1
        except OSError:
            failed += 1
    os.write(wfd, f"{ok} {failed}\n".encode())


def cps(host, port, seconds, workers):
    pids, rfds = [], []
    t0 = time.monotonic()
    for _ in range(workers):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                cps_worker(host, port, seconds, w)
            finally:
                os._exit(0)
        os.close(w)
        pids.append(pid)
        rfds.append(r)
    ok = failed = 0
    for pid, r in zip(pids, rfds):
        with os.fdopen(r) as f:
            parts = (f.read().split() or ["0", "0"])
        os.waitpid(pid, 0)
        ok += int(parts[0])
        failed += int(parts[1])
    elapsed = time.monotonic() - t0
    print(f"cps {ok / elapsed:.0f} ok={ok} failed={failed}")


def udp(host, port, seconds, flows):
    payload = b"x" * 18  # 14 + 20 + 8 + 18 = 60 bytes on the wire (64 with FCS)
    socks = []
    for _ in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((host, port))
        socks.append(s)
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(64):
            for s in socks:
                try:
                    s.send(payload)
                    sent += 1
                except OSError:  # ENOBUFS, or ECONNREFUSED from an ICMP error
                    pass
    print(f"sent {sent}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["cps", "udp"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--flows", type=int, default=12)
    a = p.parse_args()
    if a.kind == "cps":
        cps(a.host, a.port, a.seconds, a.workers)
    else:
        udp(a.host, a.port, a.seconds, a.flows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
