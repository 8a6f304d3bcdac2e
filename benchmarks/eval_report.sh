#!/usr/bin/env bash
# The final report of a controller on the eval suite (read for the report only, never to
# choose): the eval benchmark with the methods of results/eval, reusing the stored baseline
# runs of results/eval/runs (hard links), so only the controller's own runs are trained.
#
#   benchmarks/eval_report.sh CONTROLLER OUT_DIR [lrctl bench options...]
set -euo pipefail
controller=${1:?usage: benchmarks/eval_report.sh CONTROLLER OUT_DIR}
out=${2:?usage: benchmarks/eval_report.sh CONTROLLER OUT_DIR}
lrctl=${LRCTL:-lrctl}
mkdir -p "$out/eval/runs"
if [ -d results/eval/runs ]; then
  cp -aln results/eval/runs/. "$out/eval/runs/"
fi
"$lrctl" bench --suite eval --seeds 3 --no-progress \
  --methods controller_momentum,controller_adam,controller_replay_momentum,controller_replay_adam,momentum_cosine,adam_cosine,momentum_warmup_cosine,adamw_warmup_cosine,adam_default \
  --controller "$controller" --out "$out" "${@:3}"
sed -n '1,40p' "$out/eval/quality_bar.md"
