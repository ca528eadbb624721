#!/usr/bin/env bash
# The GPU checks in one run, for the first minutes of a GPU machine (see tests/bench/README.md):
#   1. bench_train_gpu.py: ViT-B-32 bf16 against open_clip_train.main, samples/s and MFU, with the
#      CLIP loss, with FLIP patch dropout 0.5 and with SigLIP;
#   2. a `parallel: fsdp` smoke run (tests/bench/fsdp_smoke.py): 2 processes where the machine has
#      2 GPUs, else 1;
#   3. bench_embed.py on the GPU (`wit embed` images/s against clip_benchmark's loop).
# Every result is printed and appended as a JSON line to $OUT/gpu.jsonl; each part has its own
# time limit, so a failing part costs its own minutes only. Back home:
#   python tests/bench/run_all.py --merge gpu.jsonl     (results.json, results.md, README table)
#
#   OUT=/tmp/gpu [PARTS="train_gpu fsdp embed_gpu"] [MODES="clip patch_dropout siglip"] bash tests/bench/gpu_check.sh [--dry-run]
# --dry-run takes the same path on the CPU with the tiny model and a few steps (a check of
# this script before a GPU is at hand; its figures mean nothing).
# Where Python packages the image lacks were carried as wheels in .whl/, they are installed first.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
DRY=${1:-}
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: cannot install the carried wheels" >&2; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NO_ALBUMENTATIONS_UPDATE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
export WANDB_MODE=disabled
# the real Wikipedia excerpt bench_embed's captions come from, where it was carried (no registry there)
if ls .whl/enwiki-*.bz2 >/dev/null 2>&1; then export WIT_CACHE="$PWD/.whl"; fi
PARTS=${PARTS:-train_gpu fsdp embed_gpu}    # which parts to run
MODES=${MODES:-clip patch_dropout siglip}   # bench_train_gpu.py's modes
JSONL="$OUT/gpu.jsonl"
: >"$JSONL"

part() {   # part NAME SECONDS COMMAND...: run it under a limit, its log in $OUT/NAME.log, its JSON lines kept
    local name=$1 limit=$2
    shift 2
    case " $PARTS " in *" $name "*) ;; *) return ;; esac
    local started=$SECONDS
    echo "== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local status=$?
    grep -v '^{' "$OUT/$name.log" | grep -v -i 'warn' | tail -n 12
    grep '^{' "$OUT/$name.log" | tee -a "$JSONL"
    echo "== $name: exit $status after $((SECONDS - started))s"
    if [ "$status" -ne 0 ]; then
        tail -n 30 "$OUT/$name.log"
        echo "{\"bench\": \"$name\", \"script\": \"gpu_check.sh\", \"failed\": \"exit status $status\"}" >>"$JSONL"
    fi
}

nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PY - <<'EOF' || exit 1
import importlib, sys
missing = [m for m in ("torch", "torchvision", "open_clip", "open_clip_train", "webdataset", "braceexpand", "ftfy",
                       "timm", "pyarrow", "PIL", "yaml", "tqdm", "tensorboard") if importlib.util.find_spec(m) is None]
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"{torch.cuda.device_count()} GPU(s): {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}")
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)} (carry them as wheels in .whl/)")
EOF
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")

if [ "$DRY" = "--dry-run" ]; then
    part train_gpu 600 $PY tests/bench/bench_train_gpu.py --dry-run
    part fsdp 300 $PY tests/bench/fsdp_smoke.py --tiny --nproc 2 --steps 4 --modes fsdp,ddp
    part embed_gpu 600 $PY tests/bench/bench_embed.py --samples 256 --batch-size 64 --workers 1 --name embed_gpu
else
    part train_gpu 300 $PY tests/bench/bench_train_gpu.py --steps 60 --batch 256 --workers 14 --modes $MODES
    part fsdp 100 $PY tests/bench/fsdp_smoke.py --nproc "$(( GPUS >= 2 ? 2 : 1 ))" --modes fsdp,ddp --steps 12 --batch 128
    part embed_gpu 120 $PY tests/bench/bench_embed.py --samples 8192 --batch-size 256 --workers 14 --name embed_gpu
fi
echo "== results: $JSONL"
cat "$JSONL"
