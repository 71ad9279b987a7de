#!/usr/bin/env bash
# The GPU checks of issue #7 as one prepared command (a GPU machine is lent for minutes, not hours).
#
#   bash benchmarks/gpu_run.sh [sr|train|all] [OUTDIR]
#
# 1. the fast-path correctness tests on the GPU (bf16 vs fp32, channels-last, window batching, compiled vs
#    eager: tests/test_superres_fast.py with MEDGAN_TEST_DEVICE=cuda MEDGAN_TEST_COMPILE=1);
# 2. "sr": benchmarks/sr_speed.py --device cuda (end to end first, then the bare networks);
# 3. "train": benchmarks/train_throughput.py --device cuda.
# Each step has its own time limit so that one slow step cannot starve the next: tests 90 s, sr 270 + 5 s kill grace,
# train 200 + 5 s. A benchmark stopped at its limit (SIGTERM) still writes the rows it measured, and is killed 5 s
# later if it cannot; its table is also rewritten after every finished case, so even a kill keeps those rows. Every
# log and markdown table lands in OUTDIR (default $OUT on the lent machine).
# Run "sr" and "train" as two separate device calls (same warm machine), not "all": counting the import check (30 s),
# nvidia-smi (30 s) and version-check (60 s) timeouts, the worst case of "all" is 30 + 30 + 60 + 90 + 275 + 205 = 690 s,
# over the 600 s one call may run; "sr" alone is at most 485 s, "train" alone 325 s, plus the wheel install
# (CONTRIBUTING.md, "GPU benchmarks and GPU checks", has the two calls to send).
# Python packages the machine lacks (monai, nibabel, pydicom) travel as wheels in .whl/ (ignored by .gitignore;
# CONTRIBUTING.md) and are installed first. Fetch them once, on the development machine, in the
# repository root (the versions are those of the dev environment; monai 1.6.1 ran on the H200 on 2026-12-04):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl monai==1.6.1 nibabel==5.4.2 pydicom==3.0.2
# and name .whl in the call's carry, e.g. run(command="bash benchmarks/gpu_run.sh sr", carry=[".whl"]).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
usage="usage: bash benchmarks/gpu_run.sh [sr|train|all] [OUTDIR]"
# before nvidia-smi, the wheel install and OUTDIR: a mistyped mode ("SR", "--help") ran nothing and still said done
case "$what" in
  sr | train | all) ;;
  -h | --help)
    echo "$usage"
    exit 0
    ;;
  *)
    echo "gpu_run.sh: unknown mode '$what'" >&2
    echo "$usage" >&2
    exit 2
    ;;
esac
out=${2:-${OUT:-/tmp/medgan-gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
# fail fast: without the wheels (no .whl/, or .whl not in the call's carry) the install above is skipped and every
# step below would fail at "import monai" (the device image has none of these), spending the call for nothing
if ! timeout 30 python3 -c "import monai, nibabel, pydicom" >/dev/null 2>&1; then
  echo "gpu_run.sh: monai/nibabel/pydicom not importable: fetch the wheels into .whl/ (pip download command in CONTRIBUTING.md, 'GPU benchmarks and GPU checks') and name .whl in the run call's carry" >&2
  exit 1
fi
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
