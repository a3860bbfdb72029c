#!/usr/bin/env python3
"""Proxy capacity: 10,000 idle WebSocket connections, and one 1 GiB message.

Usage: python3 benchmarks/proxy-capacity.py [--binary .build/release/wsinspect] [--connections 10000]

Measures, through `wsinspect proxy` logging JSON Lines to a file:
  1. the proxy's resident memory (VmRSS / VmHWM) with N idle connections open
     (each a completed WebSocket handshake to a raw upstream that answers 101);
  2. how much its peak memory grows while a 1 GiB binary message passes
     (streamed as one frame from a raw client to an upstream that discards it).
Targets from the proxy issue: 10,000 idle connections under 300 MB RSS; RSS
growth under 64 MB during the 1 GiB message. Loopback only; stops by itself.
"""
import argparse
import multiprocessing
import base64
import hashlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REPO = Path(__file__).resolve().parents[1]


def status(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return 0.0


def upstream_process(port_value, sink_bytes, limit):
    """Own process (own open-file limit): answers every upgrade with 101,
    then reads and discards, counting bytes in the shared `sink_bytes`."""
    resource.setrlimit(resource.RLIMIT_NOFILE, limit)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port_value.value = listener.getsockname()[1]
    held = []

    def serve(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        key = [l.split(b":", 1)[1].strip() for l in data.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            with sink_bytes.get_lock():
                sink_bytes.value += len(chunk)

    def accept_loop():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    accept_loop()


def handshake(address):
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 101"), data[:80]
    return sock


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(REPO / ".build/release/wsinspect"))
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.connections + 1024
    if want > hard:
        try:  # root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            hard = want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    # The proxy holds two descriptors per connection; where the hard limit
    # is too low (a sandbox), measure as many as fit and scale per connection.
    fits = (hard - 1000) // 2
    if args.connections > fits:
        print(f"note: the open-file limit ({hard}) fits {fits} proxied connections, not {args.connections}; "
              f"measuring {fits} and scaling the per-connection figure")
        args.connections = fits

    sink = multiprocessing.Value("q", 0)
    port = multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=upstream_process, args=(port, sink, (want, hard)), daemon=True)
    server.start()
    while port.value == 0:
        time.sleep(0.05)
    upstream = "ws://127.0.0.1:%d" % port.value
    work = Path(tempfile.mkdtemp(prefix="proxy-capacity-"))
    ready = work / "ready"
    proc = subprocess.Popen([args.binary, "proxy", "--listen", "127.0.0.1:0", "--upstream", upstream,
                             "--ready-file", str(ready), "--log", str(work / "log.jsonl"), "--format", "jsonl"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not (ready.exists() and ready.read_text().endswith("\n")):
            time.sleep(0.05)
        address = ready.read_text().strip()
        time.sleep(0.3)
        base_rss = status(proc.pid, "VmRSS")

        started = time.monotonic()
        clients = [handshake(address) for _ in range(args.connections)]
        took = time.monotonic() - started
        time.sleep(1.0)
        idle_rss = status(proc.pid, "VmRSS")
        each = (idle_rss - base_rss) / len(clients)
        at_10k = base_rss + each * 10_000
        print(f"idle connections: {len(clients)} opened in {took:.1f} s; proxy RSS {base_rss:.1f} MiB before, "
              f"{idle_rss:.1f} MiB with all open ({each * 1024:.1f} KiB each; {at_10k:.0f} MiB at 10,000); "
              f"target < 300 MB: {'PASS' if at_10k < 300 * 1e6 / 2**20 else 'MISS'}")
        for sock in clients:
            sock.close()
        # Let the proxy (and the thread-per-connection upstream) wind all of
        # them down before the next phase: a new connection made while
        # thousands still close once waited out its 30 s timeout.
        deadline = time.monotonic() + 120
        while len(os.listdir(f"/proc/{proc.pid}/fd")) > 64 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)

        # One binary frame of N bytes, unmasked (the proxy relays it regardless; the log flags it).
        size = int(args.gib * (1 << 30))
        sock = handshake(address)
        before = status(proc.pid, "VmHWM")
        received_before = sink.value
        header = bytes([0x82, 127]) + size.to_bytes(8, "big")
        chunk = os.urandom(1 << 20)
        started = time.monotonic()
        sock.sendall(header)
        sent = 0
        while sent < size:
            piece = chunk[: min(len(chunk), size - sent)]
            sock.sendall(piece)
            sent += len(piece)
        while sink.value - received_before < size + len(header):
            time.sleep(0.05)
        took = time.monotonic() - started
        after = status(proc.pid, "VmHWM")
        print(f"1 message of {size / 2**30:.2f} GiB relayed in {took:.1f} s ({size / took / 1e6:.0f} MB/s); "
              f"proxy peak RSS {before:.1f} → {after:.1f} MiB (+{after - before:.1f} MiB); "
              f"target growth < 64 MB: {'PASS' if (after - before) < 64 * 1e6 / 2**20 else 'MISS'}")
        sock.close()
    finally:
        proc.terminate()
        proc.wait(30)
        server.terminate()


if __name__ == "__main__":
    main()
