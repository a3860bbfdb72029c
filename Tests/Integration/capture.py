"""Capture generation from real peers: tcpdump around the scenarios in peers/.

    from capture import run_scenario, run_scenarios, SCENARIOS
    result = run_scenario("echo_deflate", Path("/tmp/caps"))
    result.pcap, result.peer_log, result.port, result.tshark_options()

Also usable from the command line, to keep captures for a look with tshark:

    sudo python3 Tests/Integration/capture.py /tmp/caps echo_plain fragmented_deflate
    sudo python3 Tests/Integration/capture.py /tmp/caps            # all scenarios

How a capture is made (see peers/py_scenarios.py for the line protocol):
  1. the scenario script binds its server to port 0 and says "WAIT server-listening P";
  2. we start `tcpdump -i lo -U -w FILE 'tcp port P'` and wait for "listening on" on
     its stderr, then answer GO (mid-stream scenarios: we answer GO at once and start
     tcpdump when the script says "WAIT handshake-done P");
  3. when the script has finished (DONE, exit 0) we wait SETTLE_SECONDS more, because
     libpcap hands a partly filled buffer block to tcpdump only after its 1 s timeout
     (stopping earlier silently loses the last packets), then stop tcpdump with SIGINT
     and check that the kernel dropped nothing.
"""
from __future__ import annotations

import atexit
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
PY_SCENARIOS = PEERS / "py_scenarios.py"

SETTLE_SECONDS = 2.2
EXTRA_WAIT_SECONDS = 8.0  # more waiting if the file is not complete yet (busy machine)
NODE_PATH = "/usr/share/nodejs"


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    description: str
    snaplen: int | None = None  # tcpdump -s
    midstream: bool = False  # start tcpdump after the handshake
    node: bool = False  # needs node + node-ws
    compressed: bool = False  # permessage-deflate negotiated
    ipv6: bool = False


SCENARIOS: dict[str, ScenarioSpec] = {
    s.name: s
    for s in [
        ScenarioSpec("echo_plain", "text/binary echo, 7/16/64-bit lengths, no compression"),
        ScenarioSpec("echo_deflate", "same echo with permessage-deflate (websockets default, window bits 12)",
                     compressed=True),
        ScenarioSpec("echo_deflate_nocontext", "echo, permessage-deflate with client/server_no_context_takeover",
                     compressed=True),
        ScenarioSpec("echo_deflate_wbits10", "echo, permessage-deflate with client/server_max_window_bits=10",
                     compressed=True),
        ScenarioSpec("fragmented_plain", "fragmented messages (empty final frame, FIN on last fragment, "
                     "pings between fragments), no compression"),
        ScenarioSpec("fragmented_deflate", "same fragmented messages with permessage-deflate", compressed=True),
        ScenarioSpec("large_plain", "300 KiB and 2 MiB binary messages both ways, no compression"),
        ScenarioSpec("large_deflate", "300 KiB incompressible + 2 MiB JSON with permessage-deflate",
                     compressed=True),
        ScenarioSpec("control", "pings/pongs with payloads (empty, 125 bytes, unsolicited pong)"),
        ScenarioSpec("close_codes", "5 connections: close 1000/1001/4000/3000 with reasons, empty close",
                     compressed=True),
        ScenarioSpec("ipv6", "echo over ::1 with permessage-deflate", compressed=True, ipv6=True),
        ScenarioSpec("two_connections", "two concurrent compressed connections", compressed=True),
        ScenarioSpec("midstream_plain", "tcpdump started after the handshake, no compression", midstream=True),
        ScenarioSpec("midstream_deflate", "tcpdump started after the handshake, permessage-deflate with "
                     "context takeover (messages refer back to uncaptured data)", midstream=True, compressed=True),
        ScenarioSpec("snaplen96", "tcpdump -s 96 (handshake and long payloads cut)", snaplen=96),
        ScenarioSpec("node_ws", "Node ws server (fin:false fragments, server ping, close 4001), Python client",
                     node=True),
        ScenarioSpec("node_ws_deflate", "same with permessage-deflate (ws threshold 0)", node=True,
                     compressed=True),
        ScenarioSpec("chat", "the README sample: chat.v1 sub-protocol, JSON chat, fragments, ping, close",
                     compressed=True),
    ]
}


class CaptureError(RuntimeError):
    pass


# Processes we started and have not reaped yet; killed at interpreter exit (e.g. after ^C).
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


def _track(proc: subprocess.Popen) -> subprocess.Popen:
    with _LIVE_LOCK:
        _LIVE.add(proc)
    return proc


def _untrack(proc: subprocess.Popen) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # each was started in its own session
            except ProcessLookupError:
                pass


@dataclass
class CaptureResult:
    name: str
    spec: ScenarioSpec
    pcap: Path
    peer_log_path: Path
    peer_log: dict
    port: int
    tcpdump_stats: dict = field(default_factory=dict)
    duration: float = 0.0
    extra_wait: float = 0.0  # seconds waited beyond SETTLE_SECONDS for the file to be complete

    def tshark_options(self) -> list[str]:
        """tshark options needed to decode this capture (besides -r)."""
        opts = ["-o", "tcp.reassemble_out_of_order:TRUE"]
        if self.spec.midstream:
            opts += ["-d", f"tcp.port=={self.port},websocket"]
        return opts


# --------------------------------------------------------------------------
# Prerequisites
# --------------------------------------------------------------------------


def capture_prerequisites_missing() -> str | None:
    """None when captures can be made here, else a precise reason."""
    if not sys.platform.startswith("linux"):
        return "capture generation needs Linux loopback capture (tcpdump -i lo)"
    if os.geteuid() != 0:
        return "capture generation needs root: tcpdump -i lo must open a packet socket (run as root)"
    for tool in ("tcpdump", "tshark", "editcap"):
        if shutil.which(tool) is None:
            return f"{tool} not found in PATH (Debian: apt-get install {'tshark' if tool != 'tcpdump' else 'tcpdump'})"
    try:
        import websockets  # noqa: F401
    except ImportError:
        return "Python package 'websockets' is not installed (pip install websockets)"
    return None


def node_prerequisites_missing() -> str | None:
    if shutil.which("node") is None:
        return "node not found in PATH (Debian: apt-get install nodejs node-ws)"
    env = dict(os.environ, NODE_PATH=NODE_PATH)
    r = subprocess.run(["node", "-e", "require('ws')"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return f"node cannot require('ws') with NODE_PATH={NODE_PATH} (Debian: apt-get install node-ws)"
    return None


# --------------------------------------------------------------------------
# tcpdump
# --------------------------------------------------------------------------


class Tcpdump:
    """tcpdump -i lo -U -w FILE 'tcp port P' [-s SNAPLEN], as a context-free object."""

    def __init__(self, pcap: Path, port: int, snaplen: int | None = None, interface: str = "lo",
                 buffer_kib: int = 65536):
        self.pcap = pcap
        self.cmd = ["tcpdump", "-i", interface, "-U", "-n", "-B", str(buffer_kib), "-w", str(pcap)]
        if snaplen:
            self.cmd += ["-s", str(snaplen)]
        self.cmd.append(f"tcp port {port}")
        self.proc: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []
        self._listening = threading.Event()

    def start(self, timeout: float = 15.0) -> "Tcpdump":
        self.proc = _track(subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, text=True, start_new_session=True))

        def reader():
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))
                if "listening on" in line:
                    self._listening.set()
            self._listening.set()  # EOF: stop waiting (start() checks poll())

        threading.Thread(target=reader, daemon=True).start()
        if not self._listening.wait(timeout) or self.proc.poll() is not None:
            err = "\n".join(self.stderr_lines)
            self.kill()
            raise CaptureError(f"tcpdump did not start ({' '.join(self.cmd)}):\n{err}")
        return self

    def stop(self, settle: float = SETTLE_SECONDS) -> dict:
        """Wait `settle` seconds, SIGINT, and return the statistics tcpdump printed."""
        assert self.proc is not None
        time.sleep(settle)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CaptureError("tcpdump did not exit after SIGINT")
        _untrack(self.proc)
        time.sleep(0.05)  # let the reader thread take the last lines
        stats = {}
        for line in self.stderr_lines:
            m = re.match(r"(\d+) packets? (captured|received by filter|dropped by kernel)", line)
            if m:
                stats[m.group(2)] = int(m.group(1))
        return stats

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            _untrack(self.proc)


# --------------------------------------------------------------------------
# Running a scenario
# --------------------------------------------------------------------------


def run_scenario(name: str, outdir: Path, timeout: float = 120.0, settle: float = SETTLE_SECONDS,
                 pace: float | None = None) -> CaptureResult:
    spec = SCENARIOS[name]
    outdir.mkdir(parents=True, exist_ok=True)
    pcap = outdir / f"{name}.pcap"
    log_path = outdir / f"{name}.peers.json"
    err_path = outdir / f"{name}.peers.stderr"
    for p in (pcap, log_path):
        if p.exists():
            p.unlink()
    cmd = [sys.executable, str(PY_SCENARIOS), name, "--log", str(log_path)]
    if pace is not None:
        cmd += ["--pace", str(pace)]
    env = dict(os.environ, NODE_PATH=NODE_PATH, PYTHONUNBUFFERED="1")
    started = time.monotonic()
    tcpdump: Tcpdump | None = None
    stats: dict = {}
    with open(err_path, "w") as err:
        proc = _track(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                       env=env, start_new_session=True))
        lines: queue.Queue = queue.Queue()

        def reader():
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        deadline = started + timeout
        try:
            done = False
            while not done:
                try:
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise CaptureError(f"scenario {name} timed out after {timeout} s")
                if line is None:
                    break
                if line.startswith("WAIT "):
                    _, label, port_s = line.split()
                    port = int(port_s)
                    start_now = (label == "handshake-done") if spec.midstream else (label == "server-listening")
                    if start_now:
                        tcpdump = Tcpdump(pcap, port, snaplen=spec.snaplen).start()
                    proc.stdin.write("GO\n")
                    proc.stdin.flush()
                elif line == "DONE":
                    done = True
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if rc != 0 or not done:
                raise CaptureError(f"scenario {name} failed (exit {rc}):\n{err_path.read_text()[-3000:]}")
            peer_log = json.loads(log_path.read_text())
            # Do not stop tcpdump before everything is in the file: wait SETTLE_SECONDS, then
            # (still capturing) check the file against the peer log, waiting more if needed.
            time.sleep(settle)
            waited = 0.0
            while (problem := capture_incomplete(pcap, spec, peer_log)) and waited < EXTRA_WAIT_SECONDS:
                time.sleep(0.5)
                waited += 0.5
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # our own process group (start_new_session)
                proc.wait()
            _untrack(proc)
            if tcpdump is not None:
                stats = tcpdump.stop(settle=0.0)
    if tcpdump is None:
        raise CaptureError(f"scenario {name} never asked for the capture to start")
    if stats.get("dropped by kernel", 0):
        raise CaptureError(f"scenario {name}: tcpdump reports {stats['dropped by kernel']} packets dropped by kernel")
    problem = capture_incomplete(pcap, spec, peer_log)
    if problem:
        raise CaptureError(f"scenario {name}: capture incomplete after {settle + waited:.1f} s: {problem}")
    return CaptureResult(name=name, spec=spec, pcap=pcap, peer_log_path=log_path, peer_log=peer_log,
                         port=int(peer_log["port"]), tcpdump_stats=stats, duration=time.monotonic() - started,
                         extra_wait=waited)


def capture_incomplete(pcap: Path, spec: ScenarioSpec, peer_log: dict) -> str | None:
    """None if the capture holds everything the peers did, else what is missing.

    Checks the TCP FINs of every connection (2 per connection) and, unless the snaplen
    hides the frames from tshark, that tshark decodes as many WebSocket frames as the
    peers sent (reference.expected_frame_count)."""
    from reference import expected_frame_count
    from tshark_ws import tshark_frame_count

    if not pcap.exists() or pcap.stat().st_size <= 24:
        return "no packet yet"
    r = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", "tcp.flags.fin==1", "-T", "fields", "-e",
                        "frame.number"], capture_output=True, text=True, timeout=60)
    fins = len(r.stdout.split())
    want_fins = 2 * len(peer_log["connections"])
    if fins < want_fins:
        return f"{fins} TCP FIN packets, expected {want_fins}"
    if spec.snaplen:
        return None
    opts = ["-o", "tcp.reassemble_out_of_order:TRUE"]
    if spec.midstream:
        opts += ["-d", f"tcp.port=={peer_log['port']},websocket"]
    try:
        got, _ = tshark_frame_count(pcap, opts)
    except RuntimeError as exc:  # e.g. a record cut short while tcpdump is writing
        return str(exc)
    want = expected_frame_count(peer_log)
    if got != want:
        return f"tshark decodes {got} WebSocket frames, the peers sent {want}"
    return None


def run_scenarios(names, outdir: Path, workers: int = 6) -> dict[str, CaptureResult | BaseException]:
    """Run several scenarios in parallel (each has its own port and tcpdump).

    Returns name -> CaptureResult, or the exception that scenario raised (so that one
    broken scenario does not hide the others)."""
    results: dict[str, CaptureResult | BaseException] = {}

    def one(name):
        try:
            return name, run_scenario(name, outdir)
        except BaseException as exc:  # noqa: BLE001 - reported per scenario
            return name, exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, res in pool.map(one, list(names)):
            results[name] = res
    # Six scenarios with their peers and tcpdumps on two cores can starve one of
    # them; a scenario whose capture came out incomplete gets one more run on its own.
    for name, res in list(results.items()):
        if isinstance(res, CaptureError):
            print(f"capture: retrying {name} alone after: {res}", file=sys.stderr)
            results[name] = one(name)[1]
    return results


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print(__doc__)
        return 2
    reason = capture_prerequisites_missing()
    if reason:
        print(f"cannot capture: {reason}", file=sys.stderr)
        return 1
    outdir = Path(argv[0])
    names = argv[1:] or list(SCENARIOS)
    rc = 0
    for name, res in run_scenarios(names, outdir).items():
        if isinstance(res, BaseException):
            print(f"{name}: FAILED: {res}")
            rc = 1
        else:
            print(f"{name}: {res.pcap} ({res.pcap.stat().st_size} bytes, {res.tcpdump_stats.get('captured')} packets, "
                  f"{res.duration:.1f} s, waited {res.extra_wait:.1f} s extra), peer log {res.peer_log_path}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
