#!/usr/bin/env bash
# The GPU engine's device check (#9), one command for a session's 15 minutes of device time
# (about 6 minutes of running): GPU tests, environment stepping on the machine's cores, and the
# whole loop eager, plain and overlapped. Everything lands in $OUT (default /tmp/device-out),
# eight files, as many as the device tool brings back; commit them under docs/. On the device machine, after installing the wheels that
# ../shared/tools/device-wheels.sh fetched:
#   bash benchmarks/device_session.sh
set -uo pipefail
out=${OUT:-/tmp/device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv >"$out/gpu.txt" 2>&1
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >>"$out/gpu.txt" 2>&1
timeout 150 $py -m pytest -q -m gpu -p no:cacheprovider tests/test_host_reads.py >"$out/pytest-gpu.txt" 2>&1
timeout 150 $py benchmarks/envs.py --envs 16 32 64 128 --workers 8 15 --steps 500 --repeats 1 \
  --json "$out/envs.json" >"$out/envs.txt" 2>&1
run_loop() {  # name, then loop.py's arguments
  local name=$1
  shift
  timeout 150 $py benchmarks/loop.py --device cuda --steps 1500 --json "$out/loop-$name.json" "$@" \
    >>"$out/loop.txt" 2>&1
}
run_loop e33-sync --algo td3 static-td3 ds-td3 --seeds 11
run_loop e33-overlap --algo td3 static-td3 ds-td3 --seeds 11 --vector-env async --overlap
run_loop e1-overlap --algo ds-td3 --seeds 1 --overlap
tail -n 3 "$out"/*.txt
