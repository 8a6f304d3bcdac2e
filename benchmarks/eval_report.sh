#!/usr/bin/env bash
# The final report of a controller on the eval suite (read for the report only, never to
# choose): benchmarks/bench_controller.sh on eval (stored baselines reused).
#
#   benchmarks/eval_report.sh CONTROLLER OUT_DIR [lrctl bench options...]
set -euo pipefail
exec "$(dirname "$0")/bench_controller.sh" eval "${1:?usage: benchmarks/eval_report.sh CONTROLLER OUT_DIR}" \
  "${2:?usage: benchmarks/eval_report.sh CONTROLLER OUT_DIR}" "${@:3}"
