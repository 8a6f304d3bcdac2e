#!/usr/bin/env bash
# Judge a `lrctl train` run on the validation suite, as every lever in
# agents/default/iterations.md is judged: export the run's final policy (or the checkpoint
# given, for checkpoint selection), then benchmarks/bench_controller.sh on val (stored
# baselines reused).
#
#   benchmarks/judge_on_val.sh RUN_DIR|RUN_DIR/checkpoints/step-N [OUT_DIR] [lrctl bench options...]
#       (default OUT_DIR: runs/judge/<run name>, or runs/judge/<run name>@<step> for a checkpoint)
set -euo pipefail
run=${1:?usage: benchmarks/judge_on_val.sh RUN_DIR [OUT_DIR]}
name=$(basename "$run")
case "$name" in
  step-*) name="$(basename "$(dirname "$(dirname "$run")")")@$((10#${name#step-}))" ;;
esac
shift
out=runs/judge/$name
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then  # an OUT_DIR, not a bench option
  out=$1
  shift
fi
mkdir -p "$out"
"${LRCTL:-lrctl}" export "$run" -o "$out/controller.safetensors"
exec "$(dirname "$0")/bench_controller.sh" val "$out/controller.safetensors" "$out" "$@"
