#!/usr/bin/env python3
"""fault-benchmark.py — how precisely `wsinspect proxy --rules` delays and throttles, and what
fault mode costs when no rule matches, each next to a reference measured in the same run.

Usage (from anywhere; paths are relative to the repository root):

    python3 benchmarks/fault-benchmark.py            # ~1.5 min; tables + benchmarks/out/fault-benchmark.txt
    python3 benchmarks/fault-benchmark.py --quick    # ~1 min, fewer samples (noisier figures)
    python3 benchmarks/fault-benchmark.py --binary .build/debug/wsinspect

Needs: Node 20 + Debian node-ws (NODE_PATH=/usr/share/nodejs), .build/release/wsinspect
(`swift build -c release --static-swift-stdlib --product wsinspect`; --binary picks another one) with `proxy --rules`,
and socat for the relay reference in part 3 (skipped when it is not installed). Shares the echo
server, the load client, the proxy start/stop, the process helpers and the CPU accounting of
benchmarks/proxy-benchmark.py, which it imports.

Everything runs on loopback against a Node `ws` echo server (compression off). Every proxy is a
fresh `wsinspect proxy --format jsonl --log FILE`, with `--rules FILE` (seed 7) for fault mode.
Every echoed byte is compared with what was sent; a mismatch fails the run (exit code 1).

1. Delay precision. A Node client sends 16-byte messages one at a time (window 1) and times each
   round trip, first through the proxy without rules (the reference, plus direct and fault mode
   with a never-matching rule for context), then through proxies with the rule
   {"action":"delay","ms":D,"direction":"to-client"} for D = 10, 50, 200. Reported per D:
   late = rtt_with_rule - D - p50(rtt without rules), i.e. how much later than configured the
   echo arrives (p50 / p99 / max). Next to each D, the machine's own timer lateness: the same
   client connected directly to a Node echo server that holds each echo D ms with setTimeout
   (late = rtt - D - p50(direct rtt)). Then ms=50 jitter_ms=50: extra = rtt - 50 - p50(reference),
   which should spread evenly over ~0..50 ms (min / p50 / max / mean, share per 10 ms bucket).
2. Throttle precision. {"action":"throttle","bytes_per_second":R,"direction":"to-client"} for
   R = 100 KB/s and 1 MB/s (10^3 / 10^6 B): 5 x R bytes (2 x R with --quick) of 16 KiB binary
   messages, 32 in flight. Reported: payload bytes / (last echo - first send) against R, and the
   steady rate over the second half of the transfer (start-up excluded). Reference: the same
   5 x 1 MB through the proxy without rules.
3. Overhead of fault mode when no rule matches: the load client of proxy-benchmark.py (WINDOW
   messages in flight, echoed messages/s, MB/s one way, p50/p99 round trip after a warm-up) for
   16 B messages window 64 and 64 KiB messages window 16, binary and text, against: direct, socat
   -b 262144, wsinspect proxy without rules, and wsinspect proxy --rules with one rule that never
   matches ({"action":"drop","match":{"opcode":"text","text":"^never-matches$"}}, so text
   messages do run the regex). relay/client/echo/others are CPU cores used in the measured window
   (see proxy-benchmark.py); peak RSS is the proxy's VmHWM (a fresh proxy per row); "log" counts
   the data frames in the JSON Lines log against the frames relayed.

Output: progress lines, then a Markdown table per part and a one-line summary, also written to
benchmarks/out/fault-benchmark.txt. --only 1,3 runs some parts only.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"

_spec = importlib.util.spec_from_file_location("proxy_benchmark", Path(__file__).with_name("proxy-benchmark.py"))
pb = importlib.util.module_from_spec(_spec)
sys.modules["proxy_benchmark"] = pb  # its dataclasses look their module up there
_spec.loader.exec_module(pb)

NODE_PATH = pb.NODE_PATH
NODE_ENV = pb.NODE_ENV
SEED = 7
NEVER_MATCHES = {"id": "never", "action": "drop", "match": {"opcode": "text", "text": "^never-matches$"}}

# The timer reference of part 1: an echo server that holds each echo D ms with setTimeout when
# the request path is /delay/D (the same job as the delay rule, done by Node's timers).
DELAY_ECHO_SERVER_JS = r"""
'use strict';
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  const m = /^\/delay\/(\d+)/.exec(req.url);
  const delay = m ? Number(m[1]) : 0;
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (delay) setTimeout(() => ws.send(data, { binary: isBinary }), delay);
    else ws.send(data, { binary: isBinary });
  });
});
wss.on('listening', () => process.stdout.write(`LISTENING ${wss.address().port}\n`));
"""

# A client for parts 1 and 2: COUNT messages of SIZE bytes (binary, or ASCII text when TEXT is 1)
# with WINDOW in flight, each echo compared byte for byte with what was sent. Prints one JSON line
# with every message's send and echo time (ms, performance.now()), in sending order.
FAULT_CLIENT_JS = r"""
'use strict';
const { WebSocket } = require('ws');
const [url, size, count, window, text, timeout] = process.argv.slice(2).map((v, i) => (i === 0 ? v : Number(v)));
const base = Buffer.alloc(size);
for (let i = 0; i < size; i++) base[i] = text ? 0x41 + ((i * 131 + 7) % 26) : (i * 131 + 7) & 0xff;
const sentAt = [], echoAt = [], queue = [], errors = [];
let next = 0, received = 0, reported = false;

function report() {
  if (reported) return;
  reported = true;
  const code = errors.length ? 1 : 0;
  // Exit once the line is out (stdout is asynchronous on a pipe) and the close handshake is done
  // (a delayed close echo included), but do not wait long for the latter.
  process.stdout.write(JSON.stringify({ sent: next, received, errors, sentAt, echoAt }) + '\n', () => {
    if (ws.readyState === WebSocket.CLOSED) process.exit(code);
    ws.once('close', () => process.exit(code));
    setTimeout(() => process.exit(code), 1000);
  });
}
function fail(message) { errors.push(message); report(); }

const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
ws.binaryType = 'nodebuffer';
function sendNext() {
  const buf = Buffer.from(base);
  const seq = next++;
  if (size >= 8) {
    if (text) buf.write(seq.toString(16).padStart(8, '0').slice(-8), 0, 'latin1');
    else buf.writeUInt32BE(seq >>> 0, 0);
  }
  queue.push(buf);
  sentAt.push(performance.now());
  ws.send(buf, { binary: !text });
}
ws.on('open', () => { for (let i = 0; i < Math.min(window, count); i++) sendNext(); });
ws.on('message', (data, isBinary) => {
  const now = performance.now();
  const buf = queue.shift();
  if (!buf) return fail(`echo ${received + 1} was never sent`);
  if (isBinary !== !text) return fail(`echo ${received + 1} came back as ${isBinary ? 'binary' : 'text'}`);
  if (!buf.equals(data)) return fail(`echo ${received + 1} differs from what was sent (${data.length} vs ${buf.length} bytes)`);
  echoAt.push(now);
  received++;
  if (next < count) sendNext();
  else if (received === count) { ws.close(1000); report(); }
});
ws.on('error', (e) => fail(String(e)));
ws.on('close', () => { if (received < count) fail(`connection closed after ${received} of ${count} echoes`); });
setTimeout(() => fail('timed out'), timeout * 1000);
"""


die = pb.die  # "fault-benchmark: message" on stderr, exit 1


def text_load_client_js() -> str:
    """proxy-benchmark.py's load client, sending ASCII text messages instead of binary ones."""
    js = pb.LOAD_CLIENT_JS
    edits = [
        ("this.base[i] = (i * 131 + index * 17 + 7) & 0xff;",
         "this.base[i] = 0x41 + ((i * 131 + index * 17 + 7) % 26);"),
        ("buf.writeUInt32BE(seq >>> 0, 0);\n    if (size >= 8) buf.writeUInt32BE(Math.floor(seq / 4294967296), 4);",
         "if (size >= 8) buf.write(seq.toString(16).padStart(8, '0').slice(-8), 0, 'latin1');"),
        ("this.ws.send(buf);", "this.ws.send(buf, { binary: false });"),
    ]
    for old, new in edits:
        if old not in js:
            die("proxy-benchmark.py's load client changed; update text_load_client_js() in fault-benchmark.py")
        js = js.replace(old, new)
    return js


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (the load client's convention)."""
    s = sorted(values)
    return s[min(len(s) - 1, math.floor(p * len(s)))]


def find_binary(arg: str | None) -> Path:
    path = Path(arg).resolve() if arg else REPO / ".build/release/wsinspect"
    if not os.access(path, os.X_OK):
        die(f"{path} is not an executable (build it: swift build -c release --static-swift-stdlib --product wsinspect, or pass --binary)")
    r = subprocess.run([str(path), "proxy", "--help"], capture_output=True, text=True)
    if r.returncode != 0 or "--rules" not in r.stdout:
        die(f"{path} has no `proxy --rules` (built before fault injection?); rebuild it or pass --binary")
    return path


# Arguments every proxy gets (--proxy-args).
PROXY_ARGS: list[str] = []


class Proxy(pb.Proxy):
    """proxy-benchmark.py's proxy (`--format jsonl --log WORKDIR/NAME.jsonl`, fresh), with `--rules FILE`
    (seed 7) when rules is not None."""

    def __init__(self, binary: Path, echo_port: int, workdir: Path, name: str, rules: list | None):
        args = PROXY_ARGS.copy()
        if rules is not None:
            rules_path = workdir / f"{name}.rules.json"
            rules_path.write_text(json.dumps({"seed": SEED, "rules": rules}))
            args += ["--rules", str(rules_path)]
        super().__init__(binary, echo_port, workdir / f"{name}.jsonl", workdir, args=args,
                         what=f"wsinspect proxy ({name})")

    def finish(self) -> dict:
        """Stops the proxy (SIGINT, which writes the summary; SIGKILL after 5 s). Returns what the log
        and stderr tell."""
        rss = pb.status_kib(self.proc.pid, "VmHWM")
        pb.wait_file_settled(self.log, quiet=0.3)
        how, summary = self.stop()
        return {
            "how": how, "summary": summary, "rss_mib": rss / 1024 if rss else None,
            "dropped": self.dropped_log_records(),
            "faults": pb.count_in_file(self.log, b'{"type":"fault"') if self.log.exists() else 0,
            "binary_frames": pb.count_in_file(self.log, b'"opcodeName":"binary","masked"') if self.log.exists() else 0,
            "text_frames": pb.count_in_file(self.log, b'"opcodeName":"text","masked"') if self.log.exists() else 0,
        }

    def notes(self, info: dict, expect_faults: int | None = None) -> list[str]:
        out = []
        if info["summary"] is None:
            out.append(f"no summary ({info['how']})")
        if info["dropped"]:
            out.append(f"{info['dropped']:,} log records dropped")
        if expect_faults is not None and info["faults"] != expect_faults:
            out.append(f"{info['faults']} fault events (expected {expect_faults})")
        return out


def run_fault_client(workdir: Path, port: int, size: int, count: int, window: int, text: bool = False,
                     timeout: float = 120, path: str = "/fault-bench") -> dict:
    cmd = ["node", str(workdir / "fault_client.js"), f"ws://127.0.0.1:{port}{path}", str(size), str(count),
           str(window), "1" if text else "0", str(timeout)]
    r = subprocess.run(cmd, env=NODE_ENV, capture_output=True, text=True, timeout=timeout + 30)
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"sent": 0, "received": 0, "errors": [f"client exit {r.returncode}: {r.stderr[-500:]}"],
               "sentAt": [], "echoAt": []}
    if r.returncode and not out["errors"]:
        out["errors"].append(f"client exit {r.returncode}")
    return out


class Bench:
    def __init__(self, binary: Path, echo_port: int, echo_pid: int, workdir: Path, args, timer_port: int | None = None):
        self.binary, self.echo_port, self.echo_pid, self.workdir, self.args = binary, echo_port, echo_pid, workdir, args
        self.timer_port = timer_port
        self.failures: list[str] = []

    def proxy(self, name: str, rules: list | None) -> Proxy:
        return Proxy(self.binary, self.echo_port, self.workdir, name, rules)

    def check(self, what: str, out: dict) -> bool:
        if out["errors"]:
            self.failures.append(f"{what}: {'; '.join(out['errors'])[:300]}")
            print(f"   FAILED {what}: {'; '.join(out['errors'])[:300]}", flush=True)
            return False
        return True

    # ---------------------------------------------------------------- part 1

    def pingpong(self, target: str, rules: list | None, count: int, warmup: int) -> tuple[list[float], list[str]]:
        """Round trips (ms) of `count` 16-byte messages at window 1, the first `warmup` left out."""
        notes: list[str] = []
        if target == "direct":
            out = run_fault_client(self.workdir, self.echo_port, 16, count + warmup, 1)
        elif target.startswith("timer"):
            out = run_fault_client(self.workdir, self.timer_port, 16, count + warmup, 1, path=f"/delay/{target[5:]}")
        else:
            proxy = self.proxy(f"delay-{target}", rules)
            out = run_fault_client(self.workdir, proxy.port, 16, count + warmup, 1)
            info = proxy.finish()
            # a delay rule applies to every message of its direction: the echoes and the close
            expected = None if rules is None else (0 if rules == [NEVER_MATCHES] else None)
            notes = proxy.notes(info, expected)
            if rules and rules != [NEVER_MATCHES] and info["faults"] < count + warmup:
                notes.append(f"only {info['faults']} fault events for {count + warmup} delayed echoes")
        ok = self.check(f"delay/{target}", out)
        rtts = [e - s for s, e in zip(out["sentAt"], out["echoAt"])][warmup:] if ok else []
        return rtts, notes

    def part1(self) -> dict:
        q = self.args.quick
        base_n, warm = (100, 3) if q else (200, 5)
        counts = {10: 100, 50: 40, 200: 15} if q else {10: 200, 50: 80, 200: 30}
        jitter_n = 60 if q else 100
        res: dict = {"refs": {}, "delays": [], "timers": [], "jitter": None}
        print("== part 1: delay precision (16 B messages, window 1)", flush=True)
        for target, rules in (("direct", None), ("plain", None), ("fault-nomatch", [NEVER_MATCHES])):
            rtts, notes = self.pingpong(target, rules, base_n, warm)
            res["refs"][target] = (rtts, notes)
            if rtts:
                print(f"   {target:14} n={len(rtts):4}  rtt p50 {pct(rtts, .5):7.3f}  p99 {pct(rtts, .99):7.3f}"
                      f"  max {max(rtts):7.3f} ms  {'; '.join(notes)}", flush=True)
        base = res["refs"]["plain"][0]
        if not base:
            return res
        base_p50 = pct(base, .5)
        res["base_p50"] = base_p50
        # the timer reference runs direct, against the direct round trip
        timer_base = res["refs"]["direct"][0]
        res["timer_base_p50"] = timer_p50 = pct(timer_base, .5) if timer_base else None
        for d, n in counts.items():
            if timer_p50 is not None:
                rtts, notes = self.pingpong(f"timer{d}", None, n, 2)
                late = [r - d - timer_p50 for r in rtts]
                res["timers"].append((d, rtts, late, notes))
                if late:
                    print(f"   setTimeout {d:3} n={len(late):4}  late p50 {pct(late, .5):7.3f}  p99 {pct(late, .99):7.3f}"
                          f"  max {max(late):7.3f} ms  {'; '.join(notes)}", flush=True)
            rule = {"id": f"delay-{d}", "action": "delay", "ms": d, "direction": "to-client"}
            rtts, notes = self.pingpong(f"delay{d}", [rule], n, 2)
            late = [r - d - base_p50 for r in rtts]
            res["delays"].append((d, rtts, late, notes))
            if late:
                print(f"   delay {d:3} ms    n={len(late):4}  late p50 {pct(late, .5):7.3f}  p99 {pct(late, .99):7.3f}"
                      f"  max {max(late):7.3f} ms  {'; '.join(notes)}", flush=True)
        rule = {"id": "jitter", "action": "delay", "ms": 50, "jitter_ms": 50, "direction": "to-client"}
        rtts, notes = self.pingpong("jitter", [rule], jitter_n, 2)
        extra = [r - 50 - base_p50 for r in rtts]
        res["jitter"] = (rtts, extra, notes)
        if extra:
            print(f"   jitter 50+0..50 n={len(extra):4}  extra min {min(extra):7.3f}  p50 {pct(extra, .5):7.3f}"
                  f"  max {max(extra):7.3f} ms  {'; '.join(notes)}", flush=True)
        return res

    # ---------------------------------------------------------------- part 2

    def transfer(self, name: str, rules: list | None, total: int, size: int = 16 << 10, window: int = 32) -> dict | None:
        count = math.ceil(total / size)
        proxy = self.proxy(name, rules)
        out = run_fault_client(self.workdir, proxy.port, size, count, window, timeout=max(60, 4 * total / 1e5))
        info = proxy.finish()
        notes = proxy.notes(info)
        if info["rss_mib"]:
            notes.append(f"proxy RSS {info['rss_mib']:.0f} MiB")
        logged = info["binary_frames"]
        if logged != 2 * count:
            notes.append(f"log: {logged}/{2 * count} frames")
        if not self.check(name, out):
            return None
        sent, echo = out["sentAt"], out["echoAt"]
        nbytes = count * size
        seconds = (echo[-1] - sent[0]) / 1000
        half = count // 2
        steady = (count - 1 - half) * size / ((echo[-1] - echo[half]) / 1000) if echo[-1] > echo[half] else float("nan")
        gaps = [b - a for a, b in zip(echo, echo[1:])]
        return {"bytes": nbytes, "messages": count, "seconds": seconds, "rate": nbytes / seconds, "steady": steady,
                "first_echo_ms": echo[0] - sent[0], "max_gap_ms": max(gaps) if gaps else 0.0, "notes": notes}

    def part2(self) -> dict:
        factor = 2 if self.args.quick else 5
        print(f"== part 2: throttle precision ({factor} x R bytes in 16 KiB messages, 32 in flight)", flush=True)
        res: dict = {"factor": factor, "rows": []}
        ref = self.transfer("throttle-ref", None, factor * 1_000_000)
        res["ref"] = ref
        if ref:
            print(f"   no rules      {ref['bytes'] / 1e6:5.2f} MB in {ref['seconds']:6.3f} s = {ref['rate'] / 1e6:7.2f} MB/s"
                  f"  {'; '.join(ref['notes'])}", flush=True)
        for rate in (100_000, 1_000_000):
            rule = {"id": "throttle", "action": "throttle", "bytes_per_second": rate, "direction": "to-client"}
            r = self.transfer(f"throttle-{rate}", [rule], factor * rate)
            res["rows"].append((rate, r))
            if r:
                print(f"   R={rate / 1e3:6,.0f} KB/s  {r['bytes'] / 1e6:5.2f} MB in {r['seconds']:6.3f} s ="
                      f" {r['rate'] / 1e3:8.1f} KB/s ({100 * r['rate'] / rate:5.1f} % of R), steady"
                      f" {r['steady'] / 1e3:8.1f} KB/s ({100 * r['steady'] / rate:5.1f} %)  {'; '.join(r['notes'])}",
                      flush=True)
        return res

    # ---------------------------------------------------------------- part 3

    def part3(self, socat_port: int | None, socat_pid: int | None) -> list:
        scenarios = [
            (pb.Scenario("16B-w64", 16, 1, 64, "16 B binary, window 64"), False),
            (pb.Scenario("64KiB", 64 << 10, 1, 16, "64 KiB binary, window 16"), False),
            (pb.Scenario("16B-w64-text", 16, 1, 64, "16 B text, window 64"), True),
            (pb.Scenario("64KiB-text", 64 << 10, 1, 16, "64 KiB text, window 16"), True),
        ]
        margs = SimpleNamespace(duration=1.0 if self.args.quick else 1.5, warmup=0.3 if self.args.quick else 0.5)
        print(f"== part 3: fault mode with no matching rule ({margs.warmup} s warm-up, {margs.duration} s measured)",
              flush=True)
        results = []
        for sc, text in scenarios:
            clientdir = self.workdir / ("text-client" if text else "binary-client")
            targets = ["direct"] + (["socat"] if socat_port else []) + ["wsinspect", "wsinspect+rules"]
            for target in targets:
                if target == "direct":
                    res = pb.measure(sc, target, self.echo_port, None, self.echo_pid, clientdir, margs)
                elif target == "socat":
                    res = pb.measure(sc, target, socat_port, socat_pid, self.echo_pid, clientdir, margs)
                else:
                    rules = [NEVER_MATCHES] if target == "wsinspect+rules" else None
                    proxy = self.proxy(f"overhead-{sc.name}-{target}", rules)
                    res = pb.measure(sc, target, proxy.port, proxy.proc.pid, self.echo_pid, clientdir, margs)
                    info = proxy.finish()
                    relayed = 2 * res.sent
                    frames = info["text_frames" if text else "binary_frames"]
                    notes = [f"log {frames:,}/{relayed:,} frames ({100 * frames / relayed if relayed else 0:.0f} %)"]
                    notes += proxy.notes(info, 0 if rules else None)
                    res.rss_mib = info["rss_mib"]
                    res.notes = "; ".join(n for n in [res.notes] + notes if n)
                if not res.ok:
                    self.failures.append(f"{sc.name}/{target}: {res.notes}")
                results.append(res)
                lat = f"p50 {res.p50:.3f} ms, p99 {res.p99:.3f} ms" if res.p50 is not None else "no latency"
                rss = getattr(res, "rss_mib", None)
                lat += f", peak RSS {rss:.0f} MiB" if rss else ""
                print(f"   {sc.name:12} {target:15} {res.msgs_per_s:10,.0f} msg/s {res.mb_per_s:8,.1f} MB/s  {lat}"
                      f"{'  ' + res.notes if res.notes else ''}", flush=True)
        return results


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def f3(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(p1: dict | None, p2: dict | None, p3: list | None, binary: Path, elapsed: float, args, socat: bool) -> tuple[str, str]:
    L = [
        f"wsinspect fault-injection benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f"{' (--quick)' if args.quick else ''}",
        *pb.setup_lines(binary),
        f"  node: {pb.version_of(['node', '--version'])}, ws {pb.ws_version()}; "
        f"{pb.socat_version() if socat else 'socat not installed'}; whole benchmark {elapsed:.0f} s",
        "",
    ]
    summary = []

    # part 1
    if p1 is not None:
        L += ["### 1. Delay precision (16 B messages, window 1, rule on to-client)", ""]
        if p1.get("base_p50") is not None:
            base_p50 = p1["base_p50"]
            L += [f"late = rtt − D − {base_p50:.3f} ms (p50 rtt through the proxy without rules, same run). All in ms.", "",
                  "| run | n | rtt p50 | rtt p99 | rtt max | late p50 | late p99 | late max | notes |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
            names = {"direct": "direct (no proxy)", "plain": "proxy, no rules (reference)",
                     "fault-nomatch": "proxy --rules, no rule matches"}
            for target, (rtts, notes) in p1["refs"].items():
                if rtts:
                    L.append(f"| {names[target]} | {len(rtts)} | {pct(rtts, .5):.3f} | {pct(rtts, .99):.3f} | {max(rtts):.3f}"
                             f" | | | | {'; '.join(notes)} |")
            lates, timers = [], {d: (rtts, late, notes) for d, rtts, late, notes in p1["timers"]}
            for d, rtts, late, notes in p1["delays"]:
                if d in timers and timers[d][1]:
                    t_rtts, t_late, t_notes = timers[d]
                    L.append(f"| reference: direct, echo server setTimeout({d}) | {len(t_late)} | {pct(t_rtts, .5):.3f}"
                             f" | {pct(t_rtts, .99):.3f} | {max(t_rtts):.3f} | {pct(t_late, .5):.3f} | {pct(t_late, .99):.3f}"
                             f" | {max(t_late):.3f} | late vs direct p50 {p1['timer_base_p50']:.3f} {'; '.join(t_notes)} |")
                if late:
                    lates.append((d, pct(late, .5), pct(late, .99)))
                    L.append(f"| **proxy, delay ms={d}** | {len(late)} | {pct(rtts, .5):.3f} | {pct(rtts, .99):.3f} | {max(rtts):.3f}"
                             f" | **{pct(late, .5):.3f}** | **{pct(late, .99):.3f}** | **{max(late):.3f}** | {'; '.join(notes)} |")
            L.append("")
            if timers:
                L += ["The setTimeout rows are the machine's own timer lateness (a Node echo server holding each echo D ms,",
                      "connected directly): the floor for any user-space delay here.", ""]
            if p1["jitter"] and p1["jitter"][1]:
                rtts, extra, notes = p1["jitter"]
                mean = sum(extra) / len(extra)
                buckets = [0] * 5
                for e in extra:
                    buckets[min(4, max(0, int(e // 10)))] += 1
                L += ["extra = rtt − 50 − reference p50 with ms=50 jitter_ms=50 (expected: spread over ~0–50 ms).", "",
                      "| run | n | extra min | extra p50 | extra max | mean | share in 0–10/10–20/20–30/30–40/40+ ms | notes |",
                      "|---|---:|---:|---:|---:|---:|---|---|",
                      f"| delay ms=50 jitter_ms=50 | {len(extra)} | {min(extra):.3f} | {pct(extra, .5):.3f} | {max(extra):.3f}"
                      f" | {mean:.3f} | {' / '.join(f'{100 * b / len(extra):.0f} %' for b in buckets)} | {'; '.join(notes)} |", ""]
                jit = f"jitter 0–50 → {min(extra):.1f}…{max(extra):.1f} ms"
            else:
                jit = "jitter: failed"
            summary.append("delay late p50/p99 " + ", ".join(f"{d} ms: +{a:.2f}/+{b:.2f}" for d, a, b in lates)
                           + f" ms; {jit}")
        else:
            L += ["(failed: no reference round trips)", ""]
            summary.append("delay: failed")

    # part 2
    if p2 is not None:
        L += [f"### 2. Throttle precision ({p2['factor']} × R bytes of 16 KiB binary messages, 32 in flight, rule on to-client)", "",
              "rate = payload bytes / (last echo − first send); steady = over the second half of the transfer.", "",
              "| run | R | bytes | seconds | rate | % of R | steady | % of R | first echo ms | max gap ms | notes |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        ref = p2.get("ref")
        if ref:
            L.append(f"| proxy, no rules (reference) | - | {ref['bytes']:,} | {ref['seconds']:.3f} | {ref['rate'] / 1e6:.2f} MB/s"
                     f" | | {ref['steady'] / 1e6:.2f} MB/s | | {ref['first_echo_ms']:.1f} | {ref['max_gap_ms']:.1f} | {'; '.join(ref['notes'])} |")
        thr = []
        for rate, r in p2["rows"]:
            if r:
                thr.append(f"{rate / 1e3:,.0f} KB/s → {100 * r['rate'] / rate:.1f} %")
                L.append(f"| throttle | {rate / 1e3:,.0f} KB/s | {r['bytes']:,} | {r['seconds']:.3f} | {r['rate'] / 1e3:,.1f} KB/s"
                         f" | {100 * r['rate'] / rate:.1f} | {r['steady'] / 1e3:,.1f} KB/s | {100 * r['steady'] / rate:.1f}"
                         f" | {r['first_echo_ms']:.1f} | {r['max_gap_ms']:.1f} | {'; '.join(r['notes'])} |")
            else:
                thr.append(f"{rate / 1e3:,.0f} KB/s → failed")
        L.append("")
        summary.append("throttle " + ", ".join(thr) + " of R")

    # part 3
    if p3 is not None:
        L += ["### 3. Fault mode when no rule matches (1 connection; rule: drop text matching ^never-matches$)", "",
              "| scenario | target | msgs/s | MB/s | p50 ms | p99 ms | relay | client | echo | others | peak RSS | notes |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

        def c(v):
            return "-" if v is None else f"{v:.2f}"

        for r in p3:
            rss = getattr(r, "rss_mib", None)
            L.append(f"| {r.scenario.name} | {r.target} | {r.msgs_per_s:,.0f} | {r.mb_per_s:,.1f} | {f3(r.p50)} | {f3(r.p99)}"
                     f" | {c(r.relay_cores)} | {c(r.client_cores)} | {c(r.echo_cores)} | {c(r.others_cores)}"
                     f" | {f'{rss:,.0f} MiB' if rss else '-'} | {r.notes} |")
        L += ["", "wsinspect --rules (no match) vs wsinspect without rules, same scenario, same run:", ""]
        by = {(r.scenario.name, r.target): r for r in p3}
        ov = []
        for name in dict.fromkeys(r.scenario.name for r in p3):
            f, p = by.get((name, "wsinspect+rules")), by.get((name, "wsinspect"))
            if f and p and p.msgs_per_s:
                lat = f", p50 latency ×{f.p50 / p.p50:.2f}, p99 ×{f.p99 / p.p99:.2f}" if f.p50 and p.p50 else ""
                s = by.get((name, "socat"))
                vs_socat = f" ({100 * f.msgs_per_s / s.msgs_per_s:.0f} % of socat)" if s and s.msgs_per_s else ""
                f_rss, p_rss = getattr(f, "rss_mib", None), getattr(p, "rss_mib", None)
                mem = f", peak RSS {f_rss:,.0f} vs {p_rss:,.0f} MiB" if f_rss and p_rss else ""
                L.append(f"- {name}: throughput {100 * f.msgs_per_s / p.msgs_per_s:.0f} % of plain mode{vs_socat}{lat}{mem}")
                ov.append(f"{name} {100 * f.msgs_per_s / p.msgs_per_s:.0f} %"
                          + (f" (peak RSS {f_rss:,.0f}/{p_rss:,.0f} MiB)" if f_rss and p_rss else ""))
        summary.append("fault mode (no match) throughput vs plain: " + ", ".join(ov))
        busy = [r.others_cores for r in p3 if r.others_cores is not None]
        L += ["",
              "msgs/s: echoed messages per second; MB/s: payload bytes echoed per second (one way, 10^6 B); latency: send to",
              "echo with WINDOW in flight. relay/client/echo/others: CPU cores used in the measured window (others = the",
              "rest of the machine). peak RSS: the proxy's VmHWM (one fresh proxy per row, one connection).",
              "log: data frame records in the JSON Lines log / data frames relayed."]
        if busy and max(busy) > 0.15:
            L.append(f"WARNING: the machine was not idle (others up to {max(busy):.2f} cores of {os.cpu_count()}); "
                     "ratios within a scenario are more telling than absolute figures.")
    return "\n".join(L), "summary: " + "; ".join(summary)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", help="wsinspect binary (default .build/release/wsinspect)")
    ap.add_argument("--quick", action="store_true", help="fewer samples and shorter runs (~1 min)")
    ap.add_argument("--only", help="comma-separated parts to run: 1,2,3 (default all)")
    ap.add_argument("--proxy-args", default="",
                    help="extra arguments for every wsinspect proxy, e.g. \"--nagle off\" (split on spaces)")
    args = ap.parse_args()
    PROXY_ARGS.extend(args.proxy_args.split())
    parts = set((args.only or "1,2,3").split(","))
    if not parts <= {"1", "2", "3"}:
        die(f"--only: parts are 1, 2, 3 (got {args.only})")

    if shutil.which("node") is None:
        die("node not found (Debian: apt-get install nodejs node-ws)")
    if subprocess.run(["node", "-e", "require('ws')"], env=NODE_ENV, capture_output=True).returncode != 0:
        die(f"node cannot require('ws') with NODE_PATH={NODE_PATH} (Debian: apt-get install node-ws)")
    have_socat = shutil.which("socat") is not None
    binary = find_binary(args.binary)

    OUT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="fault-bench-"))
    (workdir / "echo_server.js").write_text(pb.ECHO_SERVER_JS)
    (workdir / "fault_client.js").write_text(FAULT_CLIENT_JS)
    (workdir / "delay_echo_server.js").write_text(DELAY_ECHO_SERVER_JS)
    for sub, js in (("binary-client", pb.LOAD_CLIENT_JS), ("text-client", text_load_client_js())):
        (workdir / sub).mkdir()
        (workdir / sub / "load_client.js").write_text(js)

    procs: list[subprocess.Popen] = []
    started = time.monotonic()
    p1 = p2 = p3 = None
    failures: list[str] = []
    try:
        echo, echo_port = pb.start_node_server(workdir / "echo_server.js", procs)
        socat_port = socat_pid = None
        if have_socat and "3" in parts:
            socat, socat_port = pb.start_socat(echo_port, procs)
            socat_pid = socat.pid

        timer_port = None
        if "1" in parts:
            _, timer_port = pb.start_node_server(workdir / "delay_echo_server.js", procs, "the delaying echo server")

        bench = Bench(binary, echo_port, echo.pid, workdir, args, timer_port)
        if "1" in parts:
            p1 = bench.part1()
        if "2" in parts:
            p2 = bench.part2()
        if "3" in parts:
            p3 = bench.part3(socat_port, socat_pid)
        failures = bench.failures
    finally:
        pb.terminate_all(procs)
        shutil.rmtree(workdir, ignore_errors=True)

    report, summary = render(p1, p2, p3, binary, time.monotonic() - started, args, have_socat)
    if failures:
        report += "\n\nFAILURES:\n" + "\n".join(f"- {f}" for f in failures)
    print()
    print(report)
    print()
    print(summary)
    (OUT / "fault-benchmark.txt").write_text(report + "\n\n" + summary + "\n")
    print(f"\nwritten to {(OUT / 'fault-benchmark.txt').relative_to(REPO)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
