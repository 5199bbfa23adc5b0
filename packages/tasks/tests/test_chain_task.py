"""The tool-chain task: splits, the lookup tool, the strict answer check, demonstrations."""

from __future__ import annotations

import json

from fulmen_tasks.chain import (
    check_final_answer,
    generate_problems,
    lookup,
    make_splits,
    solution_steps,
)
from fulmen_tasks.chain_demos import DEMO_LENGTHS, demonstration, demonstrations


def test_splits_have_the_stated_lengths_and_share_no_first_key() -> None:
    train, held_out = make_splits(seed=0, n_train=300, n_eval=40)
    assert {len(p["keys"]) for p in train} == {2, 3, 4}
    assert {len(p["keys"]) for p in held_out} == {3, 4}
    assert not {p["keys"][0] for p in train} & {p["keys"][0] for p in held_out}
    assert make_splits(seed=0, n_train=10, n_eval=40)[1] == held_out  # held-out ignores n_train
    assert len({p["id"] for p in train}) == 300


def test_following_the_chain_reaches_the_answer() -> None:
    (problem,) = generate_problems(1, seed=3, lengths=(4,))
    assert problem["question"] == f"Find the value of {problem['keys'][0]}."
    key, seen = problem["keys"][0], []
    while True:  # the agent's loop, by hand: look up what the last result names
        observation = lookup(problem["store"], key)
        seen.append(key)
        if observation.startswith("value "):
            break
        key = observation.removeprefix("see ")
    assert seen == problem["keys"] and len(set(seen)) == 4
    assert observation == f"value {problem['answer']}"
    assert solution_steps(problem)[-1] == (problem["keys"][-1], observation)


def test_lookup_answers_errors_as_observations() -> None:
    store = {"abc": "see xyz", "xyz": "value 512"}
    assert lookup(store, "abc") == "see xyz"
    assert lookup(store, " xyz ") == "value 512"
    assert lookup(store, "abd") == "error: no key 'abd'"
    assert lookup(store, 7).startswith("error: get needs")


def test_only_the_stated_form_scores() -> None:
    assert check_final_answer("The answer is 512.", 512)
    assert check_final_answer("  The answer is 512.\n", 512)
    assert not check_final_answer("The answer is 511.", 512)
    assert not check_final_answer('<tool_call>{": answer is 512.', 512)
    assert not check_final_answer("value 512", 512)
    assert not check_final_answer("The answer is 512", 512)
    assert not check_final_answer(None, 512)


def test_demonstrations_are_short_correct_chains_and_never_held_out() -> None:
    demos = demonstrations(200, seed=0)
    _, held_out = make_splits(seed=0)
    firsts = {d.messages[1]["content"] for d in demos}
    assert not firsts & {p["question"] for p in held_out}
    assert max(DEMO_LENGTHS) < min(len(p["keys"]) for p in held_out)
    for demo in demos:
        calls = [m for m in demo.messages if m.get("tool_calls")]
        assert 1 <= len(calls) <= max(DEMO_LENGTHS)
        keys = [json.loads(m["tool_calls"][0]["function"]["arguments"])["key"] for m in calls]
        results = [m["content"] for m in demo.messages if m["role"] == "tool"]
        assert demo.messages[1]["content"] == f"Find the value of {keys[0]}."
        assert [f"see {k}" for k in keys[1:]] == results[:-1]  # each call follows the last result
        assert demo.messages[-1]["content"] == f"The answer is {results[-1].removeprefix('value ')}."


def test_a_demonstration_copies_each_key_and_the_answer() -> None:
    (problem,) = generate_problems(1, seed=1, lengths=(2,))
    demo = demonstration(problem)
    first, second = problem["keys"]
    assert demo.copied == (f"{problem['answer']}.", second + '"', first + '"')
