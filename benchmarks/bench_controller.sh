#!/usr/bin/env bash
# One controller on one suite with the methods of results/<suite>, reusing the stored baseline
# runs of results/<suite>/runs (hard links; their hashes do not depend on the controller), so
# only the controller's own runs (x0.1/x1/x10, tuning seeds, replays) are trained.
#
#   benchmarks/bench_controller.sh SUITE CONTROLLER OUT_DIR [lrctl bench options...]
#
# Prints the quality bar; OUT_DIR/SUITE holds summary.md, quality_bar.md, runs.csv and plots.
set -euo pipefail
suite=${1:?usage: benchmarks/bench_controller.sh SUITE CONTROLLER OUT_DIR}
controller=${2:?usage: benchmarks/bench_controller.sh SUITE CONTROLLER OUT_DIR}
out=${3:?usage: benchmarks/bench_controller.sh SUITE CONTROLLER OUT_DIR}
lrctl=${LRCTL:-lrctl}
mkdir -p "$out/$suite/runs"
if [ -d "results/$suite/runs" ]; then
  cp -aln "results/$suite/runs/." "$out/$suite/runs/"
fi
"$lrctl" bench --suite "$suite" --seeds 3 --no-progress \
  --methods controller_momentum,controller_adam,controller_replay_momentum,controller_replay_adam,momentum_cosine,adam_cosine,momentum_warmup_cosine,adamw_warmup_cosine,adam_default \
  --controller "$controller" --out "$out" "${@:4}"
sed -n '1,40p' "$out/$suite/quality_bar.md"
