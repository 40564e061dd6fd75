#!/usr/bin/env bash
# The whole GPU check in one script (budget: under 8 minutes on one GPU). Every part writes JSON
# under benchmarks/results/ (override with RESULTS=DIR):
#   1. the benchmark suite at the papers' configs (python -m benchmarks --device cuda --full),
#      timed with CUDA events, memory from the allocator's peak -> <host>-cuda-full.json
#   2. a 2-epoch DARTS search on synthetic CIFAR-shaped data (10 classes, 32x32 PNGs) with
#      --amp bf16, once with --channels-last and once with --no-channels-last -> gpu-search-*.json
#   3. a torchrun --nproc_per_node 1 smoke test joining an nccl process group -> gpu-torchrun.json
#
#   benchmarks/gpu.sh                 # on the GPU machine, from the repository root
#   benchmarks/gpu.sh --dry-run       # print the commands only (tested on the CPU)
#   DEVICE=cpu QUICK=1 BACKEND=gloo SUITE=none AMP=none RESULTS=/tmp/r benchmarks/gpu.sh
#                                     # the same steps CPU-sized, without the suite (tests/test_speed.py)
# SUITE="darts shapley" picks benchmarks (default: all of them); SUITE=none skips the suite.
#
# Not yet run on a GPU: no GPU machine was at hand when it was written.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
BACKEND=${BACKEND:-nccl}
AMP=${AMP:-bf16}  # AMP=none: the CPU check of the script (the tiny CPU search diverges under bf16 autocast)
RESULTS=${RESULTS:-benchmarks/results}
HOST=$(hostname)
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
if [[ $DRY == 1 ]]; then WORK=${WORK:-/tmp/dnas-gpu-check}; else WORK=${WORK:-$(mktemp -d)}; fi
read -r -a NAMES <<< "${SUITE:-}"
if [[ -n "${QUICK:-}" ]]; then
  SIZE=--quick; SUFFIX=""; EPOCHS=1; PER_CLASS=6; BATCH=8; SPACE=(--set space.C=4 --set space.layers=3 --set space.nodes=2)
else
  SIZE=--full; SUFFIX=-full; EPOCHS=2; PER_CLASS=64; BATCH=64; SPACE=()
fi

run() {  # print, and run unless --dry-run
  echo "+ $*" >&2
  if [[ $DRY == 0 ]]; then "$@"; fi
}

timed_search() {  # NAME FLAGS...: one search, then its JSON summary
  local name=$1; shift
  local t0=$SECONDS
  run "$PY" -m dnas search --space darts --strategy darts --data "imagefolder:$WORK/images" \
    --epochs "$EPOCHS" --batch-size "$BATCH" --device "$DEVICE" --amp "$AMP" "${SPACE[@]}" "$@" \
    --out "$WORK/$name" --no-progress
  run "$PY" -m benchmarks.gpu_check summarize "$WORK/$name" --name "$name" --seconds $((SECONDS - t0)) \
    --out "$RESULTS/gpu-$name.json"
}

mkdir -p "$RESULTS"
# 1. the suite
if [[ "${SUITE:-}" != none ]]; then
  run "$PY" -m benchmarks "${NAMES[@]}" --device "$DEVICE" "$SIZE" --save --out "$RESULTS/$HOST-${DEVICE/:/}$SUFFIX.json"
fi
# 2. DARTS search, bf16 autocast, channels-last on and off
run "$PY" -m benchmarks.gpu_check images "$WORK/images" --per-class "$PER_CLASS"
timed_search "search-$AMP-channels-last" --channels-last
timed_search "search-$AMP-nchw" --no-channels-last
# 3. torchrun with the nccl backend
run "$PY" -m torch.distributed.run --nproc_per_node 1 -m benchmarks.gpu_check nccl --backend "$BACKEND" \
  --out "$RESULTS/gpu-torchrun.json"
echo "gpu check: results in $RESULTS" >&2
