#!/usr/bin/env python3
"""Regenerate samples/chat.pcapng, the README quick-start capture.

    sudo python3 Tests/Integration/peers/make_sample_chat.py [OUT.pcapng]

A small chat session between a Python `websockets` server and client on 127.0.0.1
(the "chat" scenario of py_scenarios.py), captured with tcpdump and converted to
pcapng with `editcap -F pcapng`:

  * handshake with sub-protocol chat.v1 and permessage-deflate (window bits 12);
  * JSON text messages both ways (welcome, say, message, bot reply, upload-ack);
  * a fragmented server message (history, 3 frames, FIN on the last) and a
    fragmented client message (3 frames + websockets' empty final frame);
  * a binary message (a tiny fake PNG upload);
  * a ping with payload "keepalive-1" and its pong;
  * a clean close 1000 "bye" from the client, echoed by the server.

Needs root (tcpdump -i lo), tcpdump, tshark, editcap and `pip install websockets`.
The peer log is written next to the output as <OUT>.peers.json only with --keep-log.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from capture import capture_prerequisites_missing, run_scenario  # noqa: E402

REPO = HERE.parents[2]
DEFAULT_OUT = REPO / "samples" / "chat.pcapng"
MAX_BYTES = 50_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--pace", type=float, default=0.4, help="seconds between chat actions (default 0.4)")
    ap.add_argument("--keep-log", action="store_true", help="also write OUT.peers.json")
    opts = ap.parse_args()
    reason = capture_prerequisites_missing()
    if reason:
        print(f"cannot capture: {reason}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        res = run_scenario("chat", Path(tmp), pace=opts.pace)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["editcap", "-F", "pcapng", "--capture-comment",
                        "wsinspect sample: WebSocket chat session (Python websockets, chat.v1, permessage-deflate) "
                        "on loopback; regenerate with Tests/Integration/peers/make_sample_chat.py",
                        str(res.pcap), str(opts.out)], check=True)
        if opts.keep_log:
            shutil.copy(res.peer_log_path, opts.out.with_suffix(".peers.json"))
    size = opts.out.stat().st_size
    summary = subprocess.run(["tshark", "-n", "-r", str(opts.out), "-Y", "websocket"],
                             capture_output=True, text=True).stdout
    print(summary)
    print(f"wrote {opts.out} ({size} bytes, {len(summary.splitlines())} packets with WebSocket frames)")
    if size > MAX_BYTES:
        print(f"warning: {opts.out} is larger than {MAX_BYTES} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
