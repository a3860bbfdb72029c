#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/, all generated here (no third-party bytes).

The input formats are documented in Sources/FuzzFrameDecoder/Script.swift and
Sources/FuzzCapturePath/PacketScript.swift / PacketBuilder.swift.

Usage: fuzz/make_corpus.py   (rewrites fuzz/corpus/*/seed-*)
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7


def frame(payload, opcode=1, fin=True, rsv1=False, rsv=0, key=None, encoding=None):
    """RFC 6455 §5.2 frame bytes; `encoding` forces a length form (7, 16 or 64)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | rsv | opcode
    n = len(payload)
    if encoding is None:
        encoding = 7 if n <= 125 else 16 if n <= 0xFFFF else 64
    mask = 0x80 if key else 0
    if encoding == 7:
        head = bytes([first, mask | n])
    elif encoding == 16:
        head = bytes([first, mask | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, mask | 127]) + struct.pack(">Q", n)
    if key:
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def deflate(data, fresh=True, compressor=None):
    """Raw deflate with a sync flush and the 4-byte tail removed (RFC 7692 §7.2.1)."""
    c = compressor or zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# --- FuzzFrameDecoder -------------------------------------------------------

C2S, S2C = 0x00, 0x80


def data(direction, payload):
    out = b""
    while payload:
        piece, payload = payload[:65536], payload[65536:]
        if len(piece) <= 62:
            out += bytes([direction | (len(piece) - 1)]) + piece
        elif len(piece) <= 256:
            out += bytes([direction | 0x3E, len(piece) - 1]) + piece
        else:
            out += bytes([direction | 0x3F]) + struct.pack(">H", len(piece) - 1) + piece
    return out


def gap(direction, count):
    if count <= 60:
        return bytes([direction | 0x40 | (count - 1)])
    return bytes([direction | 0x40 | 0x3F]) + struct.pack(">I", count - 1)


def script(flags, limits, *records):
    return bytes([flags, limits]) + b"".join(records)


HANDSHAKE, FROM_FIRST_BYTE, MID_STREAM = 0, 2, 3
ASSUME = 4


def ext(index):
    return index << 3


def hello_c():
    return frame(b"Hello", key=KEY)


REQUEST = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
RESPONSE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n\r\n")


def frame_decoder_seeds():
    seeds = {}
    # RFC 6455 §5.7, both directions, after the generated handshake.
    seeds["rfc6455-5.7-examples"] = script(
        HANDSHAKE, 0,
        data(S2C, bytes([0x81, 0x05]) + b"Hello"),
        data(C2S, bytes([0x81, 0x85]) + KEY + bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])),
        data(S2C, bytes([0x01, 0x03]) + b"Hel"),
        data(S2C, bytes([0x80, 0x02]) + b"lo"),
        data(S2C, bytes([0x89, 0x05]) + b"Hello"),
        data(C2S, bytes([0x8A, 0x85]) + KEY + bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])),
        data(S2C, bytes([0x82, 0x7E, 0x01, 0x00]) + bytes(range(256))),
        data(S2C, bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0x01, 0x2C]) + bytes(300)),
        data(C2S, frame(struct.pack(">H", 1000) + b"bye", opcode=8, key=KEY)),
        data(S2C, frame(struct.pack(">H", 1000), opcode=8)),
    )
    # Frames split across records at awkward places.
    stream = frame(b"split header", key=KEY) + frame(b"x" * 200, opcode=2, key=KEY) + frame(b"", opcode=9, key=KEY)
    seeds["split-points"] = script(
        HANDSHAKE, 0, *[data(C2S, stream[i:i + 3]) for i in range(0, len(stream), 3)]
    )
    # RFC 7692 §7.2.3: "Hello" compressed, the shared-window pair, fragments, an uncompressed frame.
    seeds["rfc7692-7.2.3-examples"] = script(
        HANDSHAKE | ext(1), 0,
        data(S2C, bytes([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])),
        data(S2C, bytes([0x41, 0x03, 0xF2, 0x48, 0xCD]) + bytes([0x80, 0x04, 0xC9, 0xC9, 0x07, 0x00])),
        data(S2C, bytes([0xC1, 0x05, 0xF2, 0x00, 0x11, 0x00, 0x00])),
        data(S2C, bytes([0xC1, 0x0B, 0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00])),  # stored block
        data(S2C, bytes([0xC1, 0x08, 0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])),  # BFINAL set
        data(S2C, bytes([0x81, 0x05]) + b"Hello"),
        data(C2S, frame(deflate(b"Hello, compressed client"), rsv1=True, key=KEY)),
    )
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate(b'{"type":"subscribe","channel":"ticker"}' * 3, compressor=compressor)
    second = deflate(b'{"type":"subscribe","channel":"ticker"}' * 3, compressor=compressor)
    seeds["deflate-context-takeover"] = script(
        HANDSHAKE | ext(1), 0,
        data(S2C, frame(first, rsv1=True)),
        data(S2C, frame(second, rsv1=True)),
        data(C2S, frame(deflate(b"\xff\xfe not utf-8"), rsv1=True, key=KEY)),
    )
    seeds["deflate-no-context-takeover"] = script(
        HANDSHAKE | ext(2), 0,
        data(S2C, frame(deflate(b"one"), rsv1=True)),
        data(S2C, frame(deflate(b"two"), rsv1=True)),
        data(C2S, frame(deflate(b"three" * 40), rsv1=True, key=KEY)),
    )
    seeds["deflate-window-bits"] = script(
        HANDSHAKE | ext(3), 0,
        data(S2C, frame(deflate(b"window bits nine " * 20), rsv1=True)),
    )
    seeds["deflate-frame"] = script(
        HANDSHAKE | ext(4), 0,
        data(S2C, frame(deflate(b"per frame one"), rsv1=True, fin=False)),
        data(S2C, frame(b" plain middle ", opcode=0, fin=False)),
        data(S2C, frame(deflate(b"per frame two"), rsv1=True, opcode=0)),
    )
    seeds["violations"] = script(
        HANDSHAKE, 0,
        data(S2C, frame(b"\xce\xbb\xed\xa0\x80", opcode=1)),                  # surrogate: invalid UTF-8
        data(S2C, frame(b"\xe2\x82", opcode=1)),                              # ends inside a sequence
        data(S2C, frame(b"reserved", opcode=3)),
        data(S2C, frame(b"rsv2", opcode=2, rsv=0x20)),
        data(S2C, frame(b"x" * 130, opcode=9)),                               # control frame too long
        data(S2C, frame(b"frag", opcode=10, fin=False)),
        data(S2C, frame(b"orphan", opcode=0)),
        data(S2C, frame(b"short", opcode=2, encoding=64)),                    # non-minimal length
        data(C2S, frame(b"unmasked client", opcode=1)),
        data(S2C, frame(b"masked server", opcode=1, key=KEY)),
        data(S2C, frame(struct.pack(">H", 1005) + b"\xff", opcode=8)),        # bad code and reason
        data(S2C, frame(b"after close", opcode=1)),
        data(C2S, frame(b"\x03", opcode=8, key=KEY)),                         # 1-byte close payload
    )
    seeds["gaps"] = script(
        HANDSHAKE, 0,
        data(S2C, frame(b"a" * 100, opcode=2)[:30]),
        gap(S2C, 20),
        data(S2C, b"a" * 52),
        data(S2C, frame(b"b" * 40, opcode=2)[:12]),
        gap(S2C, 30),
        data(S2C, frame(b"after boundary gap", opcode=1)),
        data(C2S, frame(b"c" * 60, opcode=1, key=KEY)[:5]),
        gap(C2S, 300),
        data(C2S, b"junk" + frame(b"resync", key=KEY) + frame(b"again", key=KEY)),
    )
    seeds["mid-stream"] = script(
        MID_STREAM, 0x10,
        data(C2S, b"tail of an earlier payload"),
        data(C2S, frame(b"first whole frame", key=KEY) + frame(b"second", key=KEY)),
        data(S2C, bytes([0x6F, 0x20]) + frame(b"server frame") + frame(b"", opcode=10)),
        data(S2C, frame(deflate(b"guessed deflate"), rsv1=True)),
    )
    seeds["mid-stream-assume-websocket-swapped-roles"] = script(
        MID_STREAM | ASSUME, 0x24,
        data(S2C, frame(b"masked, so this side is the client", key=KEY)),
        data(C2S, frame(b"unmasked server")),
    )
    seeds["own-handshake"] = script(
        FROM_FIRST_BYTE, 0,
        data(C2S, REQUEST),
        data(C2S, frame(b"sent before the answer", key=KEY)),
        data(S2C, b"HTTP/1.1 100 Continue\r\n\r\n"),
        data(S2C, RESPONSE + frame(deflate(b"in the 101's segment", compressor=zlib.compressobj(9, zlib.DEFLATED, -10)), rsv1=True)),
    )
    seeds["rejected-then-upgraded"] = script(
        FROM_FIRST_BYTE, 0,
        data(C2S, REQUEST),
        data(S2C, b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!"),
        data(C2S, REQUEST),
        data(S2C, RESPONSE),
        data(C2S, frame(b"finally", key=KEY)),
    )
    seeds["raw-frames-from-first-byte"] = script(
        FROM_FIRST_BYTE | ASSUME, 0,
        data(C2S, frame(b"no handshake", key=KEY)),
        data(S2C, frame(b"reply")),
    )
    seeds["small-limits"] = script(
        HANDSHAKE | ext(1), 0x0F | 0x70 | 0x80,
        data(S2C, frame(b"longer than the retention limit")),
        data(S2C, frame(deflate(b"compressed and long " * 5), rsv1=True)),
        data(S2C, frame(struct.pack(">H", 1001) + b"going away", opcode=8)),
    )
    return seeds


# --- FuzzCapturePath --------------------------------------------------------

ETHERNET, LINUX_SLL, LINUX_SLL2, NULL, LOOP, RAW = 0, 1, 2, 3, 4, 5
BUILT, RAW_PACKETS, FILE = 0x00, 0x10, 0x30


def rec(flow=0, server=False, syn=False, fin=False, rst=False, ack=True, option=None, payload=b"", extra=b""):
    c = flow | (4 if server else 0) | (8 if syn else 0) | (0x10 if fin else 0) | (0x20 if rst else 0) | (0x40 if ack else 0)
    out = bytes([c | (0x80 if option is not None else 0)])
    if option is not None:
        out += bytes([option])
    assert len(payload) <= 255
    return out + bytes([len(payload)]) + payload + extra


SERVER_HELLO = frame(b"Hello from the server")


def session(flow=0):
    return [
        rec(flow, syn=True, ack=False),
        rec(flow, server=True, syn=True),
        rec(flow, payload=REQUEST[:200]),
        rec(flow, payload=REQUEST[200:]),
        rec(flow, server=True, payload=RESPONSE[:150]),
        rec(flow, server=True, payload=RESPONSE[150:] + SERVER_HELLO),
        rec(flow, payload=hello_c()),
        rec(flow, server=True, payload=frame(struct.pack(">H", 1000), opcode=8)),
        rec(flow, payload=frame(struct.pack(">H", 1000), opcode=8, key=KEY), fin=True),
        rec(flow, server=True, fin=True),
    ]


def capture_seeds():
    seeds = {}
    for name, link in [("ethernet", ETHERNET), ("sll", LINUX_SLL), ("sll2", LINUX_SLL2), ("null", NULL),
                       ("loop", LOOP), ("raw", RAW)]:
        seeds[f"built-session-{name}"] = bytes([BUILT | link]) + b"".join(session(0))
    seeds["built-session-ipv6-wrap"] = bytes([BUILT]) + b"".join(session(3)) + b"".join(session(1))
    # Out of order, retransmitted, a hole, snaplen cuts.
    s = session(0)
    seeds["built-reordered"] = bytes([BUILT]) + b"".join([s[0], s[1], s[2], s[4], s[3], s[5], s[5], s[6], s[7]])
    seeds["built-hole-and-snaplen"] = bytes([BUILT]) + b"".join([
        s[0], s[1], s[2], s[3], s[4], s[5],
        rec(0, server=True, option=0x02, payload=frame(b"after a hole", opcode=1), extra=b"\x09"),
        rec(0, server=True, option=0x10, payload=frame(b"x" * 80, opcode=2)),
        rec(0, server=True, payload=frame(b"next", opcode=1)),
        rec(0, rst=True),
    ])
    seeds["built-mid-stream-websocket-port"] = bytes([BUILT | 0x40]) + b"".join([
        rec(0, payload=frame(b"mid-stream client frame", key=KEY)),
        rec(0, server=True, payload=frame(b"mid-stream server frame")),
        rec(2, payload=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        rec(2, server=True, payload=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ])
    seeds["built-tight-limits"] = bytes([BUILT | 0x80]) + b"".join(session(0)[:6]) + b"".join([
        rec(0, server=True, option=0x02, payload=frame(b"y" * 100, opcode=2), extra=b"\x40"),
        rec(0, server=True, payload=frame(b"z" * 100, opcode=2)),
    ])
    seeds["built-fragment-vlan-hbh"] = bytes([BUILT]) + b"".join([
        rec(0, syn=True, ack=False, option=0x80),
        rec(0, payload=REQUEST[:60], option=0x40),
        rec(2, syn=True, ack=False, option=0x40),
    ])

    # Raw packets and whole capture files, written as PacketSourceTests does.
    def ip_tcp(from_client, seq, flags, payload):
        total = 40 + len(payload)
        ip = bytes([0x45, 0]) + struct.pack(">H", total) + bytes([0, 0, 0x40, 0, 64, 6, 0, 0])
        ip += bytes([10, 0, 0, 1, 10, 0, 0, 2]) if from_client else bytes([10, 0, 0, 2, 10, 0, 0, 1])
        ports = struct.pack(">HH", 40000, 80) if from_client else struct.pack(">HH", 80, 40000)
        tcp = ports + struct.pack(">II", seq, 0) + bytes([0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0])
        return ip + tcp + payload

    def eth(packet):
        return bytes([0xAA] * 12) + b"\x08\x00" + packet

    packets = [
        eth(ip_tcp(True, 0, 0x02, b"")),
        eth(ip_tcp(False, 5000, 0x12, b"")),
        eth(ip_tcp(True, 1, 0x18, REQUEST)),
        eth(ip_tcp(False, 5001, 0x18, RESPONSE + SERVER_HELLO)),
        eth(ip_tcp(True, 1 + len(REQUEST), 0x18, hello_c())),
        eth(ip_tcp(True, 1 + len(REQUEST) + len(hello_c()), 0x19, b"")),
        eth(ip_tcp(False, 5001 + len(RESPONSE) + len(SERVER_HELLO), 0x11, b"")),
    ]
    seeds["raw-ethernet-session"] = bytes([RAW_PACKETS | ETHERNET]) + b"".join(
        struct.pack(">H", len(p)) + b"\x00" + p for p in packets)
    seeds["raw-snaplen"] = bytes([RAW_PACKETS | ETHERNET]) + b"".join(
        struct.pack(">H", min(len(p), 70)) + bytes([max(0, len(p) - 70) & 0xFF]) + p[:70] for p in packets)

    def pcap(packets, link=1, magic=0xA1B2C3D4, stamp=1_700_000_000):
        out = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, link)
        for i, p in enumerate(packets):
            out += struct.pack("<IIII", stamp, i, len(p), len(p)) + p
        return out

    def pcapng(packets, link=1, timestamp=1_700_000_000_000_000):
        def block(kind, body):
            body += b"\x00" * (-len(body) % 4)
            return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
        out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
        # Interface with if_tsresol = 6 (microseconds), then end of options.
        out += block(1, struct.pack("<HHI", link, 0, 65535) + struct.pack("<HHB3x", 9, 1, 6) + b"\x00\x00\x00\x00")
        for i, p in enumerate(packets):
            t = timestamp + i
            out += block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(p), len(p)) + p)
        return out

    seeds["file-pcap-session"] = bytes([FILE | ETHERNET]) + pcap(packets)
    seeds["file-pcap-nanosecond"] = bytes([FILE | ETHERNET]) + pcap(packets, magic=0xA1B23C4D)
    seeds["file-pcapng-session"] = bytes([FILE | ETHERNET]) + pcapng(packets)
    seeds["file-pcap-raw-ip"] = bytes([FILE | ETHERNET]) + pcap([p[14:] for p in packets], link=101)
    return seeds


def write(target, seeds):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    for old in os.listdir(directory):
        if old.startswith("seed-"):
            os.remove(os.path.join(directory, old))
    for name, content in seeds.items():
        assert len(content) < 20 * 1024, name
        with open(os.path.join(directory, f"seed-{name}"), "wb") as f:
            f.write(content)
    print(f"{target}: {len(seeds)} seeds in {os.path.relpath(directory)}")


if __name__ == "__main__":
    write("FuzzFrameDecoder", frame_decoder_seeds())
    write("FuzzCapturePath", capture_seeds())
