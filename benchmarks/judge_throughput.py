"""Judge throughput: pairs per second for batch sizes 1..16, chain-of-thought and score mode.

    python benchmarks/judge_throughput.py                                # the local tiny PIGReward (make setup)
    python benchmarks/judge_throughput.py --model jeongeunnn/pigreward --device cuda --dtype bfloat16

Each measurement judges the same `--pairs` pairs (one order) after one warm-up batch; CoT generation stops after the
verdict line, so its cost depends on how long the model's answers are (reported as mean answer characters).
Also prints how often CoT and score mode agree on the winner (the paper reports that dropping CoT costs accuracy).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=".models/tiny-pigreward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch_sizes", default="1,2,4,8,16")
    parser.add_argument("--max_new_tokens", type=int, default=320)
    parser.add_argument("--user", default="demo")
    args = parser.parse_args()

    import torch

    from reward.backends import GenerationSettings, TransformersVLM
    from reward.pigreward import JudgeSettings, PIGReward
    from reward.users import load_user

    print(f"torch threads: {torch.get_num_threads()}, model: {args.model}, device: {args.device}")
    user = load_user(args.user)
    pairs = [(h.prompt, h.image_1, h.image_2) for h in user.heldout] + [
        (r.prompt, r.chosen, r.rejected) for r in user.references
    ]
    pairs = (pairs * (args.pairs // len(pairs) + 1))[: args.pairs]
    prompts, a, b = (list(x) for x in zip(*pairs))
    # Not `PIGReward.from_names`: both modes judge with one loaded model, whose batch size the loop below changes.
    backend = TransformersVLM(args.model, device=args.device, dtype=args.dtype, batch_size=1)
    context = PIGReward(backend, backend, cache_dir="runs").build_context(user)
    winners = {}
    print(f"{'mode':<6}{'batch':>6}{'pairs/s':>10}{'s/pair':>9}{'answer chars':>14}{'decided':>9}")
    for mode in ("cot", "score"):
        settings = JudgeSettings(
            mode=mode,
            both_orders=False,
            retry_failed=False,
            generation=GenerationSettings(max_new_tokens=args.max_new_tokens, stop_after_verdict=True),
        )
        pig = PIGReward(backend, backend, settings=settings, cache_dir="runs")
        for bs in (int(x) for x in args.batch_sizes.split(",")):
            backend.batch_size = bs
            pig.judge_pairs(prompts[:bs], a[:bs], b[:bs], context)  # warm-up
            started = time.perf_counter()
            verdicts = pig.judge_pairs(prompts, a, b, context)
            seconds = time.perf_counter() - started
            chars = sum(len(getattr(v, "text", "") or "") for v in verdicts) / len(verdicts)
            decided = sum(v.winner is not None for v in verdicts) / len(verdicts)
            winners[mode] = [v.winner for v in verdicts]
            print(
                f"{mode:<6}{bs:>6}{len(verdicts) / seconds:>10.2f}{seconds / len(verdicts):>9.3f}{chars:>14.0f}"
                f"{decided:>9.2f}"
            )
    both = [(c, s) for c, s in zip(winners["cot"], winners["score"]) if c not in (None, 0)]
    agree = sum(c == s for c, s in both) / len(both) if both else float("nan")
    print(f"CoT vs score-mode winner agreement: {agree:.2f} over {len(both)} pairs decided by CoT")


if __name__ == "__main__":
    main()
