"""fulmen's distributed backend: GRPO-family training on verl (Ray, FSDP) with vLLM rollouts
served behind fulmen's capture gateway.

Importing this package is cheap: verl, Ray and vLLM are imported only by the functions that
use them. See the package README for the architecture, the ``[verl]`` reference and launch
recipes.
"""

from __future__ import annotations

from fulmen_verl.backend import GPUUnavailableError, VerlBackend
from fulmen_verl.config import VerlConfig, parse_verl_options, to_hydra_overrides

__all__ = [
    "GPUUnavailableError",
    "VerlBackend",
    "VerlConfig",
    "parse_verl_options",
    "to_hydra_overrides",
]
