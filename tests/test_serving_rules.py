"""How a rewrite is read from the policy's answer, and the no-repeat rule of serving (issue 23), with literal cases;
the rule is also checked on what the tiny real policy generates through `PromptRewriter`."""

from __future__ import annotations

import math

import pytest
import torch

from policies.rewriter import _AnswerNoRepeatNGram, completion_text, extract_rewrite


# --------------------------------------------------------------------------------------------- rewrite extraction
@pytest.mark.parametrize(
    "answer, rewrite",
    [
        ("a red fox in the snow", "a red fox in the snow"),
        ("  a red fox  \n", "a red fox"),
        ("a red fox\nbecause the user likes red", "a red fox"),  # the first line only
        ("\n\n  \na red fox\nmore", "a red fox"),  # the first non-empty line
        ("Prompt: a red fox", "a red fox"),
        ("PROMPT - a red fox", "a red fox"),  # labels in any case, with ":" or "-"
        ("Rewritten prompt: a red fox", "a red fox"),
        ("Rewrite: a red fox", "a red fox"),
        ("Answer:a red fox", "a red fox"),
        ('"a red fox"', "a red fox"),
        ("'a red fox'", "a red fox"),
        ("`a red fox`", "a red fox"),
        ('Prompt: "a red fox"', "a red fox"),  # label, then quotes
        ("Prompt:\na red fox", "a red fox"),  # a label alone on its line is no rewrite
        ('""\na red fox', "a red fox"),  # nor are empty quotes
        ("a fox, prompt: red", "a fox, prompt: red"),  # a label inside the line is the rewrite's own words
        ("a prompt about a fox", "a prompt about a fox"),  # "prompt" without ":" or "-" is no label
        ("", ""),  # an empty answer stays empty (it earns the low reward it deserves)
        (" \n\t\n", ""),
        ("Prompt:", ""),
    ],
)
def test_extract_rewrite(answer, rewrite):
    assert extract_rewrite(answer) == rewrite


def test_extract_rewrite_cuts_at_max_chars():
    assert extract_rewrite("a" * 400) == "a" * 300
    assert extract_rewrite("Prompt: " + "b" * 20, max_chars=5) == "bbbbb"  # counted after the label


@pytest.mark.parametrize(
    "completion, text",
    [
        ("a red fox", "a red fox"),  # a plain (non-conversational) completion
        ([{"role": "assistant", "content": "a red fox"}], "a red fox"),
        ([{"role": "assistant", "content": ""}], ""),
        ([{"role": "assistant"}], ""),
        ([{"role": "user", "content": "a fox"}, {"role": "assistant", "content": "a red fox"}], "a red fox"),
        (  # content parts: the text parts joined, other parts skipped
            [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a red "}, {"type": "image"}, {"text": "fox"}],
                }
            ],
            "a red fox",
        ),
    ],
)
def test_completion_text(completion, text):
    assert completion_text(completion) == text


@pytest.mark.parametrize("completion", [None, 3, [], ["a red fox"], {"content": "a red fox"}])
def test_completion_text_refuses_other_formats(completion):
    with pytest.raises(TypeError, match="Unexpected completion format"):
        completion_text(completion)


# ------------------------------------------------------------------------------------------------ no-repeat rule
def _banned(rule, rows: list[list[int]], vocab: int = 10) -> list[list[int]]:
    scores = rule(torch.tensor(rows), torch.zeros(len(rows), vocab))
    return [[t for t in range(vocab) if scores[r, t] == -math.inf] for r in range(len(rows))]


def test_no_repeat_rule_blocks_an_ngram_repeated_within_the_answer():
    # prompt 7 8 9, answer 1 2 1: the next 2 would repeat the answer's "1 2"
    assert _banned(_AnswerNoRepeatNGram(2, prompt_length=3), [[7, 8, 9, 1, 2, 1]]) == [[2]]
    # 3-grams: answer 4 5 6 4 5 bans 6 ("4 5 6" again), and nothing else
    assert _banned(_AnswerNoRepeatNGram(3, prompt_length=2), [[0, 0, 4, 5, 6, 4, 5]]) == [[6]]
    # every row of a batch on its own (prompts left-padded: the answers start at the same column)
    rule = _AnswerNoRepeatNGram(2, prompt_length=4)
    assert _banned(rule, [[0, 0, 7, 8, 1, 2, 1], [7, 8, 9, 9, 3, 3, 3]]) == [[2], [3]]


def test_no_repeat_rule_lets_the_answer_copy_the_prompts_words():
    from transformers import NoRepeatNGramLogitsProcessor

    # prompt 7 8 9, answer 7: copying the prompt's "7 8" is allowed...
    assert _banned(_AnswerNoRepeatNGram(2, prompt_length=3), [[7, 8, 9, 7]]) == [[]]
    # ...where transformers' own rule, which counts the prompt, forbids it
    assert _banned(NoRepeatNGramLogitsProcessor(2), [[7, 8, 9, 7]]) == [[8]]


def _repeated_ngrams(ids: list[int], n: int = 3) -> int:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_served_rewrites_repeat_no_3gram(tiny_models):
    """`PromptRewriter.rewrite` (what `pig rewrite` serves) with its defaults: greedy, and no 3-gram twice in an
    answer. The tiny random policy, greedy and unblocked, loops: without the rule its answers do repeat 3-grams."""
    from policies.rewriter import PromptRewriter

    rewriter = PromptRewriter(base_model=tiny_models["policy"])
    answers = []  # the generated token ids of every call, recorded around the real `generate`
    generate = rewriter.model.generate

    def recording(**kwargs):
        out = generate(**kwargs)
        answers.extend(row[kwargs["input_ids"].shape[1] :].tolist() for row in out)
        return out

    rewriter.model.generate = recording
    prompts = ["a sun", "a lighthouse on a cliff"]
    served = rewriter.rewrite(prompts)
    assert len(served) == 2 and len(answers) == 2
    assert all(len(a) == rewriter.max_new_tokens for a in answers)  # long enough to loop (no end token came)
    assert [_repeated_ngrams(a) for a in answers] == [0, 0]

    answers.clear()
    rewriter.rewrite(prompts, no_repeat_ngram_size=0)
    assert all(_repeated_ngrams(a) > 0 for a in answers), "the unblocked answers should loop; the check tests nothing"
