#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/, all generated here (no third-party bytes).

The input formats are documented in Sources/FuzzFrameDecoder/Script.swift,
Sources/FuzzCapturePath/PacketScript.swift / PacketBuilder.swift and
Sources/FuzzFaultSession/Script.swift.

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


# --- FuzzFaultSession -------------------------------------------------------

# Rule table indices (Sources/FuzzFaultSession/RuleTable.swift).
R = dict(
    drop=0, drop_b=1, drop_nth2=2, delay=3, delay_jitter=4, stall_msg=5, stall_timed=6, stall_forever=7,
    timeout_msg=8, timeout_timed=9, inject_at=10, inject_every=11, inject_after=12, inject_close_every=13,
    rewrite_replace=14, rewrite_set=15, rewrite_set_binary=16, duplicate=17, fragment1=18, fragment3=19,
    corrupt_utf8=20, corrupt_rsv1=21, corrupt_rsv2=22, corrupt_rsv3=23, corrupt_opcode=24,
    corrupt_unmasked=25, corrupt_masked=26, corrupt_oversized=27, close_msg=28, close_timed=29,
    abort_msg=30, abort_timed=31, half_close_msg=32, half_close_timed=33, limit_bytes=34,
    limit_messages=35, limit_one_byte=36, throttle=37, throttle_slow=38, slow_close=39, refuse=40,
    inject_every_binary=41, delay_control=42, drop_control=43, duplicate_close=44, rewrite_empty_all=45,
    drop_window=46, drop_path=47, drop_other_connection=48, fragment_half=49, rewrite_empty_nth2=50,
    corrupt_binary=51, inject_pong=52, half_close_every=53,
)
# Start modes and extension choices (Script.start, Script.extensions).
GEN101, CONTINUE101, SCRIPTED, NOT_UPGRADE = 0, 1, 2, 3
NO_EXT, PMD, PMD_NO_CONTEXT, PMD_BITS, PMD_CLIENT10, WEBKIT, PMD_SERVER12, PMD_BAD = range(8)
TO_SERVER, TO_CLIENT = 0, 1
WORDS = dict(a=0, b=1, x=2, hello=3, boom=4, secret=5, ab=6, Hello=7, json=8, utf8=9, empty=10, bab=11,
             ping=12, aaaa=13, fox=14, bad=15)


def fs_header(rules, ext=NO_EXT, start=GEN101, piece=0, seed=0, by_position=False):
    assert len(rules) <= 7
    out = bytes([len(rules) | (8 if by_position else 0) | (seed & 15) << 4,
                 ext | start << 3 | piece << 5, seed >> 4 & 0xFF])
    for rule in rules:
        index, modifier = rule if isinstance(rule, tuple) else (rule, 0)
        out += bytes([index, modifier])
    return out


def word(name, times=1):
    return bytes([(times - 1) << 4 | WORDS[name]])


def raw_payload(data):
    assert len(data) <= 127
    return bytes([0x80 | len(data)]) + data


def fs_raw(direction, data):
    out = b""
    while data:
        piece, data = data[:256], data[256:]
        out += bytes([0x00 | direction << 4, len(piece) - 1]) + piece
    return out


def fs_frame(direction, opcode, payload, fin=True, rsv1=False, rsv2=False, long=False, wrong_mask=False):
    h = opcode | (0 if fin else 0x10) | (0x20 if rsv1 else 0) | (0x40 if rsv2 else 0) | (0x80 if long else 0)
    return bytes([0x01 | direction << 4 | (0x20 if wrong_mask else 0), h]) + payload


def fs_message(direction, payload, binary=False, compressed=False, fragments=1, ping=False, pong=False, key=0):
    f = (fragments - 1) | (4 if ping else 0) | (8 if pong else 0) | key << 4
    return bytes([0x02 | direction << 4 | (0x20 if binary else 0) | (0x40 if compressed else 0), f]) + payload


def fs_ms(t):
    return bytes([0x03, t])


FS_WAKE, FS_BEFORE_WAKE, FS_NS = bytes([0x23]), bytes([0x43]), bytes([0x63])
INJECT = dict(text=0, binary=1, ping=2, pong=3, close=4, reserved=5, reserved_control=6)


def fs_inject(direction, kind, payload):
    return bytes([0x04 | direction << 4 | INJECT[kind] << 5]) + payload


def fs_pause(direction, pause=True):
    return bytes([0x05 | direction << 4 | (0x20 if pause else 0)])


def fs_end(direction, full=False):
    return bytes([0x06 | direction << 4 | (0x20 if full else 0)])


def fs_update(rules):
    out = bytes([0x07, len(rules)])
    for rule in rules:
        index, modifier = rule if isinstance(rule, tuple) else (rule, 0)
        out += bytes([index, modifier])
    return out


def fs_huge(direction, length=0, kind=0, payload=b"\x80"):
    return bytes([0x08 | direction << 4, length | kind << 2]) + payload


def fs_again(direction, times):
    return bytes([0x09 | direction << 4, times - 1])


def fs_close(direction, code_index=0, reason=b"\x8a"):
    return bytes([0x0A | direction << 4 | code_index << 5]) + reason


def fs_modifier(probability=0, direction=0, times=0, match=0):
    return probability | direction << 2 | times << 4 | match << 6


def fault_session_seeds():
    seeds = {}
    chatter = b"".join([
        fs_message(TO_SERVER, word("hello")),
        fs_message(TO_CLIENT, word("Hello", 3), fragments=3, ping=True, pong=True),
        fs_message(TO_SERVER, word("fox", 4), binary=True, fragments=2, key=2),
        fs_frame(TO_CLIENT, 0x9, word("ping")),
        fs_frame(TO_SERVER, 0xA, word("ping")),
        fs_message(TO_CLIENT, word("json", 8)),  # 16-bit length
        fs_ms(20),
    ])
    seeds["no-rules-byte-transparent"] = fs_header([], piece=0) + chatter + b"".join([
        fs_raw(TO_CLIENT, bytes([0x81, 0x03]) + b"ab"),  # a frame cut short ...
        fs_raw(TO_CLIENT, b"c" + bytes([0x82, 0x7E, 0x00])),  # ... finished, then a header in pieces
        fs_raw(TO_CLIENT, bytes([0x80]) + b"z" * 128),
        fs_end(TO_SERVER), fs_end(TO_CLIENT),
    ])
    compressed = b"".join([
        fs_message(TO_CLIENT, word("hello", 4), compressed=True),
        fs_message(TO_CLIENT, word("hello", 4), compressed=True, fragments=3, ping=True),
        fs_message(TO_SERVER, word("json", 3), compressed=True, key=1),
        fs_message(TO_SERVER, word("json", 3), compressed=True, fragments=2, pong=True),
        fs_message(TO_CLIENT, word("bab", 2)),
        fs_message(TO_CLIENT, word("b", 8), compressed=True),
        fs_message(TO_CLIENT, word("hello", 4), compressed=True, binary=True),
    ])
    seeds["no-rules-deflate-context-takeover"] = fs_header([], ext=PMD, piece=1) + compressed
    seeds["drop-under-context-takeover"] = fs_header([R["drop_b"], R["drop_nth2"], R["delay"]], ext=PMD, piece=2) + compressed + fs_ms(100)
    seeds["rewrite-duplicate-fragment-deflate"] = fs_header(
        [R["rewrite_replace"], R["duplicate"], R["fragment3"], R["rewrite_empty_nth2"]], ext=PMD, piece=3) + compressed
    seeds["no-context-takeover-small-windows"] = fs_header([R["drop"] , R["fragment1"]], ext=PMD_BITS, piece=4) + compressed
    seeds["no-context-takeover"] = fs_header([(R["drop_nth2"], fs_modifier(probability=1))], ext=PMD_NO_CONTEXT) + compressed
    seeds["client-window-10"] = fs_header([R["corrupt_utf8"], R["corrupt_binary"]], ext=PMD_CLIENT10) + compressed
    seeds["server-window-12"] = fs_header([R["rewrite_set"], R["drop_b"]], ext=PMD_SERVER12) + compressed
    seeds["webkit-deflate-frame"] = fs_header([R["drop_b"]], ext=WEBKIT) + compressed
    seeds["corrupt-every-kind"] = fs_header(
        [R["corrupt_utf8"], R["corrupt_rsv1"], R["corrupt_rsv2"], R["corrupt_rsv3"], R["corrupt_opcode"],
         R["corrupt_unmasked"], R["corrupt_masked"]]) + chatter
    seeds["corrupt-oversized-control-every-2"] = fs_header(
        [(R["corrupt_oversized"], fs_modifier(match=2)), (R["corrupt_rsv1"], fs_modifier(match=1))], ext=PMD) + chatter + compressed
    seeds["stall-and-timeout"] = fs_header([R["stall_msg"], R["stall_timed"], R["timeout_msg"]], piece=5) + chatter + b"".join([
        fs_ms(150), FS_WAKE, fs_message(TO_CLIENT, word("x")), FS_BEFORE_WAKE, FS_WAKE, fs_ms(255)])
    seeds["stall-for-good-then-both-end"] = fs_header([R["stall_forever"], R["timeout_timed"]]) + chatter + b"".join([
        fs_message(TO_CLIENT, word("x")), fs_message(TO_CLIENT, word("hello")), fs_end(TO_CLIENT), fs_end(TO_SERVER)])
    seeds["timed-injections"] = fs_header(
        [R["inject_at"], R["inject_every"], R["inject_close_every"], R["close_timed"], R["half_close_timed"],
         R["inject_pong"], R["half_close_every"]], piece=6) + b"".join([
        fs_ms(5), FS_WAKE, FS_WAKE, FS_BEFORE_WAKE, FS_NS, fs_ms(35)]) + chatter + fs_ms(160)
    seeds["close-abort-half-close"] = fs_header([R["close_msg"], R["half_close_msg"], R["abort_msg"]]) + b"".join([
        fs_message(TO_CLIENT, word("a")), fs_message(TO_CLIENT, word("x")), fs_message(TO_SERVER, word("a")),
        fs_message(TO_SERVER, word("b")), fs_message(TO_SERVER, word("x")), fs_message(TO_CLIENT, word("boom"))])
    seeds["abort-on-time"] = fs_header([R["abort_timed"], R["delay_jitter"]], seed=0x5A5) + chatter + fs_ms(230) + chatter + fs_ms(30)
    seeds["limit-throttle-slow-close"] = fs_header(
        [R["limit_bytes"], R["limit_messages"], R["throttle"], R["slow_close"]], piece=7) + chatter + fs_end(TO_SERVER) + fs_ms(200)
    seeds["throttle-slowly-limit-one-byte"] = fs_header([R["throttle_slow"], R["limit_one_byte"]]) + chatter + fs_ms(250)
    seeds["matches"] = fs_header(
        [R["inject_every_binary"], R["delay_control"], R["drop_control"], R["duplicate_close"], R["drop_window"],
         R["drop_path"], R["fragment_half"]], seed=77) + chatter + fs_ms(150) + chatter + b"".join([
        fs_close(TO_SERVER, 0, b"\x02"), fs_close(TO_CLIENT, 3, raw_payload(b"bye")), fs_message(TO_CLIENT, word("a"))])
    seeds["inject-after-match-rewrites"] = fs_header(
        [R["inject_after"], R["rewrite_set_binary"], R["rewrite_empty_all"], R["drop_other_connection"], R["refuse"]]) + chatter
    seeds["control-api-pause-full-close"] = fs_header([]) + chatter + b"".join([
        fs_pause(TO_CLIENT), fs_message(TO_CLIENT, word("hello")),
        fs_inject(TO_CLIENT, "text", word("ab")), fs_inject(TO_SERVER, "ping", word("empty")),
        fs_inject(TO_SERVER, "close", raw_payload(b"\x03\xe8bye")), fs_inject(TO_CLIENT, "reserved", word("a")),
        fs_pause(TO_CLIENT, False), fs_message(TO_SERVER, word("a")),
        fs_end(TO_SERVER, full=True), fs_message(TO_CLIENT, word("b")), fs_end(TO_CLIENT, full=True)])
    seeds["huge-frame-passes-with-injection"] = fs_header([R["inject_at"], R["drop"]]) + b"".join([
        fs_huge(TO_CLIENT, 0, 0, raw_payload(b"\x00" * 100)), fs_inject(TO_CLIENT, "text", word("a")), fs_raw(TO_CLIENT, b"\x01" * 200), fs_huge(TO_SERVER, 1, 1), fs_huge(TO_CLIENT, 3, 3),
        fs_huge(TO_SERVER, 2, 2, word("fox", 8)), fs_ms(20)])
    seeds["rules-updated-ids-reused"] = fs_header([R["inject_every"], R["stall_timed"]], by_position=True) + chatter + b"".join([
        fs_update([R["drop"], R["delay"]]), fs_ms(100), fs_update([]), chatter,
        fs_update([R["throttle"], R["limit_messages"], R["half_close_msg"]]), chatter, fs_ms(200)])
    request_reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    seeds["scripted-response-and-early-client-frames"] = fs_header([R["drop_b"], R["inject_at"]], start=SCRIPTED) + b"".join([
        fs_message(TO_SERVER, word("ab")),
        fs_raw(TO_CLIENT, b"HTTP/1.1 100 Continue\r\n\r\n"),
        fs_raw(TO_CLIENT, request_reply[:50]), fs_raw(TO_CLIENT, request_reply[50:]),
        fs_message(TO_CLIENT, word("b"), compressed=True), fs_message(TO_SERVER, word("bab"), compressed=True), fs_ms(20)])
    seeds["scripted-rejection"] = fs_header([R["drop"]], start=SCRIPTED) + b"".join([
        fs_raw(TO_SERVER, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
        fs_raw(TO_CLIENT, b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!"), fs_end(TO_CLIENT)])
    seeds["not-an-upgrade"] = fs_header([R["throttle"], R["limit_bytes"], R["inject_at"]], start=NOT_UPGRADE) + b"".join([
        fs_raw(TO_SERVER, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), fs_raw(TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), fs_ms(200)])
    seeds["continue-then-101-repeats"] = fs_header([R["limit_messages"]], start=CONTINUE101, ext=PMD_NO_CONTEXT) + b"".join([
        fs_message(TO_CLIENT, word("hello"), compressed=True), fs_again(TO_CLIENT, 4), fs_message(TO_SERVER, word("a")),
        fs_again(TO_SERVER, 2), fs_frame(TO_CLIENT, 0x3, word("a")), fs_frame(TO_CLIENT, 0x1, word("ab"), fin=False, rsv2=True, long=True),
        fs_frame(TO_SERVER, 0x2, word("ab"), wrong_mask=True)])
    seeds["bad-extension-parameters"] = fs_header([R["drop_nth2"]], ext=PMD_BAD) + compressed
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
    write("FuzzFaultSession", fault_session_seeds())
