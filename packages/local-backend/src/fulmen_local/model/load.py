"""Load any Hugging Face causal LM + tokenizer, on the device and in the dtype asked for.

:func:`load_causal_lm` takes a local directory (what ``save_pretrained`` writes) or a Hub id
(``Qwen/Qwen2.5-0.5B-Instruct``, read from the local Hugging Face cache first, then the Hub).
Every problem a user can fix is a :class:`~fulmen.config.ConfigError` whose one line names the
config key and the fix, raised before any training starts:

* the path is neither a directory with a ``config.json`` nor a reachable Hub id;
* the architecture is not a causal LM that ``transformers`` knows;
* the tokenizer has no chat template (chat completions need one);
* the device asked for is not there (:func:`resolve_device`).

:func:`resolve_device` and :func:`resolve_dtype` turn ``[local] device`` / ``dtype`` into torch
objects: ``auto`` picks a CUDA GPU, else Apple's MPS, else the CPU; dtype ``auto`` is bfloat16
on a GPU (float16 where the GPU has no bf16) and float32 on the CPU.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from fulmen.config import ConfigError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

__all__ = [
    "context_length",
    "is_hub_id",
    "load_causal_lm",
    "load_model_config",
    "load_tokenizer_for",
    "resolve_device",
    "resolve_dtype",
]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(name: str) -> torch.device:
    """``[local] device`` as a torch device.

    Raises:
        ConfigError: the device asked for is not on this machine.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f'[local] device = "{name}": no CUDA GPU is visible to torch '
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                'use device = "auto" or "cpu"'
            )
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise ConfigError(
                f'[local] device = "{name}": this machine has {count} CUDA GPU(s) '
                f"(cuda:0..cuda:{count - 1}); pick one of those"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f'[local] device = "{name}": Apple MPS is not available here; use device = "auto" or "cpu"'
        )
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``[local] dtype`` for ``device`` (``auto``: bf16 on a GPU that has it, fp32 on the CPU).

    Raises:
        ConfigError: an unknown dtype name, or bfloat16 on a CUDA GPU without bf16 support.
    """
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in _DTYPES:
        raise ConfigError(f'[local] dtype = "{name}": expected "auto", {", ".join(_DTYPES)}')
    dtype = _DTYPES[name]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            '[local] dtype = "bfloat16": this GPU has no bfloat16 support; use "float16" or "auto"'
        )
    return dtype


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(source: str | Path) -> bool:
    """True when ``source`` is not an existing path and reads as ``org/name`` (a Hub id)."""
    text = str(source)
    return not Path(text).expanduser().exists() and bool(_HUB_ID.match(text))


def _is_local(source: str | Path) -> bool:
    return not is_hub_id(source)


def load_model_config(source: str | Path) -> PretrainedConfig:
    """The model's ``config.json`` (a local directory, or a Hub id: local cache, then the Hub).

    Raises:
        ConfigError: no such directory/model, or the Hub cannot be reached for a Hub id.
    """
    text = str(source)
    if _is_local(source):
        directory = Path(text).expanduser()
        if not (directory / "config.json").is_file():
            raise ConfigError(
                f"[model] path = {text!r}: no config.json there; point it at a Hugging Face model "
                "directory (what save_pretrained writes) or set [model] build to create one"
            )
        return AutoConfig.from_pretrained(str(directory))
    try:
        return AutoConfig.from_pretrained(text, local_files_only=True)
    except OSError:
        pass
    try:
        return AutoConfig.from_pretrained(text)
    except OSError as exc:
        raise ConfigError(
            f"[model] path = {text!r}: not a local directory, not in the Hugging Face cache, and "
            f"the Hub could not be reached or has no such model ({_first_line(exc)}); download it "
            f"where the Hub is reachable (`hf download {text} --local-dir DIR`) and set "
            "[model] path = DIR"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _check_causal_lm(config: PretrainedConfig, source: str) -> None:
    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        arch = ", ".join(getattr(config, "architectures", None) or []) or "unknown"
        raise ConfigError(
            f"[model] path = {source!r}: model_type {model_type!r} (architectures: {arch}) is not "
            "a causal LM this transformers version can load with AutoModelForCausalLM; use a "
            "decoder-only checkpoint (Qwen2/3, Llama, SmolLM2, Gemma, Phi, Mistral, …)"
        )


def load_tokenizer_for(source: str | Path, *, need_chat_template: bool = True) -> PreTrainedTokenizerBase:
    """The model's tokenizer (``AutoTokenizer``), with a pad token.

    A tokenizer without a pad token gets its EOS as pad (padding is always masked).

    Raises:
        ConfigError: no tokenizer files, or no chat template when ``need_chat_template``.
    """
    text = str(source)
    local = {"local_files_only": True} if not _is_local(source) else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(text, **local)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"[model] path = {text!r}: no usable tokenizer there ({_first_line(exc)}); save the "
            "tokenizer next to the model (tokenizer.save_pretrained(DIR))"
        ) from exc
    if need_chat_template and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"[model] path = {text!r}: the tokenizer has no chat template, which chat agents "
            "need; use an instruct/chat checkpoint, or add one (tokenizer.chat_template = ...; "
            "tokenizer.save_pretrained(DIR))"
        )
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(config: PretrainedConfig) -> int | None:
    """The model's context length (``max_position_embeddings`` or the family's equivalent)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    text = getattr(config, "text_config", None)
    return context_length(text) if isinstance(text, PretrainedConfig) else None


def load_causal_lm(
    source: str | Path,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    need_chat_template: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``source`` (a directory or Hub id) as a causal LM in ``dtype`` on ``device``, ``eval()``.

    Attention is PyTorch's SDPA where the architecture supports it, else eager.

    Raises:
        ConfigError: see the module docstring.
    """
    text = str(source)
    config = load_model_config(source)
    _check_causal_lm(config, text)
    tokenizer = load_tokenizer_for(source, need_chat_template=need_chat_template)
    local = {"local_files_only": True} if not _is_local(source) else {}
    model = AutoModelForCausalLM.from_pretrained(
        str(Path(text).expanduser()) if _is_local(source) else text, dtype=dtype, **local
    )
    if device is not None:
        model.to(device)  # pyright: ignore[reportArgumentType]  # nn.Module.to, in place
    return model.eval(), tokenizer
