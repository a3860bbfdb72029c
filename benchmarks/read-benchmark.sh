#!/usr/bin/env bash
# read-benchmark.sh — how fast `wsinspect read` decodes a large capture of real
# WebSocket traffic, next to tshark and tcpdump on the same file.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benchmarks/read-benchmark.sh [options]
#
# Options:
#   --regenerate         record a new capture even if a cached one exists
#   --quick              small capture (20k messages, ~11 MB) to try the script;
#                        its figures are not the project's numbers
#   --capture FILE       benchmark FILE instead of the generated capture
#   --runs N             runs per tool (default 5); the table shows best and
#                        median, the targets use the median
#   --tshark-limit S     if tshark's first run takes longer than S seconds
#                        (default 60), it is run only once (the report says so)
#   --skip-build         use the existing .build/release/wsinspect (e.g. when
#                        another SwiftPM process holds the .build lock for long:
#                        `swift build` then waits for it without a time limit)
#   --profile            afterwards, `perf record` wsinspect on the capture and
#                        print its hottest functions (needs perf)
#   -h, --help           this text
#   Extra generator options can be passed in MAKE_CAPTURE_ARGS, e.g.
#   MAKE_CAPTURE_ARGS="--messages 800000" benchmarks/read-benchmark.sh --regenerate
#
# What it does:
#   1. swift build -c release --static-swift-stdlib --product wsinspect (SwiftPM may wait for
#      another build's lock on .build; that is fine).
#   2. Unless cached in benchmarks/out/, records a capture of real traffic:
#      benchmarks/make_capture.py runs a Python `websockets` echo server and
#      clients on 127.0.0.1 (plain frames, compression=None, plus a small
#      permessage-deflate phase) under `tcpdump -i lo -s 0 -B 65536`, and
#      refuses the file if tcpdump reports packets dropped by the kernel.
#      Default mix: 500k messages echoed on 8 connections, 99.6 % 20-200 B
#      JSON text and 0.4 % 1-64 KiB binary, a few fragmented messages and
#      pings: 1,043,611 frames in a ~239 MB pcap, 15-20 s to record. The
#      cache (FILE, FILE.meta.json, FILE.args) is reused while the generator
#      arguments stay the same.
#   3. Counts the frames once (lines of wsinspect's JSON Lines output that
#      start with {"type":"frame"}, checked against its summary) and tshark's
#      websocket frames (opcode values of `-Y websocket`), and prints both.
#   4. Times, on that same file, each of
#        wsinspect read FILE --format jsonl > /dev/null
#        tshark -r FILE -Y websocket -T fields -e websocket.opcode -e websocket.payload_length
#        tcpdump -r FILE -w /dev/null
#      (tshark's first run writes to benchmarks/out/tshark-fields.txt instead
#      of /dev/null, which gives its frame count; the others go to /dev/null)
#      with wall time (date +%s%N around the run), peak RSS (/usr/bin/time
#      -f %M), frames/s (the one frame count / wall time) and MB/s (file size,
#      10^6 bytes, / wall time).
#   5. Prints the table and the project's targets — wsinspect frames/s >= 20x
#      tshark's, wsinspect MB/s >= 25 % of tcpdump's, wsinspect peak RSS <
#      64 MB — as PASS/MISS (a miss does not fail the script), and writes it
#      all to benchmarks/out/read-benchmark.txt for the README.
#
# Exit status: 0 when the benchmark ran (whatever the targets say); non-zero
# when something could not run (build failure, tcpdump drops, a tool failing).
# Requirements: swift, python3 with websockets, tcpdump, tshark, /usr/bin/time
# (apt-get install time), root or CAP_NET_RAW for tcpdump on lo.

set -euo pipefail

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" | sed '/^!/d'; }

REGENERATE=0 QUICK=0 RUNS=5 TSHARK_LIMIT=60 SKIP_BUILD=0 PROFILE=0 CAPTURE=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --regenerate) REGENERATE=1 ;;
        --quick) QUICK=1 ;;
        --capture) CAPTURE=$2; shift ;;
        --runs) RUNS=$2; shift ;;
        --tshark-limit) TSHARK_LIMIT=$2; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        --profile) PROFILE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "read-benchmark: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/benchmarks"
OUT="$BENCH/out"
mkdir -p "$OUT"
WS="$ROOT/.build/release/wsinspect"
TMP=$(mktemp -d)
GEN_PID=""

cleanup() {
    local status=$?
    if [[ -n "$GEN_PID" ]] && kill -0 "$GEN_PID" 2>/dev/null; then
        # make_capture.py stops its echo server and tcpdump on SIGTERM.
        log "stopping the capture generator (pid $GEN_PID)"
        kill -TERM "$GEN_PID" 2>/dev/null || true
        wait "$GEN_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[read-benchmark] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in python3 tcpdump tshark; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs needs a positive integer"

# ------------------------------------------------------------------ 1. build
if [[ $SKIP_BUILD -eq 0 ]]; then
    log "building: swift build -c release --static-swift-stdlib --product wsinspect"
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --product wsinspect) >&2 || die "release build failed"
fi
[[ -x "$WS" ]] || die "$WS missing (build first or drop --skip-build)"

# ------------------------------------------------------------------ 2. capture
if [[ -n "$CAPTURE" ]]; then
    [[ -f "$CAPTURE" ]] || die "no such capture: $CAPTURE"
    CAPTURE=$(cd "$(dirname "$CAPTURE")" && pwd)/$(basename "$CAPTURE")
else
    if [[ $QUICK -eq 1 ]]; then
        CAPTURE="$OUT/ws-echo-quick.pcap"
        GEN_ARGS=(--messages 20000 --compressed-messages 2000)
    else
        CAPTURE="$OUT/ws-echo-bench.pcap"
        GEN_ARGS=(--messages 500000 --binary-fraction 0.004 --compressed-messages 20000)
    fi
    # shellcheck disable=SC2206  # word splitting of the extra arguments is wanted
    GEN_ARGS+=(${MAKE_CAPTURE_ARGS:-})
    # The cache is keyed on the generator's arguments: changing them records anew.
    if [[ -f "$CAPTURE" && "$(cat "$CAPTURE.args" 2>/dev/null)" != "${GEN_ARGS[*]}" ]]; then
        log "cached capture was made with other generator arguments: recording it again"
        REGENERATE=1
    fi
    if [[ $REGENERATE -eq 1 || ! -f "$CAPTURE" ]]; then
        log "recording $CAPTURE: make_capture.py capture ${GEN_ARGS[*]}"
        python3 "$BENCH/make_capture.py" capture --output "$CAPTURE" "${GEN_ARGS[@]}" &
        GEN_PID=$!
        if ! wait "$GEN_PID"; then
            GEN_PID=""
            die "recording the capture failed (see above; exit status 3 means tcpdump dropped packets)"
        fi
        GEN_PID=""
        printf '%s' "${GEN_ARGS[*]}" > "$CAPTURE.args"
    else
        log "reusing cached $CAPTURE (--regenerate records a new one)"
    fi
fi
META="$CAPTURE.meta.json"
SIZE=$(stat -c %s "$CAPTURE")
if [[ $QUICK -eq 0 && $SIZE -lt 100000000 ]]; then
    log "WARNING: capture is only $((SIZE / 1000000)) MB (< 100 MB): figures are not comparable"
fi

# Warm the page cache so the first tool does not pay for the disk.
cat "$CAPTURE" > /dev/null

# ------------------------------------------------------------------ 3. frame counts
log "counting wsinspect frames (one untimed run)"
mkfifo "$TMP/jsonl"
grep '^{"type":"summary"' < "$TMP/jsonl" > "$TMP/ws-summary.json" &
SUMMARY_PID=$!
set +e
"$WS" read "$CAPTURE" --format jsonl 2>"$TMP/ws-count.err" \
    | tee "$TMP/jsonl" \
    | grep -c '^{"type":"frame"' > "$TMP/ws-frames"
count_status=("${PIPESTATUS[@]}")
wait "$SUMMARY_PID"
set -e
[[ ${count_status[0]} -eq 0 ]] || die "wsinspect read exited ${count_status[0]}: $(head -c 500 "$TMP/ws-count.err")"
FRAMES=$(cat "$TMP/ws-frames")
[[ "$FRAMES" -gt 0 ]] || die "wsinspect printed no frames"
cp "$TMP/ws-summary.json" "$OUT/wsinspect-summary.json"

# ------------------------------------------------------------------ 4. timings
RESULTS="$TMP/results.tsv"   # tool, run, wall s, peak RSS KiB, user s, sys s, others' cores, steal cores
: > "$RESULTS"
NOTES=()

CLK_TCK=$(getconf CLK_TCK)
# Busy CPU time of the whole machine in ticks (user nice system irq softirq),
# and steal time: with them each run also records how much CPU *other*
# processes used meanwhile, since the machine may be shared.
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; }

# run_timed TOOL RUN STDOUT-FILE COMMAND... — one timed run; prints wall seconds.
run_timed() {
    local tool=$1 run=$2 stdout=$3 start end status busy0 steal0 busy1 steal1
    shift 3
    read -r busy0 steal0 < <(cpu_ticks)
    start=$(date +%s%N)
    set +e
    /usr/bin/time -f '%M %U %S' -o "$TMP/time" "$@" > "$stdout" 2>> "$TMP/$tool.err"
    status=$?
    set -e
    end=$(date +%s%N)
    read -r busy1 steal1 < <(cpu_ticks)
    [[ $status -eq 0 ]] || die "$tool exited $status: $(tail -c 500 "$TMP/$tool.err")"
    local wall rss user sys others steal
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    read -r rss user sys < <(tail -n 1 "$TMP/time")
    # cores' worth of CPU used by other processes during the run
    others=$(awk -v b="$((busy1 - busy0))" -v hz="$CLK_TCK" -v u="$user" -v s="$sys" -v w="$wall" \
        'BEGIN { o = (b / hz - u - s) / w; if (o < 0) o = 0; printf "%.2f", o }')
    steal=$(awk -v t="$((steal1 - steal0))" -v hz="$CLK_TCK" -v w="$wall" 'BEGIN { printf "%.2f", t / hz / w }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$run" "$wall" "$rss" "$user" "$sys" "$others" "$steal" >> "$RESULTS"
    log "  $tool run $run: ${wall} s (CPU ${user} u + ${sys} s), peak RSS $((rss / 1024)) MiB, other processes ${others} cores"
    echo "$wall"
}

log "timing wsinspect ($RUNS runs)"
for run in $(seq "$RUNS"); do
    run_timed wsinspect "$run" /dev/null "$WS" read "$CAPTURE" --format jsonl > /dev/null
done

log "timing tshark (up to $RUNS runs; once if the first takes over ${TSHARK_LIMIT} s)"
TSHARK=(tshark -r "$CAPTURE" -Y websocket -T fields -e websocket.opcode -e websocket.payload_length)
first=$(run_timed tshark 1 "$OUT/tshark-fields.txt" "${TSHARK[@]}")
if awk -v w="$first" -v l="$TSHARK_LIMIT" 'BEGIN { exit !(w > l) }'; then
    NOTES+=("tshark took ${first} s (> ${TSHARK_LIMIT} s) on its first run, so it was run once.")
else
    for run in $(seq 2 "$RUNS"); do
        run_timed tshark "$run" /dev/null "${TSHARK[@]}" > /dev/null
    done
fi
# tshark prints one line per packet; a packet holding several frames lists
# their opcodes separated by commas.
TSHARK_FRAMES=$(awk -F'\t' '$1 != "" { n += split($1, parts, ",") } END { print n + 0 }' "$OUT/tshark-fields.txt")

log "timing tcpdump ($RUNS runs)"
for run in $(seq "$RUNS"); do
    run_timed tcpdump "$run" /dev/null tcpdump -r "$CAPTURE" -w /dev/null > /dev/null
done

# ------------------------------------------------------------------ 5. report
{
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n "$(git -C "$ROOT" status --porcelain -- Sources Package.swift 2>/dev/null)" ]]; then
        commit+="+uncommitted changes in Sources/"
    fi
    echo "commit=$commit"
    echo "cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1), $(nproc) cores"
    echo "kernel=$(uname -r)"
    echo "swift=$(swift --version 2>/dev/null | head -n 1)"
    echo "tshark=$(tshark --version 2>/dev/null | head -n 1)"
    echo "tcpdump=$(tcpdump --version 2>&1 | head -n 1)"
} > "$TMP/env"
printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" > "$TMP/notes"

python3 - "$RESULTS" "$CAPTURE" "$SIZE" "$FRAMES" "$TSHARK_FRAMES" "$OUT/wsinspect-summary.json" \
    "$META" "$TMP/env" "$TMP/notes" "$QUICK" > "$OUT/read-benchmark.txt" <<'PY'
import json, os, statistics, sys, time
(results, capture, size, frames, tshark_frames, summary_path, meta_path,
 env_path, notes_path, quick) = sys.argv[1:]
size, frames, tshark_frames = int(size), int(frames), int(tshark_frames)
runs = {}
for line in open(results):
    tool, run, wall, rss, user, cpu_sys, others, steal = line.rstrip("\n").split("\t")
    runs.setdefault(tool, []).append((float(wall), int(rss), float(user), float(cpu_sys),
                                      float(others), float(steal)))
summary = {}
try:
    summary = json.load(open(summary_path))
except (OSError, ValueError):
    pass
meta = {}
if os.path.exists(meta_path):
    meta = json.load(open(meta_path))

out = []
p = out.append
p(f"wsinspect read benchmark — {time.strftime('%Y-%m-%d %H:%M %Z')}")
for line in open(env_path):
    p("  " + line.strip().replace("=", ": ", 1))
p("")
p(f"Capture: {os.path.basename(capture)}, {size / 1e6:.1f} MB, "
  f"{summary.get('packets', '?')} packets, {frames} WebSocket frames, "
  f"{summary.get('messages', '?')} messages, {summary.get('webSocketConnections', '?')} connections")
if meta:
    t = meta.get("traffic", {})
    plain, deflate = t.get("plain", {}), t.get("deflate", {})
    p(f"  recorded from real loopback traffic (Python websockets echo server + clients, "
      f"tcpdump -s 0 -B 65536: {meta['tcpdump'].get('dropped by kernel')} packets dropped by kernel)")
    p(f"  plain phase: {plain.get('messages')} messages echoed on {plain.get('connections')} connections "
      f"({plain.get('binaryMessages')} binary 1-64 KiB, rest 20-200 B JSON text; "
      f"{plain.get('fragmentedMessages')} fragmented; {plain.get('pings')} pings)")
    if deflate:
        p(f"  permessage-deflate phase: {deflate.get('messages')} messages on {deflate.get('connections')} connections")
if quick == "1":
    p("  QUICK MODE: small capture, figures only check that the script works")
p("")
p("Frame count check (same file):")
p(f"  wsinspect: {frames} frame lines (its summary says {summary.get('frames', '?')})")
p(f"  tshark:    {tshark_frames} websocket frames (opcode values under -Y websocket)")
p(f"  {'AGREE' if frames == tshark_frames else 'DIFFER by ' + str(frames - tshark_frames)}")
p("")

labels = {
    "wsinspect": "wsinspect read FILE --format jsonl > /dev/null",
    "tshark": "tshark -r FILE -Y websocket -T fields -e websocket.opcode -e websocket.payload_length",
    "tcpdump": "tcpdump -r FILE -w /dev/null",
}
rows = {}
header = (f"{'tool':<10} {'runs':>4} {'best s':>8} {'median s':>9} {'frames/s':>12} {'MB/s':>9} "
          f"{'peak RSS MiB':>13} {'CPU s':>7} {'others':>7}")
p(header)
p("-" * len(header))
for tool in ("wsinspect", "tshark", "tcpdump"):
    data = runs.get(tool, [])
    if not data:
        continue
    walls = [d[0] for d in data]
    median = statistics.median(walls)
    best = min(walls)
    rss = max(d[1] for d in data) / 1024
    cpu = statistics.median(d[2] + d[3] for d in data)
    others = statistics.median(d[4] for d in data)
    steal = statistics.median(d[5] for d in data)
    rows[tool] = dict(median=median, best=best, fps=frames / median, mbps=size / 1e6 / median,
                      rss=rss, cpu=cpu, others=others, steal=steal)
    # /proc/stat counts in 10 ms ticks: too coarse for runs shorter than a second.
    others_text = f"{others:.2f}" if median >= 1 else "-"
    rows[tool]["others_known"] = median >= 1
    p(f"{tool:<10} {len(data):>4} {best:>8.2f} {median:>9.2f} {frames / median:>12,.0f} "
      f"{size / 1e6 / median:>9.1f} {rss:>13.1f} {cpu:>7.2f} {others_text:>7}")
p("")
p("frames/s and MB/s use the median wall time; frames/s divides the same frame count for every tool.")
p("CPU s: median user+sys time of the tool (10 ms resolution). others: median CPU, in cores, that")
p("other processes on the machine used during the tool's runs (from /proc/stat; '-' for runs")
p("under a second, too short for its 10 ms ticks).")
ncores = os.cpu_count() or 1
busy = [t for t, r in rows.items() if r["others_known"] and (r["others"] > 0.25 or r["steal"] > 0.05)]
if busy:
    detail = ", ".join(f"{t}: others {rows[t]['others']:.2f} cores, steal {rows[t]['steal']:.2f}" for t in busy)
    p(f"WARNING: the machine was not idle ({detail}")
    p(f"         of {ncores}); wall times are inflated. Rerun on a quiet machine for README figures; the")
    p("         CPU-time ratios below are less sensitive to this.")
for tool, label in labels.items():
    p(f"  {tool}: {label}")
for note in open(notes_path):
    if note.strip():
        p("  note: " + note.strip())
p("")
p("Targets:")
ws, ts, td = rows.get("wsinspect"), rows.get("tshark"), rows.get("tcpdump")
def verdict(ok): return "PASS" if ok else "MISS"
if ws and ts:
    r = ws["fps"] / ts["fps"]
    p(f"  {verdict(r >= 20)}  wsinspect frames/s vs tshark:  {r:6.1f}x   (target >= 20x)")
if ws and td:
    r = ws["mbps"] / td["mbps"]
    p(f"  {verdict(r >= 0.25)}  wsinspect MB/s vs tcpdump:    {100 * r:6.1f}%   (target >= 25%)")
if ws:
    p(f"  {verdict(ws['rss'] < 64)}  wsinspect peak RSS:           {ws['rss']:6.1f} MiB (target < 64 MB)")
if ws and ts and td and ws["cpu"] > 0:
    p("  same ratios on CPU time (informational):")
    p(f"        frames/s vs tshark {ts['cpu'] / ws['cpu']:.1f}x, MB/s vs tcpdump "
      f"{100 * td['cpu'] / ws['cpu']:.1f}%" + (" (tcpdump's CPU time is near the timer's resolution)" if td["cpu"] < 0.5 else ""))
print("\n".join(out))
PY

cat "$OUT/read-benchmark.txt"
log "written to ${OUT#"$ROOT"/}/read-benchmark.txt"

# ------------------------------------------------------------------ optional profile
if [[ $PROFILE -eq 1 ]]; then
    command -v perf >/dev/null || die "--profile needs perf"
    log "profiling wsinspect with perf (output to /dev/null)"
    perf record -F 999 -g -o "$OUT/wsinspect.perf.data" -- "$WS" read "$CAPTURE" --format jsonl > /dev/null 2> "$TMP/perf.err" \
        || die "perf record failed: $(tail -c 500 "$TMP/perf.err")"
    demangle=(cat)
    if command -v swift >/dev/null; then demangle=(swift demangle --simplified); fi
    # self time per function, then time including callees
    for mode in --no-children --children; do
        echo "perf report $mode (top 25):"
        perf report -i "$OUT/wsinspect.perf.data" "$mode" --sort symbol --stdio 2>/dev/null \
            | grep -E '^ +[0-9]+\.[0-9]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' \
            | head -n 25 | "${demangle[@]}" | cut -c1-180
    done | tee "$OUT/wsinspect-profile.txt"
    log "full profile: perf report -i ${OUT#"$ROOT"/}/wsinspect.perf.data"
fi
