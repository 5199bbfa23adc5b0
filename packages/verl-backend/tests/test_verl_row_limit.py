"""Audit bug 3: a row longer than ``[verl] max_tokens_per_gpu`` stops verl's update.

verl puts each row whole into one micro-batch of at most ``ppo_max_token_len_per_gpu`` tokens;
``verl.utils.seqlen_balancing.rearrange_micro_batches`` asserts that every row fits. With
``[batch] max_len`` unset nothing bounded a row (a merged episode grows with every turn), so
a long episode crashed the step. ``bounded_batch`` (what ``bounded_config`` gives the step
driver) bounds rows by the token budget; the driver's batch builder enforces it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fulmen.batch import Batch, build_batch, group_records
from fulmen.config import BatchConfig
from fulmen.credit import GRPOAssigner
from fulmen.protocol import EpisodeRecord
from fulmen.rows import TrainingRow
from fulmen_verl.config import VerlConfig
from fulmen_verl.dataproto import rows_to_dataproto
from fulmen_verl.preflight import bounded_batch
from verl_recording import record_batch

pytestmark = pytest.mark.slow  # imports verl (20-40 s); the test itself takes a second


def micro_batches(rows: Sequence[TrainingRow], budget: int) -> list[int]:
    """verl's own split of the rows' DataProto into micro-batches of ``budget`` tokens, as its
    engine workers do it (no-padding layout, ``rearrange_micro_batches``); returns the
    micro-batch sizes."""
    from verl.utils import tensordict_utils as tu
    from verl.utils.seqlen_balancing import rearrange_micro_batches
    from verl.workers.utils.padding import left_right_2_no_padding

    data = rows_to_dataproto(rows, pad_token_id=0)
    # DataProto.to_tensordict() wants tensordict >= 0.10 (the CPU group locks 0.8.3): the same
    # TensorDict from verl's own helper, as test_verl_dataproto does
    td = tu.get_tensordict(tensor_dict=dict(data.batch.items()), non_tensor_dict={})
    batches, _ = rearrange_micro_batches(left_right_2_no_padding(td), max_token_len=budget)
    return [len(b["input_ids"]) for b in batches]


def build_verl_batch(
    records: Sequence[EpisodeRecord], assigner: GRPOAssigner, *, batch: BatchConfig, verl: VerlConfig
) -> Batch:
    """The step driver's batch of ``records`` on the config ``fulmen_verl`` hands it."""
    bounded = bounded_batch(batch, verl)
    return build_batch(
        group_records(records), assigner, mode=bounded.mode, max_len=bounded.max_len,
        overlong=bounded.overlong,
    )


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[EpisodeRecord]:
    recorded, _ = record_batch(tmp_path_factory.mktemp("rec"), turns=2)
    return recorded


def test_merged_rows_are_bounded_by_the_token_budget(records: list[EpisodeRecord]) -> None:
    assigner = GRPOAssigner(drop_no_signal=False)
    merged = BatchConfig(mode="merged")  # [batch] max_len unset
    unbounded = build_verl_batch(
        records, assigner, batch=merged, verl=VerlConfig(max_tokens_per_gpu=1 << 20)
    )
    lengths = sorted(len(r.prompt_ids) + len(r.response_ids) for r in unbounded.rows)
    budget = lengths[len(lengths) // 2]  # half the merged rows are longer than this
    assert lengths[-1] > budget
    with pytest.raises(AssertionError, match="max_token_len must be greater than the sequence"):
        micro_batches(unbounded.rows, budget)  # what the trainer handed verl before the fix

    bounded = build_verl_batch(
        records, assigner, batch=merged, verl=VerlConfig(max_tokens_per_gpu=budget)
    )
    assert all(len(r.prompt_ids) + len(r.response_ids) <= budget for r in bounded.rows)
    longer = sum(n > budget for n in lengths)
    cut = bounded.stats["overlong_truncated"] + bounded.stats["overlong_dropped"]
    assert cut == longer > 0  # every over-long row counted, truncated or excluded
    assert len(bounded.rows) == len(unbounded.rows) - bounded.stats["overlong_dropped"]
    assert sum(micro_batches(bounded.rows, budget)) == len(bounded.rows)


def test_a_set_max_len_wins_when_it_is_tighter(records: list[EpisodeRecord]) -> None:
    assigner = GRPOAssigner(drop_no_signal=False)
    tight = build_verl_batch(
        records, assigner, batch=BatchConfig(mode="merged", max_len=20), verl=VerlConfig()
    )
    assert all(len(r.prompt_ids) + len(r.response_ids) <= 20 for r in tight.rows)
    assert tight.stats["overlong_truncated"] + tight.stats["overlong_dropped"] > 0
