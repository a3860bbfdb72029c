#!/usr/bin/env python3
"""Real-peer WebSocket scenarios for the wsinspect integration tests.

Each scenario runs a real server and a real client (Python `websockets`, or a
Node `ws` server with a Python client) on a loopback address, and writes a JSON
"peer log": what each peer sent and received, in order, per connection.

The harness (../capture.py) drives this script over a tiny line protocol so
that tcpdump can be started at exactly the right moment:

    script -> harness (stdout):  WAIT <label> <port>      e.g. WAIT server-listening 40123
    harness -> script (stdin):   GO
    script -> harness (stdout):  DONE

Labels: "server-listening" (the server socket is bound; port 0 was used, the
kernel picked the port) and "handshake-done" (mid-stream scenarios only: the
handshake is over and tcpdump may start now).  Run with --standalone to skip
the protocol (no waiting), e.g. for debugging:

    python3 py_scenarios.py echo_deflate --standalone --log /tmp/x.json

Peer log format (JSON):

    {"scenario": NAME, "host": "127.0.0.1", "port": 40123, "node": false,
     "connections": [
        {"client": "127.0.0.1:50000", "server": "127.0.0.1:40123",
         "extensions": "permessage-deflate; ..." | null,   # as answered by the server
         "subprotocol": "chat.v1" | null,
         "client_events": [EVENT, ...], "server_events": [EVENT, ...]}]}

    EVENT = {"op": "send"|"recv", "type": "text"|"binary"|"ping"|"pong"|"close",
             "data": BASE64 (message payload; for close: the close frame body),
             "length": N, "captured": true|false,
             # data messages sent in fragments:
             "fragments": [BASE64, ...], "emptyFinal": true|false,
             # close:
             "code": 1000|null, "reason": "..."}

"captured" is false for traffic that happened before tcpdump started
(mid-stream scenarios).  "send" events of type text/binary are the ground truth
for the assembled (and inflated) messages the inspector must report.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import struct
import sys
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

HERE = Path(__file__).resolve().parent
NODE_SERVER = HERE / "node_ws_server.js"
NODE_PATH = os.environ.get("WSI_NODE_PATH", "/usr/share/nodejs")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def endpoint(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------
# Harness control and the peer log
# --------------------------------------------------------------------------


class Control:
    def __init__(self, standalone: bool):
        self.standalone = standalone

    async def wait(self, label: str, port: int) -> None:
        if self.standalone:
            return
        print(f"WAIT {label} {port}", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if line.strip() != "GO":
            raise SystemExit(f"harness answered {line!r} instead of GO")

    def done(self) -> None:
        if not self.standalone:
            print("DONE", flush=True)


class PeerLog:
    def __init__(self, scenario: str, host: str):
        self.data = {"scenario": scenario, "host": host, "port": None, "node": False}
        self.connections: dict[str, dict] = {}
        self.capturing = True

    def conn(self, client: str) -> dict:
        if client not in self.connections:
            self.connections[client] = {
                "client": client,
                "server": None,
                "extensions": None,
                "subprotocol": None,
                "client_events": [],
                "server_events": [],
            }
        return self.connections[client]

    def add(self, client: str, side: str, op: str, kind: str, payload: bytes = b"", **extra) -> None:
        event = {
            "op": op,
            "type": kind,
            "data": b64(payload),
            "length": len(payload),
            "captured": self.capturing,
        }
        event.update(extra)
        self.conn(client)[f"{side}_events"].append(event)

    def dump(self, path: Path) -> None:
        out = dict(self.data)
        out["connections"] = list(self.connections.values())
        path.write_text(json.dumps(out, indent=1, ensure_ascii=False))


def close_body(code, reason: str) -> bytes:
    if code is None or code == 1005:
        return b""
    return struct.pack("!H", code) + reason.encode("utf-8")


class Peer:
    """One side of one connection; every action is recorded in the peer log."""

    def __init__(self, log: PeerLog, ws, side: str):
        self.log, self.ws, self.side = log, ws, side
        if side == "client":
            self.client = endpoint(ws.local_address)
            conn = log.conn(self.client)
            conn["server"] = endpoint(ws.remote_address)
            conn["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
            conn["subprotocol"] = ws.subprotocol
        else:
            self.client = endpoint(ws.remote_address)
            log.conn(self.client)

    def ev(self, op: str, kind: str, payload: bytes = b"", **extra) -> None:
        self.log.add(self.client, self.side, op, kind, payload, **extra)

    async def send(self, msg) -> None:
        await self.ws.send(msg)
        if isinstance(msg, str):
            self.ev("send", "text", msg.encode("utf-8"))
        else:
            self.ev("send", "binary", bytes(msg))

    async def send_fragments(self, frags, *, text: bool | None = None, low_level: bool = False,
                             ping_before: int | None = None, ping_data: bytes = b"mid-message ping") -> None:
        """Send one message in fragments.

        low_level=False: websockets' own API (iterable / async iterable): one frame per
        fragment, then an EMPTY final continuation frame.
        low_level=True: protocol-level frames, the last fragment carries FIN (no empty frame).
        ping_before=i: send a ping between fragment i-1 and fragment i.
        """
        raw = [f.encode("utf-8") if isinstance(f, str) else bytes(f) for f in frags]
        if text is None:
            text = isinstance(frags[0], str)
        kind = "text" if text else "binary"
        pings: list[bytes] = []
        if low_level:
            proto = self.ws.protocol
            for i, chunk in enumerate(raw):
                if ping_before == i:
                    await self._ping_nowait(ping_data, pings)
                fin = i == len(raw) - 1
                async with self.ws.send_context():
                    if i == 0:
                        (proto.send_text if text else proto.send_binary)(chunk, fin=fin)
                    else:
                        proto.send_continuation(chunk, fin=fin)
        else:
            async def agen():
                for i, chunk in enumerate(raw):
                    if ping_before == i:
                        await self._ping_nowait(ping_data, pings)
                    yield chunk

            await self.ws.send(agen(), text=text)
        self.ev("send", kind, b"".join(raw), fragments=[b64(c) for c in raw], emptyFinal=not low_level)

    async def _ping_nowait(self, data: bytes, pings: list) -> None:
        waiter = await self.ws.ping(data)
        self.ev("send", "ping", data)
        pings.append(data)

        async def await_pong():
            try:
                await waiter
                self.ev("recv", "pong", data)
            except ConnectionClosed:
                pass

        asyncio.get_running_loop().create_task(await_pong())

    async def ping(self, data: bytes) -> None:
        waiter = await self.ws.ping(data)
        self.ev("send", "ping", data)
        await waiter
        self.ev("recv", "pong", data)

    async def pong(self, data: bytes) -> None:
        await self.ws.pong(data)
        self.ev("send", "pong", data)

    async def recv(self):
        msg = await self.ws.recv()
        if isinstance(msg, str):
            self.ev("recv", "text", msg.encode("utf-8"))
        else:
            self.ev("recv", "binary", bytes(msg))
        return msg

    async def close(self, code=1000, reason: str = "") -> None:
        await self.ws.close(code, reason)

    def finish(self) -> None:
        """Record the close frames this side sent and received."""
        proto = self.ws.protocol
        for op, frame in (("send", proto.close_sent), ("recv", proto.close_rcvd)):
            if frame is None:
                continue
            code = None if frame.code == 1005 else int(frame.code)
            self.ev(op, "close", close_body(code, frame.reason), code=code, reason=frame.reason)


# --------------------------------------------------------------------------
# Server behaviour (dispatched on the request path)
# --------------------------------------------------------------------------


def split3(data: bytes) -> list[bytes]:
    if len(data) < 3:
        return [data[:1], data[1:2], data[2:]]
    a, b = len(data) // 3, 2 * len(data) // 3
    return [data[:a], data[a:b], data[b:]]


async def server_handler(ws, log: PeerLog) -> None:
    peer = Peer(log, ws, "server")
    path = ws.request.path
    try:
        if path.startswith("/fragment-echo"):
            n = 0
            while True:
                msg = await peer.recv()
                text = isinstance(msg, str)
                data = msg.encode("utf-8") if text else msg
                # Split at byte offsets (may cut a UTF-8 sequence: legal across fragments).
                await peer.send_fragments(split3(data), text=text, low_level=(n % 2 == 0))
                n += 1
        elif path.startswith("/close/"):
            # /close/<who>/<code|none>/<reason>: echo one message, then maybe close.
            _, _, who, code, reason = path.split("/", 4)
            msg = await peer.recv()
            await peer.send(msg)
            if who == "server":
                await peer.close(None if code == "none" else int(code), _unquote(reason))
            else:
                async for msg in ws:
                    pass
        elif path.startswith("/control"):
            while True:
                msg = await peer.recv()
                if msg == "please ping me":
                    await peer.ping("server-ping ✓".encode("utf-8"))
                    await peer.ping(b"")
                    await peer.send("pinged")
                else:
                    await peer.send(msg)
        elif path.startswith("/chat"):
            await chat_server(peer)
        else:  # plain echo
            while True:
                msg = await peer.recv()
                await peer.send(msg)
    except ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        peer.finish()


def _unquote(s: str) -> str:
    from urllib.parse import unquote

    return unquote(s)


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


class Ctx:
    def __init__(self, name, host, log, control, args):
        self.name, self.host, self.log, self.control, self.args = name, host, log, control, args
        self.port = None
        self.server_kwargs: dict = {}
        self.client_kwargs: dict = {}

    def uri(self, path="/") -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{h}:{self.port}{path}"


def compression_kwargs(mode: str) -> tuple[dict, dict]:
    """(server kwargs, client kwargs) for a compression mode."""
    if mode == "none":
        return {"compression": None}, {"compression": None}
    if mode == "deflate":
        return {}, {}
    if mode == "nocontext":
        return (
            {"compression": None, "extensions": [ServerPerMessageDeflateFactory(
                server_no_context_takeover=True, client_no_context_takeover=True)]},
            {"compression": None, "extensions": [ClientPerMessageDeflateFactory(
                server_no_context_takeover=True, client_no_context_takeover=True)]},
        )
    if mode == "wbits10":
        return (
            {"compression": None, "extensions": [ServerPerMessageDeflateFactory(
                server_max_window_bits=10, client_max_window_bits=10)]},
            {"compression": None, "extensions": [ClientPerMessageDeflateFactory(
                server_max_window_bits=10, client_max_window_bits=10)]},
        )
    raise ValueError(mode)


def echo_messages(rng: random.Random, small: bool = False) -> list:
    msgs = [
        "hello",
        "",
        b"\x00\x01\x02\xff",
        "héllo wörld ✓ 🎉",
        json.dumps({"type": "chat", "user": "alice", "text": "hi bob"}),
        json.dumps({"type": "chat", "user": "alice", "text": "hi bob, again"}),
        json.dumps({"type": "chat", "user": "alice", "text": "hi bob, again"}),  # context takeover
    ]
    if not small:
        msgs += [
            "a" * 125,  # largest 7-bit length
            "b" * 126,  # smallest 16-bit length
            rng.randbytes(65535),  # largest 16-bit length (random: incompressible)
            rng.randbytes(65536),  # smallest 64-bit length
            ("The quick brown fox jumps over the lazy dog. " * 400),  # compressible, 18 KB
            b"",
        ]
    return msgs


async def run_echo_client(ctx: Ctx, msgs, path="/echo", close=(1000, "done")) -> None:
    async with connect(ctx.uri(path), **ctx.client_kwargs) as ws:
        peer = Peer(ctx.log, ws, "client")
        for m in msgs:
            await peer.send(m)
            await peer.recv()
        await peer.close(*close)
    peer.finish()


async def scen_echo(ctx: Ctx) -> None:
    rng = random.Random(f"{ctx.name}")
    await run_echo_client(ctx, echo_messages(rng, small=ctx.args.get("small", False)))


async def scen_fragmented(ctx: Ctx) -> None:
    rng = random.Random(ctx.name)
    async with connect(ctx.uri("/fragment-echo"), **ctx.client_kwargs) as ws:
        peer = Peer(ctx.log, ws, "client")
        # websockets' iterable API: 3 text frames + empty final frame.
        await peer.send_fragments(["Hel", "lo ", "world"])
        await peer.recv()
        # Async iterator, binary, with a ping between two fragments; the last
        # fragment needs a 64-bit length.
        await peer.send_fragments([b"\x00" * 10, bytes(range(256)) * 4, rng.randbytes(70000)], ping_before=1)
        await peer.recv()
        # Protocol-level frames: FIN on the last non-empty fragment, no empty frame.
        await peer.send_fragments(["low-", "level ", "fragments ✓"], low_level=True)
        await peer.recv()
        # Compressible text in fragments, sent twice (context takeover across messages).
        chunks = ["{\"log\": \"" + "repeat after me " * 20, "and again " * 30, "\"}"]
        await peer.send_fragments(chunks, low_level=True)
        await peer.recv()
        await peer.send_fragments(chunks)
        await peer.recv()
        # A single fragment + empty final frame.
        await peer.send_fragments(["only-one-fragment"])
        await peer.recv()
        # Ping between protocol-level fragments.
        await peer.send_fragments([b"bin-1", b"bin-2", b"bin-3"], low_level=True, ping_before=2)
        await peer.recv()
        await peer.send("unfragmented after fragments")
        await peer.recv()
        await peer.close(1000, "fragments done")
    peer.finish()


async def scen_large(ctx: Ctx) -> None:
    rng = random.Random(ctx.name)
    if ctx.args.get("compressible"):
        # 300 KiB incompressible (compressed frame > 256 KiB, masked from the client),
        # then ~2 MiB of JSON lines (compresses well).
        lines = []
        size = 0
        while size < 2 * 1024 * 1024:
            line = json.dumps({"seq": len(lines), "value": rng.randint(0, 10**9), "tag": rng.choice("abcdef") * 8})
            lines.append(line)
            size += len(line) + 1
        msgs = [rng.randbytes(300 * 1024), "\n".join(lines)]
    else:
        msgs = [rng.randbytes(300 * 1024), rng.randbytes(2 * 1024 * 1024)]
    await run_echo_client(ctx, msgs, close=(1000, "large done"))


async def scen_control(ctx: Ctx) -> None:
    async with connect(ctx.uri("/control"), **ctx.client_kwargs) as ws:
        peer = Peer(ctx.log, ws, "client")
        await peer.ping(b"client-ping-1")
        await peer.ping(b"")
        await peer.ping(b"x" * 125)  # largest legal control payload
        await peer.send("after pings")
        await peer.recv()
        await peer.send("please ping me")
        await peer.recv()  # "pinged"
        await peer.pong(b"unsolicited pong")
        await peer.send("after unsolicited pong")
        await peer.recv()
        await peer.close(1000, "bye")
    peer.finish()


CLOSE_CASES = [
    # (initiator, code, reason)
    ("client", 1000, "bye"),
    ("server", 1001, "going away"),
    ("client", 4000, "custom reason ✓"),
    ("server", 3000, ""),
    ("client", None, ""),  # empty close body
]


async def scen_close_codes(ctx: Ctx) -> None:
    from urllib.parse import quote

    for who, code, reason in CLOSE_CASES:
        path = f"/close/{who}/{'none' if code is None else code}/{quote(reason)}"
        async with connect(ctx.uri(path), **ctx.client_kwargs) as ws:
            peer = Peer(ctx.log, ws, "client")
            await peer.send(f"hi from {who} case {code}")
            await peer.recv()
            if who == "client":
                await peer.close(code, reason)
            else:
                await ws.wait_closed()
        peer.finish()


async def scen_two_connections(ctx: Ctx) -> None:
    async def one(tag: str, delay: float) -> None:
        async with connect(ctx.uri(f"/echo/{tag}"), **ctx.client_kwargs) as ws:
            peer = Peer(ctx.log, ws, "client")
            for i in range(6):
                await peer.send(json.dumps({"conn": tag, "seq": i, "text": f"message {i} from {tag}"}))
                await peer.recv()
                await asyncio.sleep(delay)
            await peer.send(bytes([ord(tag[0])]) * 300)
            await peer.recv()
            await peer.close(1000, f"{tag} done")
        peer.finish()

    await asyncio.gather(one("alpha", 0.013), one("beta", 0.007))


async def scen_midstream(ctx: Ctx) -> None:
    msgs = [
        json.dumps({"type": "status", "text": "warming up the compression window"}),
        "before capture: " + "shared dictionary text " * 10,
    ]
    async with connect(ctx.uri("/echo"), **ctx.client_kwargs) as ws:
        peer = Peer(ctx.log, ws, "client")
        ctx.log.capturing = False
        for m in msgs:
            await peer.send(m)
            await peer.recv()
        await ctx.control.wait("handshake-done", ctx.port)
        await asyncio.sleep(0.3)
        ctx.log.capturing = True
        # Same content again: with context takeover these messages refer back to
        # data sent before the capture started.
        for m in msgs + ["after capture: fresh text", b"\x10\x20\x30 binary after capture"]:
            await peer.send(m)
            await peer.recv()
        await peer.ping(b"midstream ping")
        await peer.send_fragments(["frag-", "mented ", "mid-stream"], low_level=True)
        await peer.recv()
        await peer.close(1000, "midstream done")
    peer.finish()


async def scen_snaplen(ctx: Ctx) -> None:
    # Short messages fit in 96 bytes of packet; long ones are cut by the snaplen.
    msgs = ["short", "x" * 20, "y" * 200, bytes(range(256)) * 4, "tiny"]
    async with connect(ctx.uri("/echo"), **ctx.client_kwargs) as ws:
        peer = Peer(ctx.log, ws, "client")
        for m in msgs:
            await peer.send(m)
            await peer.recv()
            await asyncio.sleep(0.02)
        await peer.ping(b"p")
        await peer.close(1000, "bye")
    peer.finish()


async def chat_server(peer: Peer) -> None:
    """The sample chat room: answers like a tiny chat service."""
    await peer.send(json.dumps({"type": "welcome", "room": "lobby", "users": ["alice", "bot"]}))
    while True:
        msg = await peer.recv()
        if isinstance(msg, bytes):
            await peer.send(json.dumps({"type": "upload-ack", "bytes": len(msg)}))
            continue
        data = json.loads(msg)
        if data.get("type") == "say":
            await peer.send(json.dumps({"type": "message", "from": "alice", "text": data["text"]}))
            if "bot" in data["text"]:
                await asyncio.sleep(0.05)
                await peer.send(json.dumps({"type": "message", "from": "bot",
                                            "text": "Beep boop. I am the lobby bot."}))
        elif data.get("type") == "history":
            history = [{"from": "bot", "text": f"old message {i}"} for i in range(12)]
            body = json.dumps({"type": "history", "messages": history}).encode()
            await peer.send_fragments(split3(body), text=True, low_level=True)


async def scen_chat(ctx: Ctx) -> None:
    pace = ctx.args.get("pace", 0.15)
    async with connect(ctx.uri("/chat"), subprotocols=["chat.v1"], **ctx.client_kwargs) as ws:
        peer = Peer(ctx.log, ws, "client")
        await peer.recv()  # welcome
        await asyncio.sleep(pace)
        await peer.send(json.dumps({"type": "say", "text": "Hello everyone!"}))
        await peer.recv()
        await asyncio.sleep(pace)
        await peer.send(json.dumps({"type": "say", "text": "Hey bot, are you there?"}))
        await peer.recv()
        await peer.recv()
        await asyncio.sleep(pace)
        await peer.send(json.dumps({"type": "history", "limit": 12}))
        await peer.recv()  # fragmented reply
        await asyncio.sleep(pace)
        # websockets' fragment API: 3 frames + an empty final frame.
        await peer.send_fragments(['{"type": "say", "text": "This one arrives ', "in three ", 'pieces"}'])
        await peer.recv()
        await asyncio.sleep(pace)
        await peer.send(bytes.fromhex("89504e470d0a1a0a") + bytes(range(64)))  # a tiny "upload"
        await peer.recv()
        await asyncio.sleep(pace)
        await peer.ping(b"keepalive-1")
        await asyncio.sleep(pace)
        await peer.close(1000, "bye")
    peer.finish()


async def scen_node(ctx: Ctx) -> None:
    """Python client against the Node `ws` server (started here, on port 0)."""
    node_log = Path(ctx.args["log_path"]).with_suffix(".node.json")
    cmd = ["node", str(NODE_SERVER), "--host", ctx.host, "--log", str(node_log)]
    if ctx.args.get("deflate"):
        cmd.append("--deflate")
    env = dict(os.environ, NODE_PATH=NODE_PATH)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, env=env)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().split()
        if not line or line[0] != "LISTENING":
            raise SystemExit(f"node server did not start: {line}")
        ctx.port = int(line[1])
        ctx.log.data["port"] = ctx.port
        ctx.log.data["node"] = True
        await ctx.control.wait("server-listening", ctx.port)
        async with connect(ctx.uri("/node"), **ctx.client_kwargs) as ws:
            peer = Peer(ctx.log, ws, "client")
            await peer.send("hello node")
            await peer.recv()
            await peer.send(bytes(range(200)))
            await peer.recv()
            await peer.send("fragments please")  # node: text in 3 frames (fin:false), then binary in 2
            await peer.recv()
            await peer.recv()
            await peer.ping(b"py-ping")  # answered by ws itself
            await peer.send("ping me")  # node pings, then says "pinged"
            await peer.recv()
            await peer.send_fragments(["to ", "node ", "in fragments"])
            await peer.recv()
            await peer.send_fragments([b"\x01\x02", b"\x03" * 300], low_level=True)
            await peer.recv()
            await peer.send("The quick brown fox jumps over the lazy dog. " * 50)
            await peer.recv()
            await peer.send("close please")  # node closes with 4001
            await ws.wait_closed()
        peer.finish()
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # Merge the node server's log (server events) into ours.
    node = json.loads(node_log.read_text())
    for conn in node["connections"]:
        mine = ctx.log.conn(conn["client"])
        mine["server_events"] = conn["server_events"]
        mine["server"] = conn.get("server")


SCENARIOS = {
    # name: (function, compression mode, extra args)
    "echo_plain": (scen_echo, "none", {}),
    "echo_deflate": (scen_echo, "deflate", {}),
    "echo_deflate_nocontext": (scen_echo, "nocontext", {}),
    "echo_deflate_wbits10": (scen_echo, "wbits10", {}),
    "fragmented_plain": (scen_fragmented, "none", {}),
    "fragmented_deflate": (scen_fragmented, "deflate", {}),
    "large_plain": (scen_large, "none", {}),
    "large_deflate": (scen_large, "deflate", {"compressible": True}),
    "control": (scen_control, "none", {}),
    "close_codes": (scen_close_codes, "deflate", {}),
    "ipv6": (scen_echo, "deflate", {"small": True}),
    "two_connections": (scen_two_connections, "deflate", {}),
    "midstream_plain": (scen_midstream, "none", {}),
    "midstream_deflate": (scen_midstream, "deflate", {}),
    "snaplen96": (scen_snaplen, "none", {}),
    "node_ws": (scen_node, "none", {}),
    "node_ws_deflate": (scen_node, "deflate", {"deflate": True}),
    "chat": (scen_chat, "deflate", {}),
}


async def main_async(name: str, host: str, log_path: Path, control: Control, args: dict) -> None:
    func, mode, extra = SCENARIOS[name]
    log = PeerLog(name, host)
    ctx = Ctx(name, host, log, control, {**extra, **args, "log_path": str(log_path)})
    ctx.server_kwargs, ctx.client_kwargs = compression_kwargs(mode)
    ctx.client_kwargs.setdefault("ping_interval", None)
    ctx.client_kwargs.setdefault("max_size", None)
    try:
        if func is scen_node:
            await func(ctx)
        else:
            async with serve(lambda ws: server_handler(ws, log), host, 0, ping_interval=None, max_size=None,
                             subprotocols=["chat.v1"] if name == "chat" else None,
                             **ctx.server_kwargs) as server:
                ctx.port = server.sockets[0].getsockname()[1]
                log.data["port"] = ctx.port
                await control.wait("server-listening", ctx.port)
                await func(ctx)
                await asyncio.sleep(0.1)  # let the server side finish its bookkeeping
    finally:
        log.dump(log_path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--host", default=None, help="default: ::1 for ipv6, else 127.0.0.1")
    ap.add_argument("--log", required=True, type=Path)
    ap.add_argument("--standalone", action="store_true", help="do not talk to the harness")
    ap.add_argument("--pace", type=float, default=None, help="chat: delay between chat actions")
    opts = ap.parse_args()
    host = opts.host or ("::1" if opts.scenario == "ipv6" else "127.0.0.1")
    control = Control(opts.standalone)
    extra = {} if opts.pace is None else {"pace": opts.pace}
    asyncio.run(main_async(opts.scenario, host, opts.log, control, extra))
    control.done()


if __name__ == "__main__":
    main()
