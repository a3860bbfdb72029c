"""Extract every WebSocket frame tshark decodes from a capture, with raw bytes.

    frames = tshark_frames(Path("x.pcap"), ["-o", "tcp.reassemble_out_of_order:TRUE"])

Runs `tshark -n -r FILE -T json -x --no-duplicate-keys -Y websocket -J "frame ip ipv6 tcp websocket"`
(plus the given options) and returns one TsharkFrame per WebSocket frame, in packet order
(several frames of one packet in their order inside the packet).

What tshark 4.0.17 gives (checked on captures made by capture.py):
  * websocket.payload_raw is the UNMASKED payload as on the wire (still compressed when
    RSV1 is set), but for masked frames it stops at 256 KiB (MAX_UNMASKED_LEN);
    websocket.masked_payload_raw is complete, so we can unmask it ourselves.
  * websocket.payload_length is the 7-bit field (126/127 mean "see ext_16/ext_64").
  * frames with an empty payload have no payload_raw at all.
  * close frames: websocket.payload.close.status_code / .reason (absent when empty).
  * a frame is shown in the packet holding its last byte (TCP reassembly).
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

TSHARK_UNMASK_LIMIT = 256 * 1024  # tshark's MAX_UNMASKED_LEN


@dataclass
class TsharkFrame:
    packet: int
    time: Decimal
    stream: int
    src: tuple[str, int]
    dst: tuple[str, int]
    index_in_packet: int
    fin: bool
    rsv: int  # 3 bits: RSV1=4, RSV2=2, RSV3=1
    opcode: int
    masked: bool
    masking_key: str | None  # lowercase hex, no separators
    payload_length: int
    length_encoding: str  # "7-bit" | "16-bit" | "64-bit"
    payload: bytes  # as tshark shows it (unmasked; truncated at 256 KiB when masked)
    masked_payload: bytes | None  # raw masked bytes (complete), masked frames only
    close_code: int | None
    close_reason: str | None
    pmc: bool  # tshark thinks permessage-deflate applies (RSV1 with the extension)

    @property
    def rsv1(self) -> bool:
        return bool(self.rsv & 4)

    @property
    def rsv2(self) -> bool:
        return bool(self.rsv & 2)

    @property
    def rsv3(self) -> bool:
        return bool(self.rsv & 1)

    @property
    def tshark_payload_truncated(self) -> bool:
        """True when tshark's unmasked payload is cut at 256 KiB (tshark is not the truth)."""
        return len(self.payload) < self.payload_length

    @property
    def full_payload(self) -> bytes:
        """The complete unmasked payload, unmasking tshark's raw masked bytes ourselves if needed."""
        if self.tshark_payload_truncated and self.masked_payload is not None and self.masking_key:
            return unmask(self.masked_payload, bytes.fromhex(self.masking_key))
        return self.payload

    def describe(self) -> str:
        extra = ""
        if self.opcode == 8:
            extra = f" close={self.close_code} {self.close_reason!r}"
        return (f"pkt {self.packet} fin={int(self.fin)} rsv={self.rsv:03b} op={self.opcode} "
                f"mask={int(self.masked)} key={self.masking_key} len={self.payload_length}"
                f"({self.length_encoding}){extra}")


def unmask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def _hex(raw) -> bytes:
    """A *_raw value ([hex, offset, length, bitmask, type]) to bytes."""
    if raw is None:
        return b""
    if isinstance(raw, list) and raw and isinstance(raw[0], list):
        raw = raw[0]
    return bytes.fromhex(raw[0] if isinstance(raw, list) else raw)


def _as_list(v) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _endpoint(layers: dict, which: str) -> str:
    if "ip" in layers:
        return layers["ip"][f"ip.{which}"]
    if "ipv6" in layers:
        return layers["ipv6"][f"ipv6.{which}"]
    raise ValueError("packet without IP layer")


def parse_frame(ws: dict) -> dict:
    ext16 = ws.get("websocket.payload_length_ext_16")
    ext64 = ws.get("websocket.payload_length_ext_64")
    if ext64 is not None:
        length, enc = int(ext64), "64-bit"
    elif ext16 is not None:
        length, enc = int(ext16), "16-bit"
    else:
        length, enc = int(ws["websocket.payload_length"]), "7-bit"
    masked = ws.get("websocket.mask") in ("1", "True", "true")
    key = ws.get("websocket.masking_key")
    payload_tree = ws.get("websocket.payload")
    close_code = close_reason = None
    if isinstance(payload_tree, dict) and "websocket.payload.close" in payload_tree:
        close = payload_tree["websocket.payload.close"]
        if isinstance(close, dict):
            if "websocket.payload.close.status_code" in close:
                close_code = int(close["websocket.payload.close.status_code"])
                reason_raw = close.get("websocket.payload.close.reason_raw")
                close_reason = _hex(reason_raw).decode("utf-8", "replace") if reason_raw else ""
    return {
        "fin": ws.get("websocket.fin") in ("1", "True", "true"),
        "rsv": int(ws.get("websocket.rsv", "0"), 0),
        "opcode": int(ws["websocket.opcode"]),
        "masked": masked,
        "masking_key": key.replace(":", "").lower() if (masked and key) else None,
        "payload_length": length,
        "length_encoding": enc,
        "payload": _hex(ws.get("websocket.payload_raw")),
        "masked_payload": _hex(ws["websocket.masked_payload_raw"]) if "websocket.masked_payload_raw" in ws else None,
        "close_code": close_code,
        "close_reason": close_reason,
        "pmc": ws.get("websocket.pmc") in ("1", "True", "true"),
    }


def tshark_json(pcap: Path, options: list[str] = (), timeout: float = 120) -> list[dict]:
    cmd = ["tshark", "-n", "-r", str(pcap), *options, "-T", "json", "-x", "--no-duplicate-keys",
           "-Y", "websocket", "-J", "frame ip ipv6 tcp websocket"]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    out = r.stdout.strip()
    return json.loads(out) if out else []


def tshark_frames(pcap: Path, options: list[str] = ()) -> list[TsharkFrame]:
    frames: list[TsharkFrame] = []
    for pkt in tshark_json(pcap, list(options)):
        layers = pkt["_source"]["layers"]
        if "websocket" not in layers:
            continue
        fr = layers["frame"]
        tcp = layers["tcp"]
        src = (_endpoint(layers, "src"), int(tcp["tcp.srcport"]))
        dst = (_endpoint(layers, "dst"), int(tcp["tcp.dstport"]))
        i = 0
        for ws in _as_list(layers["websocket"]):
            if not isinstance(ws, dict) or "websocket.opcode" not in ws:
                continue
            frames.append(TsharkFrame(packet=int(fr["frame.number"]), time=Decimal(fr["frame.time_epoch"]),
                                      stream=int(tcp["tcp.stream"]), src=src, dst=dst, index_in_packet=i,
                                      **parse_frame(ws)))
            i += 1
    return frames


def tshark_frame_count(pcap: Path, options: list[str] = ()) -> tuple[int, dict[int, int]]:
    """(number of WebSocket frames, {opcode: count}) using only the fields output (fast)."""
    cmd = ["tshark", "-n", "-r", str(pcap), *options, "-Y", "websocket", "-T", "fields",
           "-E", "occurrence=a", "-E", "aggregator=|", "-e", "websocket.opcode"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
    per_opcode: dict[int, int] = {}
    total = 0
    for line in r.stdout.splitlines():
        for op in filter(None, line.strip().split("|")):
            per_opcode[int(op)] = per_opcode.get(int(op), 0) + 1
            total += 1
    return total, per_opcode
