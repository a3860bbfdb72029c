"""Self-test of the capture harness (needs no wsinspect binary).

For every scenario: the capture exists and lost nothing, tshark decodes it, and what
tshark sees -- reassembled and inflated by an independent Python reference decoder
(reference.RefAssembler) -- is exactly what the peers logged as sent.  When these pass,
the captures and peer logs are trustworthy oracles for test_tshark_differential.py.
"""
from __future__ import annotations

import struct

import pytest

from capture import SCENARIOS
from reference import (
    C2S,
    DIRECTIONS,
    DATA_TYPES,
    RefAssembler,
    deflate_negotiated,
    expected_control_frames,
    norm_ip,
    parse_endpoint,
    sent_messages,
    tshark_by_client,
)

FULL = [n for n, s in SCENARIOS.items() if not s.snaplen]


def server_endpoint(cap):
    return norm_ip(cap.peer_log["host"]), cap.port


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_capture_made(get_capture, name):
    cap = get_capture(name)
    assert cap.pcap.stat().st_size > 24, "empty capture"
    assert cap.tcpdump_stats.get("dropped by kernel", 0) == 0
    assert cap.peer_log["connections"], "peer log has no connection"
    for conn in cap.peer_log["connections"]:
        assert conn["client_events"] and conn["server_events"], conn["client"]
        if not cap.spec.midstream:
            # both sides saw the closing handshake
            assert any(e["type"] == "close" and e["op"] == "recv" for e in conn["client_events"]), conn["client"]
            assert any(e["type"] == "close" and e["op"] == "recv" for e in conn["server_events"]), conn["client"]
    assert all(deflate_negotiated(c) == cap.spec.compressed for c in cap.peer_log["connections"])


def test_snaplen_capture_is_cut_and_tshark_decodes_nothing(get_capture, tshark_cache):
    """tshark is not the truth here: the 101 response loses its headers, tshark decodes 0 frames."""
    cap = get_capture("snaplen96")
    header = cap.pcap.read_bytes()[:24]
    magic = header[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    snaplen = struct.unpack(endian + "I", header[16:20])[0]
    assert snaplen == 96
    assert tshark_cache(cap.pcap, tuple(cap.tshark_options())) == []


@pytest.mark.parametrize("name", FULL)
def test_tshark_frames_equal_peer_log(get_capture, tshark_cache, name):
    cap = get_capture(name)
    frames = tshark_cache(cap.pcap, tuple(cap.tshark_options()))
    assert frames, "tshark decoded no WebSocket frame"
    groups = tshark_by_client(frames, server_endpoint(cap))
    conns = {parse_endpoint(c["client"]): c for c in cap.peer_log["connections"]}
    assert {k[0] for k in groups} <= set(conns), f"frames on unknown connections: {set(groups)}"
    problems = []
    for client, conn in conns.items():
        deflate = deflate_negotiated(conn)
        for direction in DIRECTIONS:
            tf = groups.get((client, direction), [])
            ref = RefAssembler(deflate=deflate)
            for f in tf:
                ref.feed(f.opcode, f.fin, f.rsv1, f.full_payload, f.packet)
            want = sent_messages(conn, direction)
            where = f"{conn['client']} {direction}"
            if len(ref.messages) != len(want):
                problems.append(f"{where}: tshark frames give {len(ref.messages)} messages, peers sent {len(want)}")
                continue
            for i, (got, exp) in enumerate(zip(ref.messages, want)):
                if got.opcode != DATA_TYPES[exp.type]:
                    problems.append(f"{where} msg {i}: opcode {got.opcode} != {exp.type}")
                if got.frames != exp.frame_count:
                    problems.append(f"{where} msg {i}: {got.frames} frames, peer sent {exp.frame_count}")
                if got.payload is None and cap.spec.midstream:
                    continue  # refers back to data sent before the capture started
                if got.payload != exp.payload:
                    problems.append(f"{where} msg {i}: payload differs ({got.inflate_error or 'bytes'}): "
                                    f"{(got.payload or b'')[:40]!r} vs {exp.payload[:40]!r}")
            control = sorted((("ping", "pong", "close")[[9, 10, 8].index(f.opcode)], f.full_payload)
                             for f in tf if f.opcode in (8, 9, 10))
            want_control = expected_control_frames(conn, direction, cap.peer_log.get("node", False))
            if control != want_control:
                problems.append(f"{where}: control frames differ:\n  tshark {control}\n  peers  {want_control}")
            if direction == C2S:
                assert all(f.masked for f in tf), f"{where}: unmasked client frame"
            else:
                assert not any(f.masked for f in tf), f"{where}: masked server frame"
    assert not problems, "\n".join(problems)


def test_midstream_deflate_really_refers_back(get_capture, tshark_cache):
    """The mid-stream compressed capture must contain a message that cannot be inflated
    without the uncaptured history; otherwise it does not test what it claims to."""
    cap = get_capture("midstream_deflate")
    frames = tshark_cache(cap.pcap, tuple(cap.tshark_options()))
    ref = RefAssembler(deflate=True)
    for f in frames:
        if parse_endpoint(f"{f.dst[0]}:{f.dst[1]}") == server_endpoint(cap):
            ref.feed(f.opcode, f.fin, f.rsv1, f.full_payload, f.packet)
    assert any(m.payload is None for m in ref.messages), [m.inflate_error for m in ref.messages]


def test_large_masked_frames_exceed_tshark_unmask_limit(get_capture, tshark_cache):
    cap = get_capture("large_plain")
    frames = tshark_cache(cap.pcap, tuple(cap.tshark_options()))
    big = [f for f in frames if f.masked and f.payload_length > 256 * 1024]
    assert len(big) == 2 and all(f.tshark_payload_truncated for f in big)
    assert all(len(f.full_payload) == f.payload_length for f in big)
