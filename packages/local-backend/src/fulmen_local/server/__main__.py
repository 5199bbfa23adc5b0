"""``python -m fulmen_local.server MODEL_DIR [--port N]``: serve a saved model by hand."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

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
    )

    async def serve() -> None:
        url = await server.start_async()
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
