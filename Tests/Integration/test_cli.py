"""End-to-end tests of the wsinspect command line, run the way a user runs it.

    python3 -m pytest Tests/Integration/test_cli.py -q      # from the repo root, ~20 s

What is covered (README: commands, options table, JSON Lines schema, exit codes):

* live capture -- `wsinspect capture -i lo 'tcp port P'` around a real Python `websockets`
  exchange (the `chat` scenario of peers/py_scenarios.py: permessage-deflate, sub-protocol,
  text, fragmented, binary, ping/pong, close 1000 "bye"): JSON Lines, the text view,
  `--count`, `--write` (the file is a pcap that `wsinspect read` decodes to the same events),
  Ctrl-C (SIGINT) printing the summary and exiting 0;
* errors and exit codes: 2, 64, 65, 66, 69, 74, 77, `wsinspect: ` prefix, never a crash
  (no "Fatal error" / "Backtrace" on stderr);
* `wsinspect read -` (standard input);
* filters and views on samples/chat.pcapng (`--direction`, `--opcode`, `--no-control`,
  `--grep`, `--connection`, `--messages`, `--pretty`, `-x`, `--color`, `--max-payload`,
  `--websocket-port` on mid-stream captures);
* `--help` of every command names every flag of the README's options table;
* summary counts.

Live capture needs root (or CAP_NET_RAW) and the `websockets` package; those tests skip
with the reason otherwise.  Mid-stream captures are made from the committed sample by
dropping packets in Python (same as `editcap`), plus one real mid-stream capture from the
harness (`midstream_plain`, needs tcpdump/tshark).

Bugs found are kept as tests; a known open one is an `xfail(strict=True)` with the reason.
"""
from __future__ import annotations

import base64
import errno
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from reference import C2S, S2C, parse_endpoint, sent_messages
from wsinspect_run import REPO_ROOT

SAMPLE = REPO_ROOT / "samples/chat.pcapng"
README = REPO_ROOT / "README.md"
PY_SCENARIOS = Path(__file__).resolve().parent / "peers/py_scenarios.py"

CRASH_MARKERS = ("Fatal error", "Backtrace")
READY_SETTLE = 0.5  # after "capturing on": libpcap on lo needs a moment before packets flow
SIGINT_GRACE = 2.0  # how long a capture may take to exit after SIGINT
RUN_TIMEOUT = 30.0
FRAME_LINE = re.compile(r"^\S+ #\d+ (C→S|S→C) ")  # a frame (or message) line of the text view


# --------------------------------------------------------------------------
# Running the binary
# --------------------------------------------------------------------------


def _popen(cmd: list[str], **kw) -> subprocess.Popen:
    """Popen that waits out ETXTBSY (the binary may be rebuilt while the tests run)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return subprocess.Popen(cmd, **kw)
        except OSError as exc:
            if exc.errno != errno.ETXTBSY or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass
class Result:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str

    def events(self) -> list[dict]:
        return parse_jsonl(self.stdout)

    def describe(self) -> str:
        return f"$ {' '.join(self.cmd)}\nexit {self.returncode}\nstderr:\n{self.stderr[-3000:]}\nstdout (tail):\n" \
               f"{self.stdout[-1500:]}"


def assert_no_crash(stderr: str, what: str = "") -> None:
    for marker in CRASH_MARKERS:
        assert marker not in stderr, f"wsinspect crashed ({marker!r} on stderr) {what}\n{stderr[-3000:]}"


def run(binary: Path, *args: str, stdin: bytes | None = None, env: dict | None = None,
        prefix: list[str] | None = None, timeout: float = RUN_TIMEOUT) -> Result:
    cmd = [*(prefix or []), str(binary), *args]
    proc = _popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\nstderr:\n{err.decode(errors='replace')}")
    res = Result(cmd, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    assert_no_crash(res.stderr, res.describe())
    return res


def parse_jsonl(text: str) -> list[dict]:
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"stdout line {n} is not JSON ({exc}): {line[:300]}") from None
        assert isinstance(obj, dict) and "type" in obj, f"line {n} is not an event object: {line[:300]}"
        events.append(obj)
    return events


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def payload(e: dict) -> bytes:
    v = e.get("payloadBase64")
    return base64.b64decode(v) if v else b""


def summary_of(events: list[dict]) -> dict:
    assert events, "no output at all"
    assert events[-1]["type"] == "summary", f"last event is not the summary: {events[-1]}"
    assert len(of_type(events, "summary")) == 1, "more than one summary"
    return events[-1]


def without(e: dict, *keys: str) -> dict:
    return {k: v for k, v in e.items() if k not in keys}


# Keys every event of a type carries (README "JSON Lines schema"); conditional keys
# (close frames, answered pongs, `text` of complete text messages) are checked separately.
SCHEMA = {
    "connection-open": {"time", "connection", "client", "server", "origin", "request", "response", "compression",
                        "findings"},
    "handshake-rejected": {"time", "connection", "client", "server", "method", "path", "status", "reason",
                           "problems"},
    "frame": {"time", "connection", "packet", "direction", "fin", "rsv1", "rsv2", "rsv3", "opcode", "opcodeName",
              "masked", "maskingKey", "payloadLength", "lengthEncoding", "payloadBase64", "payloadTruncated",
              "compressed", "findings"},
    "message": {"time", "connection", "packet", "direction", "opcode", "opcodeName", "frames", "compressed",
                "wireLength", "length", "payloadBase64", "payloadTruncated", "inflateError", "findings"},
    "finding": {"time", "connection", "direction", "kind", "message"},
    "gap": {"time", "connection", "direction", "bytes", "cause", "framing"},
    "connection-close": {"time", "connection", "client", "server", "reason", "durationSeconds", "clientToServer",
                         "serverToClient", "findings"},
    "summary": {"packets", "bytes", "tcpConnections", "webSocketConnections", "rejectedHandshakes", "frames",
                "messages", "findings", "gaps", "lostBytes", "truncatedPackets", "skippedPackets", "stoppedEarly"},
}


def check_schema(events: list[dict]) -> None:
    for e in events:
        want = SCHEMA.get(e["type"])
        assert want is not None, f"unknown event type {e['type']!r}"
        missing = want - set(e)
        assert not missing, f"{e['type']} event lacks {sorted(missing)}: {e}"
        if e["type"] == "frame" and e["opcode"] == 8:
            assert {"closeCode", "closeCodeName", "closeReason"} <= set(e), f"close frame lacks close keys: {e}"
        if e["type"] == "message" and e["opcode"] == 1 and not e["payloadTruncated"] and not e["inflateError"]:
            assert "text" in e, f"complete text message without `text`: {e}"


# --------------------------------------------------------------------------
# pcap / pcapng files, written and cut in Python (no editcap needed)
# --------------------------------------------------------------------------


@dataclass
class Packet:
    ts_usec: int  # microseconds since the epoch
    caplen: int
    origlen: int
    data: bytes
    offset: int = 0  # of the record/block in the source file
    data_offset: int = 0


def read_pcapng(path: Path) -> tuple[int, list[Packet]]:
    """(link type, enhanced packet blocks) of a little-endian pcapng file with one interface."""
    d = path.read_bytes()
    off, linktype, tsres, packets = 0, None, 1_000_000, []
    while off + 12 <= len(d):
        btype, blen = struct.unpack_from("<II", d, off)
        if btype == 0x0A0D0D0A:
            assert struct.unpack_from("<I", d, off + 8)[0] == 0x1A2B3C4D, "big-endian pcapng not handled here"
        elif btype == 1:  # IDB
            linktype = struct.unpack_from("<H", d, off + 8)[0]
            opt = off + 16
            while opt + 4 <= off + blen - 4:
                code, olen = struct.unpack_from("<HH", d, opt)
                if code == 0:
                    break
                if code == 9:  # if_tsresol
                    v = d[opt + 4]
                    tsres = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
                opt += 4 + (olen + 3) // 4 * 4
        elif btype == 6:  # EPB
            _, hi, lo, caplen, origlen = struct.unpack_from("<IIIII", d, off + 8)
            ts = (hi << 32) | lo
            data_off = off + 28
            packets.append(Packet(ts * 1_000_000 // tsres, caplen, origlen, d[data_off:data_off + caplen], off,
                                  data_off))
        off += blen
    assert linktype is not None, f"{path}: no interface description block"
    return linktype, packets


def write_pcap(path: Path, linktype: int, packets: list[Packet]) -> list[Packet]:
    """Classic little-endian microsecond pcap; returns the packets with their offsets in the file."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
    placed = []
    for p in packets:
        rec = len(out)
        out += struct.pack("<IIII", p.ts_usec // 1_000_000, p.ts_usec % 1_000_000, p.caplen, p.origlen)
        out += p.data
        placed.append(Packet(p.ts_usec, p.caplen, p.origlen, p.data, rec, rec + 16))
    path.write_bytes(bytes(out))
    return placed


def tcp_ports(p: Packet) -> tuple[int, int] | None:
    """(src port, dst port) of an Ethernet/IPv4/TCP packet."""
    d = p.data
    if len(d) < 34 or d[12:14] != b"\x08\x00" or d[23] != 6:
        return None
    ihl = (d[14] & 0x0F) * 4
    return struct.unpack_from("!HH", d, 14 + ihl)


def tcp_payload_len(p: Packet) -> int:
    d = p.data
    ihl = (d[14] & 0x0F) * 4
    total = struct.unpack_from("!H", d, 16)[0]
    doff = (d[14 + ihl + 12] >> 4) * 4
    return total - ihl - doff


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> Path:
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} is missing (regenerate with peers/make_sample_chat.py)")
    return SAMPLE


@pytest.fixture(scope="module")
def chat(wsinspect_bin, sample) -> Result:
    """`wsinspect read samples/chat.pcapng --format jsonl`, the reference for the view tests."""
    r = run(wsinspect_bin, "read", str(sample), "--format", "jsonl")
    assert r.returncode == 0, r.describe()
    return r


@pytest.fixture(scope="module")
def chat_events(chat) -> list[dict]:
    return chat.events()


@pytest.fixture(scope="module")
def chat_packets(sample) -> tuple[int, list[Packet]]:
    return read_pcapng(sample)


@pytest.fixture(scope="module")
def chat_server_port(chat_events) -> int:
    return parse_endpoint(of_type(chat_events, "connection-open")[0]["server"])[1]


@pytest.fixture
def chat_pcap(tmp_path, chat_packets) -> tuple[Path, list[Packet]]:
    """The sample converted to a classic pcap (same packets)."""
    linktype, packets = chat_packets
    path = tmp_path / "chat.pcap"
    return path, write_pcap(path, linktype, packets)


def _nobody_prefix() -> list[str] | None:
    if os.geteuid() != 0:
        return None
    candidates = []
    if shutil.which("setpriv"):
        candidates.append(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"])
    if shutil.which("runuser"):
        candidates.append(["runuser", "-u", "nobody", "--"])
    for prefix in candidates:
        try:
            r = subprocess.run([*prefix, "id", "-u"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip() not in ("", "0"):
            return prefix
    return None


@pytest.fixture(scope="module")
def as_nobody() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to user nobody (setpriv/runuser)")
    prefix = _nobody_prefix()
    if prefix is None:
        pytest.skip("cannot run a command as user nobody: neither `setpriv --reuid=nobody --regid=nogroup "
                    "--clear-groups` nor `runuser -u nobody --` works here")
    return prefix


def live_capture_missing() -> str | None:
    if not sys.platform.startswith("linux"):
        return "live capture tests use the Linux loopback interface `lo`"
    if os.geteuid() != 0:
        return "live capture on lo needs root or CAP_NET_RAW (tests run as uid %d)" % os.geteuid()
    if not Path("/sys/class/net/lo").exists():
        return "no loopback interface `lo`"
    return None


@pytest.fixture
def capture_root(wsinspect_bin):
    """The binary, when `wsinspect capture -i lo` can open the interface here."""
    reason = live_capture_missing()
    if reason:
        pytest.skip(reason)
    return wsinspect_bin


@pytest.fixture
def live(capture_root):
    """The binary, when a live capture around real `websockets` peers can run here."""
    try:
        import websockets  # noqa: F401
    except ImportError:
        pytest.skip("Python package 'websockets' is not installed (pip install websockets)")
    return capture_root


@pytest.fixture
def procs():
    """Processes a test started; killed (by pid) if still running at teardown."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


# --------------------------------------------------------------------------
# Live capture machinery
# --------------------------------------------------------------------------


class LineReader:
    """Collects a pipe's lines in a thread; wait_for() a line matching a predicate."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        threading.Thread(target=self._run, args=(stream,), daemon=True).start()

    def _run(self, stream):
        for raw in stream:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, pred, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None
                self._cond.wait(left)

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(line + "\n" for line in self.lines)


# Runs argv[1:] with SIGINT at its default disposition, as a shell in a terminal would: a
# user's Ctrl-C must reach wsinspect even when pytest itself runs with SIGINT ignored (started
# in the background).  exec keeps the pid, so SIGINT to the pid is SIGINT to wsinspect.
# (preexec_fn would do the same but is unsafe with the reader threads running.)
EXEC_WITH_DEFAULT_SIGINT = """
import errno, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_DFL)
for _ in range(120):
    try:
        os.execv(sys.argv[1], sys.argv[1:])
    except OSError as exc:
        if exc.errno != errno.ETXTBSY:
            raise
        time.sleep(0.5)
"""


class LiveCapture:
    """`wsinspect capture ...` as a child process."""

    def __init__(self, binary: Path, args: list[str], procs: list):
        self.cmd = [str(binary), "capture", *args]
        self.proc = _popen([sys.executable, "-c", EXEC_WITH_DEFAULT_SIGINT, *self.cmd], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        procs.append(self.proc)
        self.out = LineReader(self.proc.stdout)
        self.err = LineReader(self.proc.stderr)

    def wait_ready(self, timeout: float = 15.0) -> None:
        line = self.err.wait_for(lambda s: "capturing on" in s, timeout)
        if line is None:
            self.kill()
            pytest.fail(f"`{' '.join(self.cmd)}` never said 'capturing on' (exit {self.proc.poll()}):\n"
                        f"{self.err.text}")
        assert line.startswith("wsinspect: "), line
        time.sleep(READY_SETTLE)

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        self.out.wait_closed(5)
        self.err.wait_closed(5)
        return True

    def interrupt(self, timeout: float = SIGINT_GRACE) -> bool:
        """Ctrl-C: SIGINT, then wait; True if it exited within `timeout`."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait_exit(timeout)

    def stop(self, port: int) -> None:
        """Ctrl-C: SIGINT must end the capture, idle or not."""
        if not self.interrupt():
            self.kill()
            pytest.fail(f"`{' '.join(self.cmd)}` did not exit after SIGINT\n{self.err.text}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def describe(self) -> str:
        return f"$ {' '.join(self.cmd)}\nexit {self.proc.returncode}\nstderr:\n{self.err.text[-3000:]}\n" \
               f"stdout (tail):\n{self.out.text[-1500:]}"


class ChatPeers:
    """The `chat` scenario of peers/py_scenarios.py (real websockets server + client).

    It binds port 0, says `WAIT server-listening P` and waits for GO before connecting."""

    def __init__(self, log_path: Path, procs: list, pace: float = 0.02):
        self.log_path = log_path
        self.proc = _popen([sys.executable, str(PY_SCENARIOS), "chat", "--pace", str(pace), "--log", str(log_path)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        procs.append(self.proc)
        self.out = LineReader(self.proc.stdout)
        self.err = LineReader(self.proc.stderr)
        line = self.out.wait_for(lambda s: s.startswith("WAIT "), 20)
        if line is None:
            pytest.fail(f"chat peers did not start:\n{self.err.text}")
        _, label, port = line.split()
        assert label == "server-listening", line
        self.port = int(port)

    def go_and_finish(self, timeout: float = 20) -> dict:
        self.proc.stdin.write(b"GO\n")
        self.proc.stdin.flush()
        if self.out.wait_for(lambda s: s == "DONE", timeout) is None:
            pytest.fail(f"chat peers did not finish:\n{self.err.text[-3000:]}")
        assert self.proc.wait(timeout=10) == 0, self.err.text[-3000:]
        return json.loads(self.log_path.read_text())


def live_exchange(binary: Path, tmp_path: Path, procs: list, capture_args: list[str],
                  stop: bool = True) -> tuple[LiveCapture, dict, int]:
    """Start `wsinspect capture -i lo 'tcp port P' ARGS`, run the chat exchange on P, then
    (stop=True) wait for the connection to be reported closed and press Ctrl-C."""
    peers = ChatPeers(tmp_path / "chat.peers.json", procs)
    cap = LiveCapture(binary, ["-i", "lo", f"tcp port {peers.port}", *capture_args], procs)
    cap.wait_ready()
    log = peers.go_and_finish()
    if stop:
        closed = cap.out.wait_for(lambda s: '"connection-close"' in s or "closed after" in s, 10)
        assert closed is not None, f"the live capture never reported the connection closed\n{cap.describe()}"
        time.sleep(0.3)  # the last TCP packets (FIN/ACK) after the close handshake
        cap.stop(peers.port)
    return cap, log, peers.port


def check_chat_events(events: list[dict], log: dict, port: int) -> None:
    """The events of a capture of the chat scenario, against the peers' own log."""
    check_schema(events)
    opens = of_type(events, "connection-open")
    assert len(opens) == 1, opens
    o = opens[0]
    conn = log["connections"][0]
    assert parse_endpoint(o["server"]) == ("127.0.0.1", port)
    assert parse_endpoint(o["client"]) == parse_endpoint(conn["client"])
    assert o["origin"] == "handshake"
    assert o["request"]["path"] == "/chat" and o["request"]["protocols"] == ["chat.v1"]
    assert o["response"]["status"] == 101 and o["response"]["acceptValid"] is True
    assert o["response"]["protocol"] == "chat.v1"
    assert o["compression"] and o["compression"]["extension"] == "permessage-deflate"
    cid = o["connection"]

    frames = of_type(events, "frame")
    messages = of_type(events, "message")
    assert all(e["connection"] == cid for e in frames + messages)
    for direction in (C2S, S2C):
        # Every data message, assembled and inflated, equals what the peer sent.
        want = [(m.type, m.payload) for m in sent_messages(conn, direction)]
        got = [(m["opcodeName"], payload(m)) for m in messages if m["direction"] == direction]
        assert got == want, f"{direction} messages differ from what the peer sent"
        for m in messages:
            if m["direction"] == direction:
                assert m["compressed"] is True and m["inflateError"] is None, m
                if m["opcodeName"] == "text":
                    assert m["text"] == payload(m).decode("utf-8"), m
        dframes = [f for f in frames if f["direction"] == direction]
        assert all(f["masked"] == (direction == C2S) for f in dframes), "client frames masked, server frames not"
        assert all(not f["findings"] for f in dframes), [f["findings"] for f in dframes if f["findings"]]

    names = [(f["direction"], f["opcodeName"]) for f in frames]
    assert (C2S, "binary") in names
    assert names.count((C2S, "continuation")) == 3 and names.count((S2C, "continuation")) == 2  # fragments
    pings = [f for f in frames if f["opcodeName"] == "ping"]
    pongs = [f for f in frames if f["opcodeName"] == "pong"]
    assert [(f["direction"], payload(f)) for f in pings] == [(C2S, b"keepalive-1")]
    assert [(f["direction"], payload(f)) for f in pongs] == [(S2C, b"keepalive-1")]
    assert pongs[0]["pingRoundTripMs"] is not None and pongs[0]["pingRoundTripMs"] >= 0
    closes = [f for f in frames if f["opcodeName"] == "close"]
    assert [(f["direction"], f["closeCode"], f["closeReason"]) for f in closes] == \
        [(C2S, 1000, "bye"), (S2C, 1000, "bye")]
    assert names[-2:] == [(C2S, "close"), (S2C, "close")], "close frames come last"

    cl = [e for e in of_type(events, "connection-close") if e["connection"] == cid]
    assert len(cl) == 1 and cl[0]["reason"] == "close-handshake", cl
    assert cl[0]["clientToServer"]["closeCode"] == 1000 and cl[0]["serverToClient"]["closeReason"] == "bye"
    assert cl[0]["clientToServer"]["frames"] == sum(f["direction"] == C2S for f in frames)
    assert cl[0]["serverToClient"]["messages"] == sum(m["direction"] == S2C for m in messages)

    s = summary_of(events)
    assert s["webSocketConnections"] == 1
    assert s["frames"] == len(frames) and s["messages"] == len(messages)
    assert s["findings"] == 0 and s["gaps"] == 0 and s["stoppedEarly"] is None


# --------------------------------------------------------------------------
# 1. Live capture
# --------------------------------------------------------------------------


def test_capture_jsonl_ctrl_c_and_write(live, tmp_path, procs):
    """capture --format jsonl --write FILE around a real exchange, stopped with Ctrl-C."""
    written = tmp_path / "live.pcap"
    cap, log, port = live_exchange(live, tmp_path, procs, ["--format", "jsonl", "--write", str(written)])
    assert cap.returncode == 0, cap.describe()
    assert_no_crash(cap.err.text, cap.describe())
    events = parse_jsonl(cap.out.text)
    check_chat_events(events, log, port)
    s = summary_of(events)
    assert s["tcpConnections"] == 1, s
    assert s["packets"] > 0

    # --write: a pcap file that `wsinspect read` decodes to the same events.
    head = written.read_bytes()[:4]
    assert head in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"), \
        f"--write file is not a pcap file (magic {head.hex()})"
    r = run(live, "read", str(written), "--format", "jsonl")
    assert r.returncode == 0, r.describe()
    again = r.events()
    for kind in ("connection-open", "frame", "message", "connection-close"):
        assert of_type(again, kind) == of_type(events, kind), f"{kind} events of the --write file differ"
    assert without(summary_of(again), "stoppedEarly") == without(s, "stoppedEarly")


def test_capture_text_view(live, tmp_path, procs):
    """The default text view, live, with --color never: one line per frame, arrows, summary."""
    cap, log, port = live_exchange(live, tmp_path, procs, ["--color", "never"])
    assert cap.returncode == 0, cap.describe()
    assert_no_crash(cap.err.text, cap.describe())
    out = cap.out.text
    assert "\x1b[" not in out
    lines = out.splitlines()
    c2s = [ln for ln in lines if FRAME_LINE.match(ln) and " C→S " in ln]
    s2c = [ln for ln in lines if FRAME_LINE.match(ln) and " S→C " in ln]
    assert len(c2s) == 10 and len(s2c) == 11, out  # the chat exchange: 10 client, 11 server frames
    assert any(" C→S ping " in ln and "6b 65 65 70" in ln for ln in c2s), "ping with payload keepalive-1"
    assert any(" S→C close " in ln and "1000" in ln and '"bye"' in ln for ln in s2c)
    assert any(f"→ 127.0.0.1:{port}" in ln and " open " in ln and "GET /chat" in ln for ln in lines)
    assert any("closed after" in ln and "close-handshake" in ln for ln in lines)
    tail = [ln for ln in lines if ln.startswith("summary:")]
    assert len(tail) == 1 and lines.index(tail[0]) >= len(lines) - 4, "summary at the end"
    assert re.match(r"summary: 1 WebSocket connections?, 21 frames, 12 messages", tail[0]), tail[0]


def test_capture_count_stops_by_itself(live, tmp_path, procs):
    """--count N: the capture ends on its own after N packets, with the summary, exit 0."""
    written = tmp_path / "count.pcap"
    cap, log, port = live_exchange(live, tmp_path, procs, ["--count", "5", "--format", "jsonl",
                                                           "--write", str(written)], stop=False)
    if not cap.wait_exit(10):
        cap.kill()
        pytest.fail(f"--count 5 did not stop the capture\n{cap.describe()}")
    assert cap.returncode == 0, cap.describe()
    assert_no_crash(cap.err.text, cap.describe())
    events = parse_jsonl(cap.out.text)
    check_schema(events)
    s = summary_of(events)
    assert s["packets"] == 5 and s["tcpConnections"] == 1, s
    r = run(live, "read", str(written), "--format", "jsonl")
    assert r.returncode == 0, r.describe()
    assert summary_of(r.events())["packets"] == 5


def test_ctrl_c_stops_an_idle_capture(capture_root, procs):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))  # keeps the port ours: no traffic on it during the test
        port = holder.getsockname()[1]
        cap = LiveCapture(capture_root, ["-i", "lo", f"tcp port {port}", "--format", "jsonl"], procs)
        cap.wait_ready()
        exited = cap.interrupt(timeout=5)
        if not exited:
            cap.kill()
        assert exited, "wsinspect capture still running 5 s after SIGINT (no packet arrived meanwhile)"
        assert cap.returncode == 0, cap.describe()
        s = summary_of(parse_jsonl(cap.out.text))
        assert s["packets"] == 0 and s["stoppedEarly"] is None


# --------------------------------------------------------------------------
# 2. Errors and exit codes
# --------------------------------------------------------------------------


def expect_error(r: Result, code: int, *, prefix: bool = True, mention: str | None = None) -> None:
    assert r.returncode == code, f"expected exit {code}\n{r.describe()}"
    assert r.stderr.strip(), f"no error message\n{r.describe()}"
    if prefix:
        assert r.stderr.startswith("wsinspect: "), f"stderr does not start with 'wsinspect: '\n{r.describe()}"
    if mention:
        assert mention in r.stderr, f"stderr does not mention {mention!r}\n{r.describe()}"


def test_missing_file_is_66(wsinspect_bin, tmp_path):
    missing = tmp_path / "no-such.pcap"
    r = run(wsinspect_bin, "read", str(missing))
    expect_error(r, 66, mention=str(missing))
    assert r.stdout == ""


def test_directory_is_66(wsinspect_bin, tmp_path):
    expect_error(run(wsinspect_bin, "read", str(tmp_path)), 66)


def test_unreadable_file_is_66(wsinspect_bin, sample, as_nobody):
    # A directory nobody may enter (pytest's tmp_path is not), holding a file it may not read.
    d = Path(tempfile.mkdtemp(prefix="wsinspect-cli-"))
    try:
        d.chmod(0o755)
        secret = d / "secret.pcapng"
        shutil.copy(sample, secret)
        secret.chmod(0o600)  # root's; user nobody may not read it
        expect_error(run(wsinspect_bin, "read", str(secret), prefix=as_nobody), 66, mention=str(secret))
        ok = d / "public.pcapng"
        shutil.copy(sample, ok)
        ok.chmod(0o644)
        assert run(wsinspect_bin, "read", str(ok), prefix=as_nobody).returncode == 0, "nobody can read the rest"
    finally:
        shutil.rmtree(d)


def test_text_file_is_65(wsinspect_bin):
    expect_error(run(wsinspect_bin, "read", str(README)), 65)


def test_empty_file_is_65(wsinspect_bin, tmp_path):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    expect_error(run(wsinspect_bin, "read", str(empty)), 65)


def _cut_point(packets: list[Packet]) -> int:
    """Index (0-based) of a packet in the second half that carries TCP payload."""
    for i in range(len(packets) // 2, len(packets)):
        if tcp_payload_len(packets[i]) > 20:
            return i
    raise AssertionError("no packet with payload in the second half")


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_truncated_capture_is_2(wsinspect_bin, sample, chat_events, chat_packets, tmp_path, fmt):
    """A capture cut in the middle of a packet: exit 2, everything before the cut printed,
    the summary's stoppedEarly set."""
    linktype, packets = chat_packets
    if fmt == "pcapng":
        data, placed = sample.read_bytes(), packets
    else:
        placed = write_pcap(tmp_path / "full.pcap", linktype, packets)
        data = (tmp_path / "full.pcap").read_bytes()
    i = _cut_point(placed)
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[:placed[i].data_offset + placed[i].caplen // 2])
    r = run(wsinspect_bin, "read", str(cut), "--format", "jsonl")
    expect_error(r, 2)
    events = r.events()
    check_schema(events)
    n = i + 1  # packet numbers count from 1: packets 1..i were read whole
    want = [e for e in of_type(chat_events, "frame") if e["packet"] <= i]
    assert want, "the cut should leave some frames"
    assert of_type(events, "frame") == want, f"frame events before the cut (packet {n}) differ"
    # Complete messages as in the full file; a message the cut left unfinished may follow,
    # flagged as such.
    want = [e for e in of_type(chat_events, "message") if e["packet"] <= i]
    got = of_type(events, "message")
    assert got[:len(want)] == want, f"message events before the cut (packet {n}) differ"
    for m in got[len(want):]:
        assert m["payloadTruncated"] and any(f["kind"] == "truncated-frame" for f in m["findings"]), m
    s = summary_of(events)
    assert s["stoppedEarly"], s
    assert s["packets"] == i, s
    # The text view says so too.
    t = run(wsinspect_bin, "read", str(cut), "--color", "never")
    assert t.returncode == 2 and "stopped early" in t.stdout, t.describe()


def test_truncated_capture_on_stdin_is_2(wsinspect_bin, sample, chat_packets):
    _, packets = chat_packets
    i = _cut_point(packets)
    data = sample.read_bytes()[:packets[i].data_offset + 3]
    r = run(wsinspect_bin, "read", "-", "--format", "jsonl", stdin=data)
    expect_error(r, 2)
    assert summary_of(r.events())["stoppedEarly"]


def test_bad_bpf_filter_is_64(wsinspect_bin, sample):
    expect_error(run(wsinspect_bin, "read", str(sample), "--filter", "tcp port"), 64)


BAD_USAGE = [
    ["--direction", "up"],
    ["--opcode", "foo"],
    ["--opcode", "16"],
    ["--grep", "("],
    ["--connection", "abc"],
    ["--format", "xml"],
    ["--color", "sometimes"],
    ["--websocket-port", "70000"],
    ["--no-such-flag"],
]


@pytest.mark.parametrize("args", BAD_USAGE, ids=lambda a: " ".join(a))
def test_bad_usage_is_64(wsinspect_bin, sample, args):
    r = run(wsinspect_bin, "read", str(sample), *args)
    expect_error(r, 64, prefix=False)
    assert r.stdout == "", "nothing decoded on bad usage"


@pytest.mark.parametrize("args", [["--direction", "up"], ["--grep", "("]], ids=lambda a: " ".join(a))
def test_usage_errors_are_prefixed(wsinspect_bin, sample, args):
    expect_error(run(wsinspect_bin, "read", str(sample), *args), 64, prefix=True)


def test_capture_no_such_interface_is_69(capture_root):
    expect_error(run(capture_root, "capture", "-i", "nosuchif0"), 69, mention="nosuchif0")


def test_capture_unwritable_write_file_is_74(capture_root, tmp_path):
    target = tmp_path / "no-such-dir" / "out.pcap"
    expect_error(run(capture_root, "capture", "-i", "lo", "--write", str(target), "tcp port 9"), 74)


def test_capture_without_privileges_is_77(wsinspect_bin, as_nobody):
    r = run(wsinspect_bin, "capture", "-i", "lo", "tcp port 9", prefix=as_nobody)
    expect_error(r, 77, mention="CAP_NET_RAW")


# --------------------------------------------------------------------------
# 3. Standard input
# --------------------------------------------------------------------------


def test_stdin_pcapng_same_as_file(wsinspect_bin, sample, chat):
    """`cat chat.pcapng | wsinspect read -` gives the same events as reading the file."""
    cat = _popen(["cat", str(sample)], stdout=subprocess.PIPE)
    proc = _popen([str(wsinspect_bin), "read", "-", "--format", "jsonl"], stdin=cat.stdout,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cat.stdout.close()
    out, err = proc.communicate(timeout=RUN_TIMEOUT)
    cat.wait()
    assert_no_crash(err.decode())
    assert proc.returncode == 0, err.decode()
    assert parse_jsonl(out.decode()) == chat.events()


def test_stdin_pcap_same_as_file(wsinspect_bin, chat_pcap):
    path, _ = chat_pcap
    from_file = run(wsinspect_bin, "read", str(path), "--format", "jsonl")
    from_stdin = run(wsinspect_bin, "read", "-", "--format", "jsonl", stdin=path.read_bytes())
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_stdin.describe()
    assert from_stdin.events() == from_file.events()
    text_file = run(wsinspect_bin, "read", str(path), "--color", "never")
    text_stdin = run(wsinspect_bin, "read", "-", "--color", "never", stdin=path.read_bytes())
    assert text_stdin.stdout == text_file.stdout


def test_stdin_not_a_capture_is_65(wsinspect_bin):
    expect_error(run(wsinspect_bin, "read", "-", stdin=b"hello, this is not a capture\n" * 10), 65)


# --------------------------------------------------------------------------
# 4. Filters and views
# --------------------------------------------------------------------------


def read_jsonl(binary: Path, pcap: Path, *args: str) -> list[dict]:
    r = run(binary, "read", str(pcap), "--format", "jsonl", *args)
    assert r.returncode == 0, r.describe()
    events = r.events()
    check_schema(events)
    return events


def test_sample_schema(chat_events):
    check_schema(chat_events)


@pytest.mark.parametrize("value", ["c2s", "client-to-server"])
def test_direction_c2s(wsinspect_bin, sample, chat_events, value):
    events = read_jsonl(wsinspect_bin, sample, "--direction", value)
    frames = of_type(events, "frame")
    assert frames == [f for f in of_type(chat_events, "frame") if f["direction"] == C2S]
    assert all(m["direction"] == C2S for m in of_type(events, "message"))
    assert len(of_type(events, "message")) == 5


@pytest.mark.parametrize("value", ["s2c", "server-to-client"])
def test_direction_s2c(wsinspect_bin, sample, chat_events, value):
    frames = of_type(read_jsonl(wsinspect_bin, sample, "--direction", value), "frame")
    assert frames == [f for f in of_type(chat_events, "frame") if f["direction"] == S2C]


@pytest.mark.parametrize("value", ["ping,pong", "9,0xA", "pong,9"])
def test_opcode_filter(wsinspect_bin, sample, chat_events, value):
    events = read_jsonl(wsinspect_bin, sample, "--opcode", value)
    frames = of_type(events, "frame")
    assert [(f["direction"], f["opcodeName"]) for f in frames] == [(C2S, "ping"), (S2C, "pong")]
    assert frames == [f for f in of_type(chat_events, "frame") if f["opcode"] in (9, 10)]


def test_opcode_close_and_connection(wsinspect_bin, sample):
    frames = of_type(read_jsonl(wsinspect_bin, sample, "--opcode", "close", "--connection", "1"), "frame")
    assert [(f["closeCode"], f["closeReason"]) for f in frames] == [(1000, "bye"), (1000, "bye")]


def test_no_control(wsinspect_bin, sample, chat_events):
    frames = of_type(read_jsonl(wsinspect_bin, sample, "--no-control"), "frame")
    assert frames == [f for f in of_type(chat_events, "frame") if f["opcodeName"] not in ("ping", "pong")]
    assert any(f["opcodeName"] == "close" for f in frames), "--no-control hides ping/pong only"


def test_grep_matches_compressed_fragmented_message(wsinspect_bin, sample):
    """The `history` reply is 3 compressed frames: only its inflated text matches."""
    events = read_jsonl(wsinspect_bin, sample, "--grep", "old message 11")
    msgs = of_type(events, "message")
    assert len(msgs) == 1, msgs
    m = msgs[0]
    assert m["direction"] == S2C and m["frames"] == 3 and m["compressed"] is True
    assert '"type": "history"' in m["text"] and "old message 11" in m["text"]
    assert all(f["direction"] == S2C for f in of_type(events, "frame"))

    events = read_jsonl(wsinspect_bin, sample, "--grep", "history")
    texts = [m["text"] for m in of_type(events, "message")]
    assert len(texts) == 2 and all("history" in t for t in texts), texts  # the request and the reply
    text = run(wsinspect_bin, "read", str(sample), "--color", "never", "--messages", "--grep", "history").stdout
    assert "frames=3" in text and "old message 0" in text


def test_grep_regex(wsinspect_bin, sample):
    msgs = of_type(read_jsonl(wsinspect_bin, sample, "--grep", r'"type": *"(welcome|upload-ack)"'), "message")
    assert [json.loads(m["text"])["type"] for m in msgs] == ["welcome", "upload-ack"]


def test_unknown_connection_yields_no_frames(wsinspect_bin, sample, chat_events):
    events = read_jsonl(wsinspect_bin, sample, "--connection", "7")
    assert not of_type(events, "frame") and not of_type(events, "message")
    assert summary_of(events)["webSocketConnections"] == 1  # the summary still counts everything


def test_messages_jsonl_has_no_frames(wsinspect_bin, sample, chat_events):
    events = read_jsonl(wsinspect_bin, sample, "--messages")
    assert not of_type(events, "frame"), "--messages --format jsonl must not print frame events"
    assert of_type(events, "message") == of_type(chat_events, "message")
    assert len(of_type(events, "message")) == 12


def test_messages_text_view(wsinspect_bin, sample):
    out = run(wsinspect_bin, "read", str(sample), "--messages", "--color", "never").stdout
    lines = [ln for ln in out.splitlines() if FRAME_LINE.match(ln)]
    assert len(lines) == 12, out
    assert not any(" continuation " in ln or " ping " in ln for ln in lines)
    assert any("frames=4" in ln and "This one arrives in three pieces" in ln for ln in lines)


def _indented_blocks(text: str) -> dict[str, list[str]]:
    """frame line -> the indented lines after it."""
    blocks: dict[str, list[str]] = {}
    current = None
    for ln in text.splitlines():
        if ln.startswith("    ") and current is not None:
            blocks[current].append(ln)
        else:
            current = ln if FRAME_LINE.match(ln) else None
            if current is not None:
                blocks[current] = []
    return blocks


def test_pretty_prints_indented_json(wsinspect_bin, sample, chat_events):
    out = run(wsinspect_bin, "read", str(sample), "--pretty", "--color", "never").stdout
    blocks = _indented_blocks(out)
    welcome = [v for k, v in blocks.items() if " S→C text " in k and "len=57" in k]
    assert welcome, out[:2000]
    lines = welcome[0]
    assert len(lines) > 3, "pretty JSON spans several lines"
    assert any(re.match(r"^ {6,}\"", ln) for ln in lines), "nested keys are indented further"
    want = json.loads(of_type(chat_events, "message")[0]["text"])
    assert json.loads("\n".join(lines)) == want


HEX_LINE = re.compile(r"^\s+([0-9a-f]{6,8})  ((?:[0-9a-f]{2} {1,2}){1,16})\s*\|(.*)\|$")


def test_hex_dump(wsinspect_bin, sample, chat_events):
    """-x: an offset column, hex bytes and ASCII, equal to each frame's payload."""
    out = run(wsinspect_bin, "read", str(sample), "-x", "--color", "never").stdout
    blocks = list(_indented_blocks(out).values())
    frames = of_type(chat_events, "frame")
    assert len(blocks) == len(frames)
    for frame, lines in zip(frames, blocks):
        dump = [m for m in (HEX_LINE.match(ln) for ln in lines) if m]
        got = b"".join(bytes.fromhex(m.group(2).replace(" ", "")) for m in dump)
        assert got == payload(frame), f"hex dump of frame in packet {frame['packet']}"
        assert [int(m.group(1), 16) for m in dump] == list(range(0, len(got), 16)), "offsets"
    assert any("000000  aa 56 2a a9" in ln for b in blocks for ln in b)


def test_color_always_and_never(wsinspect_bin, sample):
    always = run(wsinspect_bin, "read", str(sample), "--color", "always")
    never = run(wsinspect_bin, "read", str(sample), "--color", "never")
    piped = run(wsinspect_bin, "read", str(sample))  # auto, stdout is a pipe
    assert "\x1b[" in always.stdout
    assert "\x1b[" not in never.stdout and "\x1b[" not in piped.stdout
    strip = re.compile(r"\x1b\[[0-9;]*m")
    assert strip.sub("", always.stdout) == never.stdout, "colour changes nothing but escapes"
    env = dict(os.environ, NO_COLOR="1")
    assert "\x1b[" in run(wsinspect_bin, "read", str(sample), "--color", "always", env=env).stdout
    # JSON Lines is never coloured.
    js = run(wsinspect_bin, "read", str(sample), "--color", "always", "--format", "jsonl")
    assert "\x1b[" not in js.stdout
    parse_jsonl(js.stdout)


def _run_on_tty(binary: Path, args: list[str], env: dict) -> str:
    master, slave = pty.openpty()
    try:
        proc = _popen([str(binary), *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env)
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    proc.wait(timeout=10)
    err = proc.stderr.read().decode()
    assert_no_crash(err)
    assert proc.returncode == 0, err
    return out.decode("utf-8", "replace")


def test_color_auto_on_a_terminal_and_no_color(wsinspect_bin, sample):
    base = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    tty = _run_on_tty(wsinspect_bin, ["read", str(sample), "--color", "auto"], base)
    assert "\x1b[" in tty, "auto colours a terminal"
    no_color = _run_on_tty(wsinspect_bin, ["read", str(sample), "--color", "auto"], dict(base, NO_COLOR="1"))
    assert "\x1b[" not in no_color and "C→S" in no_color, "NO_COLOR=1 turns auto colour off"


def test_max_payload(wsinspect_bin, sample, chat_events):
    events = read_jsonl(wsinspect_bin, sample, "--max-payload", "10")
    full = {(e["type"], e["packet"], e["direction"], e.get("opcode")): e for e in chat_events if "packet" in e}
    for e in of_type(events, "frame") + of_type(events, "message"):
        ref = full[(e["type"], e["packet"], e["direction"], e.get("opcode"))]
        assert payload(e) == payload(ref)[:10]
        assert e["payloadTruncated"] == (len(payload(ref)) > 10)
        if e["type"] == "frame":
            assert e["payloadLength"] == ref["payloadLength"], "lengths stay the real ones"
        else:
            assert e["length"] == ref["length"]
    assert summary_of(events) == summary_of(chat_events), "everything is still decoded"


# ---- --websocket-port on mid-stream captures ----------------------------------------------


def _midstream(tmp_path: Path, chat_packets, chat_events, keep=lambda p: True) -> tuple[Path, int]:
    """The sample without its TCP and HTTP handshakes (packets before the first WebSocket
    frame dropped, like `editcap chat.pcapng mid.pcap 1-7`); returns (file, packets dropped)."""
    linktype, packets = chat_packets
    first = min(f["packet"] for f in of_type(chat_events, "frame"))
    path = tmp_path / "midstream.pcap"
    write_pcap(path, linktype, [p for p in packets[first - 1:] if keep(p)])
    return path, first - 1


def test_websocket_port_midstream(wsinspect_bin, tmp_path, chat_packets, chat_events, chat_server_port):
    path, dropped = _midstream(tmp_path, chat_packets, chat_events)
    events = read_jsonl(wsinspect_bin, path, "--websocket-port", str(chat_server_port))
    o = of_type(events, "connection-open")
    ref_open = of_type(chat_events, "connection-open")[0]
    assert len(o) == 1 and o[0]["origin"] == "mid-stream" and o[0]["request"] is None, o
    assert (o[0]["client"], o[0]["server"]) == (ref_open["client"], ref_open["server"])
    frames, ref = of_type(events, "frame"), of_type(chat_events, "frame")
    assert [without(f, "packet") for f in frames] == [without(f, "packet") for f in ref]
    assert [f["packet"] for f in frames] == [f["packet"] - dropped for f in ref]
    # Messages: inflated correctly, or honestly not inflated -- never wrong.
    ref_msgs = of_type(chat_events, "message")
    msgs = of_type(events, "message")
    assert len(msgs) == len(ref_msgs)
    for m, r in zip(msgs, ref_msgs):
        assert m["inflateError"] is not None or payload(m) == payload(r), m


def test_websocket_port_forces_server_only_stream(wsinspect_bin, tmp_path, chat_packets, chat_events,
                                                  chat_server_port):
    """Only the server's packets, no handshake, no masked client frame to go by: the port
    given with --websocket-port says which side is the server."""
    path, dropped = _midstream(tmp_path, chat_packets, chat_events,
                               keep=lambda p: (tcp_ports(p) or (0,))[0] == chat_server_port)
    events = read_jsonl(wsinspect_bin, path, "--websocket-port", str(chat_server_port))
    o = of_type(events, "connection-open")
    assert len(o) == 1 and parse_endpoint(o[0]["server"])[1] == chat_server_port, o
    frames = of_type(events, "frame")
    ref = [f for f in of_type(chat_events, "frame") if f["direction"] == S2C]
    # (The pong answers a ping this capture does not hold: no round-trip time.)
    assert [without(f, "packet", "time", "pingRoundTripMs") for f in frames] == \
        [without(f, "packet", "time", "pingRoundTripMs") for f in ref]
    assert [f["time"] for f in frames] == [f["time"] for f in ref]


def test_midstream_detection_keeps_packet_numbers(wsinspect_bin, tmp_path, chat_packets, chat_events):
    path, dropped = _midstream(tmp_path, chat_packets, chat_events)
    frames = of_type(read_jsonl(wsinspect_bin, path), "frame")
    ref = of_type(chat_events, "frame")
    assert len(frames) == len(ref)
    assert [(f["packet"], f["time"], f["direction"]) for f in frames] == \
        [(f["packet"] - dropped, f["time"], f["direction"]) for f in ref]


def test_websocket_port_on_real_midstream_capture(wsinspect_bin, tmp_path):
    """The harness's midstream_plain scenario: tcpdump started after the handshake."""
    from capture import capture_prerequisites_missing, run_scenario

    reason = capture_prerequisites_missing()
    if reason:
        pytest.skip(reason)
    cap = run_scenario("midstream_plain", tmp_path)
    events = read_jsonl(wsinspect_bin, cap.pcap, "--websocket-port", str(cap.port))
    opens = of_type(events, "connection-open")
    assert len(opens) == 1 and opens[0]["origin"] == "mid-stream", opens
    conn = cap.peer_log["connections"][0]
    assert parse_endpoint(opens[0]["client"]) == parse_endpoint(conn["client"])
    msgs = of_type(events, "message")
    for direction in (C2S, S2C):
        want = [(m.type, m.payload) for m in sent_messages(conn, direction)]
        got = [(m["opcodeName"], payload(m)) for m in msgs if m["direction"] == direction]
        assert got == want, direction
    frames = of_type(events, "frame")
    assert [(f["opcodeName"], payload(f)) for f in frames if f["opcode"] in (9, 10)] == \
        [("ping", b"midstream ping"), ("pong", b"midstream ping")]
    assert [f["closeReason"] for f in frames if f["opcode"] == 8] == ["midstream done"] * 2


# --------------------------------------------------------------------------
# 5. Help
# --------------------------------------------------------------------------


def readme_option_flags() -> list[str]:
    """Flags of the README's "Options shared by `read` and `capture`" table."""
    text = README.read_text()
    m = re.search(r"^### Options shared by .*$", text, re.M)
    assert m, "README has no '### Options shared by ...' section"
    section = text[m.end():].split("\n## ", 1)[0]
    flags = []
    for line in section.splitlines():
        m = re.match(r"^\| `(-{1,2}[a-z][a-z-]*)", line)
        if m:
            flags.append(m.group(1))
    return flags


def test_readme_options_table_parsed():
    flags = readme_option_flags()
    assert len(flags) >= 13 and "--websocket-port" in flags and "-x" in flags, flags


def test_top_level_help(wsinspect_bin):
    r = run(wsinspect_bin, "--help")
    assert r.returncode == 0, r.describe()
    for word in ("read", "capture", "USAGE"):
        assert word in r.stdout


@pytest.mark.parametrize("command", ["read", "capture"])
def test_command_help_names_every_flag(wsinspect_bin, command):
    r = run(wsinspect_bin, command, "--help")
    assert r.returncode == 0, r.describe()
    text = r.stdout
    missing = [f for f in readme_option_flags() if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"`wsinspect {command} --help` does not mention {missing}"
    flat = " ".join(text.split())  # help text wraps at 80 columns
    for values in ("text, jsonl", "auto, always, never"):
        assert values in flat, f"`wsinspect {command} --help` does not list the values {values}"
    if command == "capture":
        for flag in ("-i", "--interface", "--write", "--count"):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), flag
    else:
        assert "<file>" in text and "standard input" in flat


def test_help_subcommand(wsinspect_bin):
    r = run(wsinspect_bin, "help", "read")
    assert r.returncode == 0 and "--websocket-port" in r.stdout, r.describe()


# --------------------------------------------------------------------------
# 6. Summary counts
# --------------------------------------------------------------------------


def test_summary_counts(chat_events):
    s = summary_of(chat_events)
    assert s["tcpConnections"] == 1 and s["webSocketConnections"] == 1, s
    assert s["frames"] == len(of_type(chat_events, "frame")) == 21
    assert s["messages"] == len(of_type(chat_events, "message")) == 12
    assert s["findings"] == 0 and s["gaps"] == 0 and s["lostBytes"] == 0 and s["rejectedHandshakes"] == 0
    assert s["stoppedEarly"] is None and s["skippedPackets"] == {}
    cl = of_type(chat_events, "connection-close")[0]
    frames, msgs = of_type(chat_events, "frame"), of_type(chat_events, "message")
    for key, direction in (("clientToServer", C2S), ("serverToClient", S2C)):
        assert cl[key]["frames"] == sum(f["direction"] == direction for f in frames)
        assert cl[key]["messages"] == sum(m["direction"] == direction for m in msgs)
        mine = [f for f in frames if f["direction"] == direction]
        assert cl[key]["payloadBytes"] == sum(f["payloadLength"] for f in mine)
        headers = sum(2 + {"7-bit": 0, "16-bit": 2, "64-bit": 8}[f["lengthEncoding"]] + 4 * f["masked"] for f in mine)
        assert cl[key]["wireBytes"] == cl[key]["payloadBytes"] + headers


def test_summary_counts_packets(chat_events, chat_packets):
    _, packets = chat_packets
    s = summary_of(chat_events)
    assert s["packets"] == len(packets)
    assert s["bytes"] == sum(p.caplen for p in packets)


def test_text_summary_matches_jsonl(wsinspect_bin, sample, chat_events):
    out = run(wsinspect_bin, "read", str(sample), "--color", "never").stdout
    s = summary_of(chat_events)
    m = re.search(r"^summary: (\d+) WebSocket connections?, (\d+) frames, (\d+) messages", out, re.M)
    assert m, out[-500:]
    assert tuple(map(int, m.groups())) == (s["webSocketConnections"], s["frames"], s["messages"])
    m = re.search(r"^\s+(\d+) packets, (\d+) bytes, (\d+) TCP connections?", out, re.M)
    assert m and tuple(map(int, m.groups())) == (s["packets"], s["bytes"], s["tcpConnections"])
