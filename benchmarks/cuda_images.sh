#!/usr/bin/env bash
# Experiment VI on a CUDA GPU, as one script of under ten minutes (issue 10):
#   1. (background) two long image runs, N = 5000 sleep samples and 2000 random features, up to
#      STEPS_LONG steps or SECONDS_LONG seconds each: the check that image training ends with no NaN;
#   2. (while part 1 runs) the image benchmark on binarised MNIST with N = 5000, one run per seed
#      in SEEDS (0 and 1, at once): alws-projection, alws-learned and the VAE, BUDGET seconds each
#      (beside part 1 on the same GPU: every method shares it alike);
#   3. (then, all at once) every experiment's smoke preset on the GPU, plus the non-default paths
#      (a path per parameter, roughness features, exact regression): the CUDA code paths run.
# About 7 minutes on one H100 (the first try, with the smoke runs one after another beside the
# long runs, took over 8 minutes before the benchmark began).
# Each part logs to $OUT_DIR/cuda_images.log and the script carries on past a failing part.
# Usage: OUT_DIR=benchmarks/results/cuda bash benchmarks/cuda_images.sh
# (DEVICE=cpu STEPS_LONG=40 SECONDS_LONG=20 BUDGET=5 SMOKE=0 N_SLEEP=500 N_FEATURES=300: a dry run on a CPU.)
set -u
OUT_DIR=${OUT_DIR:-benchmarks/results/cuda}
DEVICE=${DEVICE:-cuda}
STEPS_LONG=${STEPS_LONG:-10000}
SECONDS_LONG=${SECONDS_LONG:-300}
BUDGET=${BUDGET:-60}
SMOKE=${SMOKE:-1}
N_SLEEP=${N_SLEEP:-5000}
N_FEATURES=${N_FEATURES:-2000}
SEEDS=${SEEDS:-0 1}
PY=${PYTHON:-python3}
RUNS=${RUNS:-$OUT_DIR/runs}  # every run directory (many files)
mkdir -p "$OUT_DIR" "$RUNS"
LOG=$OUT_DIR/cuda_images.log
export PYTHONUNBUFFERED=1
log() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
alws() { "$PY" -m alws "$@"; }

log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none)"
log "torch: $("$PY" -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))')"

big=(--set n_sleep="$N_SLEEP" --set n_features="$N_FEATURES")
pids=()
for method in alws-projection alws-learned; do
  log "part 1: $method, $STEPS_LONG steps or $SECONDS_LONG s, N = $N_SLEEP, $N_FEATURES features"
  alws run images --device "$DEVICE" --no-progress --out "$RUNS/long-$method" "${big[@]}" \
    --set "methods=[\"$method\"]" --set steps="$STEPS_LONG" --set seconds_per_method="$SECONDS_LONG" \
    > "$RUNS/long-$method.log" 2>&1 &
  pids+=($!)
done

bench=()
for seed in $SEEDS; do  # the seeds at once: within a seed every method shares the GPU alike
  log "part 2: benchmark, binarised MNIST, seed $seed, N = $N_SLEEP, $N_FEATURES features, $BUDGET s per method"
  ( if alws run images --device "$DEVICE" --no-progress --seed "$seed" --out "$RUNS/benchmark-seed$seed" "${big[@]}" \
        --set 'methods=["alws-projection","alws-learned","vae"]' --set seconds_per_method="$BUDGET" \
        > "$RUNS/benchmark-seed$seed.log" 2>&1; then
      log "part 2 seed $seed ok"
    else
      log "part 2 seed $seed FAILED: $(tail -5 "$RUNS/benchmark-seed$seed.log" | tr '\n' ' ')"
    fi ) & bench+=($!)
done
wait "${bench[@]}"
for seed in $SEEDS; do
  [ -f "$RUNS/benchmark-seed$seed/table.md" ] && { log "part 2 table, seed $seed"; tee -a "$LOG" < "$RUNS/benchmark-seed$seed/table.md"; }
done

if [ "$SMOKE" = 1 ]; then  # all at once: they check that the code runs, not how fast
  smoke() {  # name, tag, then extra arguments
    local name=$1 tag=$2; shift 2
    local start=$SECONDS
    if timeout 240 "$PY" -m alws run "$name" --preset smoke --device "$DEVICE" --no-progress --out "$RUNS/smoke-$tag" "$@" \
        > "$RUNS/smoke-$tag.log" 2>&1; then
      log "part 3: smoke $tag ok ($((SECONDS - start)) s)"
    else
      log "part 3: smoke $tag FAILED ($((SECONDS - start)) s): $(tail -3 "$RUNS/smoke-$tag.log" | tr '\n' ' ')"
    fi
  }
  smokes=()
  for name in gradient-estimation gabor-ring pinwheel ica hodgkin-huxley blowfly images; do smoke "$name" "$name" & smokes+=($!); done
  smoke hodgkin-huxley hh-per-parameter --set exponential_family='"per-parameter"' --set features='"learned+roughness"' \
    --set kernel='"gaussian+linear"' & smokes+=($!)
  smoke images images-exact --set regression='"exact"' & smokes+=($!)
  wait "${smokes[@]}"
fi

for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then log "part 1 run $i ok"; else log "part 1 run $i FAILED (rc $?)"; fi
done
for method in alws-projection alws-learned; do
  dir=$RUNS/long-$method
  [ -f "$dir/table.md" ] && tee -a "$LOG" < "$dir/table.md"
  tail -4 "$RUNS/long-$method.log" | tee -a "$LOG"
  "$PY" - "$dir" "$method" <<'EOF' 2>&1 | tee -a "$LOG"
import json, math, sys
from collections import Counter
from pathlib import Path
path = Path(sys.argv[1]) / "checkpoints" / f"{sys.argv[2]}.history.jsonl"
rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
# loo_error is NaN by design where nothing was selected (one fixed bandwidth and ridge)
bad = [r.get("step") for r in rows if any(isinstance(v, float) and not math.isfinite(v) for k, v in r.items() if k != "loo_error")]
print(f"{sys.argv[2]}: {len(rows)} history rows, last step {rows[-1].get('step') if rows else None}, non-finite rows: {bad[:5]}")
switches = [r.get("step") for a, r in zip(rows, rows[1:]) if a.get("path") != r.get("path")]
print(f"rows per path: {dict(Counter(r.get('path') for r in rows))}; path switches at steps {switches[:10]}")
if rows:
    print("last row:", {k: v for k, v in rows[-1].items() if not isinstance(v, (list, dict))})
EOF
done
# what comes back: the log, the tables, and the runs without their checkpoints (one archive)
tar czf "$OUT_DIR/runs.tgz" --exclude='*.pt' -C "$(dirname "$RUNS")" "$(basename "$RUNS")" 2>/dev/null
log "done"
