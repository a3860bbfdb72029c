#!/usr/bin/env bash
# The README's first command: installs what is missing, builds wsinspect and
# decodes the bundled sample capture (samples/chat.pcapng). Extra arguments go
# to `wsinspect read`, e.g. `scripts/quickstart.sh --messages --pretty`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-dependencies.sh
swift build --product wsinspect 2>&1 | grep -Ev '^(\[|Building|Compiling|Write|Planning)' >&2 || true
exec .build/debug/wsinspect read samples/chat.pcapng "$@"
