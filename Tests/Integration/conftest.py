"""Fixtures for the wsinspect integration tests.

Environment:
  WSINSPECT         path of the binary (default: <repo>/.build/debug/wsinspect)
  WSI_CAPTURE_DIR   write the scenario captures + peer logs there (kept) instead of a tmp dir
  WSI_SCENARIOS     comma-separated subset of scenarios to capture (default: all)
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from capture import (  # noqa: E402
    SCENARIOS,
    CaptureResult,
    capture_prerequisites_missing,
    node_prerequisites_missing,
    run_scenarios,
)
from tshark_ws import tshark_frames  # noqa: E402
from wsinspect_run import REPO_ROOT, REPORTS, run_wsinspect, wsinspect_path  # noqa: E402


def selected_scenarios() -> list[str]:
    env = os.environ.get("WSI_SCENARIOS")
    if not env:
        return list(SCENARIOS)
    names = [n.strip() for n in env.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise pytest.UsageError(f"WSI_SCENARIOS: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    return names


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def wsinspect_bin() -> Path:
    path = wsinspect_path()
    if not path.exists():
        pytest.skip(f"wsinspect binary not found at {path} (build it with `swift build`, or set WSINSPECT=/path)")
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not executable")
    return path


class _Cache:
    def __init__(self):
        self._lock = threading.Lock()
        self._data: dict = {}

    def get(self, key, make):
        with self._lock:
            if key not in self._data:
                try:
                    self._data[key] = ("ok", make())
                except Exception as exc:  # cached too: do not rerun a failing tool per test
                    self._data[key] = ("err", exc)
            status, value = self._data[key]
        if status == "err":
            raise value
        return value


@pytest.fixture(scope="session")
def scenario_captures(tmp_path_factory) -> dict[str, CaptureResult | BaseException | str]:
    """All scenario captures, made once per session, in parallel.

    Values: CaptureResult, the exception a scenario raised, or a str = skip reason."""
    reason = capture_prerequisites_missing()
    if reason:
        pytest.skip(reason)
    outdir = Path(os.environ["WSI_CAPTURE_DIR"]) if os.environ.get("WSI_CAPTURE_DIR") \
        else tmp_path_factory.mktemp("captures")
    names = selected_scenarios()
    node_reason = node_prerequisites_missing()
    results: dict = {}
    runnable = []
    for n in names:
        if SCENARIOS[n].node and node_reason:
            results[n] = node_reason
        else:
            runnable.append(n)
    results.update(run_scenarios(runnable, outdir))
    return results


@pytest.fixture(scope="session")
def get_capture(scenario_captures):
    def get(name: str) -> CaptureResult:
        if name not in scenario_captures:
            pytest.skip(f"scenario {name} not selected (WSI_SCENARIOS)")
        res = scenario_captures[name]
        if isinstance(res, str):
            pytest.skip(res)
        if isinstance(res, BaseException):
            pytest.fail(f"capture generation for {name} failed: {res}", pytrace=False)
        return res

    return get


@pytest.fixture(scope="session")
def tshark_cache():
    if shutil.which("tshark") is None:
        pytest.skip("tshark not found in PATH (Debian: apt-get install tshark)")
    cache = _Cache()

    def get(pcap: Path, options: tuple[str, ...] = ()):
        return cache.get((str(pcap), tuple(options)), lambda: tshark_frames(pcap, list(options)))

    return get


@pytest.fixture(scope="session")
def inspect(wsinspect_bin):
    """inspect(pcap) -> InspectorRun of `wsinspect read pcap --format jsonl`, cached per session."""
    cache = _Cache()

    def get(pcap: Path):
        return cache.get(str(pcap), lambda: run_wsinspect(wsinspect_bin, pcap))

    return get


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the per-scenario / per-file tables the tests collected (also with -q)."""
    for title, rows in REPORTS.items():
        if not rows:
            continue
        terminalreporter.write_sep("-", f"wsinspect: {title}")
        for row in sorted(rows):
            terminalreporter.write_line(row)
