#!/usr/bin/env bash
# One GPU call, under 8 minutes: tests/test_cuda.py, then udiff against EDM (bench/speed.py) on the DDPM++
# preset (32x32x3) and on the 28x28 preset, then the per-sample noise's cost (bench/noise.py).
#   bash bench/gpu_check.sh EDM_CHECKOUT [OUT_DIR]
# Wheels the machine lacks (pywavelets, constriction, torch-fidelity) are installed from .whl/ when it is
# there (../shared/tools/device-wheels makes it). Each stage has its own time limit, so that one slow stage
# leaves the others their time; logs and the JSON lines go to OUT_DIR (default $OUT, else bench/results).
set -uo pipefail
edm=${1:?give the path of an NVlabs/edm checkout}
out=${2:-${OUT:-bench/results}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' | tee -a "$out/gpu.txt"
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/summary.txt"
}
stage test_cuda 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
stage speed-ddpmpp 220 python3 bench/speed.py --edm "$edm" --preset ddpmpp --steps 30
stage speed-small28 100 python3 bench/speed.py --edm "$edm" --preset small-28 --steps 30
stage noise 30 python3 bench/noise.py --device cuda --batch 512 --compile
grep -h '^{' "$out"/speed-*.log "$out"/noise.log > "$out/results.jsonl" 2>/dev/null
cat "$out/summary.txt"
