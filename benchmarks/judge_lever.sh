#!/usr/bin/env bash
# Judge one lever's candidate as agents/default/iterations.md does since v9: export the run with
# the scale term's floor at 10 decisions (or take a controller file as it is), bench it on the
# validation suite at each family's horizon and at 300 steps (bench_controller.sh, stored
# baselines reused), then print its score under the selection rule (lever_score.py).
#
#   benchmarks/judge_lever.sh RUN_DIR|CONTROLLER_FILE OUT_DIR [lever_score.py options...]
#
# One worker by default (WORKERS=2 to use both cores when nothing else runs), 3 evaluation seeds
# (SEEDS=5 for the paired judge). With PAIRED_WITH=DIR (an OUT_DIR this script wrote for the
# shipped controller at the same SEEDS), it also prints benchmarks/paired_judge.py's verdict of
# the candidate against it, over both horizons, and writes OUT_DIR/paired.json. Writes
# OUT_DIR/controller.safetensors, OUT_DIR/full/val and OUT_DIR/short300/val. Every run it
# trains is linked into results/val/runs, the store the next judge reuses: a baseline run's hash
# does not depend on the controller, and a controller run's hash carries the weights' digest.
set -euo pipefail
src=${1:?usage: benchmarks/judge_lever.sh RUN_DIR|CONTROLLER_FILE OUT_DIR}
out=${2:?usage: benchmarks/judge_lever.sh RUN_DIR|CONTROLLER_FILE OUT_DIR}
here=$(dirname "$0")
lrctl=${LRCTL:-lrctl}
python=${PYTHON:-python}
mkdir -p "$out" results/val/runs
if [ -d "$src" ]; then
  "$lrctl" export "$src" -o "$out/controller.safetensors" --scale-min-decisions 10
else
  cp "$src" "$out/controller.safetensors"
fi
for horizon in full short300; do
  opts=(--workers "${WORKERS:-1}" --seeds "${SEEDS:-3}")
  [ "$horizon" = short300 ] && opts+=(--steps 300)
  "$here/bench_controller.sh" val "$out/controller.safetensors" "$out/$horizon" "${opts[@]}"
  cp -aln "$out/$horizon/val/runs/." results/val/runs/
done
"$python" "$here/lever_score.py" "$out/full/val" "$out/short300/val" "${@:3}"
if [ -n "${PAIRED_WITH:-}" ]; then
  echo
  "$python" "$here/paired_judge.py" --candidate "$out/full/val" "$out/short300/val" \
    --shipped "$PAIRED_WITH/full/val" "$PAIRED_WITH/short300/val" --json "$out/paired.json"
fi
