#!/usr/bin/env bash
# seglab vs PyTorch on this machine: runs `seglab bench` and the PyTorch peers (bench.py,
# same architectures, parameter counts asserted equal) with the same thread count and prints
# the median ms of both and the ratio seglab / PyTorch (< 1: seglab is faster).
#
#   benches/peers/run.sh                      # the default cases below
#   CASES="train:unet3d:paper:4" benches/peers/run.sh
#
# Environment: SEGLAB (the seglab binary; default: target/debug/seglab under
# $CARGO_TARGET_DIR or ./target), THREADS (default 2), STEPS (timed repetitions; default per
# scale), ROUNDS (default 1: how often each case runs, seglab and PyTorch alternating),
# CASES (space-separated phase:model:scale[:batch]). The PyTorch venv is created on first use
# under ~/.cache/seglab-torch-venv (benches/peers/venv.sh).
# Timings are only meaningful on an otherwise idle machine: the load average is printed.
# Both sides drift by 5–10 % over minutes on a shared machine; with ROUNDS > 1 the table gives
# the median over the rounds of each side and the range of the per-round ratios.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SEGLAB="${SEGLAB:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/seglab}"
THREADS="${THREADS:-2}"
CASES="${CASES:-train:unet3d:cpu-small train:unet3d:paper:4 train:vox2vox:cpu-small \
train:cyclegan:cpu-small predict:unet3d:cpu-small predict:unet3d:paper \
predict:vox2vox:cpu-small predict:cyclegan:cpu-small}"

if [ ! -x "$SEGLAB" ]; then
    echo "no seglab binary at $SEGLAB (build it, or set SEGLAB=path)" >&2
    exit 2
fi
PY="$("$HERE/venv.sh")"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS"

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (measure below $THREADS.5)"
printf '%-8s %-9s %-10s %5s %5s %12s %12s %8s %s\n' \
    phase model scale patch batch seglab_ms torch_ms ratio "ratio range"
for case in $CASES; do
    IFS=: read -r phase model scale batch <<<"$case"
    args=(--model "$model" --scale "$scale")
    [ -n "${batch:-}" ] && args+=(--batch "$batch")
    [ -n "${STEPS:-}" ] && args+=(--steps "$STEPS")
    counts="$("$SEGLAB" -q models --scale "$scale" --classes 2 --json)"
    rounds=()
    for _ in $(seq "${ROUNDS:-1}"); do
        rounds+=("$("$SEGLAB" -q bench "$phase" "${args[@]}" --json)")
        rounds+=("$(cd "$HERE" && "$PY" bench.py "$phase" "${args[@]}" --threads "$THREADS" \
            --counts "$counts")")
    done
    "$PY" - "${rounds[@]}" <<'EOF'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
ours, theirs = runs[0::2], runs[1::2]
a, b = ours[0], theirs[0]
assert (a["patch"], a["batch"]) == (b["patch"], b["batch"]), (a, b)
mine = statistics.median(r["median_ms"] for r in ours)
peer = statistics.median(r["median_ms"] for r in theirs)
ratios = [o["median_ms"] / t["median_ms"] for o, t in zip(ours, theirs)]
spread = f"{min(ratios):.2f}–{max(ratios):.2f}" if len(ratios) > 1 else ""
print(f'{a["phase"]:<8} {a["model"]:<9} {a["scale"]:<10} {a["patch"]:>5} {a["batch"]:>5} '
      f'{mine:>12.1f} {peer:>12.1f} {mine / peer:>8.2f} {spread}')
EOF
done
