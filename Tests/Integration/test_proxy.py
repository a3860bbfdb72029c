"""End-to-end tests of `wsinspect proxy` (reverse-proxy mode) with real peers.

Every test starts the proxy as a subprocess (`--listen 127.0.0.1:0 --ready-file F --format
jsonl --log FILE`), waits for the readiness line and the ready file, and stops it with SIGINT
at the end (exit code 0 and a final summary line expected). Peers are ones we did not write:
Python `websockets` (client and server), the Node `ws` broadcast chat server of the ws README,
Python's http.server; where a peer must misbehave (die mid-frame, half-close, send invalid
frames) it is a raw socket scripted byte by byte.

Each WebSocket test checks (a) that both peers saw exactly what the other sent and (b) that
the proxy's JSON Lines log matches what was sent: frames (opcode, FIN, RSV1, masked, payload
after unmasking; compressed payloads are inflated independently with zlib), messages
(inflated payload), close codes and reasons, pongs matched to pings.

Bugs found are kept as tests; an open one would be an `xfail(strict=True)` with the reason.
Racy ones repeat their scenario so that a pass by luck is improbable.

    python3 -m pytest Tests/Integration/test_proxy.py -q        # ~50 s
    WSINSPECT=/path/to/wsinspect python3 -m pytest Tests/Integration/test_proxy.py -q

Needs Python `websockets`; the Node `ws` chat tests need node + Debian node-ws
(NODE_PATH=/usr/share/nodejs) and the browser test needs Debian `chromium`, else they skip.
Peak-memory figures (VmHWM) are printed at the end of the session.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import pytest

websockets = pytest.importorskip("websockets", reason="Python package 'websockets' is not installed")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.asyncio.server import serve  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory  # noqa: E402

from capture import NODE_PATH, node_prerequisites_missing  # noqa: E402
from reference import C2S, S2C, RefAssembler, b64d  # noqa: E402
from tshark_ws import tshark_frames  # noqa: E402
from wsinspect_run import REPORTS, run_wsinspect  # noqa: E402

READY_TIMEOUT = 20.0
FULL_PAYLOADS = 2 << 20  # --max-payload the tests run the proxy with, unless they say otherwise
STOP_TIMEOUT = 15.0
SIGNAL_SETTLE = 0.3  # seconds after readiness before a test sends a signal
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key
DATA_OPCODES = {0, 1, 2}
CONTROL_OPCODES = {8, 9, 10}


# --------------------------------------------------------------------------
# The proxy process
# --------------------------------------------------------------------------


class ProxyProcess:
    """`wsinspect proxy` in a subprocess; stdout/stderr go to files (no pipe can fill up)."""

    def __init__(self, binary: Path, upstream: str, workdir: Path, args=(), *, log: bool = True,
                 fmt: str = "jsonl", listen: str = "127.0.0.1:0", wait: bool = True, full_payloads: bool = True):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.upstream = upstream
        self.fmt = fmt
        self.log_path = workdir / "proxy.jsonl" if log else None
        self.ready_path = workdir / "ready"
        self.stdout_path = workdir / "stdout"
        self.stderr_path = workdir / "stderr"
        upstream_args = ["--upstream", upstream] if upstream else []  # forward mode has none
        if full_payloads and "--max-payload" not in args:
            # The tests compare whole payloads; the proxy's default keeps a 16 KiB preview.
            args = [*args, "--max-payload", str(FULL_PAYLOADS)]
        self.cmd = [str(binary), "proxy", "--listen", listen, *upstream_args,
                    "--ready-file", str(self.ready_path), "--format", fmt, *args]
        if log:
            self.cmd += ["--log", str(self.log_path)]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.address = ""
        self.ready_line = ""
        self.ready_at = time.monotonic()
        if wait:
            self._wait_ready()

    # -- readiness ---------------------------------------------------------

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"proxy exited with {self.proc.returncode} before it was ready\n{self.describe()}")
            ready = self.ready_path.read_text() if self.ready_path.exists() else ""
            lines = self.stdout_path.read_text("utf-8", "replace").splitlines(keepends=True)
            if ready.endswith("\n") and lines and lines[0].endswith("\n"):
                self.address = ready.strip()
                self.ready_line = lines[0].rstrip("\n")
                self.ready_at = time.monotonic()
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"proxy not ready within {READY_TIMEOUT} s\n{self.describe()}")
        if self.fmt == "jsonl":
            obj = json.loads(self.ready_line)
            assert obj["type"] == "listening", self.ready_line
            assert obj["address"] == self.address, (self.ready_line, self.address)
            assert obj["upstream"] == (self.upstream.rstrip("/") or None), (self.ready_line, self.upstream)
        else:
            m = re.fullmatch(r"wsinspect proxy listening on (\S+) → (ws://\S+)", self.ready_line)
            assert m, f"readiness line {self.ready_line!r}"
            assert m.group(1) == self.address
        assert re.fullmatch(r"127\.0\.0\.1:\d+|\[[0-9a-f:]+\]:\d+", self.address), self.address

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def url(self, path: str = "/") -> str:
        return f"ws://{self.address}{path}"

    # -- output ------------------------------------------------------------

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text("utf-8", "replace")

    def events(self) -> list[dict]:
        """The log's JSON objects so far (a partly written last line is left out)."""
        text = self.log_path.read_text("utf-8", "replace") if self.log_path else self.stdout()
        out = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n") or not line.strip():
                continue
            obj = json.loads(line)
            assert isinstance(obj, dict), line
            out.append(obj)
        return out

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "log condition") -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.describe()}")
            time.sleep(0.05)

    def wait_for_type(self, kind: str, count: int, timeout: float = 10.0) -> list[dict]:
        return self.wait_for(lambda ev: sum(e["type"] == kind for e in ev) >= count, timeout,
                             f"{count} `{kind}` event(s)")

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
        raise KeyError(key)

    # -- stopping ------------------------------------------------------------

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT, settle: bool = True) -> int:
        if self.proc.poll() is None:
            # The readiness line comes out before the signal handlers are installed, and a
            # signal in between is lost (test_bug_signal_right_after_ready_is_not_lost); do
            # not let that race decide the other tests.
            if settle:
                time.sleep(max(0.0, self.ready_at + SIGNAL_SETTLE - time.monotonic()))
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"proxy did not exit within {timeout} s of signal {sig}\n{self.describe()}")
        return self.proc.returncode

    def stop_and_check(self) -> list[dict]:
        """SIGINT; the proxy must exit 0 and end its log with the summary. Returns the log."""
        rc = self.stop()
        assert rc == 0, f"proxy exit code {rc}\n{self.describe()}"
        events = self.events()
        assert events and events[-1]["type"] == "summary", f"log does not end with a summary\n{self.describe()}"
        assert sum(e["type"] == "summary" for e in events) == 1
        return events

    def describe(self) -> str:
        log = ""
        if self.log_path and self.log_path.exists():
            log = self.log_path.read_text("utf-8", "replace")[-3000:]
        return (f"$ {' '.join(self.cmd)}\nexit: {self.proc.poll()}\nstdout:\n{self.stdout()[-2000:]}\n"
                f"stderr:\n{self.stderr()[-2000:]}\nlog (tail):\n{log}")


@pytest.fixture
def start_proxy(wsinspect_bin, tmp_path):
    """start_proxy(upstream, *args, log=True, fmt='jsonl', listen='127.0.0.1:0') -> ProxyProcess.

    Waits for the readiness line and the ready file; SIGINT at teardown."""
    started: list[ProxyProcess] = []
    lock = threading.Lock()
    counter = iter(range(1, 1000))

    def start(upstream: str, *args, **kwargs) -> ProxyProcess:
        with lock:
            workdir = tmp_path / f"proxy{next(counter)}"
        proxy = ProxyProcess(wsinspect_bin, upstream, workdir, args, **kwargs)
        with lock:
            started.append(proxy)
        return proxy

    yield start
    problems = []
    for proxy in started:
        try:
            proxy.stop()
        except AssertionError as exc:  # hung: killed by stop(); report after stopping the others
            problems.append(str(exc))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def run(coro, timeout: float = 60.0):
    """Runs a test coroutine with an overall deadline."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def echo_handler(ws):
    """A websockets handler that echoes every message back."""
    async for m in ws:
        await ws.send(m)


@contextlib.asynccontextmanager
async def echo_server(**kwargs):
    """A websockets echo server on a free loopback port; yields the port."""
    async with serve(echo_handler, "127.0.0.1", 0, **kwargs) as server:
        yield server.sockets[0].getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Raw bytes: frames, handshakes, a scriptable upstream
# --------------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None, rsv: int = 0) -> bytes:
    """One frame, minimal length encoding; masked when `mask` (4 bytes) is given."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n <= 125:
        head += bytes([bit | n])
    elif n <= 0xFFFF:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def apply_mask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def upgrade_request(path: str = "/", host: str = "x", key: bytes = KEY, extra: list[str] = ()) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key.decode()}", "Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def switching_protocols(request_head: bytes) -> bytes:
    m = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)\s*$", request_head)
    assert m, request_head
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(m.group(1)) + b"\r\n\r\n")


def read_head(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    """Reads until the end of an HTTP head; returns (head incl. CRLFCRLF, bytes after it)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed inside the HTTP head: {buf!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    return buf[:end], buf[end:]


def recv_until_eof(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, str]:
    """All bytes until EOF; the second value says how it ended: 'eof', 'reset' or 'timeout'."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return b"".join(chunks), "eof"
            chunks.append(chunk)
    except ConnectionResetError:
        return b"".join(chunks), "reset"
    except socket.timeout:
        return b"".join(chunks), "timeout"


def connect_raw(address: str, timeout: float = 10.0) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def without_date(head: bytes) -> bytes:
    return re.sub(rb"(?im)^date:[^\r\n]*\r\n", b"", head)


class RawUpstream:
    """A TCP server scripted byte by byte: each accepted connection runs
    `behaviour(conn, record)` in its own thread; `record` (a dict) is kept in
    `self.records` for the test to look at."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.records: list[dict] = []
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            record: dict = {"received": b"", "eof": False}
            self.records.append(record)
            t = threading.Thread(target=self._serve, args=(conn, record), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, record: dict) -> None:
        conn.settimeout(15)
        try:
            self.behaviour(conn, record)
        except BaseException as exc:  # reported by the test through .errors
            self.errors.append(exc)
        finally:
            conn.close()
            record["done"] = True

    def wait_done(self, count: int = 1, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for r in self.records if r.get("done")) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"raw upstream: {count} connection(s) not finished after {timeout} s: {self.records}")
            time.sleep(0.02)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def recv_record_until_eof(conn: socket.socket, record: dict, initial: bytes = b"") -> None:
    record["received"] += initial
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            record["eof"] = True
            return
        record["received"] += chunk


# --------------------------------------------------------------------------
# Log checks
# --------------------------------------------------------------------------


def of_type(events, kind, connection=None):
    return [e for e in events if e["type"] == kind and (connection is None or e.get("connection") == connection)]


def frames_of(events, connection, direction):
    return [e for e in of_type(events, "frame", connection) if e["direction"] == direction]


def messages_of(events, connection, direction):
    return [e for e in of_type(events, "message", connection) if e["direction"] == direction]


def connection_for(events, local_address) -> int:
    """The log's connection number for the client socket whose local address is given."""
    host, port = local_address[:2]
    want = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    ids = [e["connection"] for e in of_type(events, "connection-open") if e["client"] == want]
    assert len(ids) == 1, f"connection-open for client {want}: {ids}"
    return ids[0]


def length_encoding(n: int) -> str:
    return "7-bit" if n <= 125 else "16-bit" if n <= 0xFFFF else "64-bit"


def check_frame_basics(frame: dict) -> None:
    """What must hold for every frame a well-behaved peer sent."""
    if frame["direction"] == C2S:
        assert frame["masked"] is True and re.fullmatch(r"[0-9a-f]{8}", frame["maskingKey"] or ""), frame
    else:
        assert frame["masked"] is False and frame["maskingKey"] is None, frame
    assert frame["lengthEncoding"] == length_encoding(frame["payloadLength"]), frame
    assert frame["rsv2"] is False and frame["rsv3"] is False, frame
    assert frame["findings"] == [], frame
    if not frame["payloadTruncated"]:
        assert len(b64d(frame["payloadBase64"])) == frame["payloadLength"], frame


@dataclass
class Sent:
    """A data message as a peer sent it: whole, or as fragments (websockets then ends
    an async-iterator message with an empty final frame)."""
    kind: str  # text | binary
    payload: bytes
    fragments: list[bytes] | None = field(default=None, compare=False)  # the receiver cannot tell

    @property
    def opcode(self) -> int:
        return 1 if self.kind == "text" else 2

    def expected_frames(self) -> list[tuple[int, bool, bytes]]:
        """(opcode, fin, payload) of the frames without compression."""
        if self.fragments is None:
            return [(self.opcode, True, self.payload)]
        out = [(self.opcode if i == 0 else 0, False, f) for i, f in enumerate(self.fragments)]
        return out + [(0, True, b"")]

    @property
    def frame_count(self) -> int:
        return 1 if self.fragments is None else len(self.fragments) + 1


def as_sent(msg) -> Sent:
    return Sent("text", msg.encode()) if isinstance(msg, str) else Sent("binary", bytes(msg))


def check_data_direction(events, connection, direction, sent: list[Sent], compressed: bool) -> None:
    """The log's data frames and messages in one direction equal what was sent."""
    frames = [f for f in frames_of(events, connection, direction) if f["opcode"] in DATA_OPCODES]
    for f in frames:
        check_frame_basics(f)
    if compressed:
        # Frame payloads are deflated: structure from the frames, content by inflating them
        # independently (Python's zlib) and comparing with what was sent.
        starts = [f for f in frames if f["opcode"] != 0]
        assert [f["opcode"] for f in starts] == [s.opcode for s in sent]
        assert all(f["rsv1"] and f["compressed"] for f in starts), "every message compressed"
        assert all(not f["rsv1"] for f in frames if f["opcode"] == 0), "RSV1 only on first frames"
        assert len(frames) == sum(s.frame_count for s in sent)
        ref = RefAssembler(deflate=True)
        for f in frames:
            assert not f["payloadTruncated"], f"frame payload cut at --max-payload: {f['payloadLength']}"
            ref.feed(f["opcode"], f["fin"], f["rsv1"], b64d(f["payloadBase64"]))
        assert [(m.opcode, m.frames) for m in ref.messages] == [(s.opcode, s.frame_count) for s in sent]
        for m, s in zip(ref.messages, sent):
            assert m.inflate_error is None and m.payload == s.payload, "frame payloads inflate to what was sent"
    else:
        got = [(f["opcode"], f["fin"], b64d(f["payloadBase64"])) for f in frames]
        want = [fr for s in sent for fr in s.expected_frames()]
        assert [g[:2] for g in got] == [w[:2] for w in want], "frame opcodes and FIN bits"
        for i, (g, w) in enumerate(zip(got, want)):
            assert g[2] == w[2], f"{direction} frame {i}: payload differs ({len(g[2])} vs {len(w[2])} bytes)"
        assert all(not f["rsv1"] and not f["compressed"] for f in frames)
    messages = messages_of(events, connection, direction)
    assert [(m["opcode"], m["frames"]) for m in messages] == [(s.opcode, s.frame_count) for s in sent]
    for m, s in zip(messages, sent):
        assert m["compressed"] is compressed, m
        assert m["payloadTruncated"] is False and m["inflateError"] is None and m["findings"] == [], \
            {k: v for k, v in m.items() if k != "payloadBase64"}
        assert m["length"] == len(s.payload)
        assert b64d(m["payloadBase64"]) == s.payload, f"{direction} message payload ({len(s.payload)} bytes)"
        if s.kind == "text":
            assert m["text"] == s.payload.decode()


def check_controls(events, connection, direction, want: list[tuple[str, bytes]]) -> list[dict]:
    controls = [f for f in frames_of(events, connection, direction) if f["opcode"] in CONTROL_OPCODES]
    for f in controls:
        check_frame_basics(f)
        assert f["fin"] is True and f["rsv1"] is False
    assert [(f["opcodeName"], b64d(f["payloadBase64"])) for f in controls] == want
    return controls


def check_clean_log(events, *, connections: int) -> None:
    assert of_type(events, "finding") == [], of_type(events, "finding")
    opens = of_type(events, "connection-open")
    assert len(opens) == connections
    for e in opens:
        assert e["origin"] == "handshake" and e["findings"] == [], e
        assert e["response"]["status"] == 101 and e["response"]["acceptValid"] is True, e
    summary = events[-1]
    assert summary["type"] == "summary"
    assert summary["webSocketConnections"] == connections
    assert summary["frames"] == len(of_type(events, "frame"))
    assert summary["messages"] == len(of_type(events, "message"))
    assert summary["findings"] == 0


# --------------------------------------------------------------------------
# Readiness, signals
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_readiness_line_and_ready_file(start_proxy, fmt):
    """The readiness line (stdout) and the ready file name the same, connectable address."""
    proxy = start_proxy(f"ws://127.0.0.1:{free_port()}", log=False, fmt=fmt)
    with connect_raw(proxy.address):
        pass
    assert proxy.ready_path.read_text() == proxy.address + "\n"
    assert proxy.stop() == 0
    if fmt == "jsonl":
        last = json.loads(proxy.stdout().splitlines()[-1])
        assert last["type"] == "summary"
    else:
        assert proxy.stdout().startswith(proxy.ready_line + "\n")


def test_sigterm_stops_with_summary(start_proxy):
    proxy = start_proxy(f"ws://127.0.0.1:{free_port()}")
    assert proxy.stop(signal.SIGTERM) == 0, proxy.describe()
    events = proxy.events()
    assert [e["type"] for e in events] == ["summary"], events


def test_signal_right_after_ready_is_not_lost(wsinspect_bin, tmp_path):
    """A supervisor that sends SIGINT as soon as the ready file appears; up to 30 tries."""
    for attempt in range(30):
        proxy = ProxyProcess(wsinspect_bin, "ws://127.0.0.1:9", tmp_path / f"p{attempt}", wait=False)
        try:
            while not (proxy.ready_path.exists() and proxy.ready_path.read_text().endswith("\n")):
                assert proxy.proc.poll() is None, proxy.describe()
                time.sleep(0.0005)
            proxy.proc.send_signal(signal.SIGINT)
            try:
                rc = proxy.proc.wait(3)
            except subprocess.TimeoutExpired:
                rc = None
            assert rc == 0, f"try {attempt + 1}: SIGINT right after readiness: exit {rc} (None = still running after 3 s)"
            assert proxy.events()[-1]["type"] == "summary"
        finally:
            if proxy.proc.poll() is None:
                proxy.proc.kill()
                proxy.proc.wait()


def release_binary() -> Path:
    from wsinspect_run import REPO_ROOT
    path = REPO_ROOT / ".build/release/wsinspect"
    if not os.access(path, os.X_OK):
        pytest.skip(f"no release build at {path}")
    if subprocess.run([str(path), "proxy", "--help"], capture_output=True).returncode != 0:
        pytest.skip(f"{path} has no proxy subcommand (stale build)")
    return path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_release_build_stops_on_signal(tmp_path, sig):
    proxy = ProxyProcess(release_binary(), "ws://127.0.0.1:9", tmp_path / "release")
    try:
        rc = proxy.stop(sig, timeout=5)
    except AssertionError:
        rc = None
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait()
    assert rc == 0, f"release build: exit {rc} after {signal.Signals(sig).name} (None = still running after 5 s)"
    assert proxy.events()[-1]["type"] == "summary"


def test_listen_on_ipv6_loopback(start_proxy):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as exc:
        pytest.skip(f"::1 not usable: {exc}")

    async def scenario():
        async with echo_server() as port:
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}", listen="[::1]:0")
            assert re.fullmatch(r"\[::1\]:\d+", proxy.address), proxy.address
            async with connect(proxy.url("/v6")) as ws:
                await ws.send("over ::1")
                assert await ws.recv() == "over ::1"
                local = ws.local_address
            events = await asyncio.to_thread(proxy.wait_for_type, "connection-close", 1)
            assert connection_for(events, local) == 1
            assert of_type(events, "connection-open")[0]["client"].startswith("[::1]:")

    run(scenario())


# --------------------------------------------------------------------------
# Python websockets client <-> server
# --------------------------------------------------------------------------


class ScriptedServer:
    """A websockets server handler that records what it sent and received.

    Echoes every message, except the text commands
      "fragments please"  -> a fragmented text (3 fragments) and binary (2) message,
      "ping me"           -> ping(b"server-ping"), waits for the pong, sends "pinged",
      "close please"      -> close(4001, "server says bye")."""

    def __init__(self):
        self.sent: list[Sent] = []
        self.received: list[Sent] = []
        self.close_code = None
        self.close_reason = None
        self.pings: list[bytes] = []
        self.done = asyncio.Event()

    async def __call__(self, ws):
        try:
            async for msg in ws:
                self.received.append(as_sent(msg))
                if msg == "fragments please":
                    frags = ["srv-frag-1 ", "srv-frag-2 ✓ ", "srv-frag-3"]
                    await ws.send(self._agen(frags))
                    self.sent.append(Sent("text", "".join(frags).encode(), [f.encode() for f in frags]))
                    bfrags = [bytes(range(256)) * 2, b"\xfe" * 70000]
                    await ws.send(self._agen(bfrags))
                    self.sent.append(Sent("binary", b"".join(bfrags), bfrags))
                elif msg == "ping me":
                    waiter = await ws.ping(b"server-ping")
                    self.pings.append(b"server-ping")
                    await waiter
                    await ws.send("pinged")
                    self.sent.append(as_sent("pinged"))
                elif msg == "close please":
                    await ws.close(4001, "server says bye")
                else:
                    await ws.send(msg)
                    self.sent.append(as_sent(msg))
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            self.close_code, self.close_reason = ws.close_code, ws.close_reason
            self.done.set()

    @staticmethod
    async def _agen(items):
        for item in items:
            yield item


def client_messages(compression: str | None) -> list:
    rng = random.Random(6455)
    if compression:
        # compressible, so the deflated frame stays under --max-payload and is logged whole
        big = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz {}\":,") for _ in range(1 << 20))
    else:
        big = rng.randbytes(1 << 20)
    return [
        "hello ✓ ünïcode",
        bytes(range(256)),
        "x" * 200,  # 16-bit length
        rng.randbytes(70000),  # 64-bit length
        "",  # empty text message
        big,  # 1 MiB exactly
    ]


@pytest.mark.parametrize("close_mode", ["client-1000", "client-4000", "server-4001"])
@pytest.mark.parametrize("compression", [None, "deflate"], ids=["plain", "deflate"])
def test_websockets_through_proxy(start_proxy, compression, close_mode):
    """Text, binary, fragmented (async iterator) both ways, 1 MiB, pings both ways, close."""

    async def scenario():
        server = ScriptedServer()
        async with serve(server, "127.0.0.1", 0, compression=compression, max_size=None,
                         ping_interval=None) as srv:
            port = srv.sockets[0].getsockname()[1]
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}")
            client_sent: list[Sent] = []
            client_received: list[Sent] = []
            async with connect(proxy.url("/chat?room=1"), compression=compression, max_size=None,
                               ping_interval=None) as ws:
                local = ws.local_address
                negotiated = ws.response.headers.get("Sec-WebSocket-Extensions")
                assert (negotiated is not None) == bool(compression), negotiated
                for msg in client_messages(compression):
                    await ws.send(msg)
                    client_sent.append(as_sent(msg))
                    client_received.append(as_sent(await ws.recv()))
                frags = ["cli-frag-1 ", "cli-frag-2 ✓ ", "cli-frag-3"]
                await ws.send(ScriptedServer._agen(frags))
                client_sent.append(Sent("text", "".join(frags).encode(), [f.encode() for f in frags]))
                client_received.append(as_sent(await ws.recv()))
                bfrags = [b"\x00" * 100, b"\xff" * 3000]
                await ws.send(ScriptedServer._agen(bfrags))
                client_sent.append(Sent("binary", b"".join(bfrags), bfrags))
                client_received.append(as_sent(await ws.recv()))

                pong = await ws.ping(b"client-ping")
                latency = await asyncio.wait_for(pong, 10)
                assert latency >= 0

                for command, replies in (("fragments please", 2), ("ping me", 1)):
                    await ws.send(command)
                    client_sent.append(as_sent(command))
                    for _ in range(replies):
                        client_received.append(as_sent(await ws.recv()))

                if close_mode == "client-1000":
                    await ws.close()
                    want_close = (1000, "")
                elif close_mode == "client-4000":
                    await ws.close(4000, "custom reason ✓")
                    want_close = (4000, "custom reason ✓")
                else:
                    await ws.send("close please")
                    client_sent.append(as_sent("close please"))
                    with pytest.raises(ConnectionClosed):
                        await ws.recv()
                    want_close = (4001, "server says bye")
            await asyncio.wait_for(server.done.wait(), 10)
            client_close = (ws.close_code, ws.close_reason)

            # (a) the peers saw exactly what the other sent
            assert server.received == client_sent
            assert client_received == server.sent
            # the close code/reason arrived at the other side unchanged
            if close_mode.startswith("client"):
                assert (server.close_code, server.close_reason) == want_close
            else:
                assert client_close == want_close

            await asyncio.to_thread(proxy.wait_for_type, "connection-close", 1)
            events = await asyncio.to_thread(proxy.stop_and_check)

        # (b) the log matches what was sent
        conn = connection_for(events, local)
        opened = of_type(events, "connection-open", conn)[0]
        assert opened["request"]["path"] == "/chat?room=1"
        assert opened["server"] == f"127.0.0.1:{port}"
        assert opened["response"]["extensions"] == ([negotiated] if negotiated else [])
        assert (opened["compression"] is not None) == bool(compression)
        check_data_direction(events, conn, C2S, client_sent, bool(compression))
        check_data_direction(events, conn, S2C, server.sent, bool(compression))

        c2s_close = (server.close_code, server.close_reason)  # what the server received
        s2c_close = client_close  # what the client received
        c2s = check_controls(events, conn, C2S, [("ping", b"client-ping"), ("pong", b"server-ping"),
                                                 ("close", close_payload(*c2s_close))])
        s2c = check_controls(events, conn, S2C, [("pong", b"client-ping"), ("ping", b"server-ping"),
                                                 ("close", close_payload(*s2c_close))])
        for pong in (c2s[1], s2c[0]):
            assert isinstance(pong.get("pingRoundTripMs"), (int, float)) and pong["pingRoundTripMs"] >= 0, pong
        assert (c2s[2]["closeCode"], c2s[2]["closeReason"]) == c2s_close
        assert (s2c[2]["closeCode"], s2c[2]["closeReason"]) == s2c_close

        closed = of_type(events, "connection-close", conn)
        assert len(closed) == 1
        closed = closed[0]
        assert closed["reason"] == "close-handshake", closed
        assert (closed["clientToServer"]["closeCode"], closed["clientToServer"]["closeReason"]) == c2s_close
        assert (closed["serverToClient"]["closeCode"], closed["serverToClient"]["closeReason"]) == s2c_close
        for direction, key in ((C2S, "clientToServer"), (S2C, "serverToClient")):
            assert closed[key]["frames"] == len(frames_of(events, conn, direction))
            assert closed[key]["messages"] == len(messages_of(events, conn, direction))
        check_clean_log(events, connections=1)

    run(scenario(), timeout=90)


@pytest.mark.parametrize(
    "args, text, kept",
    [(("--max-payload", "1000"), False, 1000), ((), False, 4096), ((), True, 16384)],
    ids=["1000", "default-binary", "default-text"],
)
def test_max_payload_truncates_log_not_relay(start_proxy, args, text, kept):
    """--max-payload (default 16 KiB of text, 4 KiB of binary) cuts what the log keeps of frames
    and messages, never what is relayed."""

    async def scenario():
        rng = random.Random(1)
        data = "".join(rng.choice("abcdefghij {}:,") for _ in range(40_000)) if text else rng.randbytes(40_000)
        raw = data.encode() if text else data
        async with echo_server(compression=None) as port:
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}", *args, full_payloads=False)
            async with connect(proxy.url(), compression=None) as ws:
                await ws.send(data)
                assert await ws.recv() == data
            await asyncio.to_thread(proxy.wait_for_type, "connection-close", 1)
            events = await asyncio.to_thread(proxy.stop_and_check)
        for direction in (C2S, S2C):
            (frame,) = [f for f in frames_of(events, 1, direction) if f["opcode"] == (1 if text else 2)]
            assert frame["payloadLength"] == 40_000 and frame["payloadTruncated"] is True
            assert b64d(frame["payloadBase64"]) == raw[:kept]
            (message,) = messages_of(events, 1, direction)
            assert message["length"] == 40_000 and b64d(message["payloadBase64"]) == raw[:kept]

    run(scenario())


def test_no_log_relays_without_decoding(start_proxy):
    """--no-log: bytes are relayed as ever; stdout has only the readiness line, no summary."""

    async def scenario():
        data = random.Random(2).randbytes(300_000)
        async with echo_server() as port:
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}", "--no-log", log=False)
            async with connect(proxy.url()) as ws:
                for message in ["hello", data, "bye"]:
                    await ws.send(message)
                    assert await ws.recv() == message
            rc = await asyncio.to_thread(proxy.stop)
        assert rc == 0, proxy.describe()
        assert proxy.stdout().splitlines() == [proxy.ready_line], proxy.describe()
        assert proxy.stderr() == "", proxy.describe()

    run(scenario())


def test_no_log_excludes_log(wsinspect_bin, tmp_path):
    r = subprocess.run([str(wsinspect_bin), "proxy", "--upstream", "ws://127.0.0.1:1", "--no-log",
                        "--log", str(tmp_path / "x")], capture_output=True, text=True, timeout=20)
    assert r.returncode == 64 and "--no-log and --log" in r.stderr, r


def test_write_pcap_decodes_like_the_live_log(start_proxy, wsinspect_bin, tmp_path):
    """--write-pcap records each client connection as the client saw it: `wsinspect read`
    decodes the recording to exactly the frames and messages the live log showed, and
    tshark (the independent oracle) sees the same frames, masks and payloads."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (Debian: apt-get install tshark)")
    pcap = tmp_path / "proxied.pcap"
    data = random.Random(7).randbytes(100_000)

    async def scenario():
        async with echo_server() as port:  # permessage-deflate negotiated
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}", "--write-pcap", str(pcap))
            for _ in range(2):
                async with connect(proxy.url("/rec")) as ws:
                    for message in ["hello", data, ["frag", "mented"]]:
                        await ws.send(message)
                        await ws.recv()
                    await (await ws.ping(b"rtt"))
                    await ws.close(1001, "bye")
            return proxy, await asyncio.to_thread(proxy.stop_and_check)

    proxy, live = run(scenario())
    check_clean_log(live, connections=2)
    recorded = run_wsinspect(wsinspect_bin, pcap, ["--max-payload", str(FULL_PAYLOADS)])
    assert recorded.returncode == 0 and not recorded.bad_lines, recorded.describe()

    fields = ("connection", "direction", "fin", "rsv1", "rsv2", "rsv3", "opcode", "masked", "maskingKey",
              "payloadLength", "lengthEncoding", "payloadBase64", "closeCode", "closeReason")

    def frames(events):
        return [tuple(e.get(k) for k in fields) for e in of_type(events, "frame")]

    def messages(events):
        return [(e["connection"], e["direction"], e["opcodeName"], e.get("payloadBase64"), e.get("text"))
                for e in of_type(events, "message")]

    assert frames(recorded.events) == frames(live)
    assert messages(recorded.events) == messages(live)
    # per connection: the client's 5 data frames (3 for the fragmented message), ping and close;
    # the server's 3 echoes, pong and close
    assert len(frames(live)) == 2 * 12

    listen_port = int(proxy.address.rpartition(":")[2])
    client_port = {e["connection"]: int(e["client"].rpartition(":")[2]) for e in of_type(live, "connection-open")}
    by_tshark: dict[tuple[int, bool], list] = {}
    for t in tshark_frames(pcap, ["-o", "tcp.reassemble_out_of_order:TRUE"]):
        to_server = t.dst[1] == listen_port
        by_tshark.setdefault((t.src[1] if to_server else t.dst[1], to_server), []).append(t)
    by_ours: dict[tuple[int, bool], list] = {}
    for o in of_type(live, "frame"):
        by_ours.setdefault((client_port[o["connection"]], o["direction"] == C2S), []).append(o)
    assert by_tshark.keys() == by_ours.keys()
    for key, ours in by_ours.items():
        assert len(by_tshark[key]) == len(ours), key
        for t, o in zip(by_tshark[key], ours):
            assert (t.fin, t.rsv1, t.opcode, t.masked) == (o["fin"], o["rsv1"], o["opcode"], o["masked"]), (t, o)
            assert t.masking_key == (o["maskingKey"].lower() if o["masked"] else None), (t, o)
            assert t.payload == b64d(o.get("payloadBase64") or ""), (t, o)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize("args, want, unwanted", [
    # whole (inflated) messages, one line each; pings and pongs hidden
    (("--messages", "--no-control"),
     [r'C→S text +frames=3 len=5 compressed=\d+ +"hello"', r'S→C text +frames=1 len=5 .*"hello"',
      r"C→S binary +frames=1 len=2 .* 01 02", r"S→C binary +frames=1 len=2 .* 01 02"],
     [r" ping ", r" pong ", r"FIN"]),
    # filters, in colour: only the server's binary frames (and the connection's lines)
    (("--direction", "s2c", "--opcode", "binary", "--color", "always"),
     [r"S→C binary +FIN RSV1 len=\d+ inflated=2 +01 02", r"#1 open ", r"#1 closed after"],
     [r"C→S binary", r" text ", r" ping ", r"S→C pong"]),
    # the frame view, pongs with their round trip
    ((), [r"C→S text +fin=0 RSV1 mask=[0-9a-f]{8} len=\d+ +\(compressed; the message shows when complete\)",
          r'C→S continuation +FIN mask=[0-9a-f]{8} len=\d+ inflated=5 +"hello"',
          r"C→S ping +FIN mask=[0-9a-f]{8} len=1 +70", r"S→C pong +FIN len=1 rtt=\d+\.\d+ms +70"],
     [r"frames="]),
], ids=["messages-no-control", "filters-colour", "frames"])
def test_text_view_takes_the_read_options(start_proxy, args, want, unwanted):
    """The proxy's terminal view is `read`'s: its view options work live, on a real
    websockets client and server (permessage-deflate negotiated)."""

    async def scenario():
        async with echo_server() as port:
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}", *args, log=False, fmt="text")
            async with connect(proxy.url()) as ws:
                await ws.send(["hel", "lo"])  # one text message: "hel", "lo" and an empty last frame
                assert await ws.recv() == "hello"
                await ws.send(b"\x01\x02")
                assert await ws.recv() == b"\x01\x02"
                await (await ws.ping(b"p"))
            rc = await asyncio.to_thread(proxy.stop)
        assert rc == 0, proxy.describe()
        raw = proxy.stdout()
        assert ("\x1b[" in raw) == ("always" in args), proxy.describe()
        out = ANSI.sub("", raw)
        for pattern in want:
            assert re.search(pattern, out), f"{pattern!r} not in\n{out}"
        for pattern in unwanted:
            assert not re.search(pattern, out), f"{pattern!r} in\n{out}"

    run(scenario())


# --------------------------------------------------------------------------
# Node ws broadcast chat, 3 Python clients
# --------------------------------------------------------------------------


@pytest.fixture
def node_chat_server(request):
    reason = node_prerequisites_missing()
    if reason:
        pytest.skip(reason)
    script = Path(__file__).resolve().parent / "peers" / "node_ws_chat.js"
    deflate = bool(getattr(request, "param", False))
    args = ["node", str(script)] + (["--deflate"] if deflate else [])
    proc = subprocess.Popen(args, env=dict(os.environ, NODE_PATH=NODE_PATH), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.fullmatch(r"LISTENING (\d+)\n", line)
    if not m:
        proc.kill()
        raise AssertionError(f"node chat server did not start: {line!r} {proc.stderr.read()}")
    yield int(m.group(1)), deflate
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("node_chat_server", [False, True], ids=["plain", "deflate"], indirect=True)
def test_node_ws_broadcast_chat(start_proxy, node_chat_server):
    port, deflate = node_chat_server
    per_client = 6

    async def scenario():
        proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}")
        clients = [await connect(proxy.url("/chat"), max_size=None) for _ in range(3)]
        sent: dict[int, list[Sent]] = {}

        async def talk(i, ws):
            sent[i] = []
            for j in range(per_client):
                msg = f"client {i} says {j} ✓" if j % 3 else f"client {i} binary {j}".encode() * 50
                await ws.send(msg)
                sent[i].append(as_sent(msg))
                await asyncio.sleep(0.005 * random.random())

        async def listen(ws):
            return [as_sent(await ws.recv()) for _ in range(3 * per_client)]

        listeners = [asyncio.create_task(listen(ws)) for ws in clients]
        await asyncio.gather(*(talk(i, ws) for i, ws in enumerate(clients)))
        received = await asyncio.gather(*listeners)
        locals_ = [ws.local_address for ws in clients]
        for ws in clients:
            await ws.close()

        everything = sorted((s.kind, s.payload) for msgs in sent.values() for s in msgs)
        for got in received:
            # everyone receives every message (their own included), each sender's in order,
            assert sorted((s.kind, s.payload) for s in got) == everything
            for i, msgs in sent.items():
                assert [s for s in got if s in msgs] == msgs
        # and in the same order, since the server sends each message to all clients in turn
        assert received[0] == received[1] == received[2]

        await asyncio.to_thread(proxy.wait_for_type, "connection-close", 3)
        events = await asyncio.to_thread(proxy.stop_and_check)
        for opened in of_type(events, "connection-open"):
            assert bool(opened["compression"]) == deflate, opened
        for i, local in enumerate(locals_):
            conn = connection_for(events, local)
            check_data_direction(events, conn, C2S, sent[i], deflate)
            check_data_direction(events, conn, S2C, received[i], deflate)
            assert of_type(events, "connection-close", conn)[0]["reason"] == "close-handshake"
        check_clean_log(events, connections=3)

    run(scenario())


# --------------------------------------------------------------------------
# Negotiation passes through untouched
# --------------------------------------------------------------------------


def negotiating_server(handler):
    return serve(handler, "127.0.0.1", 0, subprotocols=["chat.v2", "chat.v1"], compression=None,
                 extensions=[ServerPerMessageDeflateFactory(server_no_context_takeover=True,
                                                            server_max_window_bits=10,
                                                            client_max_window_bits=11)])


def test_subprotocol_and_extension_negotiation_unchanged(start_proxy):
    async def scenario():
        async def handler(ws):
            await ws.send(f"protocol={ws.subprotocol}")
            async for m in ws:
                await ws.send(m)

        async with negotiating_server(handler) as srv:
            port = srv.sockets[0].getsockname()[1]
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}")
            seen = {}
            for name, url in (("direct", f"ws://127.0.0.1:{port}/neg"), ("proxy", proxy.url("/neg"))):
                async with connect(url, subprotocols=["chat.v1", "chat.v2"]) as ws:
                    r = ws.response
                    headers = [(k, v) for k, v in r.headers.raw_items() if k.lower() not in ("date", "sec-websocket-accept")]
                    assert await ws.recv() == "protocol=chat.v2"
                    await ws.send("y" * 5000)
                    assert await ws.recv() == "y" * 5000
                    seen[name] = (r.status_code, r.reason_phrase, headers, ws.subprotocol, r.body)
                    if name == "proxy":
                        local = ws.local_address
            assert seen["proxy"] == seen["direct"]
            assert seen["proxy"][3] == "chat.v2"

            # byte for byte: the same request (same key) straight and through the proxy
            request = upgrade_request("/neg", extra=[
                "Sec-WebSocket-Protocol: chat.v1, chat.v2",
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"])

            def raw_head(address):
                with connect_raw(address) as s:
                    s.sendall(request)
                    return read_head(s)[0]
            direct = await asyncio.to_thread(raw_head, f"127.0.0.1:{port}")
            through = await asyncio.to_thread(raw_head, proxy.address)
            assert without_date(through) == without_date(direct)
            assert b"Sec-WebSocket-Protocol: chat.v2\r\n" in through
            assert b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; " \
                   b"server_max_window_bits=10; client_max_window_bits=11\r\n" in through, through

            await asyncio.to_thread(proxy.wait_for_type, "connection-close", 2)
            events = await asyncio.to_thread(proxy.stop_and_check)
        conn = connection_for(events, local)
        opened = of_type(events, "connection-open", conn)[0]
        assert opened["request"]["protocols"] == ["chat.v1", "chat.v2"]
        assert opened["response"]["protocol"] == "chat.v2"
        assert opened["compression"] == {"extension": "permessage-deflate", "serverNoContextTakeover": True,
                                         "clientNoContextTakeover": False, "serverMaxWindowBits": 10,
                                         "clientMaxWindowBits": 11}, opened["compression"]
        (hello,) = [m for m in messages_of(events, conn, S2C) if m["opcode"] == 1][:1]
        assert hello["text"] == "protocol=chat.v2" and hello["compressed"] is True

    run(scenario())


# --------------------------------------------------------------------------
# Plain HTTP
# --------------------------------------------------------------------------


class _HTTPHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def do_GET(self):
        type(self).seen.append(("GET", self.path, self.headers.get("Host")))
        body = b"big:" + bytes(range(256)) * 4096 if self.path == "/big" else f"hello from {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(("POST", self.path, self.headers.get("Host")))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[::-1])

    def log_message(self, *args):
        pass


@pytest.fixture
def http_upstream():
    handler = type("Handler", (_HTTPHandler,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_plain_http_is_relayed(start_proxy, http_upstream):
    server, handler = http_upstream
    port = server.server_address[1]
    proxy = start_proxy(f"ws://127.0.0.1:{port}")
    with urllib.request.urlopen(f"http://{proxy.address}/hello?x=1", timeout=10) as r:
        assert r.status == 200 and r.read() == b"hello from /hello?x=1\n"
    with urllib.request.urlopen(f"http://{proxy.address}/big", timeout=10) as r:
        assert r.read() == b"big:" + bytes(range(256)) * 4096
    body = random.Random(2).randbytes(300_000)
    req = urllib.request.Request(f"http://{proxy.address}/post", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201 and r.read() == body[::-1]
    # the upstream was asked for its own Host
    assert handler.seen == [("GET", "/hello?x=1", f"127.0.0.1:{port}"), ("GET", "/big", f"127.0.0.1:{port}"),
                            ("POST", "/post", f"127.0.0.1:{port}")]
    events = proxy.stop_and_check()
    assert of_type(events, "connection-open") == [] and of_type(events, "frame") == []
    assert events[-1]["webSocketConnections"] == 0


# --------------------------------------------------------------------------
# Failure paths
# --------------------------------------------------------------------------


def test_upstream_not_listening_gives_502(start_proxy):
    port = free_port()
    proxy = start_proxy(f"ws://127.0.0.1:{port}")
    for _ in range(2):
        with connect_raw(proxy.address) as s:
            s.sendall(upgrade_request())
            data, how = recv_until_eof(s)
        assert how == "eof", how
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), data
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        assert len(body) == length
        assert body.startswith(f"wsinspect: cannot reach the upstream ws://127.0.0.1:{port}".encode()), body
        assert b"refused" in body.lower(), body
    # a WebSocket client sees the status too
    async def client():
        with pytest.raises(InvalidStatus) as info:
            async with connect(proxy.url()):
                pass
        assert info.value.response.status_code == 502
    run(client())
    assert proxy.proc.poll() is None, "the proxy keeps running"
    assert f"cannot reach the upstream ws://127.0.0.1:{port}" in proxy.stderr(), proxy.stderr()

    # once the upstream is there, the same proxy relays
    async def later():
        async with serve(echo_handler, "127.0.0.1", port):
            async with connect(proxy.url()) as ws:
                await ws.send("now it works")
                assert await ws.recv() == "now it works"
    run(later())
    events = proxy.stop_and_check()
    assert len(of_type(events, "connection-open")) == 1


def test_upstream_rejects_upgrade_with_403(start_proxy):
    async def scenario():
        def process_request(connection, request):
            if request.path == "/forbidden":
                return connection.respond(HTTPStatus.FORBIDDEN, "members only\n")
            return None

        async def handler(ws):
            await ws.send("welcome")

        async with serve(handler, "127.0.0.1", 0, process_request=process_request) as srv:
            port = srv.sockets[0].getsockname()[1]
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}")
            with pytest.raises(InvalidStatus) as info:
                async with connect(proxy.url("/forbidden")):
                    pass
            assert info.value.response.status_code == 403
            assert bytes(info.value.response.body) == b"members only\n"

            def raw(address):
                with connect_raw(address) as s:
                    s.sendall(upgrade_request("/forbidden"))
                    return recv_until_eof(s)
            direct, _ = await asyncio.to_thread(raw, f"127.0.0.1:{port}")
            through, how = await asyncio.to_thread(raw, proxy.address)
            assert how == "eof"
            assert without_date(through) == without_date(direct)
            assert through.startswith(b"HTTP/1.1 403 Forbidden\r\n")
            async with connect(proxy.url("/ok")) as ws:
                assert await ws.recv() == "welcome"
            await asyncio.to_thread(proxy.wait_for_type, "connection-close", 1)
            events = await asyncio.to_thread(proxy.stop_and_check)
        rejected = of_type(events, "handshake-rejected")
        assert len(rejected) == 2
        for e in rejected:
            assert (e["method"], e["path"], e["status"], e["reason"]) == ("GET", "/forbidden", 403, "Forbidden"), e
            assert e["server"] == f"127.0.0.1:{port}"
        assert events[-1]["rejectedHandshakes"] == 2
        assert events[-1]["webSocketConnections"] == 1

    run(scenario())


def dies_mid_frame(how: str):
    """Raw upstream: completes the handshake, sends a whole text frame, then the header
    and 40 of the 100 payload bytes of a binary frame, then closes (FIN) or resets."""
    def behaviour(conn, record):
        head, _ = read_head(conn)
        conn.sendall(switching_protocols(head) + ws_frame(1, b"hello"))
        time.sleep(0.2)
        conn.sendall(ws_frame(2, b"x" * 100)[:2 + 40])
        time.sleep(0.2)
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return behaviour


def run_mid_frame(start_proxy, how):
    with RawUpstream(dies_mid_frame(how)) as upstream:
        proxy = start_proxy(upstream.url)

        async def client():
            async with connect(proxy.url(), compression=None) as ws:
                assert await ws.recv() == "hello"
                t0 = time.monotonic()
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert time.monotonic() - t0 < 5
                return ws.close_code
        code = run(client())
        assert code == 1006  # abnormal closure: the TCP connection ended without a close frame

        with connect_raw(proxy.address) as s:
            s.sendall(upgrade_request())
            data, ended = recv_until_eof(s)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert rest == ws_frame(1, b"hello") + ws_frame(2, b"x" * 100)[:42]
        assert ended == ("reset" if how == "reset" else "eof"), ended
        upstream.wait_done(2)
        events = proxy.wait_for_type("connection-close", 2)
        assert proxy.proc.poll() is None
        events = proxy.stop_and_check()
    return events


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_upstream_dies_mid_frame(start_proxy, how):
    events = run_mid_frame(start_proxy, how)
    for conn in (1, 2):
        frames = frames_of(events, conn, S2C)
        assert [f["opcodeName"] for f in frames] == ["text", "binary"]
        cut = frames[1]
        assert cut["payloadLength"] == 100
        assert cut["payloadTruncated"] is True or any(f["kind"] == "truncated-frame" for f in cut["findings"]), cut
        assert b64d(cut["payloadBase64"]) == b"x" * 40
        assert "truncated-frame" in [f["kind"] for f in cut["findings"]]
        closed = of_type(events, "connection-close", conn)
        assert len(closed) == 1
        assert closed[0]["reason"] in ("tcp-fin", "tcp-reset"), closed
        assert closed[0]["serverToClient"]["frames"] == 2


def test_upstream_reset_logged_as_tcp_reset(start_proxy):
    events = run_mid_frame(start_proxy, "reset")
    assert [e["reason"] for e in of_type(events, "connection-close")] == ["tcp-reset", "tcp-reset"]


def test_summary_findings_match_connection_close(start_proxy):
    events = run_mid_frame(start_proxy, "fin")
    assert events[-1]["findings"] == sum(e["findings"] for e in of_type(events, "connection-close"))


def test_handshake_timeout(start_proxy):
    """--handshake-timeout 1: a client that never finishes its request head is closed
    after ~1 s; one that finished it long ago is not affected."""

    async def scenario():
        async with echo_server() as port:
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}", "--handshake-timeout", "1")
            async with connect(proxy.url()) as ws:

                def stalled(data):
                    with connect_raw(proxy.address) as s:
                        s.sendall(data)
                        t0 = time.monotonic()
                        got, how = recv_until_eof(s, timeout=8)
                        return got, how, time.monotonic() - t0
                for partial in (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n", b""):
                    got, how, elapsed = await asyncio.to_thread(stalled, partial)
                    assert how in ("eof", "reset") and got == b"", (how, got)
                    assert 0.8 <= elapsed <= 3.5, elapsed
                await asyncio.sleep(0.5)  # the established connection is now well past 1 s
                await ws.send("still here")
                assert await ws.recv() == "still here"
            assert proxy.proc.poll() is None
            assert proxy.stderr().count("no complete request head within 1 s") == 2, proxy.stderr()
            await asyncio.to_thread(proxy.wait_for_type, "connection-close", 1)
            events = await asyncio.to_thread(proxy.stop_and_check)
        assert events[-1]["webSocketConnections"] == 1

    run(scenario())


def half_close_upstream(wait_for_eof_first: bool):
    """Raw upstream: reads the head, (answers 101,) reads until the client's FIN, then
    still sends two frames, 0.2 s apart, and closes."""
    def behaviour(conn, record):
        head, rest = read_head(conn)
        record["head"] = head
        if not wait_for_eof_first:
            conn.sendall(switching_protocols(head))
        recv_record_until_eof(conn, record, rest)
        reply = b"" if not wait_for_eof_first else switching_protocols(head)
        conn.sendall(reply + ws_frame(1, b"after your FIN"))
        time.sleep(0.2)
        conn.sendall(ws_frame(2, b"\x00" * 1000))
    return behaviour


def test_half_close_passes_through(start_proxy):
    """The client shuts down its write side after sending; the upstream sees the FIN
    and can still send data back, which the client receives."""
    with RawUpstream(half_close_upstream(wait_for_eof_first=False)) as upstream:
        proxy = start_proxy(upstream.url)
        frame = ws_frame(1, b"last words", mask=b"\x01\x02\x03\x04")
        with connect_raw(proxy.address) as s:
            s.sendall(upgrade_request())
            head, rest = read_head(s)
            assert head.startswith(b"HTTP/1.1 101 ")
            s.sendall(frame)
            s.shutdown(socket.SHUT_WR)
            data, how = recv_until_eof(s)
        assert how == "eof"
        assert rest + data == ws_frame(1, b"after your FIN") + ws_frame(2, b"\x00" * 1000)
        upstream.wait_done()
        assert upstream.records[0]["eof"] is True and upstream.records[0]["received"] == frame
        events = proxy.wait_for_type("connection-close", 1)
        events = proxy.stop_and_check()
    assert [b64d(f["payloadBase64"]) for f in frames_of(events, 1, C2S)] == [b"last words"]
    assert [f["opcodeName"] for f in frames_of(events, 1, S2C)] == ["text", "binary"]
    assert of_type(events, "connection-close")[0]["reason"] == "tcp-fin"


def test_half_close_right_after_request(start_proxy):
    """Like `printf 'GET …\\r\\n\\r\\n' | nc -N`: request and FIN in one go; this upstream
    answers only after EOF (as a direct connection would allow)."""
    with RawUpstream(half_close_upstream(wait_for_eof_first=True)) as upstream:
        proxy = start_proxy(upstream.url)
        frame = ws_frame(1, b"last words", mask=b"\x01\x02\x03\x04")
        with connect_raw(proxy.address) as s:
            s.sendall(upgrade_request() + frame)
            s.shutdown(socket.SHUT_WR)
            data, how = recv_until_eof(s, timeout=4)
        assert upstream.records and upstream.records[0]["eof"] is True, "upstream saw the client's FIN"
        assert how == "eof" and data.endswith(ws_frame(2, b"\x00" * 1000))


def test_listen_port_in_use_exits_75(wsinspect_bin):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = subprocess.run([str(wsinspect_bin), "proxy", "--listen", f"127.0.0.1:{port}",
                            "--upstream", "ws://127.0.0.1:9"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 75, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith(f"wsinspect: cannot listen on 127.0.0.1:{port}: "), r.stderr
    assert "address already in use" in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("listen", ["192.0.2.1:0", "nosuchhost.invalid:0"])
def test_listen_on_unusable_address_exits_69(wsinspect_bin, listen):
    """An address this machine does not have (TEST-NET-1), a name that does not resolve."""
    r = subprocess.run([str(wsinspect_bin), "proxy", "--listen", listen, "--upstream", "ws://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 69, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith(f"wsinspect: cannot listen on {listen}: "), r.stderr


@pytest.mark.parametrize("upstream", ["127.0.0.1:8080", "http//127.0.0.1:8080", "ws://", "ws://:8080",
                                      "ws://127.0.0.1:99999", "ws://127.0.0.1:port", "ws://[::1:8080",
                                      "ftp://127.0.0.1:8080"])
def test_malformed_upstream_exits_64(wsinspect_bin, upstream):
    r = subprocess.run([str(wsinspect_bin), "proxy", "--listen", "127.0.0.1:0", "--upstream", upstream],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 64, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert f"--upstream: '{upstream}'" in r.stderr, r.stderr


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.1:70000", "localhost:http"])
def test_malformed_listen_exits_64(wsinspect_bin, listen):
    r = subprocess.run([str(wsinspect_bin), "proxy", "--listen", listen, "--upstream", "ws://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert "--listen must be HOST:PORT" in r.stderr, r.stderr


# --------------------------------------------------------------------------
# Relay transparency
# --------------------------------------------------------------------------


def recording_upstream(s2c: bytes):
    """Raw upstream: after the request head, answers 101 + `s2c`, then records every
    byte until the client's FIN."""
    def behaviour(conn, record):
        head, rest = read_head(conn)
        record["head"] = head
        conn.sendall(switching_protocols(head) + s2c)
        recv_record_until_eof(conn, record, rest)
    return behaviour


@pytest.mark.parametrize("options", [(), ("--nagle", "on"), ("--nagle", "off")], ids=["auto", "on", "off"])
def test_relay_is_byte_transparent(start_proxy, options):
    """A raw client sends a valid handshake then arbitrary bytes (invalid frames, noise);
    the upstream receives exactly those bytes but for the Host line, in order, and the
    client receives exactly what the upstream sent. Under every --nagle policy: Nagle's
    algorithm may gather writes into fewer segments, and auto turns it on and off
    mid-stream; the byte stream must not change."""
    rng = random.Random(1234)
    key = b"\x11\x22\x33\x44"
    crafted_c2s = [
        ws_frame(1, b"hello", mask=key),
        ws_frame(2, bytes(range(256)) * 2, mask=b"\xa0\xb1\xc2\xd3"),  # 16-bit length
        ws_frame(9, b"p", mask=key),
        ws_frame(1, b"naked"),  # unmasked client frame
        ws_frame(3, b"reserved", mask=key),  # reserved opcode
        ws_frame(1, b"rsv2", mask=key, rsv=2),  # RSV2 without an extension
    ]
    noise = [rng.randbytes(rng.choice([1, 2, 7, 100, 1500, 40000])) for _ in range(40)] + [rng.randbytes(1 << 20)]
    s2c = ws_frame(1, b"welcome") + ws_frame(1, b"masked!", mask=key) + rng.randbytes(300_000)
    request = upgrade_request("/raw?a=b", host="client.example:1234",
                              extra=["Origin: http://client.example", "X-Custom: keep me"])

    with RawUpstream(recording_upstream(s2c)) as upstream:
        proxy = start_proxy(upstream.url, *options)
        with connect_raw(proxy.address) as s:
            # the head and the first frames in one write
            s.sendall(request + crafted_c2s[0] + crafted_c2s[1])
            head, got = read_head(s)
            for chunk in crafted_c2s[2:] + noise:
                s.sendall(chunk)
                if rng.random() < 0.2:
                    time.sleep(0.005)
            s.shutdown(socket.SHUT_WR)
            rest, how = recv_until_eof(s, timeout=15)
        upstream.wait_done()
        record = upstream.records[0]
        events = proxy.wait_for_type("connection-open", 1)
        assert proxy.proc.poll() is None
        events = proxy.wait_for_type("connection-close", 1)
        events = proxy.stop_and_check()

    assert head == switching_protocols(request) and got + rest == s2c, "client got exactly what the upstream sent"
    assert how == "eof"
    sent = request + b"".join(crafted_c2s) + b"".join(noise)
    expected = sent.replace(b"\r\nHost: client.example:1234\r\n", f"\r\nHost: 127.0.0.1:{upstream.port}\r\n".encode())
    received = record["head"] + record["received"]
    assert record["eof"] is True
    assert len(received) == len(expected)
    assert received == expected, "upstream got the client's bytes unchanged (but the Host line), in order"

    # the log decodes the crafted frames as sent, with their masking keys
    opened = of_type(events, "connection-open")[0]
    assert opened["request"]["host"] == "client.example:1234" and opened["request"]["path"] == "/raw?a=b"
    assert opened["request"]["origin"] == "http://client.example"
    c2s = frames_of(events, 1, C2S)[:6]
    assert [(f["opcode"], f["masked"], f["maskingKey"], b64d(f["payloadBase64"])) for f in c2s] == [
        (1, True, "11223344", b"hello"),
        (2, True, "a0b1c2d3", bytes(range(256)) * 2),
        (9, True, "11223344", b"p"),
        (1, False, None, b"naked"),
        (3, True, "11223344", b"reserved"),
        (1, True, "11223344", b"rsv2"),
    ]
    assert c2s[1]["lengthEncoding"] == "16-bit"
    kinds = [[k["kind"] for k in f["findings"]] for f in c2s]
    assert kinds[:3] == [[], [], []]
    assert "unmasked-client-frame" in kinds[3]
    assert "reserved-opcode" in kinds[4]
    assert "unexpected-rsv-bits" in kinds[5]
    s2c_frames = frames_of(events, 1, S2C)[:2]
    assert [b64d(f["payloadBase64"]) for f in s2c_frames] == [b"welcome", b"masked!"]
    assert "masked-server-frame" in [k["kind"] for k in s2c_frames[1]["findings"]]


def test_upstream_base_path_and_forwarded_for(start_proxy):
    """ws://host:port/base puts /base before every request path; --forwarded-for adds
    X-Forwarded-For naming the client; nothing else in the head changes."""
    with RawUpstream(recording_upstream(b"")) as upstream:
        proxy = start_proxy(upstream.url + "/base/", "--forwarded-for")
        for path in ("/chat?room=1", "/"):
            with connect_raw(proxy.address) as s:
                s.sendall(upgrade_request(path, host="front.example"))
                assert read_head(s)[0].startswith(b"HTTP/1.1 101 ")
                s.shutdown(socket.SHUT_WR)
                recv_until_eof(s)
        upstream.wait_done(2)
    for record, path in zip(upstream.records, ("/base/chat?room=1", "/base/")):
        want = upgrade_request(path, host=f"127.0.0.1:{upstream.port}")[:-2] + b"X-Forwarded-For: 127.0.0.1\r\n\r\n"
        assert record["head"] == want


def test_idle_timeout_closes_idle_connections_only(start_proxy):
    async def scenario():
        async with echo_server(ping_interval=None) as port:
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}", "--idle-timeout", "1")
            idle = await connect(proxy.url("/idle"), ping_interval=None)
            busy = await connect(proxy.url("/busy"), ping_interval=None)
            for _ in range(7):  # 2.1 s of traffic every 0.3 s
                await busy.send("tick")
                assert await busy.recv() == "tick"
                await asyncio.sleep(0.3)
            with pytest.raises(ConnectionClosed):
                await idle.send("too late")
                await idle.recv()
            await busy.close()
            events = await asyncio.to_thread(proxy.wait_for_type, "connection-close", 2)
        closes = {e["connection"]: e for e in of_type(events, "connection-close")}
        assert closes[1]["reason"] in ("tcp-fin", "tcp-reset") and 0.9 <= closes[1]["durationSeconds"] <= 2.0, closes[1]
        assert closes[2]["reason"] == "close-handshake" and closes[2]["durationSeconds"] >= 2.0, closes[2]

    run(scenario())


ODD_HEAD = (b"GET /odd HTTP/1.1\r\nhost:   client.example  \r\nX-No-Space:value\r\n"
            b"X-Padded:   two  spaces   \r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n")


def relay_odd_head(start_proxy) -> tuple[bytes, int]:
    with RawUpstream(recording_upstream(b"")) as upstream:
        proxy = start_proxy(upstream.url)
        with connect_raw(proxy.address) as s:
            s.sendall(ODD_HEAD)
            read_head(s)
            s.shutdown(socket.SHUT_WR)
            recv_until_eof(s)
        upstream.wait_done()
        return upstream.records[0]["head"], upstream.port


def parse_fields(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode().split("\r\n")[1:]
    return [(n.lower(), v.strip(" \t")) for n, _, v in (line.partition(":") for line in lines if line)]


def test_request_head_fields_survive_semantically(start_proxy):
    """Odd but valid header formatting: names, values (OWS aside), order and duplicates survive."""
    head, port = relay_odd_head(start_proxy)
    want = [(n, f"127.0.0.1:{port}" if n == "host" else v) for n, v in parse_fields(ODD_HEAD)]
    assert parse_fields(head) == want
    assert head.split(b"\r\n")[0] == b"GET /odd HTTP/1.1"


def test_request_head_bytes_unchanged_but_host(start_proxy):
    head, port = relay_odd_head(start_proxy)
    assert head == ODD_HEAD.replace(b"host:   client.example  \r\n", f"Host: 127.0.0.1:{port}\r\n".encode())


# --------------------------------------------------------------------------
# Shutdown with connections open
# --------------------------------------------------------------------------


def test_open_connection_closed_in_log_at_shutdown(start_proxy):
    """Repeated 8 times, since it is a race (dropped in roughly 2 of 3 runs here): the test
    passes only if every run logs the connection-close."""
    async def scenario():
        outcomes = []
        async with echo_server() as port:
            for _ in range(8):
                proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}")
                async with connect(proxy.url()) as ws:
                    await ws.send("a")
                    await ws.recv()
                    await asyncio.to_thread(proxy.wait_for_type, "message", 2)
                    events = await asyncio.to_thread(proxy.stop_and_check)
                    with pytest.raises(ConnectionClosed):
                        await ws.recv()
                assert len(of_type(events, "connection-open")) == 1
                outcomes.append(len(of_type(events, "connection-close")))
        assert outcomes == [1] * 8, f"connection-close events per run: {outcomes}"

    run(scenario())


# --------------------------------------------------------------------------
# Backpressure: bounded memory with a slow reader
# --------------------------------------------------------------------------

BIG = 64 << 20


@pytest.mark.parametrize("direction", [S2C, C2S])
def test_backpressure_bounded_memory(start_proxy, direction):
    """A 64 MiB binary message through the proxy to a slow reader (~30 MB/s; the proxy
    relays far faster): the proxy's peak RSS (VmHWM) must stay well below the message
    size, and every byte must arrive intact."""
    payload = random.Random(64).randbytes(BIG)
    frame = ws_frame(2, payload, mask=b"\x5a\xa5\x0f\xf0" if direction == C2S else None)
    logged_prefix = payload[:FULL_PAYLOADS]  # what the log keeps with the tests' --max-payload
    del payload
    frame_digest = hashlib.sha256(frame).hexdigest()

    def slow_read(sock, initial: bytes) -> tuple[int, str]:
        """Reads the frame (`initial` = bytes already read) slowly; returns (bytes, sha256)."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        h = hashlib.sha256(initial)
        got = len(initial)
        while got < len(frame):
            chunk = sock.recv(min(256 * 1024, len(frame) - got))
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
            time.sleep(0.003)
        return got, h.hexdigest()

    def upstream_behaviour(conn, record):
        head, rest = read_head(conn)
        conn.sendall(switching_protocols(head))
        if head.startswith(b"GET /big "):
            if direction == S2C:
                conn.sendall(frame)
            else:
                record["got"], record["sha"] = slow_read(conn, rest)
            rest = b""
        recv_record_until_eof(conn, record, rest)

    with RawUpstream(upstream_behaviour) as upstream:
        proxy = start_proxy(upstream.url)
        # warm up with one small connection, so the baseline includes a connection's fixed cost
        with connect_raw(proxy.address) as s:
            s.sendall(upgrade_request("/warm") + ws_frame(1, b"warm", mask=b"abcd"))
            read_head(s)
            s.shutdown(socket.SHUT_WR)
            recv_until_eof(s)
        upstream.wait_done(1)
        proxy.wait_for_type("connection-close", 1)
        baseline = proxy.status_kib("VmHWM")
        t0 = time.monotonic()
        with connect_raw(proxy.address, timeout=30) as s:
            s.sendall(upgrade_request("/big"))
            head, rest = read_head(s)
            assert head.startswith(b"HTTP/1.1 101 ")
            if direction == S2C:
                got, sha = slow_read(s, rest)
                assert got == len(frame) and sha == frame_digest, "the client got the frame intact"
            else:
                s.sendall(frame)
            s.shutdown(socket.SHUT_WR)
            recv_until_eof(s, timeout=30)
        upstream.wait_done(2, timeout=30)
        elapsed = time.monotonic() - t0
        peak = proxy.status_kib("VmHWM")
        proxy.wait_for_type("connection-close", 2, timeout=15)
        events = proxy.stop_and_check()

    if direction == C2S:
        record = upstream.records[1]
        assert (record["got"], record["sha"]) == (len(frame), frame_digest), "the upstream got the frame intact"
    growth_mib = (peak - baseline) / 1024
    REPORTS.setdefault("proxy: peak memory", []).append(
        f"64 MiB message {direction}, slow reader: proxy VmHWM {baseline / 1024:.1f} MiB before, {peak / 1024:.1f} MiB after "
        f"(+{growth_mib:.1f} MiB), {elapsed:.1f} s")
    assert growth_mib < 24, f"peak RSS grew by {growth_mib:.1f} MiB relaying a 64 MiB message"
    (big,) = frames_of(events, 2, direction)
    assert big["payloadLength"] == BIG and big["lengthEncoding"] == "64-bit"
    assert big["payloadTruncated"] is True  # the log keeps --max-payload of it
    assert b64d(big["payloadBase64"]) == logged_prefix


def test_log_backlog_memory_is_bounded(wsinspect_bin, tmp_path):
    """The log goes to a stdout pipe nobody reads (like `wsinspect proxy … | slow-consumer`):
    the relay must go on (it does) with memory bounded (it is not)."""
    frame = ws_frame(2, random.Random(7).randbytes(1 << 20), mask=b"abcd")
    count = 200

    def drain(conn, record):
        head, rest = read_head(conn)
        conn.sendall(switching_protocols(head))
        record["bytes"] = len(rest)
        while chunk := conn.recv(1 << 20):
            record["bytes"] += len(chunk)

    read_end, write_end = os.pipe()
    ready = tmp_path / "ready"
    with RawUpstream(drain) as upstream:
        proc = subprocess.Popen([str(wsinspect_bin), "proxy", "--listen", "127.0.0.1:0", "--upstream", upstream.url,
                                 "--format", "jsonl", "--ready-file", str(ready)],
                                stdout=write_end, stderr=subprocess.DEVNULL)
        os.close(write_end)
        try:
            with os.fdopen(read_end, "rb", buffering=0) as out:
                first = b""
                while not first.endswith(b"\n"):
                    first += out.read(1)
                address = json.loads(first)["address"]
                time.sleep(SIGNAL_SETTLE)
                status = lambda key: int(re.search(rf"{key}:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text()).group(1))  # noqa: E731
                baseline = status("VmHWM")
                with connect_raw(address, timeout=30) as s:
                    s.sendall(upgrade_request())
                    read_head(s)
                    for _ in range(count):
                        s.sendall(frame)
                    s.shutdown(socket.SHUT_WR)
                    recv_until_eof(s, timeout=30)
                upstream.wait_done(1, timeout=30)
                peak = status("VmHWM")
                assert proc.poll() is None
        finally:
            proc.kill()
            proc.wait()
    assert upstream.records[0]["bytes"] == count * len(frame), "the relay went on"
    growth = (peak - baseline) / 1024
    REPORTS.setdefault("proxy: peak memory", []).append(
        f"log writer blocked, {count} x 1 MiB relayed: proxy VmHWM +{growth:.0f} MiB")
    assert growth < 64, f"peak RSS grew by {growth:.0f} MiB while the log writer was blocked"


# --------------------------------------------------------------------------
# A browser (optional: Debian chromium)
# --------------------------------------------------------------------------

BROWSER_PAGE = """<!doctype html>
<meta charset="utf-8"><title>wsinspect proxy test</title>
<script>
const ws = new WebSocket("ws://" + location.host + "/ws", ["chat.v1", "chat.v2"]);
ws.binaryType = "arraybuffer";
const big = "browser ✓ ".repeat(12000);
const bytes = new Uint8Array(256).map((_, i) => i);
const plan = ["hello from the browser ✓", bytes.buffer, big];
const same = (a, b) => typeof a === "string" ? a === b
  : (b instanceof ArrayBuffer && a.byteLength === b.byteLength &&
     new Uint8Array(a).every((v, i) => v === new Uint8Array(b)[i]));
let next = 0, ok = 0;
ws.onopen = () => ws.send(plan[0]);
ws.onmessage = (e) => {
  if (same(plan[next], e.data)) ok++;
  next++;
  if (next < plan.length) ws.send(plan[next]);
  else { ws.send("verified " + ok + "/" + plan.length + " protocol=" + ws.protocol + " extensions=" + ws.extensions);
         setTimeout(() => ws.close(4000, "browser bye"), 100); }
};
</script>
"""


def test_chromium_through_proxy(start_proxy, tmp_path):
    """Headless Chromium loads a page through the proxy (plain HTTP relay), opens a
    WebSocket back through it (sub-protocol, permessage-deflate), echoes text, binary and
    a 120 KB message, reports what it verified, and closes with 4000."""
    chromium = next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
    if chromium is None:
        pytest.skip("no chromium (Debian: apt-get install chromium)")

    async def scenario():
        received: list[Sent] = []
        sent: list[Sent] = []
        done = asyncio.Event()
        close = {}

        def process_request(connection, request):
            if request.path == "/":
                response = connection.respond(HTTPStatus.OK, BROWSER_PAGE)
                del response.headers["Content-Type"]
                response.headers["Content-Type"] = "text/html; charset=utf-8"
                return response
            if request.path != "/ws":
                return connection.respond(HTTPStatus.NOT_FOUND, "not here\n")
            return None

        async def handler(ws):
            try:
                async for msg in ws:
                    received.append(as_sent(msg))
                    if isinstance(msg, str) and msg.startswith("verified "):
                        continue
                    await ws.send(msg)
                    sent.append(as_sent(msg))
            except ConnectionClosed:
                pass
            await ws.wait_closed()
            close["code"], close["reason"] = ws.close_code, ws.close_reason
            done.set()

        async with serve(handler, "127.0.0.1", 0, process_request=process_request,
                         subprotocols=["chat.v2", "chat.v1"]) as srv:
            port = srv.sockets[0].getsockname()[1]
            proxy = await asyncio.to_thread(start_proxy, f"ws://127.0.0.1:{port}")
            browser = subprocess.Popen(
                [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-extensions", "--disable-background-networking", f"--user-data-dir={tmp_path / 'chromium'}",
                 f"http://{proxy.address}/"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "wb"),
                start_new_session=True)
            try:
                await asyncio.wait_for(done.wait(), 45)
            except asyncio.TimeoutError:
                pytest.fail(f"the browser did not finish; received {received}\n"
                            f"{(tmp_path / 'chromium.log').read_text(errors='replace')[-2000:]}")
            finally:
                os.killpg(browser.pid, signal.SIGTERM)
                try:
                    browser.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(browser.pid, signal.SIGKILL)
                    browser.wait()
            await asyncio.to_thread(proxy.wait_for_type, "connection-close", 1)
            events = await asyncio.to_thread(proxy.stop_and_check)

        report = received[-1].payload.decode()
        assert report.startswith("verified 3/3 protocol=chat.v2 extensions=permessage-deflate"), report
        assert (close["code"], close["reason"]) == (4000, "browser bye")
        opened = of_type(events, "connection-open")
        assert len(opened) == 1, "one WebSocket (the page itself came over plain HTTP)"
        opened = opened[0]
        assert "Chrome" in (opened["request"]["userAgent"] or "")
        assert opened["request"]["origin"] == f"http://{proxy.address}"
        assert opened["request"]["protocols"] == ["chat.v1", "chat.v2"]
        assert opened["response"]["protocol"] == "chat.v2"
        assert opened["compression"] and opened["compression"]["extension"] == "permessage-deflate"
        conn = opened["connection"]
        check_data_direction(events, conn, C2S, received, compressed=True)
        check_data_direction(events, conn, S2C, sent, compressed=True)
        c2s_close = [f for f in frames_of(events, conn, C2S) if f["opcode"] == 8]
        assert [(f["closeCode"], f["closeReason"]) for f in c2s_close] == [(4000, "browser bye")]
        assert of_type(events, "connection-close")[0]["reason"] == "close-handshake"
        check_clean_log(events, connections=1)

    run(scenario(), timeout=90)


# -- TLS: a wss:// upstream, and clients over TLS to the proxy ---------------

@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for localhost / 127.0.0.1 (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def _echo_server(cert=None, key=None):
    """A websockets echo server (over TLS when given a certificate) on a free
    port; returns (port, stop)."""
    import ssl
    context = None
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}

    async def main():
        async with websockets.serve(echo_handler, "127.0.0.1", 0, ssl=context) as server:
            box["port"] = server.sockets[0].getsockname()[1]
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    ready.wait(10)

    def stop():
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(10)
    return box["port"], stop


def _echo_through(uri, messages, ssl_context=None):
    async def run():
        async with websockets.connect(uri, ssl=ssl_context, proxy=None) as ws:
            received = []
            for message in messages:
                await ws.send(message)
                received.append(await ws.recv())
            return received
    return asyncio.run(run())


def test_wss_upstream_with_ca_file(start_proxy, certificate):
    cert, key = certificate
    port, stop = _echo_server(cert, key)
    try:
        proxy = start_proxy(f"wss://localhost:{port}", "--ca-file", str(cert))
        messages = ["over TLS upstream", b"\x00\x01\x02", "x" * 70_000]
        assert _echo_through(f"ws://{proxy.address}/", messages) == messages
    finally:
        stop()
    assert proxy.stop() == 0, proxy.describe()
    frames = [e for e in proxy.events() if e["type"] == "message" and e["direction"] == "server-to-client"]
    assert [base64.b64decode(m["payloadBase64"]) for m in frames] == [
        m.encode() if isinstance(m, str) else m for m in messages]


def test_wss_upstream_is_verified_unless_insecure(start_proxy, certificate):
    cert, key = certificate
    port, stop = _echo_server(cert, key)
    try:
        # Not in the system trust store: the upstream connection fails, the client gets a 502.
        strict = start_proxy(f"wss://localhost:{port}")
        with pytest.raises(Exception) as failure:
            _echo_through(f"ws://{strict.address}/", ["hello"])
        assert "502" in str(failure.value), failure.value
        loose = start_proxy(f"wss://localhost:{port}", "--insecure")
        assert _echo_through(f"ws://{loose.address}/", ["hello"]) == ["hello"]
    finally:
        stop()


def test_clients_over_tls_to_the_proxy(start_proxy, certificate):
    import ssl
    cert, key = certificate
    upstream_port, stop = _echo_server()
    proxy = start_proxy(f"ws://127.0.0.1:{upstream_port}", "--tls-cert", str(cert), "--tls-key", str(key))
    context = ssl.create_default_context(cafile=str(cert))
    port = proxy.address.rsplit(":", 1)[1]
    try:
        assert _echo_through(f"wss://localhost:{port}/", ["hello over wss"], context) == ["hello over wss"]
    finally:
        stop()
    assert proxy.stop() == 0, proxy.describe()
    texts = [m.get("text") for m in proxy.events() if m["type"] == "message"]
    assert texts == ["hello over wss", "hello over wss"]


def test_tls_flags_go_together(wsinspect_bin):
    r = subprocess.run([str(wsinspect_bin), "proxy", "--upstream", "ws://127.0.0.1:9", "--tls-cert", "x.pem"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 64 and r.stderr.startswith("wsinspect: "), r.stderr


def test_certificate_problems_name_the_file(wsinspect_bin, certificate, tmp_path):
    """A certificate, key or CA file that cannot be read exits 66; one that holds no PEM of
    its kind, or a key that does not belong to the certificate, exits 65. Either way the
    message names the flag and the file, and the proxy does not start."""
    cert, key = certificate
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    other_key = tmp_path / "other-key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(other_key)], check=True, capture_output=True)
    missing = tmp_path / "missing.pem"
    plain, tls = ["--upstream", "ws://127.0.0.1:9"], ["--upstream", "wss://127.0.0.1:9"]
    cases = [
        (plain + ["--tls-cert", str(missing), "--tls-key", str(key)], 66,
         f"--tls-cert {missing}: cannot read it: No such file or directory"),
        (plain + ["--tls-cert", str(cert), "--tls-key", str(missing)], 66, f"--tls-key {missing}: cannot read it"),
        (tls + ["--ca-file", str(missing)], 66, f"--ca-file {missing}: cannot read it"),
        (plain + ["--tls-cert", str(garbage), "--tls-key", str(key)], 65, f"--tls-cert {garbage}: not a PEM certificate chain"),
        (plain + ["--tls-cert", str(cert), "--tls-key", str(garbage)], 65, f"--tls-key {garbage}: not a PEM private key"),
        (tls + ["--ca-file", str(garbage)], 65, f"--ca-file {garbage}: not PEM certificates"),
        (plain + ["--tls-cert", str(cert), "--tls-key", str(other_key)], 65, "does the key belong to the certificate?"),
    ]
    for args, code, message in cases:
        r = subprocess.run([str(wsinspect_bin), "proxy", "--listen", "127.0.0.1:0", *args],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == code and r.stderr.startswith("wsinspect: ") and message in r.stderr, (args, r)
        assert "listening" not in r.stdout, (args, r)


# -- forward-proxy mode: absolute URIs and CONNECT ----------------------------

def _forward_proxy(wsinspect_bin, tmp_path):
    return ProxyProcess(wsinspect_bin, "", tmp_path / "forward", ("--mode", "forward"))


def test_forward_mode_connect_and_absolute_uri(wsinspect_bin, tmp_path):
    port, stop = _echo_server()
    proxy = _forward_proxy(wsinspect_bin, tmp_path)
    try:
        async def via_connect():
            async with websockets.connect(f"ws://127.0.0.1:{port}/tunnel", proxy=f"http://{proxy.address}") as ws:
                await ws.send("through CONNECT")
                return await ws.recv()
        assert asyncio.run(via_connect()) == "through CONNECT"

        # An absolute-URI upgrade request: the upstream gets the origin form.
        with connect_raw(proxy.address) as sock:
            sock.sendall(upgrade_request(f"http://127.0.0.1:{port}/absolute", host=f"127.0.0.1:{port}"))
            head, _ = read_head(sock)
            assert head.startswith(b"HTTP/1.1 101"), head
    finally:
        stop()
    assert proxy.stop() == 0, proxy.describe()
    opens = [e for e in proxy.events() if e["type"] == "connection-open"]
    assert [o["request"]["path"] for o in opens] == ["/tunnel", f"http://127.0.0.1:{port}/absolute"]
    texts = [m.get("text") for m in proxy.events() if m["type"] == "message"]
    assert texts == ["through CONNECT", "through CONNECT"]


def test_forward_mode_reports_tls_tunnels_and_rejects_origin_form(wsinspect_bin, tmp_path):
    port, stop = _echo_server()
    proxy = _forward_proxy(wsinspect_bin, tmp_path)
    try:
        with connect_raw(proxy.address) as sock:
            sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head, _ = read_head(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
            sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a TLS record header: not decodable
            time.sleep(0.3)
        with connect_raw(proxy.address) as sock:
            sock.sendall(b"GET /not-absolute HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _ = read_head(sock)
            assert head.startswith(b"HTTP/1.1 400"), head
    finally:
        stop()
    assert proxy.stop() == 0, proxy.describe()
    assert "carries TLS; relayed without decoding" in proxy.stderr(), proxy.stderr()


def test_mode_upstream_and_nagle_are_checked(wsinspect_bin):
    for args in (["proxy"], ["proxy", "--mode", "forward", "--upstream", "ws://127.0.0.1:9"],
                 ["proxy", "--upstream", "ws://127.0.0.1:9", "--nagle", "sometimes"]):
        r = subprocess.run([str(wsinspect_bin), *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 64 and r.stderr.startswith("wsinspect: "), (args, r.stderr)
