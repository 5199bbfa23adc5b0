"""``python -m fulmen_local.server MODEL_DIR [--port N] [--tool-call-parser NAME]``: serve a
saved model by hand.

Requests with tools get their calls parsed in the ``--tool-call-parser`` format (vLLM's names;
default ``hermes``, the format of fulmen's own models and Qwen; ``none`` refuses tools), like
vLLM with ``--enable-auto-tool-choice``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from fulmen_local.server.tool_parsers import TOOL_PARSER_NAMES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fulmen_local.server",
        description="Serve a Hugging Face causal LM through the OpenAI API (vLLM wire format).",
    )
    parser.add_argument("model_dir", type=Path, help="directory saved with save_pretrained")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-name", default=None, help="name clients pass (default: dir name)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-window-ms", type=float, default=2.0)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--tool-call-parser",
        choices=[*TOOL_PARSER_NAMES, "none"],
        default="hermes",
        help="format of the model's tool calls (vLLM's names; none: refuse requests with tools)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Load the model and serve until interrupted; return the exit status."""
    args = _parser().parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        print(f"error: {args.model_dir} has no config.json (not a saved model)", file=sys.stderr)
        return 2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fulmen_local.server.service import InferenceServer

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(args.model_dir)).eval()
    server = InferenceServer(
        model,
        tokenizer,
        model_name=args.model_name or args.model_dir.resolve().name,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        max_model_len=args.max_model_len,
        tool_parser=None if args.tool_call_parser == "none" else args.tool_call_parser,
    )

    async def serve() -> None:
        url = await server.start_async()
        print(f"tool-call parser: {server.tool_parser or 'none'}", flush=True)
        print(f"serving {server.model_name} at {url}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop_async()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
