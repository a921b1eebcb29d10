#!/usr/bin/env bash
# The GPU engine's device check (#9), one command for a session's 15 minutes of device time
# (at most about 9 minutes of running; past a deadline the rest is skipped): GPU tests, the
# whole loop eager and with CUDA graphs, the learning check (ds-td3 x 8 seeds, 30k steps, with
# graphs), TF32, SAC and E=129, then environment stepping on the machine's cores. Everything
# lands in $OUT (default /tmp/device-out) as at most eight files (what the device tool brings
# back); commit them under docs/. The device machine has torch 2.11 and Python 3.12 but not
# gymnasium, mujoco or tyro: fetch their wheels here first (`bash ../shared/tools/device-wheels.sh
# .whl`, then `echo /.whl/ >> .git/info/exclude`), and make the device call with carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/device_session.sh
# A dry run of the script itself on a CPU (the graph runs are refused there):
#   DEVICE=cpu STEPS=50 BUDGET_S=60 OUT=/tmp/dry bash benchmarks/device_session.sh
set -uo pipefail
out=${OUT:-/tmp/device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
deadline=$((SECONDS + ${BUDGET_S:-540}))
device=${DEVICE:-cuda}
steps=${STEPS:-1000}
nvidia-smi --query-gpu=name,driver_version --format=csv >"$out/gpu.txt" 2>&1
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >>"$out/gpu.txt" 2>&1
timeout 200 $py -m pytest -q -m gpu -p no:cacheprovider tests/test_graphs.py \
  tests/test_host_reads.py >"$out/pytest-gpu.txt" 2>&1
run_loop() {  # name, then loop.py's arguments; skipped past the deadline
  local name=$1
  shift
  if ((SECONDS > deadline)); then
    echo "$name: skipped at the deadline" >>"$out/loop.txt"
    return
  fi
  timeout 120 $py benchmarks/loop.py --device "$device" --steps "$steps" --json "$out/$name.json" "$@" \
    >>"$out/loop.txt" 2>&1
  [ -f "$out/$name.json" ] && { echo "{\"name\": \"$name\", \"run\":"; cat "$out/$name.json"; echo "}"; } \
    >>"$out/loop.jsonl" && rm "$out/$name.json"
}
mixed=(--algo td3 static-td3 ds-td3)
run_loop e1-eager --algo ds-td3 --seeds 1 --overlap
run_loop e1-graph --algo ds-td3 --seeds 1 --overlap --cuda-graph
run_loop e33-eager "${mixed[@]}" --seeds 11 --vector-env async --overlap
run_loop e33-graph "${mixed[@]}" --seeds 11 --vector-env async --overlap --cuda-graph
if ((SECONDS < deadline)); then  # the learning check, against the CPU run in docs/learn30k/
  learn=$(mktemp -d)
  timeout 240 $py -m dstrl.cli train --algo ds-td3 --seeds 8 --env HalfCheetah-v5 --steps 30000 \
    --start-steps 5000 --eval-every 5000 --device "$device" --cuda-graph --no-progress \
    --no-tensorboard \
    --out "$learn/run" >>"$out/loop.txt" 2>&1
  cp "$learn/run/evaluations.csv" "$out/learn-evaluations.csv"
  cp "$learn/run/summary.json" "$out/learn-summary.json"
fi
run_loop e33-graph-tf32 "${mixed[@]}" --seeds 11 --vector-env async --overlap --cuda-graph --tf32
run_loop e32-sac-graph --algo sac ds-sac --seeds 16 --vector-env async --overlap --cuda-graph
run_loop e129-graph "${mixed[@]}" --seeds 43 --vector-env async --overlap --cuda-graph
if ((SECONDS < deadline)); then
  timeout 100 $py benchmarks/envs.py --envs 32 128 --workers 15 --steps 500 --repeats 1 \
    --json "$out/envs.json" >"$out/envs.txt" 2>&1
fi
tail -n 3 "$out"/*.txt
