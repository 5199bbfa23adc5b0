"""Runs the model for the rows of the running batch (the engine's worker thread only).

:class:`BatchExecutor` admits new requests (prefill, then merge into the running batch), and
steps the batch: sample one token per row, turn it into text (stop strings, end tokens,
``max_tokens``), emit a :class:`~fulmen_local.server.outputs.TokenEvent` per row, drop finished
or cancelled rows, and run the next decode forward pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from fulmen_local.server.batch import RowSampling, RunningBatch, prefill
from fulmen_local.server.outputs import EventSink, TokenEvent
from fulmen_local.server.sampling import SamplingParams, draw_uniforms, sample_tokens
from fulmen_local.server.textstream import Decode, TextStream

__all__ = ["BatchExecutor", "GenerationHandle", "end_request"]

_log = logging.getLogger(__name__)


class GenerationHandle:
    """A submitted request. :meth:`cancel` ends its running sequences with ``abort``."""

    def __init__(self, request_id: str, prompt_ids: tuple[int, ...], params: SamplingParams):
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.submitted_at = time.monotonic()
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """True after :meth:`cancel`."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop generating for this request (its sequences end with ``finish_reason="abort"``)."""
        self._cancelled = True


class _Row:
    """Python-side state of one sequence in the running batch."""

    __slots__ = ("generated", "handle", "index", "sink", "stop_ids", "stream", "version")

    def __init__(
        self, handle: GenerationHandle, index: int, sink: EventSink, decode: Decode, version: int
    ) -> None:
        self.handle, self.index, self.sink, self.version = handle, index, sink, version
        self.stream = TextStream(decode, handle.params.stop)
        self.generated = 0
        self.stop_ids = frozenset(handle.params.stop_token_ids)


class BatchExecutor:
    """The running batch and its rows.

    Args:
        model: The causal LM.
        decode: Token decoder for the rows' text streams.
        eos_token_ids: Ids that end a sequence (unless ``ignore_eos``).
        pad_id: Id used for left padding (masked out).
        device: Device of the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        decode: Decode,
        eos_token_ids: frozenset[int],
        pad_id: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self._decode = decode
        self.eos_token_ids = eos_token_ids
        self._pad_id = pad_id
        self._device = device
        self._batch: RunningBatch | None = None
        self._rows: list[_Row] = []
        self.forward_passes = self.prefills = self.generated_tokens = self.max_rows = 0

    @property
    def active(self) -> int:
        """Rows currently being generated."""
        return len(self._rows)

    def admit(self, newcomers: Sequence[tuple[GenerationHandle, EventSink]], version: int) -> None:
        """Prefill ``newcomers`` and add their rows to the batch (generated under ``version``).

        A failed prefill ends the newcomers' sequences with ``error``; running rows go on.
        """
        prompts: list[tuple[int, ...]] = []
        sampling: list[RowSampling] = []
        new_rows: list[_Row] = []
        for handle, sink in newcomers:
            p = handle.params
            uniforms = draw_uniforms(p.seed, p.n, p.max_tokens)
            for i in range(p.n):
                new_rows.append(_Row(handle, i, sink, self._decode, version))
                prompts.append(handle.prompt_ids)
                sampling.append(RowSampling(p.temperature, p.top_p, uniforms[i]))
        try:
            fresh = prefill(self.model, prompts, sampling, pad_id=self._pad_id, device=self._device)
        except Exception as exc:
            _log.exception("prefill failed")
            for row in new_rows:
                _emit(row, _end(row, "error", error=f"{type(exc).__name__}: {exc}"))
            return
        self.forward_passes += 1
        self.prefills += 1
        self._rows.extend(new_rows)
        if self._batch is None:
            self._batch = fresh
        else:
            self._batch.merge(fresh)

    def end_all(self, reason: str, *, error: str | None = None) -> None:
        """End every running row with ``reason`` (``abort`` or ``error``) and drop the batch."""
        for row in self._rows:
            _emit(row, _end(row, reason, error=error))
        self._rows, self._batch = [], None

    def step(self) -> None:
        """Sample one token per row, emit events, drop finished rows, run the next forward."""
        batch, rows = self._batch, self._rows
        if batch is None or not rows:
            return
        logits = batch.logits
        uniforms = batch.step_uniforms().to(self._device)
        tokens = sample_tokens(logits, batch.temperature, batch.top_p, uniforms)
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = logprobs.gather(1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
        top_k = max(row.handle.params.top_logprobs for row in rows)
        top_v: list[list[float]] = []
        top_i: list[list[int]] = []
        if top_k:
            values, indices = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
            top_v, top_i = values.tolist(), indices.tolist()
        token_list: list[int] = tokens.tolist()
        keep: list[int] = []
        for i, row in enumerate(rows):
            if row.handle.cancelled:
                _emit(row, _end(row, "abort"))
                continue
            tid = token_list[i]
            row.generated += 1
            self.generated_tokens += 1
            k = row.handle.params.top_logprobs
            tops = tuple(zip(top_i[i][:k], top_v[i][:k], strict=True)) if k else ()
            finish, stop_reason, text = self._advance(row, tid)
            event = TokenEvent(
                row.index, tid, chosen[i], tops, text, finish, stop_reason, row.version
            )
            _emit(row, event)
            if finish is None:
                keep.append(i)
        if not keep:
            self._rows, self._batch = [], None
            return
        if len(keep) < len(rows):
            batch.select(keep)
            tokens = tokens.index_select(0, torch.tensor(keep, device=tokens.device))
            self._rows = [rows[i] for i in keep]
        batch.decode(self.model, tokens)
        self.forward_passes += 1
        self.max_rows = max(self.max_rows, len(self._rows))

    def _advance(self, row: _Row, tid: int) -> tuple[str | None, str | int | None, str]:
        """Update the row's text with ``tid``; return (finish_reason, stop_reason, new text)."""
        params = row.handle.params
        if tid in row.stop_ids:
            return "stop", tid, row.stream.finish()
        if tid in self.eos_token_ids and not params.ignore_eos:
            return "stop", None, row.stream.finish()
        text = row.stream.push(tid)
        if row.stream.stopped is not None:
            return "stop", row.stream.stopped, text
        if row.generated >= params.max_tokens:
            return "length", None, text + row.stream.finish()
        return None, None, text


def _end(row: _Row, reason: str, *, error: str | None = None) -> TokenEvent:
    return TokenEvent(
        row.index, None, None, (), row.stream.finish(), reason, None, row.version, error
    )


def _emit(row: _Row, event: TokenEvent) -> None:
    try:
        row.sink(event)
    except Exception:  # a broken consumer must not stop the batch
        _log.exception("event sink of request %s failed", row.handle.request_id)


def end_request(handle: GenerationHandle, sink: EventSink, reason: str, version: int) -> None:
    """End every sequence of a request that never ran (``abort`` while queued)."""
    for i in range(handle.params.n):
        try:
            sink(TokenEvent(i, None, None, (), "", reason, None, version))
        except Exception:
            _log.exception("event sink of request %s failed", handle.request_id)
