#!/usr/bin/env bash
# The GPU check: training throughput on the GPU (both models; 128, 256 and
# 512 px; float32 and bfloat16; batches drawn on the device, resident and
# streamed), the memory estimate beside the measured peak, and a 5-minute
# search of two trials sharing the GPU (--gpus-per-trial 0.5) while
# nvidia-smi samples the device's utilisation every 2 s.
#
#   bash bench/gpu_check.sh [--dry-run] [--data DIR] [--out DIR]
#
# --dry-run shrinks everything and runs on the CPU (no GPU needed), so the
# script itself is tested end to end. Results go to --out (default
# runs/gpu_check): throughput.txt, search.txt, utilisation.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
DATA=()
OUT=runs/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --data) DATA=(--data "$2"); shift ;;
    --out) OUT="$2"; shift ;;
    *) echo "usage: bash bench/gpu_check.sh [--dry-run] [--data DIR] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: Ray wants it so
PYTHON=${PYTHON:-python}

if [ "$DRY_RUN" = 1 ]; then
  PLATFORM=cpu; STEPS=2; ROUNDS=1; MODELS="standard"; SMALL="64"; LARGE=""; SMALL_BATCH=4; LARGE_BATCH=2; FILTERS=4
  SEARCH=(--space standard --samples 2 --gpus-per-trial 0 --cpus-per-trial 1 --time-budget 1.5)
else
  PLATFORM=gpu; STEPS=20; ROUNDS=3; MODELS="standard extended"; SMALL="128 256"; LARGE="512"; SMALL_BATCH=32; LARGE_BATCH=8; FILTERS=16
  SEARCH=(--space standard --samples 2 --gpus-per-trial 0.5 --cpus-per-trial 4 --time-budget 5)
fi

echo "== device" | tee "$OUT/throughput.txt"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/throughput.txt"
else
  echo "no nvidia-smi: CPU only" | tee -a "$OUT/throughput.txt"
fi

echo "== throughput" | tee -a "$OUT/throughput.txt"
"$PYTHON" bench/train_throughput.py --platform "$PLATFORM" --models $MODELS --sizes $SMALL --batch "$SMALL_BATCH" \
  --steps "$STEPS" --rounds "$ROUNDS" --base-filters "$FILTERS" --precisions float32 bfloat16 "${DATA[@]}" | tee -a "$OUT/throughput.txt"
if [ -n "$LARGE" ]; then
  "$PYTHON" bench/train_throughput.py --platform "$PLATFORM" --models $MODELS --sizes $LARGE --batch "$LARGE_BATCH" \
    --steps "$STEPS" --rounds "$ROUNDS" --base-filters "$FILTERS" --precisions float32 bfloat16 "${DATA[@]}" | tee -a "$OUT/throughput.txt"
fi

echo "== search: two trials at once (${SEARCH[*]})" | tee "$OUT/search.txt"
SAMPLER=""
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 2 > "$OUT/utilisation.csv" &
  SAMPLER=$!
fi
set +e
"$PYTHON" -m search.run "${SEARCH[@]}" --storage "$OUT/search" --verbose 0 "${DATA[@]}" 2>&1 | tail -n 25 | tee -a "$OUT/search.txt"
STATUS=${PIPESTATUS[0]}
set -e
if [ -n "$SAMPLER" ]; then
  kill "$SAMPLER" 2>/dev/null || true
  "$PYTHON" - "$OUT/utilisation.csv" <<'PY' | tee -a "$OUT/search.txt"
import sys
rows = [line.split(",") for line in open(sys.argv[1]) if line.count(",") == 2]
busy = [float(r[1]) for r in rows]
memory = [float(r[2]) for r in rows]
if busy:
    print(f"GPU utilisation over {len(busy)} samples: mean {sum(busy) / len(busy):.0f}%, "
          f"share of samples above 50%: {sum(b > 50 for b in busy) / len(busy):.0%}; peak memory {max(memory):.0f} MiB")
PY
fi
exit "$STATUS"
