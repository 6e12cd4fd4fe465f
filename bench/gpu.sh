#!/usr/bin/env bash
# Issue 15's GPU figures in one run of under 8 minutes on one GPU; every step logs to $OUT/NAME.log and
# appends "NAME rc=.. seconds=.." to $OUT/steps.txt, and a failed step does not stop the next one.
#
#   OUT=/tmp/gpu_out bash bench/gpu.sh [CIFAR_TAR]      (CIFAR_TAR: the CIFAR-10 JPEG tar.gz, optional)
#
# step_b64      bench/search_step.py on cuda, the CIFAR recipe's supernet (C=16, 8 layers), batch 64, fp32:
#               the figure the issue starts from (DHA step / NAS-only step 1.65, ~800 img/s)
# step_b256     the same at batch 256 in bf16 with channels_last: goals DHA / NAS-only <= 1.15 and
#               DHA >= 10,000 img/s
# augment       bench/augment.py --device cuda: the batched policy on the GPU against torchvision's PIL
#               AutoAugment in one CPU process (goal >= 10x)
# loader        bench/loader_vs_step.py: the streaming loader (4, 8, 12 workers) against the ImageNet
#               recipe's DHA step at 224 px, batch 128, bf16 (loader / step >= 1: the GPU never waits)
# cifar_full    with the time left (needs CIFAR_TAR): full CIFAR-10, NAS only then DHA, seed 0, each with
#               an equal minutes budget the lr schedule runs against; test top-1 in $OUT/cifar10_full_gpu.csv
# DEVICE=cpu checks the script itself on a machine without a GPU (with tiny sizes: SMALL=1).
set -u
OUT=${OUT:-/tmp/gpu_out}
TAR=${1:-}
DEVICE=${DEVICE:-cuda}
TOTAL=${TOTAL_SECONDS:-470}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD"
began=$SECONDS

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, record rc and seconds
    local name=$1 limit=$2; shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
    echo "$name rc=$? seconds=$((SECONDS - started))" | tee -a "$OUT/steps.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >>"$OUT/steps.txt" 2>&1
python3 -c "import os, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cpus', os.cpu_count())" \
    >>"$OUT/steps.txt" 2>&1

if [ "${SMALL:-0}" = 1 ]; then  # a check of the script on a CPU: tiny networks and data
    STEP_ARGS=(--size 16 --channels 8 --layers 5 --rounds 3); B64=16; B256=32
    LOADER_ARGS=(--batch 8 --images 256 --batches 5 --workers 1 2 --rounds 2 --set model.width_mult=0.35
                 --set data.image_size=64)
else
    STEP_ARGS=(--rounds 20); B64=64; B256=256
    LOADER_ARGS=(--batch 128 --images 4096 --batches 20 --workers 4 8 12 --rounds 8)
fi
step step_b64 90 python3 bench/search_step.py --device "$DEVICE" --batch "$B64" "${STEP_ARGS[@]}"
step step_b256 90 python3 bench/search_step.py --device "$DEVICE" --batch "$B256" --precision bf16 \
    --channels-last on "${STEP_ARGS[@]}"
step augment 40 python3 bench/augment.py --device "$DEVICE" --batch 256 --rounds 10
step loader 150 python3 bench/loader_vs_step.py --device "$DEVICE" "${LOADER_ARGS[@]}"

left=$((TOTAL - (SECONDS - began)))
if [ -n "$TAR" ] && [ "$left" -gt 90 ]; then
    mkdir -p /tmp/data && { [ -d /tmp/data/train ] || tar xzf "$TAR" -C /tmp/data; }
    left=$((TOTAL - (SECONDS - began)))
    # two runs share what is left; ~40 s each of prepare, derive, export and test evaluation come on top
    minutes=$(python3 -c "print(max(0.3, round(($left - 100) / 2 / 60, 2)))")
    step cifar_full "$((left - 5))" python3 bench/cifar10_variants.py --data /tmp/data --subset 0 --epochs 30 \
        --variants nas_only dha --seeds 0 --set "search.budget_minutes=$minutes" --set "device=\"$DEVICE\"" \
        --set "train.batch_size=256" --set "train.precision=\"bf16\"" \
        --csv "$OUT/cifar10_full_gpu.csv" --work-dir /tmp/gpu_cifar_full
    echo "cifar_full minutes per run: $minutes" >>"$OUT/steps.txt"
fi
grep -h "ratio\|img_per_s\|speedup\|loader_" "$OUT"/*.log >"$OUT/figures.txt" 2>/dev/null
echo "total seconds: $((SECONDS - began))" | tee -a "$OUT/steps.txt"
