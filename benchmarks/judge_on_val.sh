#!/usr/bin/env bash
# Judge a `lrctl train` run on the validation suite, as every lever in
# agents/default/iterations.md is judged: export the run's final policy, then run the val
# benchmark with the methods of results/val, reusing the stored baseline runs of
# results/val/runs (hard links; their hashes do not depend on the controller), so only the
# controller's own runs (x0.1/x1/x10, tuning seeds, replays) are trained.
#
#   benchmarks/judge_on_val.sh RUN_DIR [OUT_DIR]      (default OUT_DIR: runs/judge/<run name>)
#
# Prints the quality bar; OUT_DIR/val holds summary.md, quality_bar.md, runs.csv and plots.
set -euo pipefail
run=${1:?usage: benchmarks/judge_on_val.sh RUN_DIR [OUT_DIR]}
out=${2:-runs/judge/$(basename "$run")}
lrctl=${LRCTL:-lrctl}
mkdir -p "$out/val/runs"
"$lrctl" export "$run" -o "$out/controller.safetensors"
if [ -d results/val/runs ]; then
  cp -aln results/val/runs/. "$out/val/runs/"
fi
"$lrctl" bench --suite val --seeds 3 --no-progress \
  --methods controller_momentum,controller_adam,controller_replay_momentum,controller_replay_adam,momentum_cosine,adam_cosine,momentum_warmup_cosine,adamw_warmup_cosine,adam_default \
  --controller "$out/controller.safetensors" --out "$out" "${@:3}"
sed -n '1,40p' "$out/val/quality_bar.md"
