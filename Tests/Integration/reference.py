"""Shared helpers: endpoints, grouping frames per connection/direction, what the peers
sent (from the peer log), and a tiny independent reference decoder (assemble + inflate
with Python's zlib) used to check that captures and peer logs agree."""
from __future__ import annotations

import base64
import ipaddress
import zlib
from dataclasses import dataclass, field

C2S = "client-to-server"
S2C = "server-to-client"
DIRECTIONS = (C2S, S2C)

OPCODE_NAMES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
DATA_TYPES = {"text": 1, "binary": 2}


Endpoint = tuple[str, int]


def norm_ip(ip: str) -> str:
    return ipaddress.ip_address(ip.strip("[]")).compressed


def parse_endpoint(s: str) -> Endpoint:
    """'127.0.0.1:80' / '[::1]:80' / '::1.80'? -> (normalized ip, port)."""
    s = s.strip()
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
    else:
        host, _, port = s.rpartition(":")
    return norm_ip(host), int(port)


def endpoint(ip: str, port: int) -> Endpoint:
    return norm_ip(ip), int(port)


def b64d(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


# --------------------------------------------------------------------------
# Peer log
# --------------------------------------------------------------------------


@dataclass
class SentMessage:
    type: str  # text | binary
    payload: bytes
    fragments: list[bytes] | None
    empty_final: bool

    @property
    def frame_count(self) -> int:
        if not self.fragments:
            return 1
        return len(self.fragments) + (1 if self.empty_final else 0)


def peer_connections(peer_log: dict) -> dict[Endpoint, dict]:
    """client endpoint -> connection record of the peer log."""
    return {parse_endpoint(c["client"]): c for c in peer_log["connections"]}


def sent_events(conn: dict, direction: str, captured_only: bool = True) -> list[dict]:
    side = "client_events" if direction == C2S else "server_events"
    return [e for e in conn[side] if e["op"] == "send" and (e.get("captured", True) or not captured_only)]


def sent_messages(conn: dict, direction: str, captured_only: bool = True) -> list[SentMessage]:
    out = []
    for e in sent_events(conn, direction, captured_only):
        if e["type"] in DATA_TYPES:
            frags = [b64d(f) for f in e["fragments"]] if "fragments" in e else None
            out.append(SentMessage(e["type"], b64d(e["data"]), frags, bool(e.get("emptyFinal"))))
    return out


def expected_control_frames(conn: dict, direction: str, node_server: bool) -> list[tuple[str, bytes]]:
    """Multiset (sorted) of (type, payload) control frames sent in `direction`.

    Python websockets answers pings itself without telling the application, so a pong
    is expected for every ping the other side sent when the answering side is Python;
    the Node server logs its automatic pongs itself."""
    out = []
    for e in sent_events(conn, direction):
        if e["type"] in ("ping", "pong", "close"):
            out.append((e["type"], b64d(e["data"])))
    answering_is_python = direction == C2S or not node_server
    if answering_is_python:
        other = S2C if direction == C2S else C2S
        for e in sent_events(conn, other):
            if e["type"] == "ping":
                out.append(("pong", b64d(e["data"])))
    return sorted(out)


# --------------------------------------------------------------------------
# Extension parameters and reference assembly
# --------------------------------------------------------------------------


def deflate_negotiated(conn: dict) -> bool:
    ext = conn.get("extensions") or ""
    return "permessage-deflate" in ext


@dataclass
class RefMessage:
    opcode: int
    frames: int
    compressed: bool
    payload: bytes | None  # None when inflating failed
    raw: bytes = b""  # concatenated frame payloads, as on the wire (compressed if RSV1)
    inflate_error: str | None = None
    first_packet: int = 0
    last_packet: int = 0


@dataclass
class RefAssembler:
    """Assembles data messages from frames (tshark's or ours) and inflates them."""

    deflate: bool
    messages: list[RefMessage] = field(default_factory=list)
    _parts: list[bytes] = field(default_factory=list)
    _opcode: int | None = None
    _rsv1: bool = False
    _count: int = 0
    _first_packet: int = 0
    _inflater: object = None
    _broken: bool = False

    def feed(self, opcode: int, fin: bool, rsv1: bool, payload: bytes, packet: int = 0) -> None:
        if opcode >= 8:
            return
        if opcode != 0:
            self._parts, self._opcode, self._rsv1, self._count = [], opcode, rsv1, 0
            self._first_packet = packet
        if self._opcode is None:
            return  # continuation without a start (mid-stream)
        self._parts.append(payload)
        self._count += 1
        if fin:
            data = b"".join(self._parts)
            compressed = self.deflate and self._rsv1
            msg = RefMessage(self._opcode, self._count, compressed, data, raw=data, first_packet=self._first_packet,
                             last_packet=packet)
            if compressed:
                msg.payload, msg.inflate_error = self._inflate(data)
            self.messages.append(msg)
            self._opcode = None

    def _inflate(self, data: bytes) -> tuple[bytes | None, str | None]:
        # One decompressor per direction with a 32 KiB window is correct for every
        # negotiated window size and for both context takeover settings.
        if self._inflater is None:
            self._inflater = zlib.decompressobj(-15)
        if self._broken:
            return None, "earlier message failed to inflate"
        try:
            return self._inflater.decompress(data + b"\x00\x00\xff\xff"), None
        except zlib.error as exc:
            self._broken = True
            return None, str(exc)


def group_by_connection(items, key_fn) -> dict:
    out: dict = {}
    for it in items:
        k = key_fn(it)
        out.setdefault(k, []).append(it)
    return out


def tshark_by_client(frames, server: Endpoint) -> dict[tuple[Endpoint, str], list]:
    """Group tshark frames as (client endpoint, direction) -> frames, given the server endpoint."""
    out: dict = {}
    for f in frames:
        src, dst = endpoint(*f.src), endpoint(*f.dst)
        if src == server:
            key = (dst, S2C)
        elif dst == server:
            key = (src, C2S)
        else:
            key = (src, "unknown-direction")
        out.setdefault(key, []).append(f)
    return out


def tshark_by_connection(frames, connections: dict) -> dict[tuple, list]:
    """Group tshark frames by OUR connections: connections = id -> (client, server) endpoints.

    Returns (connection id, direction) -> frames; frames on endpoint pairs we did not report
    go under (None, "src -> dst")."""
    pairs = {frozenset((c, s)): (cid, c) for cid, (c, s) in connections.items()}
    out: dict = {}
    for f in frames:
        src, dst = endpoint(*f.src), endpoint(*f.dst)
        hit = pairs.get(frozenset((src, dst)))
        if hit is None:
            key = (None, f"{src[0]}:{src[1]} -> {dst[0]}:{dst[1]}")
        else:
            cid, client = hit
            key = (cid, C2S if src == client else S2C)
        out.setdefault(key, []).append(f)
    return out


def expected_frame_count(peer_log: dict) -> int:
    """How many WebSocket frames a complete capture of this scenario holds."""
    total = 0
    node = peer_log.get("node", False)
    for conn in peer_log["connections"]:
        for direction in DIRECTIONS:
            total += sum(m.frame_count for m in sent_messages(conn, direction))
            total += len(expected_control_frames(conn, direction, node))
    return total
