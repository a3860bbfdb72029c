"""Run `wsinspect read FILE --format jsonl` and index its events."""
from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from reference import C2S, S2C, Endpoint, parse_endpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / ".build/debug/wsinspect"

# Summary lines collected by the tests, printed at the end of the session (conftest.py).
REPORTS: dict[str, list[str]] = {}


def wsinspect_path() -> Path:
    return Path(os.environ.get("WSINSPECT", str(DEFAULT_BINARY)))


@dataclass
class InspectorRun:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    events: list[dict] = field(default_factory=list)
    bad_lines: list[tuple[int, str, str]] = field(default_factory=list)  # (line no, text, error)

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def frames(self) -> list[dict]:
        return self.of_type("frame")

    @property
    def messages(self) -> list[dict]:
        return self.of_type("message")

    def connections(self) -> dict[int, dict]:
        """connection id -> connection-open event."""
        return {e["connection"]: e for e in self.of_type("connection-open")}

    def connection_keys(self) -> dict[int, tuple[Endpoint, Endpoint]]:
        """connection id -> (client endpoint, server endpoint)."""
        out = {}
        for cid, e in self.connections().items():
            out[cid] = (parse_endpoint(e["client"]), parse_endpoint(e["server"]))
        return out

    def by_client(self, kind: str) -> dict[tuple[Endpoint, str], list[dict]]:
        """(client endpoint, direction) -> events of `kind` in output order."""
        keys = self.connection_keys()
        out: dict = {}
        for e in self.of_type(kind):
            cid = e.get("connection")
            client = keys[cid][0] if cid in keys else ("?", cid)
            out.setdefault((client, e.get("direction")), []).append(e)
        return out

    def describe(self) -> str:
        return (f"$ {' '.join(self.cmd)}\nexit {self.returncode}\nstderr (tail):\n{self.stderr[-2000:]}")


def run_wsinspect(binary: Path, pcap: Path, extra: list[str] = (), timeout: float = 180) -> InspectorRun:
    cmd = [str(binary), "read", str(pcap), "--format", "jsonl", *extra]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    run = InspectorRun(cmd, r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace"))
    for n, line in enumerate(run.stdout.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            run.events.append(obj)
        except ValueError as exc:
            run.bad_lines.append((n, line[:200], str(exc)))
    return run


def payload_of(event: dict) -> bytes:
    v = event.get("payloadBase64")
    return base64.b64decode(v) if v else b""


__all__ = ["REPORTS", "InspectorRun", "run_wsinspect", "payload_of", "wsinspect_path", "REPO_ROOT", "C2S", "S2C"]
