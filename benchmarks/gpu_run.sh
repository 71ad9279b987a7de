#!/usr/bin/env bash
# The GPU checks of issue #7 as one prepared command (a GPU machine is lent for minutes, not hours).
#
#   bash benchmarks/gpu_run.sh [sr|train|all] [OUTDIR]
#
# 1. the fast-path correctness tests on the GPU (bf16 vs fp32, channels-last, window batching, compiled vs
#    eager: tests/test_superres_fast.py with MEDGAN_TEST_DEVICE=cuda MEDGAN_TEST_COMPILE=1);
# 2. "sr": benchmarks/sr_speed.py --device cuda (end to end first, then the bare networks);
# 3. "train": benchmarks/train_throughput.py --device cuda.
# Each step has its own time limit so that one slow step cannot starve the next (all three: at most 570 s with the
# 5 s kill grace, plus some 15 s of set-up, within the lent machine's 600 s per call); a benchmark stopped at its
# limit (SIGTERM) still writes the rows it measured, and is killed 5 s later if it cannot; every log and markdown
# table lands in OUTDIR (default $OUT on the lent machine). Python packages the machine lacks (monai,
# nibabel, pydicom) travel as wheels in .whl/ (see /work/.library/device/README.md) and are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
out=${2:-${OUT:-/tmp/medgan-gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
timeout 60 python3 -c "import torch, monai, numpy; print('torch', torch.__version__, 'monai', monai.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name())" \
  | tee -a "$out/gpu.txt"

if [ "$what" = sr ] || [ "$what" = all ]; then
  MEDGAN_TEST_DEVICE=cuda MEDGAN_TEST_COMPILE=1 timeout "${MEDGAN_GPU_TEST_S:-90}" \
    python3 -m pytest -q -p no:cacheprovider tests/test_superres_fast.py 2>&1 | tee "$out/pytest_cuda.log"
  timeout -k 5 "${MEDGAN_GPU_SR_S:-270}" python3 benchmarks/sr_speed.py --device cuda \
    --budget-s "${MEDGAN_GPU_SR_BUDGET_S:-190}" --out-md "$out/sr_speed_cuda.md" 2>&1 | tee "$out/sr_speed.log"
fi
if [ "$what" = train ] || [ "$what" = all ]; then
  timeout -k 5 "${MEDGAN_GPU_TRAIN_S:-200}" python3 benchmarks/train_throughput.py --device cuda \
    --budget-s "${MEDGAN_GPU_TRAIN_BUDGET_S:-140}" --out-md "$out/train_cuda.md" 2>&1 | tee "$out/train.log"
fi
echo "gpu_run.sh done: $(ls "$out")"
