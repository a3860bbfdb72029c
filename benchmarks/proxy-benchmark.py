#!/usr/bin/env python3
"""proxy-benchmark.py — what `wsinspect proxy` costs on the wire, next to a direct
connection and socat (a plain TCP relay) measured in the same run.

Usage (from anywhere; paths are relative to the repository root):

    benchmarks/proxy-benchmark.py                 # ~12 min; table + benchmarks/out/proxy-benchmark.txt
    benchmarks/proxy-benchmark.py --rounds 1 --duration 1   # quicker try-out (figures are noisier)
    benchmarks/proxy-benchmark.py --binary .build/debug/wsinspect --only 16B-w64

Needs: Node 20 + Debian node-ws (NODE_PATH=/usr/share/nodejs), socat, and
.build/release/wsinspect (built with `swift build -c release --static-swift-stdlib --product wsinspect`
only when that file is missing; --binary picks another one).

What it measures: a Node `ws` echo server (compression off) and a Node `ws` load client
in separate processes (both C++-free JavaScript, but far faster than Python websockets
for small messages). The client keeps WINDOW messages in flight per connection, checks
every echoed byte against what it sent (a mismatch aborts the run), and reports echoed
messages/s, MB/s (payload bytes echoed per second, one way, 10^6 B) and the p50/p99
round-trip latency, measured after a warm-up. Each scenario runs against these targets:

    direct       client -> echo server
    socat        client -> socat -b 262144 TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:S -> echo server
                 (socat's defaults: Nagle's algorithm on)
    socat-nd     the same with ,nodelay on both addresses (TCP_NODELAY)
    wsinspect    client -> wsinspect proxy --log FILE --format jsonl -> echo server
                 (a fresh proxy per scenario, logging every frame and message to a file;
                 --nagle auto, the default)
    no-log       client -> wsinspect proxy --no-log -> echo server (relay only)
    nodelay      wsinspect logging, with --nagle off (TCP_NODELAY, as socat-nd)
    nagle        wsinspect logging, with --nagle on (Nagle's algorithm, as socat's defaults)

Every target runs --rounds times (3 by default), the rounds interleaving the targets so that a
noisy spell of the machine hits them all alike; the table shows the median of each figure and the
spread of the rates.

Two scenarios show what Nagle's algorithm costs in a relay. 16B-split writes each frame in two
parts, its header and then its payload, as a client that writes a frame's pieces separately does:
the payload waits for the ACK of the header, which the server delays (RFC 1122 4.2.3.2) because it
has nothing to answer yet. 16B-note sends a text notification ("note", which the echo server
does not answer) right before each binary message: the message waits for the ACK of the notification.

Every wsinspect target is compared with plain socat, the reference, and --nagle off also
with socat-nd, which uses the same socket option. TCP_NODELAY decides how many segments small
messages take, and so most of what the relay and both peers spend on them; --nagle auto gathers
small writes only while the receiving peer is behind, so that 16B-w64 takes about as few
segments as through socat while 16B-split and 16B-note take no delayed-ACK wait.

For the relays the table also shows their CPU use (cores = CPU seconds / wall seconds),
and for wsinspect how many of the relayed frames reached the log (the proxy drops log
records, never relayed bytes, when the log writer falls behind) and its peak RSS.
"others" is the CPU, in cores, that processes outside the benchmark used meanwhile: on a
2-core machine anything above ~0.1 skews the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
NODE_PATH = "/usr/share/nodejs"
NODE_ENV = dict(os.environ, NODE_PATH=NODE_PATH)
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    size: int
    connections: int
    window: int
    description: str
    # "split": the client writes each frame in two parts, header then (a tick later) payload;
    # "note": it sends an unanswered text message a tick before each binary one
    pattern: str = ""


SCENARIOS = [
    Scenario("16B-w64", 16, 1, 64, "16 B messages, 1 connection, window 64"),
    Scenario("16B-w1", 16, 1, 1, "16 B messages, 1 connection, window 1 (ping-pong)"),
    Scenario("16B-split", 16, 1, 1, "16 B messages, window 1, each frame written in two parts", pattern="split"),
    Scenario("16B-note", 16, 1, 1, "16 B messages, window 1, each after an unanswered notification", pattern="note"),
    Scenario("64KiB", 64 << 10, 1, 16, "64 KiB messages, 1 connection, window 16"),
    Scenario("64x1KiB", 1 << 10, 64, 4, "1 KiB messages, 64 connections, window 4 each"),
    Scenario("1MiB", 1 << 20, 1, 4, "1 MiB messages, 1 connection, window 4"),
]

ECHO_SERVER_JS = r"""
'use strict';
// Echo server: every message goes back to its sender, unchanged, but the text message "note",
// a notification, which it does not answer.
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false,
                                  maxPayload: 256 * 1024 * 1024 });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (isBinary || data.length !== 4 || data.toString() !== 'note') ws.send(data, { binary: isBinary });
  });
});
wss.on('listening', () => process.stdout.write(`LISTENING ${wss.address().port}\n`));
"""

LOAD_CLIENT_JS = r"""
'use strict';
// Load client: CONNS connections, WINDOW binary messages of SIZE bytes in flight on each;
// every echo is compared byte for byte with what was sent. Prints one JSON line.
// PATTERN "split" writes each frame in two parts, its header and then, a tick later, its payload, as
// clients that write a frame's pieces separately do (the masking key is 0, which RFC 6455 allows);
// "note" sends a text notification, which the echo server does not answer, a tick before each message.
const { WebSocket } = require('ws');
const [url, size, conns, window, duration, warmup] = process.argv.slice(2, 8)
  .map((v, i) => (i === 0 ? v : Number(v)));
const pattern = process.argv[8] || '';

const lat = [];
let measured = 0, sent = 0, received = 0, mismatches = 0, errors = [];
let tStart = 0, tEnd = 0, stopping = false, open = 0, finished = 0;
const cpu0 = process.cpuUsage();

function report() {
  lat.sort((a, b) => a - b);
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : null);
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(JSON.stringify({
    messages: measured, seconds: (tEnd - tStart) / 1000, sent, received, mismatches, errors,
    p50: pct(0.5), p99: pct(0.99), clientCpu: (cpu.user + cpu.system) / 1e6,
  }) + '\n');
  process.exit(mismatches || errors.length ? 1 : 0);
}

function marker(name) {
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(`${name} ${(cpu.user + cpu.system) / 1e6}\n`);
}

function start() {
  const t = performance.now();
  tStart = t + warmup * 1000;
  tEnd = tStart + duration * 1000;
  setTimeout(() => marker('MEASURE-START'), warmup * 1000);
  setTimeout(() => { marker('MEASURE-END'); stopping = true; }, (warmup + duration) * 1000);
  for (const c of clients) for (let i = 0; i < window; i++) c.sendNext();
}

class Client {
  constructor(index) {
    this.base = Buffer.alloc(size);
    for (let i = 0; i < size; i++) this.base[i] = (i * 131 + index * 17 + 7) & 0xff;
    this.seq = 0;
    this.queue = [];
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
    this.ws.binaryType = 'nodebuffer';
    this.ws.on('open', () => { if (++open === conns) start(); });
    this.ws.on('error', (e) => { errors.push(String(e)); report(); });
    this.ws.on('message', (data) => this.onEcho(data));
  }
  sendNext() {
    const buf = Buffer.from(this.base);
    const seq = this.seq++;
    buf.writeUInt32BE(seq >>> 0, 0);
    if (size >= 8) buf.writeUInt32BE(Math.floor(seq / 4294967296), 4);
    this.queue.push([buf, performance.now()]);
    sent++;
    if (pattern === 'split') this.sendInTwoParts(buf);
    else if (pattern === 'note') { this.ws.send('note'); setImmediate(() => this.ws.send(buf)); }
    else this.ws.send(buf);
  }
  sendInTwoParts(payload) {
    const n = payload.length;
    const length = n < 126 ? [0x80 | n] : n < 65536 ? [0x80 | 126, n >> 8, n & 0xff]
      : [0x80 | 127, 0, 0, 0, 0, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
    const socket = this.ws._socket;
    socket.write(Buffer.from([0x82, ...length, 0, 0, 0, 0]));
    setImmediate(() => socket.write(payload));
  }
  onEcho(data) {
    const now = performance.now();
    const [buf, t] = this.queue.shift();
    received++;
    if (!buf.equals(data)) {
      mismatches++;
      errors.push(`echo differs from what was sent (seq ${buf.readUInt32BE(0)}, ${data.length} vs ${buf.length} bytes)`);
      report();
    }
    if (now >= tStart && now <= tEnd) { measured++; lat.push(now - t); }
    if (!stopping) this.sendNext();
    else if (this.queue.length === 0) { this.ws.close(); if (++finished === conns) report(); }
  }
}

const clients = [];
for (let i = 0; i < conns; i++) clients.push(new Client(i));
setTimeout(() => { errors.push('timed out'); report(); }, (warmup + duration + 60) * 1000);
"""


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def die(message: str) -> None:
    """Exits 1 with "SCRIPT: message" on stderr, SCRIPT being the benchmark run (fault-benchmark imports this one)."""
    print(f"{Path(sys.argv[0]).stem}: {message}", file=sys.stderr)
    sys.exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def proc_cpu_ticks(pid: int, children: bool = False) -> int:
    """utime+stime (and waited-for children's) of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def machine_busy_ticks() -> int:
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f[:8]) - idle


def tcp_segments_sent() -> int:
    """The machine's TCP segments sent so far (OutSegs in /proc/net/snmp): every hop of the
    benchmark is loopback TCP, so the difference over a window counts the segments of all of them."""
    names, values = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                     if line.startswith("Tcp:")]
    return int(values[names.index("OutSegs")])


def status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    except FileNotFoundError:
        pass
    return None


def count_in_file(path: Path, needle: bytes) -> int:
    count, tail = 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            data = tail + chunk
            count += data.count(needle)
            tail = data[-(len(needle) - 1):]
    return count


def wait_file_settled(path: Path, quiet: float = 0.5, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def version_of(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def start_node_server(script: Path, procs: list[subprocess.Popen],
                      what: str = "the echo server") -> tuple[subprocess.Popen, int]:
    """Starts `node SCRIPT` (added to procs at once, for the cleanup) and reads its "LISTENING PORT" line
    -> (the process, PORT)."""
    proc = subprocess.Popen(["node", str(script)], env=NODE_ENV, stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    m = re.fullmatch(r"LISTENING (\d+)\n", proc.stdout.readline())
    if not m:
        die(f"{what} did not start")
    return proc, int(m.group(1))


def start_socat(target_port: int, procs: list[subprocess.Popen], nodelay: bool = False) -> tuple[subprocess.Popen, int]:
    """socat -b 262144 relaying a free local port to target_port (added to procs) -> (the process, its port);
    `nodelay` sets TCP_NODELAY on both sockets."""
    port = free_port()
    option = ",nodelay" if nodelay else ""
    proc = subprocess.Popen(["socat", "-b", "262144", f"TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1{option}",
                             f"TCP:127.0.0.1:{target_port}{option}"])
    procs.append(proc)
    wait_port(port)
    return proc, port


def terminate_all(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each process still running, SIGKILL to one that is not gone 5 s later."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def setup_lines(binary: Path) -> list[str]:
    """The report's lines on what was measured: commit, binary, CPU and kernel."""
    commit = version_of(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(binary.stat().st_mtime))
    return [
        f"  commit: {commit}{' (+ uncommitted changes)' if dirty else ''}",
        f"  binary: {binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary} (built {built})",
        f"  cpu: {cpu}, {os.cpu_count()} cores; kernel {platform.release()}",
    ]


def has_proxy(binary: Path) -> bool:
    return subprocess.run([str(binary), "proxy", "--help"], capture_output=True).returncode == 0


def find_binary(arg: str | None) -> Path:
    if arg:
        path = Path(arg).resolve()
        if not os.access(path, os.X_OK):
            die(f"{path} is not an executable")
        return path
    path = REPO / ".build/release/wsinspect"
    if not path.exists():
        print("building .build/release/wsinspect (swift build -c release --static-swift-stdlib --product wsinspect) ...", flush=True)
        subprocess.run(["swift", "build", "-c", "release", "--static-swift-stdlib", "--product", "wsinspect"], cwd=REPO, check=True)
    if not has_proxy(path):
        die(f"{path} has no `proxy` subcommand (built before it existed?); rebuild it or pass --binary")
    return path


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------


class Proxy:
    """One `wsinspect proxy` per scenario, logging to its own file; `args` are added to its command line."""

    def __init__(self, binary: Path, echo_port: int, log: Path, workdir: Path, logs: bool = True,
                 args: tuple[str, ...] | list[str] = (), what: str = "wsinspect proxy"):
        self.log = log
        ready = workdir / f"{log.stem}.ready"
        ready.unlink(missing_ok=True)
        self.stderr_path = workdir / f"{log.stem}.stderr"
        logging = ["--log", str(log), "--format", "jsonl"] if logs else ["--no-log"]
        self.proc = subprocess.Popen(
            [str(binary), "proxy", "--listen", "127.0.0.1:0", "--upstream", f"ws://127.0.0.1:{echo_port}",
             *logging, "--ready-file", str(ready), *args],
            stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "wb"))
        deadline = time.monotonic() + 20
        while not (ready.exists() and ready.read_text().endswith("\n")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                die(f"{what} did not start: {self.stderr_path.read_text(errors='replace')}")
            time.sleep(0.02)
        self.port = int(ready.read_text().strip().rpartition(":")[2])
        time.sleep(0.3)  # the signal handlers are installed just after the ready file

    def stop(self) -> tuple[str, dict | None]:
        """SIGINT (the graceful stop that writes the summary); SIGKILL after 5 s."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
            how = f"exit {self.proc.returncode}"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            how = "ignored SIGINT, killed"
        summary = None
        if not self.log.exists():
            return how, None
        with open(self.log, "rb") as f:
            f.seek(max(0, self.log.stat().st_size - 4096))
            lines = f.read().splitlines()
        if lines and lines[-1].startswith(b'{"type":"summary"'):
            summary = json.loads(lines[-1])
        return how, summary

    def dropped_log_records(self) -> int:
        """How many log records the proxy said (on stderr) it dropped."""
        dropped = re.search(r"(\d+) log records were dropped", self.stderr_path.read_text(errors="replace"))
        return int(dropped.group(1)) if dropped else 0


@dataclass
class Result:
    scenario: Scenario
    target: str
    messages: int = 0
    seconds: float = 0.0
    p50: float | None = None
    p99: float | None = None
    relay_cores: float | None = None
    client_cores: float | None = None
    echo_cores: float | None = None
    others_cores: float | None = None
    segments_per_message: float | None = None  # TCP segments on all hops per echoed message
    notes: str = ""
    ok: bool = True
    sent: int = 0
    wall: float = 0.0  # seconds the load client ran, start-up and drain included

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.msgs_per_s * self.scenario.size / 1e6


def tree_cpu_ticks(pid: int) -> int:
    """CPU ticks of a process (all threads), its live children and its reaped ones (socat
    forks one child per connection)."""
    total = proc_cpu_ticks(pid, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total


def run_client(workdir: Path, port: int, sc: Scenario, duration: float, warmup: float, sample) -> dict:
    """Runs the load client; calls sample() at the start and the end of its measured window
    and returns its result with the CPU counters of that window under "window"."""
    cmd = ["node", str(workdir / "load_client.js"), f"ws://127.0.0.1:{port}/bench", str(sc.size),
           str(sc.connections), str(sc.window), str(duration), str(warmup), sc.pattern]
    proc = subprocess.Popen(cmd, env=NODE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    window, last = {}, ""
    for line in proc.stdout:
        name, _, value = line.strip().partition(" ")
        if name in ("MEASURE-START", "MEASURE-END"):
            window[name] = (time.monotonic(), float(value), sample())
        elif line.strip():
            last = line
    stderr = proc.stderr.read()
    proc.wait(duration + warmup + 90)
    try:
        out = json.loads(last)
    except ValueError:
        out = {"messages": 0, "seconds": 0, "errors": [f"client exit {proc.returncode}: {stderr[-500:]}"]}
    out["exit"] = proc.returncode
    out["window"] = window
    return out


def measure(sc: Scenario, target: str, port: int, relay_pid: int | None,
            echo_pid: int, workdir: Path, args) -> Result:
    def sample():
        return (machine_busy_ticks(), proc_cpu_ticks(echo_pid), tree_cpu_ticks(relay_pid) if relay_pid else 0,
                tcp_segments_sent())

    t0 = time.monotonic()
    out = run_client(workdir, port, sc, args.duration, args.warmup, sample)
    wall = time.monotonic() - t0
    res = Result(sc, target, out.get("messages", 0), out.get("seconds", 0.0), out.get("p50"), out.get("p99"))
    window = out["window"]
    if len(window) == 2:
        (t_a, client_a, (busy_a, echo_a, relay_a, segments_a)) = window["MEASURE-START"]
        (t_b, client_b, (busy_b, echo_b, relay_b, segments_b)) = window["MEASURE-END"]
        span = t_b - t_a
        echo_s, relay_s, client_s = (echo_b - echo_a) / CLK_TCK, (relay_b - relay_a) / CLK_TCK, client_b - client_a
        res.echo_cores = echo_s / span
        res.client_cores = client_s / span
        res.relay_cores = relay_s / span if relay_pid else None
        res.others_cores = max(0.0, (busy_b - busy_a) / CLK_TCK - echo_s - relay_s - client_s) / span
        if res.messages:
            res.segments_per_message = (segments_b - segments_a) / res.messages
    if out.get("errors") or out.get("mismatches") or out.get("exit"):
        res.ok = False
        res.notes = "FAILED: " + "; ".join(map(str, out.get("errors") or [f"exit {out.get('exit')}"]))[:300]
    res.sent = out.get("sent", 0)
    res.wall = wall
    return res


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def run_target(sc: Scenario, target: str, refs: dict[str, tuple[int, int | None]], binary: Path, echo_pid: int,
               workdir: Path, log_dir: Path, args) -> Result:
    """One run of the load client against one target; a wsinspect target gets a fresh proxy."""
    proxy_args = {"nodelay": ["--nagle", "off"], "nagle": ["--nagle", "on"]}.get(target, []) + args.proxy_args.split()
    echo_port = refs["direct"][0]
    if target in refs:
        port, pid = refs[target]
        res = measure(sc, target, port, pid, echo_pid, workdir, args)
    elif target == "no-log":
        proxy = Proxy(binary, echo_port, workdir / f"{target}-{sc.name}.jsonl", workdir, logs=False,
                      args=proxy_args)
        res = measure(sc, target, proxy.port, proxy.proc.pid, echo_pid, workdir, args)
        proxy.stop()
    else:
        log = log_dir / f"proxy-bench-{sc.name}{'' if target == 'wsinspect' else '-' + target}.jsonl"
        proxy = Proxy(binary, echo_port, log, workdir, args=proxy_args)
        res = measure(sc, target, proxy.port, proxy.proc.pid, echo_pid, workdir, args)
        rss = status_kib(proxy.proc.pid, "VmHWM")
        wait_file_settled(log)
        # binary data frames only (frame records carry "masked" right after the name)
        frames = count_in_file(log, b'"opcodeName":"binary","masked"')
        how, summary = proxy.stop()
        relayed = 2 * res.sent  # each echoed message: one binary frame each way
        notes = [f"log: {frames:,}/{relayed:,} frames ({100 * frames / relayed if relayed else 0:.0f} %)",
                 f"{log.stat().st_size / 1e6:,.0f} MB", f"RSS {rss / 1024:.0f} MiB" if rss else ""]
        if summary is None:
            notes.append(f"no summary ({how})")
        dropped = proxy.dropped_log_records()
        if dropped:
            notes.append(f"{dropped:,} log records dropped")
        res.notes = "; ".join(n for n in [res.notes] + notes if n)
        if not args.keep_logs:
            log.unlink(missing_ok=True)
    return res


def median_of(runs: list[Result]) -> Result:
    """The median of each figure over the rounds; notes from the run with the median rate, plus the
    spread of the rates."""
    def median(values):
        values = sorted(v for v in values if v is not None)
        return values[len(values) // 2] if values else None
    by_rate = sorted(runs, key=lambda r: r.msgs_per_s)
    middle = by_rate[len(by_rate) // 2]
    res = Result(middle.scenario, middle.target, messages=median([r.msgs_per_s for r in runs]), seconds=1.0,
                 p50=median([r.p50 for r in runs]), p99=median([r.p99 for r in runs]),
                 relay_cores=median([r.relay_cores for r in runs]), client_cores=median([r.client_cores for r in runs]),
                 echo_cores=median([r.echo_cores for r in runs]), others_cores=max(r.others_cores or 0 for r in runs),
                 segments_per_message=median([r.segments_per_message for r in runs]),
                 notes=middle.notes, ok=all(r.ok for r in runs), sent=middle.sent, wall=middle.wall)
    if len(runs) > 1:
        spread = f"runs {by_rate[0].msgs_per_s:,.0f}–{by_rate[-1].msgs_per_s:,.0f} msg/s"
        res.notes = "; ".join(n for n in (spread, *(r.notes for r in runs if not r.ok and r is not middle), middle.notes) if n)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (default 3)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring (default 0.5)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs per target, interleaved; the table shows medians (default 3)")
    ap.add_argument("--binary", help="wsinspect binary (default .build/release/wsinspect)")
    ap.add_argument("--only", help="comma-separated scenario names: " + ", ".join(s.name for s in SCENARIOS))
    ap.add_argument("--keep-logs", action="store_true", help="keep the proxy's JSON Lines logs in benchmarks/out/")
    ap.add_argument("--proxy-args", default="",
                    help="extra arguments for every wsinspect proxy, e.g. \"--max-payload 4096\" (split on spaces)")
    args = ap.parse_args()

    for tool in ("node", "socat"):
        if shutil.which(tool) is None:
            die(f"{tool} not found (Debian: apt-get install {'nodejs node-ws' if tool == 'node' else tool})")
    if subprocess.run(["node", "-e", "require('ws')"], env=NODE_ENV, capture_output=True).returncode != 0:
        die(f"node cannot require('ws') with NODE_PATH={NODE_PATH} (Debian: apt-get install node-ws)")
    if args.rounds < 1:
        die("--rounds must be at least 1")
    binary = find_binary(args.binary)
    scenarios = SCENARIOS
    if args.only:
        names = args.only.split(",")
        scenarios = [s for s in SCENARIOS if s.name in names]
        if len(scenarios) != len(names):
            die(f"--only: unknown scenario in {names}")

    OUT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    (workdir / "echo_server.js").write_text(ECHO_SERVER_JS)
    (workdir / "load_client.js").write_text(LOAD_CLIENT_JS)
    log_dir = OUT if args.keep_logs else workdir

    procs: list[subprocess.Popen] = []
    results: list[Result] = []
    started = time.monotonic()
    try:
        echo, echo_port = start_node_server(workdir / "echo_server.js", procs)
        socat, socat_port = start_socat(echo_port, procs)
        socat_nd, socat_nd_port = start_socat(echo_port, procs, nodelay=True)

        refs = {"direct": (echo_port, None), "socat": (socat_port, socat.pid), "socat-nd": (socat_nd_port, socat_nd.pid)}
        for sc in scenarios:
            print(f"== {sc.name}: {sc.description}", flush=True)
            runs: dict[str, list[Result]] = {target: [] for target in TARGETS}
            # Rounds interleave the targets, so a noisy spell of the machine hits them all alike.
            for round_ in range(args.rounds):
                for target in TARGETS:
                    res = run_target(sc, target, refs, binary, echo.pid, workdir, log_dir, args)
                    runs[target].append(res)
                    lat = f"p50 {res.p50:.3f} ms, p99 {res.p99:.3f} ms" if res.p50 is not None else "no latency"
                    print(f"   {round_ + 1}/{args.rounds} {target:9} {res.msgs_per_s:12,.0f} msg/s"
                          f" {res.mb_per_s:9,.1f} MB/s  {lat}  ({res.wall:.1f} s){'  ' + res.notes if res.notes else ''}",
                          flush=True)
            results += [median_of(runs[target]) for target in TARGETS]
    finally:
        terminate_all(procs)
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(results, binary, time.monotonic() - started, args)
    print()
    print(report)
    (OUT / "proxy-benchmark.txt").write_text(report + "\n")
    print(f"\nwritten to {(OUT / 'proxy-benchmark.txt').relative_to(REPO)}")
    return 0 if all(r.ok for r in results) else 1


TARGETS = ("direct", "socat", "socat-nd", "wsinspect", "no-log", "nodelay", "nagle")


def render(results: list[Result], binary: Path, elapsed: float, args) -> str:
    lines = [
        f"wsinspect proxy benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        *setup_lines(binary),
        f"  node: {version_of(['node', '--version'])}, ws {ws_version()}; {socat_version()}",
        f"  each run: {args.warmup} s warm-up, {args.duration} s measured; whole benchmark {elapsed:.0f} s",
        *([f"  wsinspect proxy arguments added: {args.proxy_args}"] if args.proxy_args else []),
        "",
        f"{'scenario':9} {'target':9} {'msgs/s':>10} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'seg/msg':>7}"
        f" {'relay':>6} {'client':>6} {'echo':>5} {'others':>6}  notes",
        "-" * 118,
    ]
    for r in results:
        def fmt(v, spec):
            width = int(re.match(r"\d*", spec).group() or 0)
            return format(v, spec) if v is not None else "-".rjust(width)
        lines.append(
            f"{r.scenario.name:9} {r.target:9} {r.msgs_per_s:10,.0f} {r.mb_per_s:8,.1f} {fmt(r.p50, '8.3f')}"
            f" {fmt(r.p99, '8.3f')} {fmt(r.segments_per_message, '7.2f')} {fmt(r.relay_cores, '6.2f')}"
            f" {fmt(r.client_cores, '6.2f')}"
            f" {fmt(r.echo_cores, '5.2f')} {fmt(r.others_cores, '6.2f')}  {r.notes}")
    lines += ["", "wsinspect vs plain socat, and --nagle off also vs socat-nd (same scenario, same run):"]
    by = {(r.scenario.name, r.target): r for r in results}
    for sc in dict.fromkeys(r.scenario for r in results):
        d = by.get((sc.name, "direct"))
        for target, like in (("wsinspect", "socat"), ("no-log", "socat"), ("nodelay", "socat-nd"), ("nagle", "socat")):
            p = by.get((sc.name, target))
            for reference in dict.fromkeys((like, "socat")):
                s = by.get((sc.name, reference))
                if not (p and s and s.msgs_per_s and d and d.msgs_per_s):
                    continue
                lat = ""
                if p.p50 is not None and s.p50:
                    lat = f", p50 {1000 * (p.p50 - s.p50):+.0f} µs (x{p.p50 / s.p50:.2f}), p99 x{p.p99 / s.p99:.2f}"
                ratio = p.msgs_per_s / s.msgs_per_s
                share = f"{100 * ratio:5.0f} %" if ratio < 10 else f"{ratio:5.0f} ×"
                lines.append(f"  {sc.name:9} {target:9} {share} of {reference:8}"
                             f" ({100 * p.msgs_per_s / d.msgs_per_s:3.0f} % of direct){lat}")
    busy = [r.others_cores for r in results if r.others_cores is not None]
    lines += [
        "",
        "msgs/s: echoed messages per second; MB/s: payload bytes echoed per second (one way, 10^6 B).",
        "Latency: send to echo received, with WINDOW messages in flight per connection.",
        "seg/msg: TCP segments sent on all hops (data and ACKs, the machine's OutSegs) per echoed message.",
        "relay/client/echo/others: CPU used during the measured window, in cores, by the relay (socat",
        "incl. its per-connection children, wsinspect incl. all threads), the load client, the echo",
        "server, and everything else on the machine. log: binary frame records in the JSON Lines log /",
        "binary frames relayed, and the log's size; RSS: the proxy's peak resident memory (VmHWM).",
    ]
    if busy and max(busy) > 0.15:
        lines.append(f"WARNING: the machine was not idle (others up to {max(busy):.2f} cores of {os.cpu_count()});"
                     " figures are depressed, ratios within a scenario are more telling.")
    return "\n".join(lines)


def socat_version() -> str:
    r = subprocess.run(["socat", "-V"], capture_output=True, text=True)
    m = re.search(r"socat version (\S+)", r.stdout + r.stderr)
    return f"socat {m.group(1)}" if m else "socat ?"


def ws_version() -> str:
    try:
        return json.loads(Path(NODE_PATH, "ws", "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
