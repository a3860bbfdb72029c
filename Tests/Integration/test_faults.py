"""End-to-end tests of fault injection in `wsinspect proxy` (`--rules`, `--seed`, `--control`).

Every test starts the proxy as a subprocess (the `start_proxy` fixture of test_proxy.py, with
`--rules FILE --seed 7 --control 127.0.0.1:0 --control-ready-file F` added), puts a real
Python `websockets` 17 server behind it and a real `websockets` client in front of it, and
checks what the *peers* observed: messages missing, changed, duplicated, delayed, close codes,
the 1002/1007 a peer answers a corrupted frame with, a connection reset without a close frame,
keepalive timeouts. Most tests run twice, without and with permessage-deflate (context
takeover on both sides), which proves that the proxy keeps a compressed connection valid after
it dropped, changed or added a message. Node `ws` is the other real peer: as the server behind
the proxy (`node_echo_server`: drop + inject, delay, rewrite set, dropped pongs against a
websockets client's keepalive) and as the client in front of it (`node_client`, driving
peers/node_ws_fault_client.js over stdin/stdout, perMessageDeflate off and on: drop, close,
corrupt invalid-utf8, fragment, inject at_ms, duplicate). The scaffolding is shared:
`fault_session` starts the upstream server and the proxy in front of it, `connected` opens a
client through the proxy and checks that permessage-deflate was negotiated exactly when the
test asked for it; `stop` ends the proxy and returns its log.

The JSON Lines log is checked too: every applied fault is a `{"type":"fault"}` event naming the
rule, the connection and the direction; frames in the log are the frames as forwarded; the
summary counts the faults. The control API (HTTP + JSON) is driven with urllib: listing
connections, sending messages and close frames, pause/resume, rules added and deleted at run
time, errors and the bearer token. Rules-file errors are checked through exit codes 64/66.

The tests follow the fault-injection interface of `wsinspect proxy` (rules file and actions,
`fault` log event, control API routes and status codes). Timing assertions are lower bounds
(a delayed message arrives at least `ms` later); upper bounds are several seconds, so a loaded
machine does not fail them.

    python3 -m pytest Tests/Integration/test_faults.py -q        # ~60 s
    WSINSPECT=/path/to/wsinspect python3 -m pytest Tests/Integration/test_faults.py -q

Needs Python `websockets`; the Node tests need node + Debian node-ws (NODE_PATH=/usr/share/nodejs),
else they skip.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import random
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

websockets = pytest.importorskip("websockets", reason="Python package 'websockets' is not installed")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.asyncio.server import serve  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake  # noqa: E402

from capture import NODE_PATH, node_prerequisites_missing  # noqa: E402
from reference import C2S, S2C, b64d  # noqa: E402
from test_proxy import (  # noqa: E402,F401  (start_proxy is a fixture used through fault_proxy)
    ProxyProcess,
    RawUpstream,
    check_clean_log,
    connect_raw,
    connection_for,
    frames_of,
    free_port,
    messages_of,
    of_type,
    read_head,
    recv_until_eof,
    run,
    start_proxy,
    switching_protocols,
    upgrade_request,
    ws_frame,
)

HERE = Path(__file__).resolve().parent
COMPRESSION = pytest.mark.parametrize("compression", [None, "deflate"], ids=["plain", "deflate"])
# Shared text, so that with context takeover a deflated message refers back to earlier ones:
# a dropped or changed message then breaks the receiver's inflater unless the proxy re-compresses.
FILLER = "the quick brown fox jumps over the lazy dog, again and again and again ✓"
CLOSE_TIMEOUT = 3


# --------------------------------------------------------------------------
# The proxy with faults; the control API
# --------------------------------------------------------------------------


@pytest.fixture
def fault_proxy(start_proxy, tmp_path):
    """fault_proxy(upstream, rules=None, *args, seed=7, control=True, suffix='.json',
    token=None, control_address='127.0.0.1:0') -> ProxyProcess with `.control` (HOST:PORT of
    the control API) and `.ready` (the readiness object).

    `rules` is written to a file: a str as is, anything else as JSON."""
    counter = itertools.count(1)

    def start(upstream: str, rules=None, *args, seed: int | None = 7, control: bool = True,
              suffix: str = ".json", token: str | None = None, control_address: str = "127.0.0.1:0",
              **kwargs) -> ProxyProcess:
        n = next(counter)
        extra: list[str] = []
        if rules is not None:
            path = tmp_path / f"rules{n}{suffix}"
            path.write_text(rules if isinstance(rules, str) else json.dumps(rules, indent=1, ensure_ascii=False))
            extra += ["--rules", str(path)]
        if seed is not None:
            extra += ["--seed", str(seed)]
        control_file = tmp_path / f"control{n}"
        if control:
            extra += ["--control", control_address, "--control-ready-file", str(control_file)]
        if token:
            extra += ["--control-token", token]
        proxy = start_proxy(upstream, *extra, *args, **kwargs)
        proxy.ready = json.loads(proxy.ready_line)
        assert proxy.ready.get("mode") == "reverse", proxy.ready_line
        if seed is not None:
            assert proxy.ready.get("seed") == seed, proxy.ready_line
        else:
            assert isinstance(proxy.ready.get("seed"), int), proxy.ready_line
        proxy.control = None
        if control:
            deadline = time.monotonic() + 10
            while not (control_file.exists() and control_file.read_text().endswith("\n")):
                assert time.monotonic() < deadline, f"no --control-ready-file line\n{proxy.describe()}"
                time.sleep(0.02)
            proxy.control = control_file.read_text().strip()
            assert re.fullmatch(r"[0-9.]+:\d+", proxy.control), proxy.control
            assert proxy.ready.get("control") == proxy.control, (proxy.ready_line, proxy.control)
        else:
            assert "control" not in proxy.ready, proxy.ready_line
        return proxy

    return start


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an http_proxy from the env


def api(proxy: ProxyProcess, method: str, path: str, body=None, *, token: str | None = None,
        raw: bytes | None = None, timeout: float = 10) -> tuple[int, object]:
    """One control API request -> (status, parsed JSON body or None; the text if not JSON)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://{proxy.control}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    if not text.strip():
        return status, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode("utf-8", "replace")


async def aapi(*args, **kwargs):
    return await asyncio.to_thread(api, *args, **kwargs)


def is_error_object(body) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"] != ""


# --------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------


@dataclass
class ServerSide:
    """One connection as the upstream `websockets` server saw it."""
    path: str
    received: list = field(default_factory=list)
    times: list = field(default_factory=list)  # time.monotonic() of each received message
    done: asyncio.Event = field(default_factory=asyncio.Event)
    rcvd: object = None  # the Close frame it received (None: none)
    sent: object = None  # the Close frame it sent


class Upstream:
    """A `websockets` server handler. Echoes every message, except text commands:
      "!send JSON"   sends each item of the JSON list (a str as text, {"b64": …} as binary);
      "!bytes N"     sends N pseudo-random bytes (random.Random(N)) as one binary message;
      "!slowfrag N"  sends one text message in N fragments, 50 ms apart;
      "!close CODE"  closes with that code;
      other "!…"     ignored."""

    def __init__(self):
        self.sides: list[ServerSide] = []
        self.port = 0
        self.url = ""

    async def handle(self, ws):
        side = ServerSide(ws.request.path)
        self.sides.append(side)
        try:
            async for msg in ws:
                side.received.append(msg)
                side.times.append(time.monotonic())
                if isinstance(msg, str) and msg.startswith("!send "):
                    for item in json.loads(msg[6:]):
                        await ws.send(item if isinstance(item, str) else base64.b64decode(item["b64"]))
                elif isinstance(msg, str) and msg.startswith("!bytes "):
                    n = int(msg[7:])
                    await ws.send(random.Random(n).randbytes(n))
                elif isinstance(msg, str) and msg.startswith("!slowfrag "):
                    n = int(msg[10:])
                    await ws.send(slow_fragments([f"part {i} {FILLER} " for i in range(n)]))
                elif isinstance(msg, str) and msg.startswith("!close "):
                    await ws.close(int(msg[7:]), "server closes")
                elif isinstance(msg, str) and msg.startswith("!"):
                    pass
                else:
                    await ws.send(msg)
        except ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), 15)
            side.rcvd, side.sent = ws.protocol.close_rcvd, ws.protocol.close_sent
            side.done.set()

    async def side(self, index: int = 0, timeout: float = 10) -> ServerSide:
        deadline = time.monotonic() + timeout
        while len(self.sides) <= index:
            assert time.monotonic() < deadline, f"the upstream saw {len(self.sides)} connection(s)"
            await asyncio.sleep(0.01)
        return self.sides[index]

    async def ended(self, index: int = 0, timeout: float = 10) -> ServerSide:
        side = await self.side(index, timeout)
        try:
            await asyncio.wait_for(side.done.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"upstream connection {index} still open after {timeout} s: {side}") from None
        return side


async def slow_fragments(parts, pause: float = 0.05):
    for part in parts:
        yield part
        await asyncio.sleep(pause)


@contextlib.asynccontextmanager
async def upstream(compression: str | None = None, **kwargs):
    up = Upstream()
    async with serve(up.handle, "127.0.0.1", 0, compression=compression, max_size=None,
                     ping_interval=None, close_timeout=CLOSE_TIMEOUT, **kwargs) as srv:
        up.port = srv.sockets[0].getsockname()[1]
        up.url = f"ws://127.0.0.1:{up.port}"
        yield up


def client(proxy: ProxyProcess, compression: str | None = None, path: str = "/", **kwargs):
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("max_size", None)
    kwargs.setdefault("close_timeout", CLOSE_TIMEOUT)
    kwargs.setdefault("open_timeout", 10)
    return connect(proxy.url(path), compression=compression, **kwargs)


def check_negotiated(ws, compression) -> None:
    negotiated = ws.response.headers.get("Sec-WebSocket-Extensions")
    assert (negotiated is not None) == bool(compression), negotiated


@contextlib.asynccontextmanager
async def fault_session(fault_proxy, compression: str | None = None, rules=None, **kwargs):
    """The `upstream(compression)` server with the fault proxy in front of it
    (`fault_proxy(up.url, rules, **kwargs)`): yields (up, proxy)."""
    async with upstream(compression) as up:
        yield up, await asyncio.to_thread(fault_proxy, up.url, rules, **kwargs)


@contextlib.asynccontextmanager
async def connected(proxy: ProxyProcess, compression: str | None = None, path: str = "/", **kwargs):
    """`client(proxy, compression, path, **kwargs)`, checked to have negotiated permessage-deflate
    exactly when `compression` asks for it: yields the connection."""
    async with client(proxy, compression, path, **kwargs) as ws:
        check_negotiated(ws, compression)
        yield ws


def cmd_send(items) -> str:
    return "!send " + json.dumps([i if isinstance(i, str) else {"b64": base64.b64encode(i).decode()}
                                  for i in items])


async def recv_n(ws, n: int, timeout: float = 10) -> list:
    got = []
    for _ in range(n):
        try:
            got.append(await asyncio.wait_for(ws.recv(), timeout))
        except asyncio.TimeoutError:
            raise AssertionError(f"waited {timeout} s for message {len(got) + 1} of {n}; got {got}") from None
    return got


async def recv_until_closed(ws, timeout: float = 10) -> tuple[list, ConnectionClosed, float]:
    """Messages received until the connection closes, the ConnectionClosed, seconds taken."""
    got = []
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        try:
            got.append(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        except ConnectionClosed as exc:
            return got, exc, time.monotonic() - t0
        except asyncio.TimeoutError:
            raise AssertionError(f"connection still open after {timeout} s; received {got}") from None


async def nothing_arrives(ws, seconds: float) -> None:
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"expected nothing within {seconds} s, got {msg!r}")


async def stop(proxy: ProxyProcess, connections: int = 1) -> list[dict]:
    """Waits for the connections to close in the log, SIGINT, checks exit 0 + summary."""
    await asyncio.to_thread(proxy.wait_for_type, "connection-close", connections)
    events = await asyncio.to_thread(proxy.stop_and_check)
    check_fault_summary(events)
    return events


# --------------------------------------------------------------------------
# Log checks
# --------------------------------------------------------------------------


def fault_events(events, rule: str | None = None, connection: int | None = None) -> list[dict]:
    out = []
    for e in of_type(events, "fault"):
        assert isinstance(e.get("rule"), str) and e["rule"], e
        assert isinstance(e.get("action"), str) and e["action"], e
        assert isinstance(e.get("connection"), int), e
        assert isinstance(e.get("direction"), str) or e["action"] == "refuse", e  # refuse: before any frame
        assert isinstance(e.get("detail"), str) and e["detail"], e
        assert "time" in e, e
        if e.get("message") is not None:  # null (or absent) when no message was touched
            assert isinstance(e["message"], int) and e["message"] >= 1, e
        if rule is not None and e["rule"] != rule:
            continue
        if connection is not None and e["connection"] != connection:
            continue
        out.append(e)
    return out


def check_fault_summary(events) -> None:
    summary = events[-1]
    assert summary["type"] == "summary"
    assert summary.get("faults") == len(of_type(events, "fault")), \
        (summary.get("faults"), len(of_type(events, "fault")))


def payloads(events, connection, direction) -> list:
    """The log's data messages in a direction: str for text, bytes for binary."""
    out = []
    for m in messages_of(events, connection, direction):
        assert m["inflateError"] is None and m["payloadTruncated"] is False, \
            {k: v for k, v in m.items() if k != "payloadBase64"}
        out.append(m["text"] if m["opcode"] == 1 else b64d(m["payloadBase64"]))
    return out


def controls(events, connection, direction, name) -> list[bytes]:
    return [b64d(f["payloadBase64"]) for f in frames_of(events, connection, direction) if f["opcodeName"] == name]


def data_frames(events, connection, direction) -> list[dict]:
    return [f for f in frames_of(events, connection, direction) if f["opcode"] not in (8, 9, 10)]


# --------------------------------------------------------------------------
# drop
# --------------------------------------------------------------------------


@COMPRESSION
def test_drop_text_match(fault_proxy, compression):
    """drop (both directions, `^secret`): the dropped messages are missing, the others intact
    and in order; later messages in both directions still arrive intact."""
    rules = {"rules": [{"id": "drop-secret", "action": "drop", "match": {"text": "^secret"}}]}
    up_msgs = [f"hello 0 {FILLER}", f"secret a {FILLER}", f"hello 1 {FILLER}"]
    batch1 = [f"public 1 {FILLER}", f"secret 2 {FILLER}", f"public 3 {FILLER}", f"secret 4 {FILLER}",
              f"public 5 {FILLER}"]
    blob = bytes(range(256)) * 4
    batch2 = [f"public 6 {FILLER}", blob, f"public 7 {FILLER}"]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                for m in up_msgs:
                    await ws.send(m)
                assert await recv_n(ws, 2) == [up_msgs[0], up_msgs[2]]
                await ws.send(cmd_send(batch1))
                assert await recv_n(ws, 3) == [batch1[0], batch1[2], batch1[4]]
                await ws.send(f"hello 2 {FILLER}")
                await ws.send(cmd_send(batch2))
                assert await recv_n(ws, 4) == [f"hello 2 {FILLER}", *batch2]
            side = await up.ended()
            assert side.received == [up_msgs[0], up_msgs[2], cmd_send(batch1), f"hello 2 {FILLER}",
                                     cmd_send(batch2)]
            events = await stop(proxy)
        conn = connection_for(events, local)
        faults = fault_events(events, "drop-secret")
        assert [(f["direction"], f["action"], f.get("opcode"), f.get("message")) for f in faults] == [
            (C2S, "drop", "text", 2), (S2C, "drop", "text", 4), (S2C, "drop", "text", 6)], faults
        assert all(f["connection"] == conn for f in faults)
        if not compression:
            assert [f["length"] for f in faults] == [len(m.encode()) for m in (up_msgs[1], batch1[1], batch1[3])]
        # frames as forwarded: the dropped ones are not in the log
        assert payloads(events, conn, C2S) == side.received
        assert payloads(events, conn, S2C) == [up_msgs[0], up_msgs[2], batch1[0], batch1[2], batch1[4],
                                               f"hello 2 {FILLER}", *batch2]
        check_clean_log(events, connections=1)
        assert events[-1]["faults"] == 3

    run(scenario())


@COMPRESSION
def test_large_messages_with_faults(fault_proxy, compression):
    """Messages larger than the log's --max-payload pass intact, and are dropped whole."""
    rules = [{"id": "drop-secret", "action": "drop", "match": {"text": "^secret"}}]
    rng = random.Random(3)
    if compression:
        big = bytes(rng.choice(b"abcdefghij {}:,") for _ in range(3 << 20))
    else:
        big = rng.randbytes(3 << 20)
    secret = "secret " + FILLER * 30000  # ~2 MiB of text

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                await ws.send(big)
                await ws.send(secret)
                await ws.send(f"after {FILLER}")
                got = await recv_n(ws, 2, timeout=30)
                assert got[0] == big, "3 MiB echoed intact"
                assert got[1] == f"after {FILLER}"
            side = await up.ended()
            assert len(side.received) == 2 and side.received[0] == big
            events = await stop(proxy)
        faults = fault_events(events, "drop-secret")
        assert [(f["direction"], f.get("message")) for f in faults] == [(C2S, 2)], faults

    run(scenario())


@COMPRESSION
def test_drop_pongs_makes_client_keepalive_time_out(fault_proxy, compression):
    """drop pongs to-client: a websockets client (ping_interval 0.2, ping_timeout 0.5)
    fails the connection with 1011 "keepalive ping timeout"."""
    rules = [{"id": "drop-pongs", "action": "drop", "direction": "to-client", "match": {"opcode": "pong"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression, ping_interval=0.2, ping_timeout=0.5) as ws:
                local = ws.local_address
                await ws.send("are you there?")
                assert await recv_n(ws, 1) == ["are you there?"]
                got, exc, elapsed = await recv_until_closed(ws, timeout=10)
            assert got == []
            assert exc.sent is not None and (exc.sent.code, exc.sent.reason) == (1011, "keepalive ping timeout"), exc
            assert elapsed >= 0.3, elapsed
            side = await up.ended()
            assert side.rcvd is not None and side.rcvd.code == 1011, side  # the client's close got through
            events = await stop(proxy)
        conn = connection_for(events, local)
        assert len(controls(events, conn, C2S, "ping")) >= 1
        assert controls(events, conn, S2C, "pong") == []
        faults = fault_events(events, "drop-pongs")
        assert faults and all((f["action"], f["direction"], f.get("opcode")) == ("drop", S2C, "pong")
                              for f in faults), faults
        assert len(faults) == len(controls(events, conn, C2S, "ping")), "every pong dropped"

    run(scenario())


# --------------------------------------------------------------------------
# delay, stall, timeout, throttle
# --------------------------------------------------------------------------


@COMPRESSION
def test_delay_holds_message_and_keeps_order(fault_proxy, compression):
    rules = [{"id": "slow", "action": "delay", "ms": 300, "direction": "to-client", "match": {"text": "^slow"}},
             {"id": "jitter", "action": "delay", "ms": 100, "jitter_ms": 100, "direction": "to-server",
              "match": {"text": "^jittery"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                t0 = time.monotonic()
                await ws.send(f"slow one {FILLER}")
                await ws.send(f"fast two {FILLER}")
                first = await asyncio.wait_for(ws.recv(), 10)
                t1 = time.monotonic()
                second = await asyncio.wait_for(ws.recv(), 10)
                assert [first, second] == [f"slow one {FILLER}", f"fast two {FILLER}"]
                side = await up.side()
                assert t1 - t0 >= 0.3, t1 - t0
                assert t1 - side.times[0] >= 0.29, "held after the server sent it (to-client)"
                assert t1 - t0 < 8, t1 - t0
                await ws.send(f"after {FILLER}")
                assert await recv_n(ws, 1) == [f"after {FILLER}"]
                t0 = time.monotonic()
                await ws.send("jittery")
                assert await recv_n(ws, 1) == ["jittery"]
                assert time.monotonic() - t0 >= 0.1
            events = await stop(proxy)
        conn = connection_for(events, local)
        assert [(f["action"], f["direction"]) for f in fault_events(events, "jitter")] == [("delay", C2S)]
        faults = fault_events(events, "slow")
        assert [(f["action"], f["direction"], f.get("message")) for f in faults] == [("delay", S2C, 1)], faults
        assert payloads(events, conn, S2C) == [f"slow one {FILLER}", f"fast two {FILLER}", f"after {FILLER}",
                                               "jittery"]
        check_clean_log(events, connections=1)

    run(scenario())


@COMPRESSION
def test_stall_holds_direction_then_releases(fault_proxy, compression):
    rules = [{"id": "freeze", "action": "stall", "ms": 500, "direction": "to-client", "match": {"text": "^stall"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                t0 = time.monotonic()
                await ws.send("stall now")
                await ws.send("next")
                got = await recv_n(ws, 2)
                elapsed = time.monotonic() - t0
                assert got == ["stall now", "next"]
                assert elapsed >= 0.45, elapsed
                side = await up.side()
                assert side.received == ["stall now", "next"]  # the other direction was not held
                await ws.send("stall again")  # only the first match stalls
                assert await recv_n(ws, 1) == ["stall again"]
            events = await stop(proxy)
        faults = fault_events(events, "freeze")
        assert [(f["action"], f["direction"]) for f in faults] == [("stall", S2C)], faults
        check_clean_log(events, connections=1)

    run(scenario())


@COMPRESSION
def test_timeout_stalls_then_closes_tcp(fault_proxy, compression):
    rules = [{"id": "hang", "action": "timeout", "ms": 400, "direction": "to-client", "match": {"text": "^hang"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                await ws.send("hello")
                assert await recv_n(ws, 1) == ["hello"]
                t0 = time.monotonic()
                await ws.send("hang")
                await ws.send("never echoed back")
                got, exc, _ = await recv_until_closed(ws, timeout=10)
                elapsed = time.monotonic() - t0
            assert "never echoed back" not in got, got
            assert exc.rcvd is None, f"no close frame expected, got {exc.rcvd}"
            assert elapsed >= 0.38, elapsed
            side = await up.ended()
            assert side.rcvd is None, side  # TCP closed on the server's side too, no close frame
            events = await stop(proxy)
        faults = fault_events(events, "hang")
        assert [(f["action"], f["direction"]) for f in faults][:1] == [("timeout", S2C)], faults

    run(scenario())


@COMPRESSION
def test_throttle_limits_rate(fault_proxy, compression):
    """throttle 20000 B/s to-client: 60 KB (incompressible) take at least 2 s."""
    rules = [{"id": "bw", "action": "throttle", "bytes_per_second": 20000, "direction": "to-client"}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                t0 = time.monotonic()
                await ws.send("!bytes 60000")
                data = await asyncio.wait_for(ws.recv(), 30)
                elapsed = time.monotonic() - t0
                assert data == random.Random(60000).randbytes(60000)
                assert elapsed >= 2.0, elapsed
                await ws.send("small")
                assert await recv_n(ws, 1) == ["small"]
            events = await stop(proxy)
        assert all(f["action"] == "throttle" for f in fault_events(events, "bw"))
        check_clean_log(events, connections=1)

    run(scenario())


# --------------------------------------------------------------------------
# inject
# --------------------------------------------------------------------------


@COMPRESSION
def test_inject_at_upgrade_and_at_ms(fault_proxy, compression):
    blob = b"\x00\x01injected\xff"
    rules = [
        {"id": "welcome", "action": "inject", "direction": "to-client", "text": "welcome from the proxy"},
        {"id": "later", "action": "inject", "direction": "to-client", "text": "injected at 300 ms", "at_ms": 300},
        {"id": "blob", "action": "inject", "direction": "to-server",
         "base64": base64.b64encode(blob).decode(), "at_ms": 100},
    ]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            t0 = time.monotonic()
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                assert await recv_n(ws, 1) == ["welcome from the proxy"]
                rest = []
                for _ in range(2):
                    rest.append(await asyncio.wait_for(ws.recv(), 10))
                    if rest[-1] == "injected at 300 ms":
                        assert time.monotonic() - t0 >= 0.3
                assert sorted(rest, key=repr) == sorted([blob, "injected at 300 ms"], key=repr)  # blob: the echo
                await ws.send(f"after injection {FILLER}")
                assert await recv_n(ws, 1) == [f"after injection {FILLER}"]
            side = await up.ended()
            assert side.received == [blob, f"after injection {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, local)
        for rule, direction in (("welcome", S2C), ("later", S2C), ("blob", C2S)):
            faults = fault_events(events, rule)
            assert [(f["action"], f["direction"], f["connection"]) for f in faults] == [("inject", direction, conn)]
        injected = [f for f in data_frames(events, conn, S2C) if b64d(f["payloadBase64"]) in
                    (b"welcome from the proxy", b"injected at 300 ms")]
        assert len(injected) == 2 and all(not f["rsv1"] and f["fin"] and f["opcode"] == 1 for f in injected), injected
        (up_blob,) = [f for f in data_frames(events, conn, C2S) if f["opcode"] == 2]
        assert up_blob["masked"] is True and b64d(up_blob["payloadBase64"]) == blob and not up_blob["rsv1"]
        assert payloads(events, conn, S2C)[0] == "welcome from the proxy"
        check_clean_log(events, connections=1)

    run(scenario())


@COMPRESSION
def test_inject_every_ms_server_pings(fault_proxy, compression):
    """inject ping every 150 ms to-client: the client answers each with a pong (in the log)."""
    rules = [{"id": "server-pings", "action": "inject", "direction": "to-client", "opcode": "ping",
              "text": "hb", "every_ms": 150}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await asyncio.sleep(0.8)
                await ws.send("still alive")
                assert await recv_n(ws, 1) == ["still alive"]
                await asyncio.to_thread(
                    proxy.wait_for, lambda ev: len([f for f in of_type(ev, "frame") if f["direction"] == C2S
                                                    and f["opcodeName"] == "pong"]) >= 2, 10, "2 pongs")
            events = await stop(proxy)
        conn = connection_for(events, local)
        pings = controls(events, conn, S2C, "ping")
        pongs = controls(events, conn, C2S, "pong")
        assert len(pings) >= 2 and set(pings) == {b"hb"}, pings
        assert len(pongs) >= 2 and set(pongs) == {b"hb"}, pongs
        for f in frames_of(events, conn, S2C):
            if f["opcodeName"] == "ping":
                assert f["masked"] is False and f["fin"] is True, f
        faults = fault_events(events, "server-pings")
        assert len(faults) >= len(pings) >= 2 and all(
            (f["action"], f["direction"]) == ("inject", S2C) for f in faults), faults
        check_clean_log(events, connections=1)

    run(scenario())


@COMPRESSION
def test_inject_waits_for_fragmented_message_to_end(fault_proxy, compression):
    """Timed injections while a fragmented message is on its way (fragments 50 ms apart):
    an injected data message must not land between the fragments (pings may)."""
    rules = [{"id": "tick-down", "action": "inject", "direction": "to-client", "text": "tick", "every_ms": 80},
             {"id": "tock-up", "action": "inject", "direction": "to-server", "text": "tock", "every_ms": 80},
             {"id": "ping-down", "action": "inject", "direction": "to-client", "opcode": "ping", "text": "p",
              "every_ms": 70}]
    whole = "".join(f"part {i} {FILLER} " for i in range(10))

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                await ws.send("!slowfrag 10")
                await ws.send(slow_fragments([f"part {i} {FILLER} " for i in range(10)]))
                got = []
                while whole not in got or got.count(whole) < 2:  # the server's message, and the echo of ours
                    got.append(await asyncio.wait_for(ws.recv(), 10))
                assert "tick" in got and set(got) <= {whole, "tick", "tock"}, [g[:20] for g in got]
            side = await up.ended()
            assert set(side.received) == {"!slowfrag 10", whole, "tock"}, [r[:20] for r in side.received]
            assert side.sent is None or side.sent.code == 1000, side
            events = await stop(proxy)
        assert of_type(events, "finding") == [], of_type(events, "finding")

    run(scenario())


@COMPRESSION
def test_inject_after_matched_message(fault_proxy, compression):
    rules = [{"id": "audit", "action": "inject", "direction": "to-server", "match": {"text": "^order"},
              "text": "audit: order seen ✓"}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                for m in (f"order 1 {FILLER}", f"note {FILLER}", f"order 2 {FILLER}"):
                    await ws.send(m)
                want = [f"order 1 {FILLER}", "audit: order seen ✓", f"note {FILLER}", f"order 2 {FILLER}",
                        "audit: order seen ✓"]
                assert await recv_n(ws, 5) == want  # the server echoes what it got
                await ws.send(f"tail {FILLER}")
                assert await recv_n(ws, 1) == [f"tail {FILLER}"]
            side = await up.ended()
            assert side.received == want + [f"tail {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, local)
        faults = fault_events(events, "audit")
        assert [(f["action"], f["direction"]) for f in faults] == [("inject", C2S)] * 2, faults
        assert payloads(events, conn, C2S) == side.received
        check_clean_log(events, connections=1)

    run(scenario())


# --------------------------------------------------------------------------
# rewrite, duplicate, fragment
# --------------------------------------------------------------------------


@COMPRESSION
def test_rewrite_replace_and_set(fault_proxy, compression):
    new_blob = b"\x00rewritten\x00"
    rules = [
        {"id": "brackets", "action": "rewrite", "direction": "to-server", "match": {"text": "^name="},
         "replace": {"pattern": "name=(\\w+)", "with": "name=[$1]"}},
        {"id": "status", "action": "rewrite", "direction": "to-client", "match": {"text": "^status"},
         "set": "status: rewritten ✓"},
        {"id": "blob", "action": "rewrite", "direction": "to-client", "match": {"opcode": "binary"},
         "set_base64": base64.b64encode(new_blob).decode()},
    ]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send("name=alice")
                assert await recv_n(ws, 1) == ["name=[alice]"]
                await ws.send(cmd_send([f"status ok {FILLER}", b"\x01\x02" * 300, f"plain after {FILLER}"]))
                assert await recv_n(ws, 3) == ["status: rewritten ✓", new_blob, f"plain after {FILLER}"]
                await ws.send(f"tail {FILLER}")
                assert await recv_n(ws, 1) == [f"tail {FILLER}"]
            side = await up.ended()
            assert side.received[0] == "name=[alice]"
            events = await stop(proxy)
        conn = connection_for(events, local)
        got = [(f["rule"], f["action"], f["direction"]) for f in fault_events(events)]
        assert got == [("brackets", "rewrite", C2S), ("status", "rewrite", S2C), ("blob", "rewrite", S2C)], got
        assert payloads(events, conn, S2C) == ["name=[alice]", "status: rewritten ✓", new_blob,
                                               f"plain after {FILLER}", f"tail {FILLER}"]
        check_clean_log(events, connections=1)

    run(scenario())


@COMPRESSION
def test_duplicate(fault_proxy, compression):
    rules = [
        {"id": "dup", "action": "duplicate", "copies": 2, "direction": "to-client", "match": {"text": "^dup"}},
        {"id": "twice", "action": "duplicate", "direction": "to-server", "match": {"text": "^twice"}},
    ]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send(f"twice {FILLER}")
                assert await recv_n(ws, 2) == [f"twice {FILLER}"] * 2  # the server got it twice, echoed both
                await ws.send(cmd_send([f"dup me {FILLER}", f"after {FILLER}"]))
                assert await recv_n(ws, 4) == [f"dup me {FILLER}"] * 3 + [f"after {FILLER}"]
                await ws.send(f"tail {FILLER}")
                assert await recv_n(ws, 1) == [f"tail {FILLER}"]
            side = await up.ended()
            assert side.received == [f"twice {FILLER}"] * 2 + [cmd_send([f"dup me {FILLER}", f"after {FILLER}"]),
                                                                f"tail {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, local)
        got = [(f["rule"], f["action"], f["direction"]) for f in fault_events(events)]
        assert got == [("twice", "duplicate", C2S), ("dup", "duplicate", S2C)], got
        assert payloads(events, conn, S2C) == [f"twice {FILLER}"] * 2 + [f"dup me {FILLER}"] * 3 + \
            [f"after {FILLER}", f"tail {FILLER}"]
        check_clean_log(events, connections=1)

    run(scenario())


@COMPRESSION
def test_fragment(fault_proxy, compression):
    """fragment size 3 (both directions): the receiver gets the message whole; the log shows
    frames of at most 3 payload bytes, FIN only on the last."""
    msg = "fragment this message ✓ please"
    rules = [{"id": "slicer", "action": "fragment", "size": 3, "match": {"text": "^frag"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send(msg)
                assert await recv_n(ws, 1) == [msg]
                await ws.send(f"whole {FILLER}")
                assert await recv_n(ws, 1) == [f"whole {FILLER}"]
            side = await up.ended()
            assert side.received == [msg, f"whole {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, local)
        for direction in (C2S, S2C):
            frames = data_frames(events, conn, direction)
            end = next(i for i, f in enumerate(frames) if f["fin"])
            pieces = frames[:end + 1]
            assert len(pieces) > 1, pieces
            assert [f["opcode"] for f in pieces] == [1] + [0] * (len(pieces) - 1)
            assert [f["fin"] for f in pieces] == [False] * (len(pieces) - 1) + [True]
            assert all(f["payloadLength"] <= 3 for f in pieces), [f["payloadLength"] for f in pieces]
            assert all(f["masked"] is (direction == C2S) for f in pieces)
            if not compression:
                assert len(pieces) == math.ceil(len(msg.encode()) / 3)
                assert b"".join(b64d(f["payloadBase64"]) for f in pieces) == msg.encode()
            assert payloads(events, conn, direction)[0] == msg
            assert messages_of(events, conn, direction)[0]["frames"] == len(pieces)
            assert len(frames) == len(pieces) + 1  # the second message was not touched
        got = [(f["action"], f["direction"]) for f in fault_events(events, "slicer")]
        assert got == [("fragment", C2S), ("fragment", S2C)], got
        check_clean_log(events, connections=1)

    run(scenario())


# --------------------------------------------------------------------------
# corrupt
# --------------------------------------------------------------------------

CORRUPT_CASES = [
    # kind, direction, close code the receiving websockets peer fails the connection with
    ("invalid-utf8", "to-client", 1007),
    ("rsv2", "to-client", 1002),
    ("reserved-opcode", "to-client", 1002),
    ("masked", "to-client", 1002),
    ("oversized-control", "to-client", 1002),
    ("unmasked", "to-server", 1002),
]


def corrupt_scenario(fault_proxy, compression, kind, direction, want_code):
    rules = [{"id": "corrupt", "action": "corrupt", "kind": kind, "direction": direction,
              "match": {"text": "^bad"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send(f"good {FILLER}")
                assert await recv_n(ws, 1) == [f"good {FILLER}"]
                await ws.send(f"bad message {FILLER}")
                got, exc, _ = await recv_until_closed(ws, timeout=10)
            side = await up.ended()
            if direction == "to-client":
                assert got == []
                assert exc.sent is not None and exc.sent.code == want_code, \
                    f"client should fail the connection with {want_code}: sent={exc.sent} rcvd={exc.rcvd}"
            else:
                assert side.sent is not None and side.sent.code == want_code, \
                    f"server should fail the connection with {want_code}: sent={side.sent} rcvd={side.rcvd}"
                assert f"bad message {FILLER}" not in side.received
                assert exc.rcvd is not None and exc.rcvd.code == want_code, exc  # forwarded to the client
            events = await stop(proxy)
        conn = connection_for(events, local)
        faults = fault_events(events, "corrupt")
        log_dir = S2C if direction == "to-client" else C2S
        assert [(f["action"], f["direction"]) for f in faults] == [("corrupt", log_dir)], faults
        frames = frames_of(events, conn, log_dir)
        if kind == "invalid-utf8":
            (bad,) = [m for m in messages_of(events, conn, S2C) if b"bad message" in b64d(m["payloadBase64"])]
            assert b"\xff" in b64d(bad["payloadBase64"]), bad
        elif kind in ("rsv1", "rsv2"):
            assert any(f[kind] for f in frames), frames
        elif kind == "reserved-opcode":
            assert any(f["opcode"] == 3 for f in frames), [f["opcode"] for f in frames]
        elif kind == "masked":
            assert any(f["masked"] for f in frames), frames
        elif kind == "unmasked":
            assert any(not f["masked"] for f in frames), frames
        elif kind == "oversized-control":
            assert any(f["opcode"] == 9 and f["payloadLength"] == 126 for f in frames), frames
        return events

    return run(scenario())


@COMPRESSION
@pytest.mark.parametrize("kind,direction,want_code", CORRUPT_CASES, ids=[c[0] for c in CORRUPT_CASES])
def test_corrupt(fault_proxy, compression, kind, direction, want_code):
    corrupt_scenario(fault_proxy, compression, kind, direction, want_code)


def test_corrupt_rsv1_without_compression(fault_proxy):
    corrupt_scenario(fault_proxy, None, "rsv1", "to-client", 1002)


# --------------------------------------------------------------------------
# close, abort, half-close, limit, slow-close, refuse
# --------------------------------------------------------------------------


@COMPRESSION
def test_close_to_client_after_match(fault_proxy, compression):
    rules = [{"id": "bye", "action": "close", "direction": "to-client", "code": 4000, "reason": "bye",
              "match": {"text": "^quit"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send("quit")
                await ws.send("more")  # echoed after the close: must not reach the client
                got, exc, _ = await recv_until_closed(ws, timeout=10)
            assert got == ["quit"]
            assert exc.rcvd is not None and (exc.rcvd.code, exc.rcvd.reason) == (4000, "bye"), exc
            await up.ended()
            events = await stop(proxy)
        conn = connection_for(events, local)
        faults = fault_events(events, "bye")
        assert [(f["action"], f["direction"]) for f in faults] == [("close", S2C)], faults
        closes = [f for f in frames_of(events, conn, S2C) if f["opcodeName"] == "close"]
        assert [(f["closeCode"], f["closeReason"]) for f in closes] == [(4000, "bye")]
        assert payloads(events, conn, S2C) == ["quit"]

    run(scenario())


@COMPRESSION
def test_close_both_at_ms(fault_proxy, compression):
    rules = [{"id": "maintenance", "action": "close", "direction": "both", "code": 4002,
              "reason": "maintenance", "at_ms": 300}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            t0 = time.monotonic()
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                got, exc, _ = await recv_until_closed(ws, timeout=10)
            assert time.monotonic() - t0 >= 0.3
            assert got == []
            assert exc.rcvd is not None and (exc.rcvd.code, exc.rcvd.reason) == (4002, "maintenance"), exc
            side = await up.ended()
            assert side.rcvd is not None and (side.rcvd.code, side.rcvd.reason) == (4002, "maintenance"), side
            events = await stop(proxy)
        conn = connection_for(events, local)
        for direction in (C2S, S2C):
            closes = [f for f in frames_of(events, conn, direction) if f["opcodeName"] == "close"]
            assert closes and (closes[0]["closeCode"], closes[0]["closeReason"]) == (4002, "maintenance"), closes
        faults = fault_events(events, "maintenance")
        assert faults and all(f["action"] == "close" for f in faults), faults

    run(scenario())


@COMPRESSION
def test_abort_resets_without_close_frame(fault_proxy, compression):
    rules = [{"id": "reset", "action": "abort", "direction": "to-server", "match": {"text": "^boom"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send("hello")
                assert await recv_n(ws, 1) == ["hello"]
                await ws.send("boom")
                got, exc, _ = await recv_until_closed(ws, timeout=10)
            assert got == []
            assert exc.rcvd is None, f"no close frame expected, got {exc.rcvd}"
            side = await up.ended()
            assert side.received == ["hello"], "the matched message is not forwarded"
            assert side.rcvd is None, side
            events = await stop(proxy)
        faults = fault_events(events, "reset", connection_for(events, local))
        assert [f["action"] for f in faults] == ["abort"], faults

    run(scenario())


def test_half_close_to_client(fault_proxy):
    """half-close to-client at 200 ms: the client sees EOF; the client→server way stays open."""
    rules = [{"id": "fin", "action": "half-close", "direction": "to-client", "at_ms": 200}]

    async def scenario():
        async with fault_session(fault_proxy, None, rules) as (up, proxy):
            def raw_client():
                with connect_raw(proxy.address) as s:
                    t0 = time.monotonic()
                    s.sendall(upgrade_request("/half"))
                    head, rest = read_head(s)
                    assert head.startswith(b"HTTP/1.1 101 "), head
                    data, how = recv_until_eof(s, timeout=8)
                    elapsed = time.monotonic() - t0
                    s.sendall(ws_frame(1, b"still open", mask=b"\x11\x22\x33\x44"))
                    time.sleep(0.3)
                    return rest + data, how, elapsed
            data, how, elapsed = await asyncio.to_thread(raw_client)
            assert (data, how) == (b"", "eof")
            assert elapsed >= 0.2, elapsed
            side = await up.side()
            deadline = time.monotonic() + 5
            while "still open" not in side.received and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert side.received == ["still open"], side.received
            events = await stop(proxy)
        faults = fault_events(events, "fin")
        assert [(f["action"], f["direction"]) for f in faults] == [("half-close", S2C)], faults

    run(scenario())


@COMPRESSION
def test_limit_messages(fault_proxy, compression):
    rules = [{"id": "cap", "action": "limit", "messages": 3, "direction": "to-client"}]
    batch = [f"m{i} {FILLER}" for i in range(1, 6)]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send(cmd_send(batch))
                got, exc, _ = await recv_until_closed(ws, timeout=10)
            assert got == batch[:3]
            assert exc.rcvd is None, f"no close frame expected, got {exc.rcvd}"
            side = await up.ended()
            assert side.rcvd is None, side
            events = await stop(proxy)
        conn = connection_for(events, local)
        assert payloads(events, conn, S2C) == batch[:3]
        faults = fault_events(events, "cap")
        assert [f["action"] for f in faults] == ["limit"], faults

    run(scenario())


def test_slow_close_delays_fin(fault_proxy):
    """slow-close 500 ms: the server's TCP close reaches the client ≥ 0.5 s later (the
    websockets client waits for it after the close handshake)."""
    rules = [{"id": "lazy-fin", "action": "slow-close", "ms": 500}]

    async def scenario():
        async with fault_session(fault_proxy, None, rules) as (up, proxy):
            async with client(proxy, None, close_timeout=10) as ws:
                await ws.send("hi")
                assert await recv_n(ws, 1) == ["hi"]
                t0 = time.monotonic()
                await ws.send("!close 1000")
                await asyncio.wait_for(ws.wait_closed(), 10)
                elapsed = time.monotonic() - t0
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
            assert elapsed >= 0.45, elapsed
            events = await stop(proxy)
        faults = fault_events(events, "lazy-fin")
        assert faults and all(f["action"] == "slow-close" for f in faults), faults

    run(scenario())


def test_refuse_matching_path(fault_proxy):
    rules = [{"id": "down", "action": "refuse", "match": {"path": "^/down"}}]

    async def scenario():
        async with fault_session(fault_proxy, None, rules) as (up, proxy):
            with pytest.raises((OSError, InvalidHandshake, EOFError)):
                async with client(proxy, None, "/down"):
                    pass

            def raw():
                with connect_raw(proxy.address) as s:
                    s.sendall(upgrade_request("/down/raw"))
                    return recv_until_eof(s, timeout=8)
            data, how = await asyncio.to_thread(raw)
            assert data == b"" and how in ("reset", "eof"), (data, how)
            async with client(proxy, None, "/up") as ws:
                await ws.send("fine")
                assert await recv_n(ws, 1) == ["fine"]
            assert [s.path for s in up.sides] == ["/up"], "refused connections never reach the upstream"
            events = await stop(proxy)
        faults = fault_events(events, "down")
        assert [f["action"] for f in faults] == ["refuse", "refuse"], faults
        assert events[-1]["webSocketConnections"] == 1

    run(scenario())


# --------------------------------------------------------------------------
# match conditions, probability and the seed
# --------------------------------------------------------------------------


def test_match_conditions(fault_proxy):
    """nth, every, times, opcode list, path, connection, after_ms, before_ms (all with drop)."""
    rules = [
        {"id": "nth", "action": "drop", "direction": "to-client", "match": {"text": "^a", "nth": 2}},
        {"id": "every", "action": "drop", "direction": "to-client", "match": {"text": "^b", "every": 2}},
        {"id": "times", "action": "drop", "direction": "to-client", "match": {"text": "^c"}, "times": 1},
        {"id": "binary", "action": "drop", "direction": "to-client", "match": {"opcode": ["binary", 9]}},
        {"id": "path", "action": "drop", "match": {"path": "^/other", "text": "^d"}},
        {"id": "conn2", "action": "drop", "match": {"connection": 2, "text": "^e"}},
        {"id": "late", "action": "drop", "direction": "to-client", "match": {"text": "^f", "after_ms": 700}},
        {"id": "early", "action": "drop", "direction": "to-client", "match": {"text": "^g", "before_ms": 700}},
    ]
    batch = ["a1", "a2", "a3", "b1", "b2", "b3", "b4", "c1", "c2", b"\x00bin", "d1", "e1", "f1", "g1", "stop"]

    async def scenario():
        async with fault_session(fault_proxy, None, rules) as (up, proxy):
            async with client(proxy, None, "/chat") as ws:
                t0 = time.monotonic()
                await ws.send(cmd_send(batch))
                got = await recv_n(ws, 9)
                assert got == ["a1", "a3", "b1", "b3", "c2", "d1", "e1", "f1", "stop"]
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
                await ws.send(cmd_send(["f2", "g2", "z"]))
                assert await recv_n(ws, 2) == ["g2", "z"]
            async with client(proxy, None, "/other") as ws:
                await ws.send(cmd_send(batch))
                got = await recv_n(ws, 7)
                # nth/every/times count per connection; d1 (path) and e1 (connection 2) dropped
                assert got == ["a1", "a3", "b1", "b3", "c2", "f1", "stop"]
            events = await stop(proxy, 2)
        count = {}
        for f in fault_events(events):
            count[(f["rule"], f["connection"])] = count.get((f["rule"], f["connection"]), 0) + 1
        assert count == {("nth", 1): 1, ("every", 1): 2, ("times", 1): 1, ("binary", 1): 1, ("late", 1): 1,
                         ("early", 1): 1, ("nth", 2): 1, ("every", 2): 2, ("times", 2): 1, ("binary", 2): 1,
                         ("path", 2): 1, ("conn2", 2): 1, ("early", 2): 1}, count

    run(scenario())


def parse_client_frames(data: bytes) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """Masked client frames in `data` -> [(opcode, fin, unmasked payload)], rest of the bytes."""
    frames = []
    while len(data) >= 2:
        n, pos = data[1] & 0x7F, 2
        if n == 126:
            if len(data) < 4:
                break
            n, pos = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            if len(data) < 10:
                break
            n, pos = int.from_bytes(data[2:10], "big"), 10
        masked = bool(data[1] & 0x80)
        end = pos + (4 if masked else 0) + n
        if len(data) < end:
            break
        payload = data[end - n:end]
        if masked:
            payload = bytes(b ^ data[pos + i % 4] for i, b in enumerate(payload))
        frames.append((data[0] & 0x0F, bool(data[0] & 0x80), payload))
        data = data[end:]
    return frames, data


def test_fragmented_messages_are_matched_whole(fault_proxy):
    """A message is all its fragments: a fragmented message is dropped or rewritten whole,
    and a control frame between its fragments is matched (and forwarded) on its own."""
    rules = [{"id": "drop-secret", "action": "drop", "match": {"text": "^secret"}},
             {"id": "rewrite", "action": "rewrite", "direction": "to-client", "match": {"text": "^rewrite"},
              "set": "rewritten"}]

    def behaviour(conn, record):
        head, rest = read_head(conn)
        conn.sendall(switching_protocols(head))
        conn.sendall(ws_frame(1, b"secret-", fin=False) + ws_frame(9, b"mid") + ws_frame(0, b"part")
                     + ws_frame(1, b"rew", fin=False) + ws_frame(0, b"rite me") + ws_frame(1, b"public"))
        buf, record["frames"] = rest, []
        while True:
            frames, buf = parse_client_frames(buf)
            record["frames"] += frames
            if any(op == 8 for op, _, _ in frames):
                conn.sendall(ws_frame(8, b"\x03\xe8"))
                return
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk

    with RawUpstream(behaviour) as up:
        proxy = fault_proxy(up.url)  # no rules yet: added below, all at once
        status, _ = api(proxy, "POST", "/rules", rules)
        assert status == 201

        received: list = []

        async def talk():
            async with client(proxy) as ws:
                async def fragments(parts):
                    for part in parts:
                        yield part
                await ws.send(fragments(["secret ", "up"]))
                await ws.send(fragments(["visible ", "up"]))
                with contextlib.suppress(asyncio.TimeoutError):
                    while len(received) < 3:
                        received.append(await asyncio.wait_for(ws.recv(), 1.0))
                await ws.close()
                return ws.local_address
        local = run(talk())
        up.wait_done()
        assert not up.errors, up.errors
    data = [(op, fin, payload) for op, fin, payload in up.records[0]["frames"] if op not in (8, 9, 10)]
    assert data == [(1, False, b"visible "), (0, False, b"up"), (0, True, b"")], data
    assert [f for f in up.records[0]["frames"] if f[0] == 10] == [(10, True, b"mid")], "the client's pong"
    assert received == ["rewritten", "public"]
    events = proxy.wait_for_type("connection-close", 1)
    events = proxy.stop_and_check()
    check_fault_summary(events)
    conn = connection_for(events, local)
    assert controls(events, conn, S2C, "ping") == [b"mid"]
    assert payloads(events, conn, S2C) == ["rewritten", "public"]
    assert payloads(events, conn, C2S) == ["visible up"]
    got = [(f["rule"], f["direction"]) for f in fault_events(events)]
    assert sorted(got) == [("drop-secret", C2S), ("drop-secret", S2C), ("rewrite", S2C)], got


def test_inject_close_frame(fault_proxy):
    rules = [{"id": "kick", "action": "inject", "direction": "to-client", "opcode": "close", "code": 4003,
              "reason": "injected close", "at_ms": 100}]

    async def scenario():
        async with fault_session(fault_proxy, None, rules) as (up, proxy):
            async with client(proxy) as ws:
                got, exc, _ = await recv_until_closed(ws)
            assert got == []
            assert exc.rcvd is not None and (exc.rcvd.code, exc.rcvd.reason) == (4003, "injected close"), exc
            await up.ended()
            events = await stop(proxy)
        assert [(f["action"], f["direction"]) for f in fault_events(events, "kick")] == [("inject", S2C)]

    run(scenario())


def test_limit_bytes(fault_proxy):
    """limit bytes=100 to-server: after ~100 bytes the connection is closed (no close frame)."""
    rules = [{"id": "cap-bytes", "action": "limit", "bytes": 100, "direction": "to-server"}]

    async def scenario():
        async with fault_session(fault_proxy, None, rules) as (up, proxy):
            async with client(proxy) as ws:
                for i in range(10):
                    await ws.send(f"{i} " + "x" * 58)  # 60 bytes each
                got, exc, _ = await recv_until_closed(ws)
            assert exc.rcvd is None, exc
            side = await up.ended()
            assert 1 <= len(side.received) <= 2, side.received
            assert side.rcvd is None
            assert got == side.received[:len(got)]
            events = await stop(proxy)
        assert [f["action"] for f in fault_events(events, "cap-bytes")] == ["limit"]

    run(scenario())


def test_stall_forever_holds_until_closed(fault_proxy):
    """stall without ms: the direction stops for good, the TCP connection stays open; once
    the client has gone (it gives up on the close handshake) the connection ends."""
    rules = [{"id": "freeze", "action": "stall", "direction": "to-client", "match": {"text": "^freeze"}}]

    async def scenario():
        async with fault_session(fault_proxy, None, rules) as (up, proxy):
            async with client(proxy, close_timeout=0.5) as ws:
                await ws.send("before")
                assert await recv_n(ws, 1) == ["before"]
                await ws.send("freeze")
                await ws.send("after")
                await nothing_arrives(ws, 0.8)
                side = await up.side()
                assert side.received == ["before", "freeze", "after"]
                c = await only_connection(proxy)
                assert c["state"] == "open", c
            await stop(proxy)

    run(scenario())


def dropped_indices(fault_proxy, up, seed, *, file_seed=None, count=40) -> tuple[set, dict]:
    """Sends n0…n{count-1} to the client through a probability-0.5 drop; returns the
    indices that did not arrive and the proxy's readiness object."""
    rule = {"id": "coin", "action": "drop", "direction": "to-client", "probability": 0.5, "match": {"text": "^n"}}
    rules = {"rules": [rule]} if file_seed is None else {"seed": file_seed, "rules": [rule]}

    async def scenario():
        proxy = await asyncio.to_thread(fault_proxy, up.url, rules, seed=seed)
        async with client(proxy) as ws:
            await ws.send(cmd_send([f"n{i}" for i in range(count)] + ["end"]))
            got = []
            while not got or got[-1] != "end":
                got.extend(await recv_n(ws, 1))
        events = await stop(proxy)
        faults = fault_events(events, "coin")
        dropped = set(range(count)) - {int(m[1:]) for m in got[:-1]}
        assert sorted(f["message"] for f in faults) == sorted(i + 1 for i in dropped), faults
        return dropped, proxy.ready
    return scenario()


def test_probability_is_reproducible_with_seed(fault_proxy):
    async def scenario():
        async with upstream(None) as up:
            first, ready = await dropped_indices(fault_proxy, up, 7)
            assert ready["seed"] == 7
            second, _ = await dropped_indices(fault_proxy, up, 7)
            from_file, ready = await dropped_indices(fault_proxy, up, None, file_seed=7)
            assert ready["seed"] == 7, "the file's seed is used without --seed"
            overridden, _ = await dropped_indices(fault_proxy, up, 7, file_seed=99)
            other, _ = await dropped_indices(fault_proxy, up, 8)
        assert 0 < len(first) < 40, first
        assert first == second == from_file == overridden
        print(f"seed 7 drops {sorted(first)}; seed 8 drops {sorted(other)}")
        assert other != first, "seed 8 happens to drop the same messages as seed 7"

    run(scenario(), timeout=90)


# --------------------------------------------------------------------------
# Log formats
# --------------------------------------------------------------------------


def test_fault_line_in_text_log(wsinspect_bin, tmp_path):
    """--format text: an applied fault is a `fault ACTION [RULE]` line, in its place among the frames."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"id": "drop-secret", "action": "drop", "match": {"text": "^secret"}}]))

    async def scenario():
        async with upstream(None) as up:
            proxy = ProxyProcess(wsinspect_bin, up.url, tmp_path / "text", ["--rules", str(rules), "--seed", "7"],
                                 fmt="text", wait=False)
            try:
                deadline = time.monotonic() + 20
                while not (proxy.ready_path.exists() and proxy.ready_path.read_text().endswith("\n")):
                    assert proxy.proc.poll() is None and time.monotonic() < deadline, proxy.describe()
                    await asyncio.sleep(0.02)
                proxy.address = proxy.ready_path.read_text().strip()
                async with client(proxy) as ws:
                    await ws.send("secret x")
                    await ws.send("visible")
                    assert await recv_n(ws, 1) == ["visible"]
                await asyncio.sleep(0.3)
                assert await asyncio.to_thread(proxy.stop) == 0, proxy.describe()
            finally:
                if proxy.proc.poll() is None:
                    proxy.proc.kill()
                    proxy.proc.wait()
        text = proxy.log_path.read_text()
        lines = text.splitlines()
        faults = [i for i, line in enumerate(lines) if re.match(r"[\d:.]+ #1 C→S fault drop \[drop-secret\] ", line)]
        assert len(faults) == 1, text[-2000:]
        # Logged where the dropped message was: before the frame that followed it.
        visible = [i for i, line in enumerate(lines) if "C→S text" in line and '"visible"' in line]
        assert visible and faults[0] < visible[0], text[-2000:]

    run(scenario())


# --------------------------------------------------------------------------
# Rules files
# --------------------------------------------------------------------------

YAML_RULES = """\
# a comment
seed: 42
rules:
  - id: drop-secret     # drop what the server says in secret
    action: drop
    direction: to-client
    match:
      text: "^secret"
"""
YAML_LIST = """\
- id: drop-secret
  action: drop
  direction: to-client
  match: {text: "^secret"}
"""
JSON_RULES = json.dumps({"rules": [{"id": "drop-secret", "action": "drop", "direction": "to-client",
                                    "match": {"text": "^secret"}}]})
JSON_LIST = json.dumps([{"id": "drop-secret", "action": "drop", "direction": "to-client",
                         "match": {"text": "^secret"}}])


@pytest.mark.parametrize("text,suffix,seed", [
    (YAML_RULES, ".yaml", None), (YAML_LIST, ".yml", 7), (JSON_RULES, ".json", None), (JSON_LIST, ".json", 7),
    (YAML_RULES, ".rules", 7), (JSON_LIST, ".rules", 7),
], ids=["yaml", "yaml-list", "json", "json-list", "other-ext-yaml", "other-ext-json"])
def test_rules_file_formats_load(fault_proxy, text, suffix, seed):
    async def scenario():
        async with fault_session(fault_proxy, None, text, seed=seed, suffix=suffix) as (up, proxy):
            if seed is None and "seed: 42" in text:
                assert proxy.ready["seed"] == 42
            status, rules = await aapi(proxy, "GET", "/rules")
            assert status == 200 and [r["id"] for r in rules] == ["drop-secret"], rules
            assert rules[0]["action"] == "drop" and rules[0]["match"]["text"] == "^secret", rules
            async with client(proxy) as ws:
                await ws.send("secret x")
                await ws.send("visible")
                assert await recv_n(ws, 1) == ["visible"]
            events = await stop(proxy)
        assert len(fault_events(events, "drop-secret")) == 1

    run(scenario())


SAMPLE_RULES = sorted((HERE.parents[1] / "samples" / "rules").glob("*.*"))


@pytest.mark.parametrize("path", SAMPLE_RULES, ids=[p.name for p in SAMPLE_RULES])
def test_sample_rules_files_load(fault_proxy, path):
    """samples/rules/*: the proxy accepts each file and lists its rules, ids and seed as written."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the sample YAML in the test")
    want = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    proxy = fault_proxy(f"ws://127.0.0.1:{free_port()}", path.read_text(), seed=None, suffix=path.suffix)
    if "seed" in want:
        assert proxy.ready["seed"] == want["seed"]
    status, rules = api(proxy, "GET", "/rules")
    assert status == 200 and [r["id"] for r in rules] == [r["id"] for r in want["rules"]], rules
    for got, rule in zip(rules, want["rules"]):
        assert got["action"] == rule["action"], (got, rule)


BAD_RULES = [
    ("unknown-action", {"rules": [{"action": "explode"}]}, ".json", ["explode"]),
    ("bad-regex", [{"action": "drop", "match": {"text": "(unclosed"}}], ".json", ["(unclosed", "regex", "regular"]),
    ("bad-direction", [{"action": "drop", "direction": "sideways"}], ".json", ["sideways"]),
    ("fragment-size-0", [{"action": "fragment", "size": 0}], ".json", ["size"]),
    ("probability-1.5", [{"action": "drop", "probability": 1.5}], ".json", ["probability"]),
    ("corrupt-kind", [{"action": "corrupt", "kind": "bitrot"}], ".json", ["bitrot"]),
    ("opcode-name", [{"action": "drop", "match": {"opcode": "frobnicate"}}], ".json", ["frobnicate"]),
    ("not-rules", 42, ".json", []),
    ("yaml-syntax", "rules:\n  - action: drop\n    match: {text: [\n", ".yaml", []),
    ("json-syntax", '{"rules": [', ".json", []),
]


@pytest.mark.parametrize("content,suffix,mentions", [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES])
def test_invalid_rules_exit_64(wsinspect_bin, tmp_path, content, suffix, mentions):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    r = run_cli(wsinspect_bin, "--rules", str(path))
    assert r.returncode == 64, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip(), "a message on stderr"
    assert "listening" not in r.stdout, r.stdout
    if mentions:
        assert any(m.lower() in r.stderr.lower() for m in mentions), (mentions, r.stderr)


@pytest.mark.parametrize("seed", ["-1", "abc", "18446744073709551616"])
def test_invalid_seed_exit_64(wsinspect_bin, seed):
    r = run_cli(wsinspect_bin, "--control", "127.0.0.1:0", "--seed", seed)
    assert r.returncode == 64, (r.returncode, r.stdout, r.stderr)
    assert "seed" in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_unreadable_rules_file_exit_66(wsinspect_bin, tmp_path, what):
    path = tmp_path / "nope.yaml"
    if what == "directory":
        path.mkdir()
    r = run_cli(wsinspect_bin, "--rules", str(path))
    assert r.returncode == 66, (r.returncode, r.stdout, r.stderr)
    assert str(path) in r.stderr or "nope.yaml" in r.stderr, r.stderr


def run_cli(wsinspect_bin, *args, env=None) -> subprocess.CompletedProcess:
    """A proxy that is expected to refuse to start; killed (and the test failed) if it starts."""
    cmd = [str(wsinspect_bin), "proxy", "--listen", "127.0.0.1:0", "--upstream", "ws://127.0.0.1:9", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"{cmd} started instead of exiting with an error\nstdout: {out}\nstderr: {err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# --------------------------------------------------------------------------
# Control API
# --------------------------------------------------------------------------


def endpoint(address) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def only_connection(proxy) -> dict:
    status, conns = await aapi(proxy, "GET", "/connections")
    assert status == 200 and isinstance(conns, list) and len(conns) == 1, (status, conns)
    return conns[0]


def test_control_lists_connections(fault_proxy):
    async def scenario():
        async with fault_session(fault_proxy) as (up, proxy):
            status, conns = await aapi(proxy, "GET", "/connections")
            assert (status, conns) == (200, [])
            async with client(proxy, None, "/chat?room=1") as ws:
                for m in ("one", "two ✓"):
                    await ws.send(m)
                assert await recv_n(ws, 2) == ["one", "two ✓"]
                c = await only_connection(proxy)
                assert isinstance(c["id"], int)
                assert c["path"] == "/chat?room=1"
                assert c["state"] == "open"
                assert c["client"] == endpoint(ws.local_address)
                assert c["server"] == f"127.0.0.1:{up.port}"
                for key in ("to_server", "to_client"):
                    assert c[key]["messages"] == 2 and c[key]["bytes"] >= len("one" "two ✓".encode()), c
                    assert c[key]["paused"] is False, c
            deadline = time.monotonic() + 10
            while (await aapi(proxy, "GET", "/connections"))[1] != []:
                assert time.monotonic() < deadline, "closed connections disappear from /connections"
                await asyncio.sleep(0.05)
            await stop(proxy)

    run(scenario())


@COMPRESSION
def test_control_sends_messages(fault_proxy, compression):
    blob = bytes(range(200))

    async def scenario():
        async with fault_session(fault_proxy, compression) as (up, proxy):
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send(f"hello {FILLER}")
                assert await recv_n(ws, 1) == [f"hello {FILLER}"]
                cid = (await only_connection(proxy))["id"]
                status, body = await aapi(proxy, "POST", f"/connections/{cid}/messages",
                                          {"direction": "to-client", "text": "from the control API ✓"})
                assert (status, body) == (202, {"queued": True})
                assert await recv_n(ws, 1) == ["from the control API ✓"]
                status, body = await aapi(proxy, "POST", f"/connections/{cid}/messages",
                                          {"direction": "to-server", "base64": base64.b64encode(blob).decode(),
                                           "opcode": 2})
                assert (status, body) == (202, {"queued": True})
                assert await recv_n(ws, 1) == [blob]  # the server's echo
                status, _ = await aapi(proxy, "POST", f"/connections/{cid}/messages",
                                       {"direction": "to-client", "base64": base64.b64encode(b"api-ping").decode(),
                                        "opcode": "ping"})
                assert status == 202
                await asyncio.to_thread(proxy.wait_for, lambda ev: any(
                    f["direction"] == C2S and f["opcodeName"] == "pong" and b64d(f["payloadBase64"]) == b"api-ping"
                    for f in of_type(ev, "frame")), 10, "the client's pong")
                await ws.send(f"after {FILLER}")
                assert await recv_n(ws, 1) == [f"after {FILLER}"]
            side = await up.ended()
            assert side.received == [f"hello {FILLER}", blob, f"after {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, local)
        assert payloads(events, conn, S2C) == [f"hello {FILLER}", "from the control API ✓", blob, f"after {FILLER}"]
        assert controls(events, conn, S2C, "ping") == [b"api-ping"]
        check_clean_log(events, connections=1)

    run(scenario())


def test_control_close(fault_proxy):
    async def scenario():
        async with fault_session(fault_proxy) as (up, proxy):
            async with client(proxy, None, "/first") as ws:
                cid = (await only_connection(proxy))["id"]
                status, _ = await aapi(proxy, "POST", f"/connections/{cid}/close",
                                       {"code": 4001, "reason": "admin says bye", "direction": "to-client"})
                assert status == 202
                got, exc, _ = await recv_until_closed(ws)
            assert got == [] and exc.rcvd is not None and (exc.rcvd.code, exc.rcvd.reason) == (4001, "admin says bye")
            await up.ended(0)
            await asyncio.to_thread(proxy.wait_for_type, "connection-close", 1)
            async with client(proxy, None, "/second") as ws:
                cid = (await only_connection(proxy))["id"]
                status, _ = await aapi(proxy, "POST", f"/connections/{cid}/close", {})  # defaults: 1000, both
                assert status == 202
                got, exc, _ = await recv_until_closed(ws)
            assert exc.rcvd is not None and exc.rcvd.code == 1000, exc
            side = await up.ended(1)
            assert side.rcvd is not None and side.rcvd.code == 1000, side
            await stop(proxy, 2)

    run(scenario())


@COMPRESSION
def test_control_pause_resume(fault_proxy, compression):
    held = [f"p{i} {FILLER}" for i in range(3)]

    async def scenario():
        async with fault_session(fault_proxy, compression) as (up, proxy):
            async with connected(proxy, compression) as ws:
                cid = (await only_connection(proxy))["id"]
                status, _ = await aapi(proxy, "POST", f"/connections/{cid}/pause", {"direction": "to-client"})
                assert status == 200
                await ws.send(cmd_send(held))
                await nothing_arrives(ws, 0.5)
                c = await only_connection(proxy)
                assert (c["to_client"]["paused"], c["to_server"]["paused"]) == (True, False), c
                status, _ = await aapi(proxy, "POST", f"/connections/{cid}/resume", {"direction": "to-client"})
                assert status == 200
                assert await recv_n(ws, 3) == held

                side = await up.side()
                status, _ = await aapi(proxy, "POST", f"/connections/{cid}/pause", {"direction": "to-server"})
                assert status == 200
                await ws.send("held up")
                await ws.send("held up too")
                await asyncio.sleep(0.4)
                assert "held up" not in side.received
                status, _ = await aapi(proxy, "POST", f"/connections/{cid}/resume", {"direction": "to-server"})
                assert status == 200
                assert await recv_n(ws, 2) == ["held up", "held up too"]
                c = await only_connection(proxy)
                assert (c["to_client"]["paused"], c["to_server"]["paused"]) == (False, False), c
            events = await stop(proxy)
        check_clean_log(events, connections=1)

    run(scenario())


def test_default_rule_ids_follow_file_order(fault_proxy):
    """A rule without an id is "rule-N", N its position in the file."""
    rules = [{"action": "drop", "match": {"text": "^x"}},
             {"id": "named", "action": "delay", "ms": 1, "direction": "to-server", "match": {"text": "^never"}},
             {"action": "drop", "match": {"text": "^nothing"}}]
    proxy = fault_proxy(f"ws://127.0.0.1:{free_port()}", rules)
    status, got = api(proxy, "GET", "/rules")
    assert status == 200 and [r["id"] for r in got] == ["rule-1", "named", "rule-3"], got
    assert got[1]["action"] == "delay" and got[1]["ms"] == 1 and got[1]["match"] == {"text": "^never"}, got


@COMPRESSION
def test_control_rules_at_runtime(fault_proxy, compression):
    file_rules = [{"id": "file-rule", "action": "delay", "ms": 1, "direction": "to-server",
                   "match": {"text": "^never"}},
                  {"id": "rule-2", "action": "drop", "match": {"text": "^nothing"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, file_rules) as (up, proxy):
            status, rules = await aapi(proxy, "GET", "/rules")
            assert status == 200 and [r["id"] for r in rules] == ["file-rule", "rule-2"], rules
            assert rules[0]["action"] == "delay" and rules[0]["ms"] == 1
            async with connected(proxy, compression) as ws:
                local = ws.local_address
                await ws.send(f"secret 0 {FILLER}")
                assert await recv_n(ws, 1) == [f"secret 0 {FILLER}"]
                status, created = await aapi(proxy, "POST", "/rules", {"id": "live-drop", "action": "drop",
                                                                       "direction": "to-client",
                                                                       "match": {"text": "^secret"}})
                created = created if isinstance(created, list) else [created]
                assert status == 201 and [r["id"] for r in created] == ["live-drop"], (status, created)
                await ws.send(f"secret 1 {FILLER}")
                await ws.send(f"marker 1 {FILLER}")
                assert await recv_n(ws, 1) == [f"marker 1 {FILLER}"], "the new rule applies to the open connection"
                status, body = await aapi(proxy, "DELETE", "/rules/live-drop")
                assert status == 204, (status, body)
                await ws.send(f"secret 2 {FILLER}")
                assert await recv_n(ws, 1) == [f"secret 2 {FILLER}"], "a deleted rule stops"
                assert (await aapi(proxy, "DELETE", "/rules/live-drop"))[0] == 404

                status, created = await aapi(proxy, "POST", "/rules", [
                    {"action": "delay", "ms": 1, "match": {"text": "^zzz"}},
                    {"action": "drop", "direction": "to-server", "match": {"text": "^yyy"}}])
                assert status == 201 and len(created) == 2, (status, created)
                ids = [r["id"] for r in created]
                assert len(set(ids) | {"file-rule", "rule-2"}) == 4, ids
                status, body = await aapi(proxy, "POST", "/rules", {"action": "explode"})
                assert status == 400 and is_error_object(body), (status, body)
                status, body = await aapi(proxy, "POST", "/rules", {"action": "drop", "match": {"text": "(bad"}})
                assert status == 400 and is_error_object(body), (status, body)
                status, rules = await aapi(proxy, "GET", "/rules")
                assert [r["id"] for r in rules] == ["file-rule", "rule-2", *ids], rules
                await ws.send("yyy dropped on the way up")
                await ws.send(f"tail {FILLER}")
                assert await recv_n(ws, 1) == [f"tail {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, local)
        assert [f["message"] for f in fault_events(events, "live-drop")] == [2]
        assert [f["direction"] for f in fault_events(events, ids[1])] == [C2S]
        check_clean_log(events, connections=1)

    run(scenario())


def test_control_errors(fault_proxy):
    async def scenario():
        async with fault_session(fault_proxy) as (up, proxy):
            status, body = await aapi(proxy, "GET", "/nope")
            assert status == 404 and is_error_object(body), (status, body)
            status, body = await aapi(proxy, "POST", "/connections/999/messages",
                                      {"direction": "to-client", "text": "x"})
            assert status == 404 and is_error_object(body), (status, body)
            status, body = await aapi(proxy, "POST", "/connections/999/close", {})
            assert status == 404 and is_error_object(body), (status, body)
            async with client(proxy) as ws:
                cid = (await only_connection(proxy))["id"]
                for bad in (b"{not json", json.dumps({"direction": "sideways", "text": "x"}).encode(),
                            json.dumps({"direction": "to-client"}).encode(),
                            json.dumps({"direction": "to-client", "base64": "!!not base64!!"}).encode(),
                            json.dumps(["to-client", "x"]).encode()):
                    status, body = await aapi(proxy, "POST", f"/connections/{cid}/messages", raw=bad)
                    assert status == 400 and is_error_object(body), (bad, status, body)
                await ws.send("still fine")
                assert await recv_n(ws, 1) == ["still fine"]
            await stop(proxy)

    run(scenario())


def test_control_409_before_upgrade(fault_proxy):
    """A connection whose upstream has not answered the upgrade yet: listed as "handshake";
    sending a message to it is 409."""
    def slow_101(conn, record):
        head, _ = read_head(conn)
        time.sleep(2.0)
        conn.sendall(switching_protocols(head))
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass

    with RawUpstream(slow_101) as up:
        proxy = fault_proxy(up.url)
        with connect_raw(proxy.address) as s:
            s.sendall(upgrade_request("/slow"))
            deadline = time.monotonic() + 1.6
            conns = []
            while time.monotonic() < deadline:
                status, conns = api(proxy, "GET", "/connections")
                if conns:
                    break
                time.sleep(0.02)
            assert len(conns) == 1 and conns[0]["state"] == "handshake" and conns[0]["path"] == "/slow", conns
            status, body = api(proxy, "POST", f"/connections/{conns[0]['id']}/messages",
                               {"direction": "to-client", "text": "too early"})
            assert status == 409 and is_error_object(body), (status, body)
            head, _ = read_head(s)
            assert head.startswith(b"HTTP/1.1 101 ")


def test_control_token(fault_proxy, monkeypatch):
    async def scenario():
        async with fault_session(fault_proxy, token="s3cret") as (up, proxy):
            assert (await aapi(proxy, "GET", "/connections"))[0] == 401
            assert (await aapi(proxy, "GET", "/connections", token="wrong"))[0] == 401
            assert (await aapi(proxy, "GET", "/rules"))[0] == 401
            assert (await aapi(proxy, "POST", "/rules", {"action": "drop"}))[0] == 401
            assert await aapi(proxy, "GET", "/connections", token="s3cret") == (200, [])
            assert (await aapi(proxy, "GET", "/rules"))[0] == 401, "still required"
            assert (await aapi(proxy, "GET", "/nope"))[0] == 401, "every request needs the token"

            monkeypatch.setenv("WSINSPECT_CONTROL_TOKEN", "from-env")
            proxy = await asyncio.to_thread(fault_proxy, up.url)
            assert (await aapi(proxy, "GET", "/connections"))[0] == 401
            assert await aapi(proxy, "GET", "/connections", token="from-env") == (200, [])

    run(scenario())


def test_control_non_loopback_needs_token(wsinspect_bin, fault_proxy):
    env = {k: v for k, v in os.environ.items() if k != "WSINSPECT_CONTROL_TOKEN"}
    r = run_cli(wsinspect_bin, "--control", "0.0.0.0:0", env=env)
    assert r.returncode == 64, (r.returncode, r.stdout, r.stderr)
    assert "token" in r.stderr.lower(), r.stderr
    proxy = fault_proxy(f"ws://127.0.0.1:{free_port()}", token="s3cret", control_address="0.0.0.0:0")
    assert proxy.control.startswith("0.0.0.0:")
    port = proxy.control.rpartition(":")[2]
    proxy.control = f"127.0.0.1:{port}"
    assert api(proxy, "GET", "/connections", token="s3cret") == (200, [])


# --------------------------------------------------------------------------
# Node ws behind the proxy
# --------------------------------------------------------------------------


@pytest.fixture
def node_echo_server(request, tmp_path):
    reason = node_prerequisites_missing()
    if reason:
        pytest.skip(reason)
    deflate = bool(request.param)
    log = tmp_path / "node_peer.json"
    cmd = ["node", str(HERE / "peers" / "node_ws_server.js"), "--host", "127.0.0.1", "--log", str(log)]
    proc = subprocess.Popen(cmd + (["--deflate"] if deflate else []), env=dict(os.environ, NODE_PATH=NODE_PATH),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.fullmatch(r"LISTENING (\d+)\n", line)
    if not m:
        proc.kill()
        raise AssertionError(f"node ws server did not start: {line!r} {proc.stderr.read()}")
    yield int(m.group(1)), deflate, log, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("node_echo_server", [False, True], ids=["plain", "deflate"], indirect=True)
def test_node_ws_server_drop_and_inject(fault_proxy, node_echo_server):
    """Node `ws` echo server behind the proxy: a to-client drop and a to-server inject
    (masked, and with compression sent uncompressed) that ws accepts and echoes."""
    port, deflate, node_log, node = node_echo_server
    compression = "deflate" if deflate else None
    rules = [{"id": "drop-secret", "action": "drop", "direction": "to-client", "match": {"text": "^secret"}},
             {"id": "tag", "action": "inject", "direction": "to-server", "match": {"text": "^hello"},
              "text": "injected to node ✓"}]

    async def scenario():
        proxy = await asyncio.to_thread(fault_proxy, f"ws://127.0.0.1:{port}", rules)
        async with connected(proxy, compression) as ws:
            local = ws.local_address
            for m in (f"hello node {FILLER}", f"secret 1 {FILLER}", f"after {FILLER}"):
                await ws.send(m)
            assert await recv_n(ws, 3) == [f"hello node {FILLER}", "injected to node ✓", f"after {FILLER}"]
            await ws.send("ping me")  # ws pings (the client answers) and sends "pinged"
            assert await recv_n(ws, 1) == ["pinged"]
        await asyncio.to_thread(node.wait, 10)
        events = await stop(proxy)
        return local, events

    local, events = run(scenario())
    peer = json.loads(node_log.read_text())["connections"][0]["server_events"]
    recv_texts = [b64d(e["data"]).decode() for e in peer if e["op"] == "recv" and e["type"] == "text"]
    assert recv_texts == [f"hello node {FILLER}", "injected to node ✓", f"secret 1 {FILLER}", f"after {FILLER}",
                          "ping me"]
    assert [e["code"] for e in peer if e["op"] == "recv" and e["type"] == "close"] == [1000]
    conn = connection_for(events, local)
    assert [(f["rule"], f["direction"]) for f in fault_events(events)] == [("tag", C2S), ("drop-secret", S2C)]
    assert controls(events, conn, S2C, "ping") == [b"node-ping"]
    assert controls(events, conn, C2S, "pong") == [b"node-ping"]
    check_clean_log(events, connections=1)


@pytest.mark.parametrize("node_echo_server", [False, True], ids=["plain", "deflate"], indirect=True)
def test_node_ws_server_delay(fault_proxy, node_echo_server):
    """delay behind a Node `ws` server: to-client 300 ms (the held message arrives ≥ 0.3 s
    after it was sent, later ones wait behind it), to-server 200 ms (the echo ≥ 0.2 s)."""
    port, deflate, node_log, node = node_echo_server
    compression = "deflate" if deflate else None
    rules = [{"id": "slow", "action": "delay", "ms": 300, "direction": "to-client", "match": {"text": "^slow"}},
             {"id": "lag", "action": "delay", "ms": 200, "direction": "to-server", "match": {"text": "^lag"}}]

    async def scenario():
        proxy = await asyncio.to_thread(fault_proxy, f"ws://127.0.0.1:{port}", rules)
        async with connected(proxy, compression) as ws:
            local = ws.local_address
            t0 = time.monotonic()
            await ws.send(f"slow one {FILLER}")
            await ws.send(f"fast two {FILLER}")
            first = await asyncio.wait_for(ws.recv(), 10)
            t1 = time.monotonic()
            second = await asyncio.wait_for(ws.recv(), 10)
            assert [first, second] == [f"slow one {FILLER}", f"fast two {FILLER}"], "order holds"
            assert t1 - t0 >= 0.3, t1 - t0
            t0 = time.monotonic()
            await ws.send(f"lag {FILLER}")
            assert await recv_n(ws, 1) == [f"lag {FILLER}"]
            assert time.monotonic() - t0 >= 0.2, time.monotonic() - t0
            await ws.send(f"after {FILLER}")
            assert await recv_n(ws, 1) == [f"after {FILLER}"]
        await asyncio.to_thread(node.wait, 10)
        return local, await stop(proxy)

    local, events = run(scenario())
    want = [f"slow one {FILLER}", f"fast two {FILLER}", f"lag {FILLER}", f"after {FILLER}"]
    assert node_texts(node_log, "recv") == want
    conn = connection_for(events, local)
    assert [(f["rule"], f["action"], f["direction"], f.get("message")) for f in fault_events(events)] == [
        ("slow", "delay", S2C, 1), ("lag", "delay", C2S, 3)]
    assert payloads(events, conn, S2C) == want
    assert all(m["compressed"] is deflate for m in messages_of(events, conn, S2C)), "nothing had to be re-encoded"
    check_clean_log(events, connections=1)


@pytest.mark.parametrize("node_echo_server", [False, True], ids=["plain", "deflate"], indirect=True)
def test_node_ws_server_rewrite_set(fault_proxy, node_echo_server):
    """rewrite `set` both ways with a Node `ws` server: ws receives the new payload (to-server),
    the client gets the new payload (to-client); later messages inflate correctly on both."""
    port, deflate, node_log, node = node_echo_server
    compression = "deflate" if deflate else None
    rules = [{"id": "rename", "action": "rewrite", "direction": "to-server", "match": {"text": "^name="},
              "set": "name=bob ✓"},
             {"id": "status", "action": "rewrite", "direction": "to-client", "match": {"text": "^status"},
              "set": "status: rewritten ✓"}]

    async def scenario():
        proxy = await asyncio.to_thread(fault_proxy, f"ws://127.0.0.1:{port}", rules)
        async with connected(proxy, compression) as ws:
            local = ws.local_address
            await ws.send(f"name=alice {FILLER}")
            assert await recv_n(ws, 1) == ["name=bob ✓"]  # ws echoes what it got
            await ws.send(f"status ok {FILLER}")
            assert await recv_n(ws, 1) == ["status: rewritten ✓"]
            for i in range(3):
                await ws.send(f"tail {i} {FILLER}")
            assert await recv_n(ws, 3) == [f"tail {i} {FILLER}" for i in range(3)]
        await asyncio.to_thread(node.wait, 10)
        return local, await stop(proxy)

    local, events = run(scenario())
    tails = [f"tail {i} {FILLER}" for i in range(3)]
    assert node_texts(node_log, "recv") == ["name=bob ✓", f"status ok {FILLER}", *tails]
    assert node_texts(node_log, "send") == ["name=bob ✓", f"status ok {FILLER}", *tails]
    conn = connection_for(events, local)
    assert [(f["rule"], f["action"], f["direction"], f.get("message")) for f in fault_events(events)] == [
        ("rename", "rewrite", C2S, 1), ("status", "rewrite", S2C, 2)]
    assert payloads(events, conn, C2S) == ["name=bob ✓", f"status ok {FILLER}", *tails]
    assert payloads(events, conn, S2C) == ["name=bob ✓", "status: rewritten ✓", *tails]
    # a changed message goes out uncompressed; ws's echo of it is compressed again (when on)
    assert [m["compressed"] for m in messages_of(events, conn, C2S)][:1] == [False]
    assert [m["compressed"] for m in messages_of(events, conn, S2C)][:2] == [deflate, False]
    check_clean_log(events, connections=1)


@pytest.mark.parametrize("node_echo_server", [False, True], ids=["plain", "deflate"], indirect=True)
def test_node_ws_server_drop_pongs_client_keepalive(fault_proxy, node_echo_server):
    """drop pongs to-client in front of a Node `ws` server (which answers pings itself): the
    websockets client (ping_interval 0.2, ping_timeout 0.5) fails with 1011 "keepalive ping
    timeout", and that close reaches ws."""
    port, deflate, node_log, node = node_echo_server
    compression = "deflate" if deflate else None
    rules = [{"id": "drop-pongs", "action": "drop", "direction": "to-client", "match": {"opcode": "pong"}}]

    async def scenario():
        proxy = await asyncio.to_thread(fault_proxy, f"ws://127.0.0.1:{port}", rules)
        async with connected(proxy, compression, ping_interval=0.2, ping_timeout=0.5) as ws:
            local = ws.local_address
            await ws.send(f"are you there? {FILLER}")
            assert await recv_n(ws, 1) == [f"are you there? {FILLER}"]
            got, exc, elapsed = await recv_until_closed(ws, timeout=10)
        assert got == []
        assert exc.sent is not None and (exc.sent.code, exc.sent.reason) == (1011, "keepalive ping timeout"), exc
        assert elapsed >= 0.3, elapsed
        await asyncio.to_thread(node.wait, 10)
        return local, await stop(proxy)

    local, events = run(scenario())
    peer = json.loads(node_log.read_text())["connections"][0]["server_events"]
    pings = [b64d(e["data"]) for e in peer if e["op"] == "recv" and e["type"] == "ping"]
    assert len(pings) >= 1, peer
    assert [(e["code"], e["reason"]) for e in peer if e["op"] == "recv" and e["type"] == "close"] == [
        (1011, "keepalive ping timeout")]
    conn = connection_for(events, local)
    assert controls(events, conn, C2S, "ping") == pings
    assert controls(events, conn, S2C, "pong") == [], "ws's automatic pongs were all dropped"
    faults = fault_events(events, "drop-pongs")
    assert faults and all((f["action"], f["direction"], f.get("opcode")) == ("drop", S2C, "pong")
                          for f in faults), faults
    assert len(faults) == len(pings), "every pong dropped"
    check_clean_log(events, connections=1)


def node_texts(node_log: Path, op: str) -> list[str]:
    """The text messages the Node `ws` server received (op "recv") or sent ("send")."""
    peer = json.loads(node_log.read_text())["connections"][0]["server_events"]
    return [b64d(e["data"]).decode() for e in peer if e["op"] == op and e["type"] == "text"]


# --------------------------------------------------------------------------
# Node ws as the client
# --------------------------------------------------------------------------

NODE_FAULT_CLIENT = HERE / "peers" / "node_ws_fault_client.js"


@pytest.fixture
def node_ws():
    """Skips unless node can require('ws') (Debian node-ws, NODE_PATH=/usr/share/nodejs)."""
    reason = node_prerequisites_missing()
    if reason:
        pytest.skip(reason)


class NodeClient:
    """peers/node_ws_fault_client.js in a subprocess: commands as JSON lines on its stdin, its
    events (open, message, ping, pong, error, close) as JSON lines on its stdout."""

    def __init__(self, proc):
        self.proc = proc
        self.events: list[dict] = []
        self.local_address: tuple = ()

    @property
    def closed(self) -> dict | None:
        return next((e for e in self.events if e["event"] == "close"), None)

    @property
    def errors(self) -> list[dict]:
        return [e for e in self.events if e["event"] == "error"]

    async def event(self, timeout: float = 10) -> dict:
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"node client: no event within {timeout} s; events so far {self.events}") from None
        if not line:
            rc = await asyncio.wait_for(self.proc.wait(), 10)
            err = (await self.proc.stderr.read()).decode("utf-8", "replace")
            raise AssertionError(f"node client exited with {rc}; events {self.events}; stderr: {err}")
        ev = json.loads(line)
        self.events.append(ev)
        return ev

    async def command(self, **cmd) -> None:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def send(self, msg) -> None:
        if isinstance(msg, str):
            await self.command(op="send", text=msg)
        else:
            await self.command(op="send", base64=base64.b64encode(msg).decode())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.command(op="close", code=code, reason=reason)

    @staticmethod
    def message(ev: dict):
        return ev["text"] if ev["type"] == "text" else base64.b64decode(ev["base64"])

    async def recv_n(self, n: int, timeout: float = 10) -> list:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            ev = await self.event(max(0.01, deadline - time.monotonic()))
            if ev["event"] == "message":
                got.append(self.message(ev))
            elif ev["event"] in ("close", "error", "unexpected-response", "command-failed"):
                raise AssertionError(f"node client: {ev} while waiting for message {len(got) + 1} of {n}; got {got}")
        return got

    async def until_closed(self, timeout: float = 10) -> tuple[list, dict, float]:
        """Messages received until ws's 'close' event, that event, seconds taken."""
        got = []
        t0 = time.monotonic()
        deadline = t0 + timeout
        while self.closed is None:
            ev = await self.event(max(0.01, deadline - time.monotonic()))
            if ev["event"] == "message":
                got.append(self.message(ev))
        return got, self.closed, time.monotonic() - t0


@contextlib.asynccontextmanager
async def node_client(proxy: ProxyProcess, compression: str | None = None, path: str = "/"):
    """A Node `ws` client through the proxy, perMessageDeflate on (threshold 0) when `compression`
    is set; checks that permessage-deflate was negotiated exactly then. Closes with 1000 at the
    end unless the connection is closed already, and checks that node exits 0."""
    deflate = bool(compression)
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_FAULT_CLIENT), "--url", proxy.url(path), *(["--deflate"] if deflate else []),
        env=dict(os.environ, NODE_PATH=NODE_PATH), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    nc = NodeClient(proc)
    try:
        opened = await nc.event()
        assert opened["event"] == "open", opened
        assert ("permessage-deflate" in opened["extensions"]) == deflate, opened
        nc.local_address = tuple(opened["local"])
        yield nc
        if nc.closed is None:
            await nc.close()
            await nc.until_closed()
        rc = await asyncio.wait_for(proc.wait(), 10)
        assert rc == 0, (rc, nc.events)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def check_node_compression(events, conn, compression) -> None:
    """The log saw permessage-deflate exactly when asked, and the Node client compressed what
    it sent (threshold 0): its first message, which no fault touched, went through compressed.
    (Later ones may be copies or changes the proxy sent uncompressed.)"""
    (opened,) = of_type(events, "connection-open", conn)
    assert bool(opened["compression"]) == bool(compression), opened
    sent = messages_of(events, conn, C2S)
    assert sent and sent[0]["compressed"] is bool(compression), [(m["text"], m["compressed"]) for m in sent]
    if not compression:
        assert not any(m["compressed"] for m in sent)


@COMPRESSION
def test_node_client_drop_text_match(fault_proxy, node_ws, compression):
    """drop `^secret` (both directions) between a Node `ws` client and a websockets server:
    the dropped messages are missing, the others intact and in order, and later messages in
    both directions still arrive intact (both inflaters stay in step)."""
    rules = {"rules": [{"id": "drop-secret", "action": "drop", "match": {"text": "^secret"}}]}
    up_msgs = [f"hello 0 {FILLER}", f"secret a {FILLER}", f"hello 1 {FILLER}"]
    batch1 = [f"public 1 {FILLER}", f"secret 2 {FILLER}", f"public 3 {FILLER}", f"secret 4 {FILLER}",
              f"public 5 {FILLER}"]
    blob = bytes(range(256)) * 4
    batch2 = [f"public 6 {FILLER}", blob, f"public 7 {FILLER}"]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with node_client(proxy, compression) as nc:
                for m in up_msgs:
                    await nc.send(m)
                assert await nc.recv_n(2) == [up_msgs[0], up_msgs[2]]
                await nc.send(cmd_send(batch1))
                assert await nc.recv_n(3) == [batch1[0], batch1[2], batch1[4]]
                await nc.send(f"hello 2 {FILLER}")
                await nc.send(cmd_send(batch2))
                assert await nc.recv_n(4) == [f"hello 2 {FILLER}", *batch2]
                await nc.send(f"secret b {FILLER}")
                await nc.send(blob)
                assert await nc.recv_n(1) == [blob]
            assert (nc.closed["code"], nc.errors) == (1000, []), nc.events
            side = await up.ended()
            assert side.received == [up_msgs[0], up_msgs[2], cmd_send(batch1), f"hello 2 {FILLER}",
                                     cmd_send(batch2), blob]
            assert side.rcvd is not None and side.rcvd.code == 1000, side
            events = await stop(proxy)
        conn = connection_for(events, nc.local_address)
        faults = fault_events(events, "drop-secret")
        assert [(f["direction"], f["action"], f.get("opcode"), f.get("message"), f["connection"]) for f in faults] == [
            (C2S, "drop", "text", 2, conn), (S2C, "drop", "text", 4, conn), (S2C, "drop", "text", 6, conn),
            (C2S, "drop", "text", 7, conn)], faults
        assert payloads(events, conn, C2S) == side.received
        assert payloads(events, conn, S2C) == [up_msgs[0], up_msgs[2], batch1[0], batch1[2], batch1[4],
                                               f"hello 2 {FILLER}", *batch2, blob]
        check_node_compression(events, conn, compression)
        check_clean_log(events, connections=1)
        assert events[-1]["faults"] == 4

    run(scenario())


@COMPRESSION
def test_node_client_close_to_client(fault_proxy, node_ws, compression):
    """close to-client (4000, "bye") after `^quit`: ws's 'close' event reports 4000 and the
    reason; the server's echo of the next message never reaches it."""
    rules = [{"id": "bye", "action": "close", "direction": "to-client", "code": 4000, "reason": "bye",
              "match": {"text": "^quit"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with node_client(proxy, compression) as nc:
                await nc.send(f"quit {FILLER}")
                await nc.send(f"more {FILLER}")  # echoed after the close: must not reach the client
                got, closed, _ = await nc.until_closed()
            assert got == [f"quit {FILLER}"], got
            assert (closed["code"], closed["reason"]) == (4000, "bye"), nc.events
            assert nc.errors == [], nc.events
            await up.ended()
            events = await stop(proxy)
        conn = connection_for(events, nc.local_address)
        faults = fault_events(events, "bye")
        assert [(f["action"], f["direction"], f["connection"]) for f in faults] == [("close", S2C, conn)], faults
        closes = [f for f in frames_of(events, conn, S2C) if f["opcodeName"] == "close"]
        assert [(f["closeCode"], f["closeReason"]) for f in closes] == [(4000, "bye")]
        assert payloads(events, conn, S2C) == [f"quit {FILLER}"]
        check_node_compression(events, conn, compression)

    run(scenario())


@COMPRESSION
def test_node_client_corrupt_invalid_utf8(fault_proxy, node_ws, compression):
    """corrupt invalid-utf8 to-client: ws fails the connection with 1007 (error
    WS_ERR_INVALID_UTF8; its close frame 1007 reaches the server). ws stops reading once it
    has failed the connection, so its 'close' event says 1006 whatever the server answers."""
    rules = [{"id": "corrupt", "action": "corrupt", "kind": "invalid-utf8", "direction": "to-client",
              "match": {"text": "^bad"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with node_client(proxy, compression) as nc:
                await nc.send(f"good {FILLER}")
                assert await nc.recv_n(1) == [f"good {FILLER}"]
                await nc.send(f"bad message {FILLER}")
                got, closed, _ = await nc.until_closed()
            assert got == [], got
            assert [(e["code"], e["status"]) for e in nc.errors] == [("WS_ERR_INVALID_UTF8", 1007)], nc.events
            assert closed["code"] == 1006, nc.events
            side = await up.ended()
            assert side.rcvd is not None and side.rcvd.code == 1007, f"the server got {side.rcvd}"
            events = await stop(proxy)
        conn = connection_for(events, nc.local_address)
        faults = fault_events(events, "corrupt")
        assert [(f["action"], f["direction"], f["connection"]) for f in faults] == [("corrupt", S2C, conn)], faults
        (bad,) = [m for m in messages_of(events, conn, S2C) if b"bad message" in b64d(m["payloadBase64"])]
        assert b"\xff" in b64d(bad["payloadBase64"]), bad
        closes = [f for f in frames_of(events, conn, C2S) if f["opcodeName"] == "close"]
        assert [f["closeCode"] for f in closes] == [1007], closes
        check_node_compression(events, conn, compression)

    run(scenario())


@COMPRESSION
def test_node_client_fragment(fault_proxy, node_ws, compression):
    """fragment size 3 (both directions): the websockets server and the ws client each get
    the message whole; the log shows frames of at most 3 payload bytes."""
    msg = "fragment this message ✓ please"
    rules = [{"id": "slicer", "action": "fragment", "size": 3, "match": {"text": "^frag"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with node_client(proxy, compression) as nc:
                await nc.send(msg)
                assert await nc.recv_n(1) == [msg]
                await nc.send(f"whole {FILLER}")
                assert await nc.recv_n(1) == [f"whole {FILLER}"]
            assert (nc.closed["code"], nc.errors) == (1000, []), nc.events
            side = await up.ended()
            assert side.received == [msg, f"whole {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, nc.local_address)
        for direction in (C2S, S2C):
            frames = data_frames(events, conn, direction)
            end = next(i for i, f in enumerate(frames) if f["fin"])
            pieces = frames[:end + 1]
            assert len(pieces) > 1, pieces
            assert [f["opcode"] for f in pieces] == [1] + [0] * (len(pieces) - 1)
            assert [f["fin"] for f in pieces] == [False] * (len(pieces) - 1) + [True]
            assert all(f["payloadLength"] <= 3 for f in pieces), [f["payloadLength"] for f in pieces]
            assert all(f["masked"] is (direction == C2S) for f in pieces)
            if not compression:
                assert b"".join(b64d(f["payloadBase64"]) for f in pieces) == msg.encode()
            assert payloads(events, conn, direction) == [msg, f"whole {FILLER}"]
            assert messages_of(events, conn, direction)[0]["frames"] == len(pieces)
            assert len(frames) == len(pieces) + 1  # the second message was not touched
        got = [(f["action"], f["direction"]) for f in fault_events(events, "slicer")]
        assert got == [("fragment", C2S), ("fragment", S2C)], got
        check_node_compression(events, conn, compression)
        check_clean_log(events, connections=1)

    run(scenario())


@COMPRESSION
def test_node_client_inject_at_ms(fault_proxy, node_ws, compression):
    """inject to-client at 100 ms (binary) and at 300 ms (text): ws receives both, in time
    order, uncompressed; its own traffic keeps flowing afterwards."""
    blob = b"\x00\x01injected\xff"
    rules = [{"id": "blob", "action": "inject", "direction": "to-client", "opcode": "binary",
              "base64": base64.b64encode(blob).decode(), "at_ms": 100},
             {"id": "later", "action": "inject", "direction": "to-client", "text": "injected at 300 ms ✓",
              "at_ms": 300}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            t0 = time.monotonic()
            async with node_client(proxy, compression) as nc:
                assert await nc.recv_n(1) == [blob]
                assert await nc.recv_n(1) == ["injected at 300 ms ✓"]
                assert time.monotonic() - t0 >= 0.3
                await nc.send(f"after injection {FILLER}")
                assert await nc.recv_n(1) == [f"after injection {FILLER}"]
            assert (nc.closed["code"], nc.errors) == (1000, []), nc.events
            side = await up.ended()
            assert side.received == [f"after injection {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, nc.local_address)
        for rule in ("blob", "later"):
            faults = fault_events(events, rule)
            assert [(f["action"], f["direction"], f["connection"]) for f in faults] == [("inject", S2C, conn)], faults
        assert payloads(events, conn, S2C) == [blob, "injected at 300 ms ✓", f"after injection {FILLER}"]
        injected = data_frames(events, conn, S2C)[:2]
        assert all(not f["rsv1"] and f["fin"] and not f["masked"] for f in injected), injected
        check_node_compression(events, conn, compression)
        check_clean_log(events, connections=1)

    run(scenario())


@COMPRESSION
def test_node_client_duplicate(fault_proxy, node_ws, compression):
    """duplicate copies 1 to-client (`^dup`): ws receives the message twice; default copies
    to-server (`^twice`): the server gets the ws client's message twice."""
    rules = [{"id": "dup", "action": "duplicate", "copies": 1, "direction": "to-client", "match": {"text": "^dup"}},
             {"id": "twice", "action": "duplicate", "direction": "to-server", "match": {"text": "^twice"}}]

    async def scenario():
        async with fault_session(fault_proxy, compression, rules) as (up, proxy):
            async with node_client(proxy, compression) as nc:
                await nc.send(cmd_send([f"dup me {FILLER}", f"after {FILLER}"]))
                assert await nc.recv_n(3) == [f"dup me {FILLER}"] * 2 + [f"after {FILLER}"]
                await nc.send(f"twice {FILLER}")
                assert await nc.recv_n(2) == [f"twice {FILLER}"] * 2  # the server got it twice, echoed both
                await nc.send(f"tail {FILLER}")
                assert await nc.recv_n(1) == [f"tail {FILLER}"]
            assert (nc.closed["code"], nc.errors) == (1000, []), nc.events
            side = await up.ended()
            assert side.received == [cmd_send([f"dup me {FILLER}", f"after {FILLER}"]), *[f"twice {FILLER}"] * 2,
                                     f"tail {FILLER}"]
            events = await stop(proxy)
        conn = connection_for(events, nc.local_address)
        got = [(f["rule"], f["action"], f["direction"], f["connection"]) for f in fault_events(events)]
        assert got == [("dup", "duplicate", S2C, conn), ("twice", "duplicate", C2S, conn)], got
        assert payloads(events, conn, S2C) == [f"dup me {FILLER}"] * 2 + [f"after {FILLER}"] + \
            [f"twice {FILLER}"] * 2 + [f"tail {FILLER}"]
        assert payloads(events, conn, C2S) == side.received
        check_node_compression(events, conn, compression)
        check_clean_log(events, connections=1)

    run(scenario())
