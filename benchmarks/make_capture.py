#!/usr/bin/env python3
"""Record a large pcap of real WebSocket traffic on loopback, for benchmarks.

Usage:
    python3 benchmarks/make_capture.py capture --output benchmarks/out/ws-echo.pcap
        [--messages 600000] [--connections 8] [--binary-fraction 0.005]
        [--fragment-fraction 0.002] [--ping-every 2000]
        [--compressed-messages 20000] [--seed 1] [--tcpdump tcpdump]

What it does (everything on 127.0.0.1, nothing leaves the machine):
  1. starts an echo server (a `websockets` asyncio server in a child process)
     on a free port chosen by the kernel (port 0);
  2. starts `tcpdump -i lo -s 0 -B 65536 -Z root -w FILE.partial 'tcp port P'`
     and waits until it says it is listening;
  3. runs the client (another child process): CONNECTIONS uncompressed
     connections (compression=None) sending MESSAGES messages in total, then a
     smaller phase of 2 permessage-deflate connections sending
     COMPRESSED_MESSAGES messages; every message is echoed by the server;
  4. waits 2.5 s after the traffic ends (libpcap flushes late), stops tcpdump
     with SIGTERM, and refuses the capture if tcpdump reports packets dropped
     by the kernel (exit status 3) or if any echo is missing;
  5. renames FILE.partial to FILE and writes FILE.meta.json (port, counts).

The message mix imitates a busy real-time app: mostly 20-200 byte JSON text
messages (chat, presence, tickers, acks...), a small fraction of 1-64 KiB
binary messages (log-uniform sizes), a few fragmented messages, periodic
pings, and a close handshake per connection. Connections use different
pipelining windows (1, 4, 16, 64 outstanding messages), so the capture holds
both one-frame-per-segment exchanges and segments carrying many frames, and
frames split across segments.

The `serve` and `client` subcommands are the two children; they are not
meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------- payloads

KINDS = ["chat.message", "presence", "ticker", "cursor", "typing", "ack",
         "notification", "order.update", "metrics", "heartbeat"]
WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
         "tempor incididunt ut labore et dolore magna aliqua ut enim ad minim "
         "veniam quis nostrud exercitation ullamco laboris nisi aliquip").split()


def text_size(rng: random.Random) -> int:
    """20-200 bytes, most between 40 and 120 (log-normal, clipped)."""
    return max(20, min(200, int(rng.lognormvariate(math.log(75), 0.45))))


def make_text(rng: random.Random, seq: int) -> str:
    target = text_size(rng)
    kind = rng.choice(KINDS)
    candidates = [
        f'{{"type":"{kind}","seq":{seq},"ts":{1700000000 + seq * 0.013:.3f},'
        f'"user":"u{rng.randrange(100000)}","room":"r{rng.randrange(500)}"',
        f'{{"type":"{kind}","seq":{seq},"user":"u{rng.randrange(100000)}"',
        f'{{"t":"{kind[:4]}","id":{seq}',
        f'{{"id":{seq % 1000}',
    ]
    for prefix in candidates:
        if len(prefix) + 8 <= target:
            break
    else:
        prefix = '{"a":1'
    room = target - len(prefix) - len(',"d":""}')
    words = []
    length = 0
    while length < room:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    filler = " ".join(words)[:max(room, 0)]
    text = prefix + ',"d":"' + filler + '"}' if room >= 0 else prefix + "}"
    return text


def make_binary(rng: random.Random) -> bytes:
    """1-64 KiB, log-uniform; half noise (media, encrypted blobs), half
    structured records (protobuf/msgpack-like snapshots)."""
    size = int(math.exp(rng.uniform(math.log(1024), math.log(65536))))
    if rng.random() < 0.5:
        return rng.randbytes(size)
    record = bytearray()
    while len(record) < size:
        record += (rng.randrange(1 << 32).to_bytes(4, "little") + b"\x08\x01\x12\x06sym"
                   + rng.randrange(1 << 16).to_bytes(2, "little") + bytes(6))
    return bytes(record[:size])


def message_plan(seed: int, count: int, binary_fraction: float,
                 fragment_fraction: float) -> list[tuple[object, bool]]:
    """(payload, fragmented) for each message; payloads come from pools so
    building half a million of them stays fast."""
    rng = random.Random(seed)
    texts = [make_text(rng, i) for i in range(8192)]
    binaries = [make_binary(rng) for _ in range(512)]
    plan = []
    for _ in range(count):
        if rng.random() < binary_fraction:
            payload: object = rng.choice(binaries)
        else:
            payload = rng.choice(texts)
        plan.append((payload, rng.random() < fragment_fraction))
    return plan


def fragments(payload: object, pieces: int = 3) -> list:
    step = max(1, math.ceil(len(payload) / pieces))
    return [payload[i:i + step] for i in range(0, len(payload), step)]


# ---------------------------------------------------------------- server

async def serve_main() -> None:
    from websockets.asyncio.server import serve

    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # compression="deflate" only takes effect when a client offers it; the
    # main phase's clients use compression=None so those connections are
    # plain frames.
    async with serve(echo, "127.0.0.1", 0, compression="deflate",
                     max_size=4 * 1024 * 1024, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await stop


# ---------------------------------------------------------------- client

async def run_connection(port: int, index: int, plan, window: int,
                         compression: str | None, ping_every: int) -> tuple[int, int, int]:
    from websockets.asyncio.client import connect

    uri = f"ws://127.0.0.1:{port}/feed?conn={index}"
    async with connect(uri, compression=compression, proxy=None,
                       ping_interval=None, max_size=4 * 1024 * 1024,
                       open_timeout=30, close_timeout=30) as ws:
        credits = asyncio.Semaphore(window)
        expected = len(plan)
        sent_bytes = sum(len(p) for p, _ in plan)

        async def reader() -> tuple[int, int]:
            count = received = 0
            while count < expected:
                message = await ws.recv()
                count += 1
                received += len(message)
                credits.release()
            return count, received

        task = asyncio.create_task(reader())
        pings = []
        for number, (payload, fragmented) in enumerate(plan, 1):
            await credits.acquire()
            if fragmented and len(payload) >= 3:
                await ws.send(fragments(payload))
            else:
                await ws.send(payload)
            if ping_every and number % ping_every == 0:
                pings.append(await ws.ping())
        count, received = await task
        if pings:
            await asyncio.wait_for(asyncio.gather(*pings), timeout=30)
        if received != sent_bytes:
            raise RuntimeError(f"connection {index}: sent {sent_bytes} bytes, echoed {received}")
        return count, received, len(pings)


async def client_main(args) -> None:
    phases = [("plain", None, args.messages, args.connections, args.seed)]
    if args.compressed_messages:
        phases.append(("deflate", "deflate", args.compressed_messages, 2, args.seed + 1))
    summary = {}
    windows = [1, 4, 16, 64]
    for name, compression, total, connections, seed in phases:
        started = time.monotonic()
        plan = message_plan(seed, total, args.binary_fraction, args.fragment_fraction)
        shares = [plan[i::connections] for i in range(connections)]
        results = await asyncio.gather(*(
            run_connection(args.port, index, share, windows[index % len(windows)],
                           compression, args.ping_every)
            for index, share in enumerate(shares)))
        elapsed = time.monotonic() - started
        summary[name] = {
            "connections": connections,
            "messages": sum(r[0] for r in results),
            "payloadBytesEachWay": sum(r[1] for r in results),
            "pings": sum(r[2] for r in results),
            "binaryMessages": sum(1 for p, _ in plan if isinstance(p, bytes)),
            "fragmentedMessages": sum(1 for p, f in plan if f and len(p) >= 3),
            "seconds": round(elapsed, 2),
        }
        print(f"make_capture: {name}: {summary[name]['messages']} messages echoed on "
              f"{connections} connections in {elapsed:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps(summary), flush=True)


# ---------------------------------------------------------------- capture

def capture_main(args) -> int:
    output = os.path.abspath(args.output)
    partial = output + ".partial"
    os.makedirs(os.path.dirname(output), exist_ok=True)
    for stale in (partial, output, output + ".meta.json"):
        if os.path.exists(stale):
            os.remove(stale)

    children: list[subprocess.Popen] = []

    def on_term(signum, frame):  # let `finally` clean up on SIGTERM/SIGHUP
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    tcpdump_lines: list[str] = []
    finished = keep_partial = False
    try:
        server = subprocess.Popen([sys.executable, __file__, "serve"], stdout=subprocess.PIPE, text=True)
        children.append(server)
        line = server.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError("echo server did not report its port")
        port = int(line)
        print(f"make_capture: echo server on 127.0.0.1:{port}", file=sys.stderr)

        # -Z root: Debian's tcpdump otherwise switches to the `tcpdump` user
        # before opening the output file, which then cannot be written in a
        # root-owned directory.
        tcpdump = subprocess.Popen(
            [args.tcpdump, "-i", "lo", "-s", "0", "-B", "65536", "-Z", "root",
             "-w", partial, f"tcp port {port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        children.append(tcpdump)
        listening = threading.Event()

        def drain() -> None:
            for text in tcpdump.stderr:
                tcpdump_lines.append(text.rstrip("\n"))
                if "listening on" in text:
                    listening.set()
            listening.set()
        threading.Thread(target=drain, daemon=True).start()
        if not listening.wait(20) or tcpdump.poll() is not None:
            raise RuntimeError("tcpdump did not start: " + " | ".join(tcpdump_lines))
        time.sleep(0.5)

        started = time.monotonic()
        client = subprocess.run(
            [sys.executable, __file__, "client", "--port", str(port),
             "--messages", str(args.messages), "--connections", str(args.connections),
             "--binary-fraction", str(args.binary_fraction),
             "--fragment-fraction", str(args.fragment_fraction),
             "--ping-every", str(args.ping_every),
             "--compressed-messages", str(args.compressed_messages),
             "--seed", str(args.seed)],
            stdout=subprocess.PIPE, text=True, timeout=args.timeout)
        if client.returncode != 0:
            raise RuntimeError(f"client failed with status {client.returncode}")
        traffic = json.loads(client.stdout.strip().splitlines()[-1])
        traffic_seconds = time.monotonic() - started

        time.sleep(2.5)  # libpcap hands the last buffers over late
        tcpdump.send_signal(signal.SIGTERM)
        tcpdump.wait(timeout=60)
        time.sleep(0.2)
        stats = {}
        for text in tcpdump_lines:
            match = re.match(r"(\d+) packets? (captured|received by filter|dropped by kernel)", text)
            if match:
                stats[match.group(2)] = int(match.group(1))
        print("make_capture: tcpdump: " + "; ".join(tcpdump_lines[-3:]), file=sys.stderr)
        if "dropped by kernel" not in stats:
            raise RuntimeError("tcpdump did not report its drop count: " + " | ".join(tcpdump_lines))
        if stats["dropped by kernel"] != 0:
            print(f"make_capture: ERROR: tcpdump dropped {stats['dropped by kernel']} packets; "
                  f"the capture is incomplete; left for inspection as {partial}", file=sys.stderr)
            keep_partial = True
            return 3

        os.replace(partial, output)
        meta = {
            "file": os.path.basename(output),
            "bytes": os.path.getsize(output),
            "serverPort": port,
            "tcpdump": stats,
            "trafficSeconds": round(traffic_seconds, 2),
            "traffic": traffic,
            "parameters": {k: v for k, v in vars(args).items() if k not in ("func",)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with open(output + ".meta.json", "w") as handle:
            json.dump(meta, handle, indent=2)
        print(f"make_capture: wrote {output} ({meta['bytes'] / 1e6:.1f} MB, "
              f"{stats['captured']} packets)", file=sys.stderr)
        finished = True
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if not finished and not keep_partial and os.path.exists(partial):
            os.remove(partial)  # interrupted or failed: no half capture left behind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def sizing(p: argparse.ArgumentParser) -> None:
        p.add_argument("--messages", type=int, default=600_000,
                       help="messages in the uncompressed phase (each is echoed: 2 frames)")
        p.add_argument("--connections", type=int, default=8)
        p.add_argument("--binary-fraction", type=float, default=0.005,
                       help="share of 1-64 KiB binary messages (the rest is 20-200 B text)")
        p.add_argument("--fragment-fraction", type=float, default=0.002,
                       help="share of messages sent in 3 fragments")
        p.add_argument("--ping-every", type=int, default=2000,
                       help="client ping after every N messages on a connection (0: none)")
        p.add_argument("--compressed-messages", type=int, default=20_000,
                       help="messages in the permessage-deflate phase (0: skip it)")
        p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("capture")
    p.add_argument("--output", required=True)
    p.add_argument("--tcpdump", default="tcpdump")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed for the traffic")
    sizing(p)
    p = sub.add_parser("client")
    p.add_argument("--port", type=int, required=True)
    sizing(p)
    sub.add_parser("serve")
    args = parser.parse_args()

    if args.command == "serve":
        asyncio.run(serve_main())
        return 0
    if args.command == "client":
        asyncio.run(client_main(args))
        return 0
    return capture_main(args)


if __name__ == "__main__":
    sys.exit(main())
