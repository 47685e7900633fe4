#!/usr/bin/env bash
# Collect the shipped CPU profile: kernels at load 0 and 0.5, then whole-model ground truth.
#   bash benchmarks/collect_cpu_profile.sh [OUT_DIR]      (resumable: rerun to continue)
set -euo pipefail
out=${1:-datasets/cpu-1t-tensorflow}
start=$(date +%s)
echo "start $(date -u +%FT%TZ) on $(uname -n), $(nproc) cores"
collectors collect --out "$out" --threads 1 --load 0,0.5 --budget-minutes 45 --quiet
echo "kernels done after $(( $(date +%s) - start )) s"
collectors models --out "$out/models.csv" --threads 1 --load 0,0.5 --quiet
echo "end $(date -u +%FT%TZ): total $(( $(date +%s) - start )) s"
