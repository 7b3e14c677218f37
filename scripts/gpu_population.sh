#!/usr/bin/env bash
# The GPU half of issue 17 in one prepared run (docs/performance.md, section "Populations", "On a GPU"): the population
# bench on the GPU, then the timing copy of the MNIST search (studies/ram-mnist-search-timing.toml) run
# four ways. Run from the repository root on a machine with a CUDA GPU; it writes its logs and JSON to $OUT
# (default gpu-out/).
#   ATTENTION_DATA   MNIST directory (the four IDX files)
#   PYTHON           the interpreter with PyTorch (default python3); the package runs from this checkout
set -u -o pipefail
OUT=${OUT:-gpu-out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  lscpu | grep -E '^(Model name|CPU\(s\))'
} > "$OUT/machine.txt" 2>&1

# 1. images/s summed over the trials: 1 trial alone, 2 alone side by side, populations of 8 and 64, each in
#    fresh processes for two rounds; then populations of 1 to 256 one after another in one process
timeout 270 "$PYTHON" -m attention bench --population 8 --device cuda \
  --json "$OUT/bench_population_cuda.json" 2>&1 | tee "$OUT/bench_population_cuda.log"

# 2. the same 16 trials (same draws, no pruning) four ways: one worker training all 16 as one population,
#    two workers with populations of 8, four workers sharing the GPU, and one worker training them one
#    after another (the engine's default on one GPU)
search() {
  local name=$1 limit=$2; shift 2
  local started finished status
  rm -rf "/tmp/search-$name.journal" "/tmp/runs-$name"  # a rerun on a warm machine starts afresh
  started=$(date +%s.%N)
  timeout "$limit" "$PYTHON" -m attention search studies/ram-mnist-search-timing.toml --device cuda \
    --no-progress --storage "/tmp/search-$name.journal" --runs-dir "/tmp/runs-$name" "$@" \
    > "$OUT/search-$name.log" 2>&1
  status=$?
  finished=$(find "/tmp/runs-$name" -name result.json 2>/dev/null | wc -l)
  printf '%s (%s): exit %s, %.1f s, %s of 16 trials finished\n' "$name" "$*" "$status" \
    "$("$PYTHON" -c "import sys, time; print(time.time() - float(sys.argv[1]))" "$started")" "$finished" | tee -a "$OUT/search_timing.txt"
}
search population16 60 --population 16
search population8x2 60 --population 8 --workers 2
search workers4 70 --workers 4
search alone 110
