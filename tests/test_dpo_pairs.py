"""`rl.dpo_pairs.collect_pairs` on tiny real models: each group's best- and worst-scoring rewrites become one pair,
groups too close to call give none, and every group is counted once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def parts(tiny_models, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.environment import PersonalizedEnvironment
    from tests.conftest import tiny_reward_stack

    # score mode: the random judge's P(Image 1) decides every comparison, and the scores spread out
    _, pig, context, renderer, embedder = tiny_reward_stack(
        tiny_models, tmp_path_factory.mktemp("runs"), render_steps=2, judge_mode="score"
    )
    env = PersonalizedEnvironment(pig, context, renderer, embedder, num_generations=4)
    policy = AutoModelForCausalLM.from_pretrained(tiny_models["policy"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["policy"])
    return policy, tokenizer, env


class Recorder:
    """The real environment, keeping each batch's result and step so that the test can recompute the pairing."""

    def __init__(self, env):
        self.env, self.num_generations, self.calls = env, env.num_generations, []

    def compute(self, originals, rewrites, step):
        result = self.env.compute(originals, rewrites, step)
        self.calls.append((step, result))
        return result


@pytest.mark.parametrize("min_gap", [0.0, 0.3])
def test_pairs_are_each_groups_best_and_worst(parts, min_gap):
    from rl.dpo_pairs import PairSettings, collect_pairs

    policy, tokenizer, env = parts
    prompts = ["a sun", "a kite", "a moon"]
    settings = PairSettings(rounds=2, candidates=4, min_gap=min_gap, max_new_tokens=8, prompts_per_batch=2, seed=5)
    recorder = Recorder(env)
    rows, stats = collect_pairs(policy, tokenizer, recorder, prompts, (0.5, 0.25), settings, progress=False)

    # batches [sun, kite], [moon] per round; the batch index is the environment's step
    assert [step for step, _ in recorder.calls] == [0, 1, 2, 3]
    expected, close, undecided = [], 0, 0
    for _, result in recorder.calls:
        for g in range(len(result.originals) // 4):
            scored = [
                (result.preference[i] + 0.5 * result.fidelity[i] + 0.25 * result.repetition[i], i)
                for i in range(4 * g, 4 * g + 4)
                if result.rewrites[i]
            ]
            if len(scored) < 2:
                undecided += 1
                continue
            (best, i_best), (worst, i_worst) = max(scored), min(scored)
            if best - worst < min_gap or result.rewrites[i_best] == result.rewrites[i_worst]:
                close += 1
                continue
            expected.append((result.originals[i_best], result.rewrites[i_best], result.rewrites[i_worst], best, worst))
    got = [
        (r["original"], r["chosen"][0]["content"], r["rejected"][0]["content"], r["chosen_score"], r["rejected_score"])
        for r in rows
    ]
    assert got == expected
    assert stats["groups"] == 2 * len(prompts) == stats["pairs"] + stats["close_groups"] + stats["undecided_groups"]
    assert (stats["pairs"], stats["close_groups"], stats["undecided_groups"]) == (len(rows), close, undecided)
    assert all(r["chosen_score"] - r["rejected_score"] >= min_gap for r in rows)
    assert rows or min_gap > 0, "score mode decides every comparison: with no gap required, some group gives a pair"
