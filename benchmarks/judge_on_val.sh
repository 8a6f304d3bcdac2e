#!/usr/bin/env bash
# Judge a `lrctl train` run on the validation suite, as every lever in
# agents/default/iterations.md is judged: export the run's final policy, then
# benchmarks/bench_controller.sh on val (stored baselines reused).
#
#   benchmarks/judge_on_val.sh RUN_DIR [OUT_DIR] [lrctl bench options...]
#                                        (default OUT_DIR: runs/judge/<run name>)
set -euo pipefail
run=${1:?usage: benchmarks/judge_on_val.sh RUN_DIR [OUT_DIR]}
out=${2:-runs/judge/$(basename "$run")}
mkdir -p "$out"
"${LRCTL:-lrctl}" export "$run" -o "$out/controller.safetensors"
exec "$(dirname "$0")/bench_controller.sh" val "$out/controller.safetensors" "$out" "${@:3}"
