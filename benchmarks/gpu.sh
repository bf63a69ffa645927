#!/usr/bin/env bash
# The CUDA checks in one run, within 8 minutes on one GPU; everything goes under one results folder:
#   1. the tests marked cuda: a bf16 step of every method, the sampler, compile + channels_last, DDP over NCCL;
#   2. the MNIST cells of Table 1a (recipes/table1a/cpu.toml) for the standard network and ReDecNN, 2 epochs,
#      precision auto (bf16 on a GPU of compute capability 8.0 or newer), with their calibration table;
#   3. decnn bench on CUDA: the MLP and the paper-size ResNet decoder, fp32 beside bf16.
# A failed step does not stop the others; status.txt lists each step's exit code and seconds.
#
#   DECNN_DATA_ROOT=../shared/data benchmarks/gpu.sh [RESULTS_FOLDER]    # default: results/gpu/<date-time>
set -uo pipefail
cd "$(dirname "$0")/.."
: "${DECNN_DATA_ROOT:?set DECNN_DATA_ROOT to the folder holding MNIST/raw}"
OUT=${1:-results/gpu/$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python}
mkdir -p "$OUT"
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to NAME.txt, one status line
  local name=$1 limit=$2 start=$SECONDS code
  shift 2
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  code=$?
  echo "$name: exit $code after $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/status.txt"
  [ "$code" -eq 0 ] || failed=1
}

{ nvidia-smi; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
  >"$OUT/device.txt" 2>&1
step cuda-tests 150 "$PY" -m pytest -m cuda -q -p no:cacheprovider --junitxml "$OUT/cuda-tests.xml"
for method in standard redecnn; do
  step "train-$method" 90 "$PY" -m decnn_cli train --recipe recipes/table1a/cpu.toml --dataset mnist \
    --method "$method" --epochs 2 --precision auto --device cuda --quiet --out "$OUT/runs"
done
step calibration 60 "$PY" -m decnn_cli eval-calibration "$OUT/runs" --device cuda --quiet --results "$OUT"
step bench 240 "$PY" -m decnn_cli bench --device cuda --decoder mlp --decoder resnet --repeats 10 --results "$OUT"
echo "results: $OUT"
exit "$failed"
