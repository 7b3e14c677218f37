#!/usr/bin/env bash
# Does a seed repeat itself on a GPU? (the reproducibility standard; README, "Training and evaluation").
# Trains three small runs twice each on CUDA from the same seed -- the retina (REINFORCE, the sampled
# locations), the soft reader (backprop through the filterbank) and the CNN baseline (cuDNN's convolutions)
# -- and compares their weights and test errors. Prints one line per model and exits non-zero if any pair
# differs. About a minute on an H100. Run from the repository root on a machine with a CUDA GPU.
#   ATTENTION_DATA   MNIST directory (the four IDX files)
#   PYTHON           the interpreter with PyTorch (default python3); the package runs from this checkout
#   OUT              where the logs and the comparison go (default gpu-out/)
#   DEVICE           cuda (default), or cpu to try the script where there is no GPU
set -u -o pipefail
OUT=${OUT:-gpu-out}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
RUNS=$(mktemp -d)
SMALL=(--set train.epochs=2 --set data.train_limit=6000 --set data.eval_limit=2000 --set train.seed=3)

train() {  # name, repeat, overrides...
  local name=$1 repeat=$2; shift 2
  "$PYTHON" -m attention train --device "$DEVICE" --no-progress --run-dir "$RUNS/$name-$repeat" "${SMALL[@]}" "$@" \
    >> "$OUT/determinism-$name.log" 2>&1
}

status=0
for model in "retina" "soft --set model.reader.name=filterbank --set model.where.policy=deterministic" \
  "cnn --set model.name=cnn"; do
  name=${model%% *}
  read -r -a overrides <<< "${model#"$name"}"
  train "$name" 1 "${overrides[@]}" && train "$name" 2 "${overrides[@]}" || { echo "$name: training failed"; status=1; continue; }
  "$PYTHON" - "$RUNS/$name-1" "$RUNS/$name-2" "$name" <<'EOF' | tee -a "$OUT/determinism.txt" || status=1
import json, sys
from pathlib import Path
import torch
first, second, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
a = torch.load(first / "model.pt", weights_only=True)
b = torch.load(second / "model.pt", weights_only=True)
worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
errors = [json.loads((run / "result.json").read_text())["test_error_pct"] for run in (first, second)]
print(f"{name}: largest weight difference {worst:.3g}, test errors {errors[0]} and {errors[1]}")
sys.exit(0 if worst == 0 and errors[0] == errors[1] else 1)
EOF
done
grep -h -i "warn" "$OUT"/determinism-*.log | sort | uniq -c | head -20 | tee -a "$OUT/determinism.txt"
rm -rf "$RUNS"
exit $status
