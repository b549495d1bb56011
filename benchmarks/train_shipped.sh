#!/usr/bin/env bash
# Train the shipped tiny models (benchmarks/checkpoints/<method>-tiny-refshapes) on the CPU.
#
#   bash benchmarks/train_shipped.sh DATA RUNS METHOD [METHOD ...]
#
# DATA: RefShapes rendered at 128 px (`python -m rislib data refshapes --out DATA --size 128`);
# RUNS: parent of the run folders. Methods run one after the other with one CPU thread each
# (two queues share two cores). Each run is the `cpu` recipe with a length sized so that it
# takes 20-45 minutes of one core (benchmarks/checkpoints/README.md lists the measured times).
# Every method but concat then gets a second stage (RUNS/<method>-tune): a fine-tuning run from the first
# stage's weights (`--init`), all at 128 px, with a fresh cosine schedule. HARIS and MagNet run
# both stages with positions in their fusion (`--set fusion_positions=True`, the module
# docstrings give the measurement). An interrupted run continues where it stopped
# (--resume). Afterwards `python benchmarks/ship_checkpoint.py` evaluates a run (the second
# stage's, where there is one) and writes its shipped folder.
set -euo pipefail
data=$1; runs=$2; shift 2

steps_of() {  # optimiser steps of batch 16 per method, first stage
  case $1 in
    concat) echo 17000 ;; xattn) echo 15000 ;; lts) echo 7500 ;;
    haris) echo 7000 ;; maris) echo 5000 ;; magnet) echo 2800 ;;
    *) echo "unknown method $1" >&2; return 1 ;;
  esac
}

tune_steps_of() {  # optimiser steps of the second stage (0: none)
  case $1 in
    xattn|lts|magnet) echo 4000 ;; maris) echo 2000 ;; haris) echo 6000 ;; *) echo 0 ;;
  esac
}

model_sets() {  # model-config overrides of both stages
  case $1 in
    haris|magnet) echo "--set fusion_positions=True" ;; *) echo "" ;;
  esac
}

train() {  # train METHOD STEPS OUT [extra arguments]
  local method=$1 steps=$2 out=$3; shift 3
  local resume=()
  [ -d "$out/checkpoints" ] && resume=(--resume)
  OMP_NUM_THREADS=1 python -m rislib train --model "$method" --preset tiny --data "$data" --recipe cpu \
    --steps "$steps" --threads 1 --preload on --out "$out" --no-progress "${resume[@]}" \
    --train val_every=$((steps / 4)) --train save_every=500 --train log_every=50 "$@"
}

for method in "$@"; do
  # shellcheck disable=SC2046  # the overrides split into words on purpose
  [ -f "$runs/$method/final.pt" ] || train "$method" "$(steps_of "$method")" "$runs/$method" $(model_sets "$method")
  tune=$(tune_steps_of "$method")
  if [ "$tune" -gt 0 ] && [ ! -f "$runs/$method-tune/final.pt" ]; then
    # shellcheck disable=SC2046
    train "$method" "$tune" "$runs/$method-tune" --init "$runs/$method/final.pt" --train "size_schedule=((0.0, 128),)" \
      $(model_sets "$method")
  fi
done
