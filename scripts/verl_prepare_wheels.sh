#!/usr/bin/env bash
# Prepare the GPU stack (root `gpu` group: verl[vllm]==0.9.1, torch 2.11 CUDA, vllm 0.24) as
# wheel files for a GPU machine without internet access.
#
# On a machine WITH internet (any OS; wheels are chosen for Linux x86_64, CPython 3.11):
#   scripts/verl_prepare_wheels.sh [OUT_DIR]          # default OUT_DIR: wheels-gpu/
# Copy the repository and OUT_DIR to the GPU machine, then there:
#   python3.11 -m venv .venv && .venv/bin/pip install --no-index --find-links wheels-gpu \
#       -r wheels-gpu/requirements-gpu.txt && .venv/bin/pip install --no-deps -e packages/core \
#       -e packages/local-backend -e packages/verl-backend
#   .venv/bin/python scripts/verl_gpu_smoke.py --model /models/Qwen2.5-0.5B-Instruct
# The requirement list comes from uv.lock (`uv export --locked`), so the GPU machine gets exactly
# the locked versions. NOTE: not yet exercised end to end on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-wheels-gpu}"
mkdir -p "$out"
uv export --locked --group gpu --no-group cpu --no-hashes --no-emit-workspace \
    --no-emit-project --format requirements-txt > "$out/requirements-gpu.txt"
python3 -m pip download --dest "$out" --requirement "$out/requirements-gpu.txt" \
    --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform linux_x86_64 --python-version 3.11 --implementation cp
echo "wheels and requirements-gpu.txt are in $out/ ($(ls "$out" | wc -l) files)"
