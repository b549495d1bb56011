#!/usr/bin/env bash
# Train the shipped tiny models (benchmarks/checkpoints/<method>-tiny-refshapes) on the CPU.
#
#   bash benchmarks/train_shipped.sh DATA RUNS METHOD [METHOD ...]
#
# DATA: RefShapes rendered at 128 px (`python -m rislib data refshapes --out DATA --size 128`);
# RUNS: parent of the run folders. Methods run one after the other with one CPU thread each
# (two queues share two cores). Each run is the `cpu` recipe with a length sized so that it
# takes 20-45 minutes of one core (benchmarks/checkpoints/README.md lists the measured times).
# Every method then gets one or more fine-tuning stages (RUNS/<method>-tune, RUNS/<method>-tune2, ...): each
# starts from the previous stage's weights (`--init`), all at 128 px, with a fresh cosine
# schedule (the later stages of every method but concat and LTS at lower peak learning rates). HARIS and
# MagNet run every stage with positions in their fusion (`--set fusion_positions=True`, the
# module docstrings give the measurement). An interrupted run continues where it stopped
# (--resume); a finished one is skipped. Afterwards `python benchmarks/ship_checkpoint.py` evaluates a run (the last
# stage's) and writes its shipped folder, the earlier stages given as --earlier-stage.
set -euo pipefail
data=$1; runs=$2; shift 2

steps_of() {  # optimiser steps of batch 16 per method, first stage
  case $1 in
    concat) echo 17000 ;; xattn) echo 15000 ;; lts) echo 7500 ;;
    haris) echo 7000 ;; maris) echo 5000 ;; magnet) echo 2800 ;;
    *) echo "unknown method $1" >&2; return 1 ;;
  esac
}

tune_stages_of() {  # the fine-tuning stages after the first: STEPS or STEPS@PEAK_LR each, in order
  case $1 in
    concat) echo 4000 12000 ;; xattn) echo 4000 14000 14000@3e-4 18000@2e-4 ;; lts) echo 4000 7000 5000 ;; maris) echo 2000 7000 7000@5e-4 ;;
    magnet) echo 4000 4000@5e-4 6000@5e-4 ;; haris) echo 6000 6000@5e-4 6000@3e-4 6000@2e-4 ;;
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

done_in() { grep -qs '"status": "completed"' "$1/summary.json"; }  # a finished run folder

for method in "$@"; do
  # shellcheck disable=SC2046  # the overrides split into words on purpose
  done_in "$runs/$method" || train "$method" "$(steps_of "$method")" "$runs/$method" $(model_sets "$method")
  previous=$runs/$method; number=1
  for stage in $(tune_stages_of "$method"); do
    out=$runs/$method-tune; [ "$number" -gt 1 ] && out=$out$number
    lr=(); [[ $stage == *@* ]] && lr=(--lr "${stage#*@}")
    if ! done_in "$out"; then
      # shellcheck disable=SC2046
      train "$method" "${stage%@*}" "$out" --init "$previous/final.pt" --train "size_schedule=((0.0, 128),)" \
        "${lr[@]}" $(model_sets "$method")
    fi
    previous=$out; number=$((number + 1))
  done
done
