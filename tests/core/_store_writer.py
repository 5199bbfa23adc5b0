"""Writer used by ``test_store.py`` in other processes (spawned, or run as a script and killed).

As a script: ``python _store_writer.py DB EPISODE_ID`` creates the episode, then appends
transitions ``seq = 0, 1, 2...`` forever, printing ``"{seq} {cursor}"`` and flushing stdout after
each ``add_transition`` returns (an acknowledgement that the transition is durable).
"""

from __future__ import annotations

import sys

from fulmen.protocol import Episode, EpisodeStatus, Task, Transition
from fulmen.store.sqlite import SQLiteStore

__all__ = ["make_transition", "write_episode"]


def make_transition(episode_id: str, seq: int, n_tokens: int = 300) -> Transition:
    """A realistic transition whose every field is a function of ``(episode_id, seq)``."""
    prompt = tuple((seq * 7919 + i * 31) % 151_000 for i in range(n_tokens))
    response = tuple((seq * 104_729 + i * 17) % 151_000 for i in range(n_tokens // 3))
    return Transition(
        episode_id=episode_id,
        seq=seq,
        request_id=f"{episode_id}.{seq}",
        agent="solver",
        request_messages=(
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": f"Step {seq}: what is {seq} * 3? Ünïcödé ✓"},
        ),
        request_tools=({"type": "function", "function": {"name": "calc", "parameters": {}}},),
        response_message={"role": "assistant", "content": f"It is {seq * 3}."},
        prompt_token_ids=prompt,
        response_token_ids=response,
        response_logprobs=tuple(-((i % 13) / 7.0) for i in range(len(response))),
        finish_reason="stop",
        policy_version=seq // 10,
        started_at=1_700_000_000.0 + seq,
        ended_at=1_700_000_000.5 + seq,
        upstream_latency_s=0.25,
        flags=("stream",) if seq % 2 else (),
        metadata={"model": "tiny", "temperature": 1.0},
    )


def write_episode(path: str, episode_id: str, count: int) -> None:
    """Create ``episode_id`` (running) and append ``count`` transitions (a spawn target)."""
    store = SQLiteStore(path)
    store.add_episode(Episode(id=episode_id, task=Task(id=f"task-{episode_id}")))
    store.update_episode(episode_id, status=EpisodeStatus.RUNNING)
    for seq in range(count):
        store.add_transition(make_transition(episode_id, seq, n_tokens=50))
    store.close()


def _main(path: str, episode_id: str) -> None:
    store = SQLiteStore(path)
    store.add_episode(Episode(id=episode_id, task=Task(id="kill-test")))
    seq = 0
    while True:
        cursor = store.add_transition(make_transition(episode_id, seq))
        sys.stdout.write(f"{seq} {cursor}\n")
        sys.stdout.flush()
        seq += 1


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
