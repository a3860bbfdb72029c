#!/usr/bin/env bash
# The README's second command: every test. Installs what is missing (as root),
# builds, runs the Swift unit tests, then the integration tests against real
# peers (Python websockets, Node ws) with tshark as the oracle.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-dependencies.sh --test

echo "== format (swift format lint --strict, .swift-format; fix with: swift format -i -r Sources Tests fuzz/Sources)"
swift format lint --strict -r Package.swift Sources Tests fuzz/Package.swift fuzz/Sources

echo "== build (warnings are errors)"
swift build --build-tests

echo "== unit tests"
swift test --skip-build

echo "== integration tests (real peers, tcpdump, tshark)"
export WSINSPECT="$PWD/.build/debug/wsinspect"
python3 -m pytest Tests/Integration -q
