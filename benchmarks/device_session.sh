#!/usr/bin/env bash
# The GPU engine's device check (#9), one command for a session's 15 minutes of device time:
# GPU tests, the whole loop eager and with CUDA graphs, the learning check (ds-td3 x 8 seeds, 30k
# steps, with graphs), TF32, SAC and E=129, then environment stepping on the machine's cores.
# Every step's time limit is cut to what is left of BUDGET_S (default 520 s; a stuck step is
# killed 10 s after its limit), so that with the wheels' installation the whole call ends inside
# the device tool's 600 s, and a step that runs out still leaves what it wrote (its exit
# status in loop.txt is then 124, or 137 once killed). Everything lands
# in $OUT (default /tmp/device-out) as five files (the device tool brings back at most eight):
# gpu.txt (the commit, the card, the GPU tests), loop.txt (every step's output), loop.jsonl (one
# JSON line per loop run), learn-evaluations.csv and learn-summary.json; commit them under docs/.
# The script exits 1 if any step failed or was skipped at the deadline (its last lines say
# which), so the device tool's rc tells. The device machine has torch 2.11 and Python 3.12 but
# not gymnasium, mujoco or tyro: fetch their wheels here first (`bash
# ../shared/tools/device-wheels.sh .whl`, then `echo /.whl/ >> .git/info/exclude`), and make the
# device call with carry [".whl"] and timeout_s 600, naming the commit (the device's copy of the
# tree has no .git):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD COMMIT=<git rev-parse HEAD here> \
#     && bash benchmarks/device_session.sh
# A dry run of every step on a CPU, eager (--cuda-graph and --tf32 are left out off CUDA), with a
# learning check of 300 steps; it ends with rc 0 in about five minutes on two cores:
#   DEVICE=cpu STEPS=20 LEARN_STEPS=300 LEARN_START=100 LEARN_EVAL=100 BUDGET_S=400 \
#     OUT=/tmp/dry PYTHON=.venv/bin/python bash benchmarks/device_session.sh
set -uo pipefail
out=${OUT:-/tmp/device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
deadline=$((SECONDS + ${BUDGET_S:-520}))
device=${DEVICE:-cuda}
steps=${STEPS:-1000}
learn_steps=${LEARN_STEPS:-30000} learn_start=${LEARN_START:-5000} learn_eval=${LEARN_EVAL:-5000}
graph=(--cuda-graph) tf32=(--tf32)
if [ "$device" = cpu ]; then # a dry run: what needs CUDA is left out
  graph=() tf32=()
fi
failed=() # the steps that failed or were skipped
finished() { # record step $1's exit status $2 in file $3
  echo "$1: exit $2" >>"$3"
  if [ "$2" -ne 0 ]; then failed+=("$1 (exit $2)"); fi
}
limit() { # a step's time limit: at most $1 seconds, no later than the deadline, at least 1
  local left=$((deadline - SECONDS))  # (timeout 0 would be no limit at all)
  left=$((left < $1 ? left : $1))
  echo $((left < 1 ? 1 : left))
}
started() { # whether a step named $1 may start (15 s left at least); a line in loop.txt if not
  if (($(limit 15) < 15)); then
    echo "$1: skipped at the deadline" >>"$out/loop.txt"
    failed+=("$1 (skipped)")
    return 1
  fi
}
echo "commit: ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}" >"$out/gpu.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv >>"$out/gpu.txt" 2>&1
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >>"$out/gpu.txt" 2>&1
timeout -k 10 "$(limit 200)" $py -m pytest -q -m gpu -p no:cacheprovider tests/test_graphs.py \
  tests/test_host_reads.py >>"$out/gpu.txt" 2>&1
finished pytest $? "$out/gpu.txt"
if [ "$device" != cpu ] && grep -q " skipped" "$out/gpu.txt"; then # no GPU test may skip there
  failed+=("pytest (GPU tests skipped: is CUDA working?)")
fi
run_loop() { # name, then loop.py's arguments
  local name=$1
  shift
  started "$name" || return
  echo "== $name" >>"$out/loop.txt"
  timeout -k 10 "$(limit 120)" $py benchmarks/loop.py --device "$device" --steps "$steps" \
    --json "$out/$name.json" "$@" >>"$out/loop.txt" 2>&1
  finished "$name" $? "$out/loop.txt"
  if [ -f "$out/$name.json" ]; then # loop.py writes its record as one line
    printf '{"name": "%s", "run": %s}\n' "$name" "$(cat "$out/$name.json")" >>"$out/loop.jsonl"
    rm "$out/$name.json"
  fi
}
mixed=(--algo td3 static-td3 ds-td3)
run_loop e1-eager --algo ds-td3 --seeds 1 --overlap
run_loop e1-graph --algo ds-td3 --seeds 1 --overlap "${graph[@]}"
run_loop e33-eager "${mixed[@]}" --seeds 11 --vector-env async --overlap
run_loop e33-graph "${mixed[@]}" --seeds 11 --vector-env async --overlap "${graph[@]}"
if started learn; then # the learning check, against the CPU run in docs/learn30k/
  echo "== learn" >>"$out/loop.txt"
  learn=$(mktemp -d)
  timeout -k 10 "$(limit 300)" $py -m dstrl.cli train --algo ds-td3 --seeds 8 \
    --env HalfCheetah-v5 --steps "$learn_steps" --start-steps "$learn_start" \
    --eval-every "$learn_eval" --device "$device" "${graph[@]}" --no-progress --no-tensorboard \
    --out "$learn/run" >>"$out/loop.txt" 2>&1
  finished learn $? "$out/loop.txt"
  # what it evaluated, even if it ran out of time (the summary only if it finished)
  cp "$learn/run/evaluations.csv" "$out/learn-evaluations.csv" 2>>"$out/loop.txt"
  cp "$learn/run/summary.json" "$out/learn-summary.json" 2>>"$out/loop.txt"
fi
run_loop e33-graph-tf32 "${mixed[@]}" --seeds 11 --vector-env async --overlap "${graph[@]}" \
  "${tf32[@]}"
run_loop e32-sac-graph --algo sac ds-sac --seeds 16 --vector-env async --overlap "${graph[@]}"
run_loop e129-graph "${mixed[@]}" --seeds 43 --vector-env async --overlap "${graph[@]}"
if started envs; then
  echo "== envs" >>"$out/loop.txt"
  timeout -k 10 "$(limit 100)" $py benchmarks/envs.py --envs 32 128 --workers 15 --steps 500 \
    --repeats 1 >>"$out/loop.txt" 2>&1
  finished envs $? "$out/loop.txt"
fi
tail -n 3 "$out"/*.txt
if ((${#failed[@]})); then
  echo "device check: ${#failed[@]} step(s) failed or skipped: ${failed[*]}" | tee -a "$out/loop.txt"
  exit 1
fi
echo "device check: every step ended with exit 0" | tee -a "$out/loop.txt"
