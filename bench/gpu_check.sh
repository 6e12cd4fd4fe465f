#!/usr/bin/env bash
# The CUDA path, end to end, on a machine with one GPU; each step's log and numbers go to $OUT.
#
#   OUT=/tmp/gpu_out STEPS="quickstart search_step cifar mobilenet resume sequential repeat" bash bench/gpu_check.sh [CIFAR_TAR]
#
# quickstart   the digits quickstart with device=cuda (search, derive, parity-gated export, onnxruntime test)
# search_step  bench/search_step.py on cuda (ms per training step of each variant, synchronized)
# cifar        the CIFAR-10 protocol's DHA run, seed 0, on cuda (needs CIFAR_TAR, the JPEG tar.gz)
# cifar_full   full CIFAR-10 (49,000 train / 1,000 val / 10,000 test), NAS only then DHA (default form),
#              seed 0, each with a minutes budget (FULL_MINUTES, default 3.5: both fit in 8 minutes) that
#              the lr schedule runs against; epochs cap FULL_EPOCHS (default 30); needs CIFAR_TAR
# mobilenet    `dha run recipes/imagenet_mobilenet.toml --smoke` on cuda: the full 224 px MobileNet space
# resume       the quickstart killed mid-search, then `dha run --resume` on cuda (checkpoint restore)
# sequential   the quickstart in sequential mode on cuda (phase 2 rebuilds the plain child)
# repeat       the quickstart twice more, uninterrupted: are two GPU runs of one seed identical?
# DEVICE=cpu and EXTRA_SETS="--set train.epochs=2 ..." check the script itself on a machine without one.
# Each step has its own time limit and a failure does not stop the next one. The test suite is not
# run here: its recipes pin device = "cpu".
set -u
OUT=${OUT:-/tmp/gpu_out}
STEPS=${STEPS:-quickstart search_step cifar mobilenet resume sequential repeat}
TAR=${1:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD"
CUDA_RUN=(python3 -m cli.main run recipes/digits_quickstart.toml --set "device=\"${DEVICE:-cuda}\""
          --set 'runs_dir="/tmp/gpu_runs"' --set 'exports_dir="/tmp/gpu_exports"' ${EXTRA_SETS:-})

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, record rc and seconds
    local name=$1 limit=$2; shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - started))" | tee -a "$OUT/steps.txt"
}
wanted() { [[ " $STEPS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >>"$OUT/steps.txt" 2>&1
python3 -c "import torch, kornia, onnxruntime as ort; print('torch', torch.__version__, 'kornia', kornia.__version__,
'onnxruntime', ort.__version__, ort.get_available_providers(), 'cuda', torch.cuda.is_available())" \
    >>"$OUT/steps.txt" 2>&1

if wanted quickstart; then
    step quickstart 120 "${CUDA_RUN[@]}" --force
    cp /tmp/gpu_runs/digits_quickstart/history.csv "$OUT/quickstart_history.csv" 2>/dev/null
fi
if wanted search_step; then
    step search_step 60 python3 bench/search_step.py --device cuda --rounds 20
fi
if wanted cifar && [ -n "$TAR" ]; then
    mkdir -p /tmp/data && tar xzf "$TAR" -C /tmp/data
    step cifar_dha 200 python3 bench/cifar10_variants.py --data /tmp/data --variants dha \
        --csv "$OUT/cifar10_gpu.csv" --work-dir /tmp/gpu_cifar
    cp /tmp/gpu_cifar/runs/cifar10_darts_dha_s0/history.csv "$OUT/cifar_history.csv" 2>/dev/null
fi
if wanted cifar_full && [ -n "$TAR" ]; then
    mkdir -p /tmp/data && [ -d /tmp/data/train ] || tar xzf "$TAR" -C /tmp/data
    step cifar_full 600 python3 bench/cifar10_variants.py --data /tmp/data --subset 0 --epochs "${FULL_EPOCHS:-30}" \
        --variants nas_only dha --seeds 0 --set "search.budget_minutes=${FULL_MINUTES:-3.5}" \
        --set "device=\"${DEVICE:-cuda}\"" --csv "$OUT/cifar10_full_gpu.csv" --work-dir /tmp/gpu_cifar_full
    for run in nas_only dha; do
        cp "/tmp/gpu_cifar_full/runs/cifar10_darts_${run}_s0/history.csv" "$OUT/cifar_full_${run}_history.csv" 2>/dev/null
    done
fi
if wanted mobilenet; then
    step mobilenet 240 python3 -m cli.main run recipes/imagenet_mobilenet.toml --smoke \
        --set "device=\"${DEVICE:-cuda}\"" --set 'runs_dir="/tmp/gpu_runs"' --set 'exports_dir="/tmp/gpu_exports"'
fi
if wanted resume; then  # killed once the search has written a checkpoint, then resumed
    "${CUDA_RUN[@]}" --force --set 'name="resume"' >"$OUT/resume.log" 2>&1 &
    runner=$!
    for _ in $(seq 120); do
        sleep 1
        if [ -n "$(find /tmp/gpu_runs/resume -name '*.pt' -path '*checkpoint*' 2>/dev/null)" ]; then break; fi
    done
    sleep 5
    kill "$runner"; wait "$runner"
    echo "killed mid-search: $(tail -c 300 /tmp/gpu_runs/resume/history.csv 2>/dev/null | tail -1)" >>"$OUT/steps.txt"
    step resume 120 "${CUDA_RUN[@]}" --resume --set 'name="resume"'
fi
if wanted sequential; then
    step sequential 120 "${CUDA_RUN[@]}" --force --set 'name="sequential"' --set 'search.mode="sequential"'
fi
if wanted repeat; then
    for name in repeat_a repeat_b; do
        step "$name" 120 "${CUDA_RUN[@]}" --force --set "name=\"$name\""
    done
    if cmp -s /tmp/gpu_runs/repeat_a/history.csv /tmp/gpu_runs/repeat_b/history.csv; then
        echo "repeat: history.csv identical" >>"$OUT/steps.txt"
    else
        echo "repeat: history.csv differs" >>"$OUT/steps.txt"
        paste -d'|' /tmp/gpu_runs/repeat_a/history.csv /tmp/gpu_runs/repeat_b/history.csv >"$OUT/repeat_histories.txt"
    fi
fi
cat "$OUT/steps.txt"
