"""Seconds per SFT step of the tiny judge's distillation, four ways side by side in one process:

- `full logits, shuffled`: the model's own loss (`model(**batch).loss`: the output layer at every position), batches
  drawn by a plain shuffle (recipes up to v9);
- `answer logits, shuffled`: `judge_model.answer_loss`, the output layer only where labels count (the same loss);
- `answer logits, by length`: the same, batches grouped by length (`judge_model.length_grouped_batches`);
- `shuffled, N sorted parts`: the shuffled batches, each computed as N micro-batches of similar length
  (`judge_model.split_step`: the whole batch's loss and gradient, less padding; `--parts N` of the build).

    python benchmarks/judge_sft_step.py                      # 600 examples, 6 batches of 32 each way, 2 rounds
    python benchmarks/judge_sft_step.py --examples 2000 --steps 10 --rounds 3

The model is built as the recipe builds it (random weights: a step's cost does not depend on them); forward,
backward and AdamW step, one torch thread. Rounds alternate the ways so that a load on the machine hits each alike.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=600, help="Distillation examples drawn (the build: 24000).")
    parser.add_argument("--steps", type=int, default=6, help="Batches timed per way and round.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", type=int, default=4, help="Micro-batches of `judge_model.split_step`.")
    args = parser.parse_args(argv)
    if args.examples < args.batch_size * args.steps or min(args.steps, args.rounds, args.batch_size) < 1:
        parser.error("need --steps, --rounds, --batch_size >= 1 and --examples >= batch_size x steps.")

    import numpy as np
    import torch

    from localmodels import judge_model
    from reward.backends import load_vlm_processor

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    examples = judge_model.make_examples(args.examples, args.seed)
    tokenizer = judge_model.train_tokenizer([t for e in examples for t in judge_model._texts_of(e)])
    model = judge_model.build_model(tokenizer, seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        judge_model.save_checkpoint(model, tokenizer, judge_model.build_image_processor(), folder)
        processor = load_vlm_processor(folder)
    encoded = [judge_model._encode(processor, e) for e in examples]
    model.model.visual.requires_grad_(False)  # as in the build: the pretrained vision tower stays frozen
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    model.train()

    lengths = [len(ids) for ids in processor.tokenizer([e["text"] for e in encoded])["input_ids"]]  # for padding
    grouped, per_batch_tokens = judge_model.grouped_plan(
        processor, examples, encoded, args.batch_size, args.steps, args.seed
    )
    rng = np.random.default_rng(args.seed)
    shuffled = [rng.permutation(len(encoded))[: args.batch_size].tolist() for _ in range(args.steps)]
    ways = {
        "full logits, shuffled": (shuffled, lambda batch: model(**batch).loss),
        "answer logits, shuffled": (shuffled, lambda batch: judge_model.answer_loss(model, batch)),
        "answer logits, by length": (
            grouped,
            lambda batch: judge_model.answer_loss(model, batch, per_batch_tokens),
        ),
        f"shuffled, {args.parts} sorted parts": (shuffled, None),
    }

    def padded(batches, parts: int = 1) -> float:
        """Padded tokens over real ones: each batch, or each of the `parts` micro-batches `split_step` cuts it into
        (sorted by text length), pads to its longest."""
        pads = 0
        for b in batches:
            for chunk in judge_model.sorted_parts([encoded[i] for i in b], parts):
                pads += max(lengths[b[j]] for j in chunk) * len(chunk)
        return pads / sum(lengths[i] for b in batches for i in b)

    seconds = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, (batches, loss_of) in ways.items():
            started = time.perf_counter()
            for idx in batches:
                if loss_of is None:  # `judge_model.split_step`: forward and backward in micro-batches
                    judge_model.split_step(model, processor, [encoded[i] for i in idx], args.parts)
                else:
                    batch = judge_model._collate(processor, [encoded[i] for i in idx])
                    loss_of(batch).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            seconds[name].append((time.perf_counter() - started) / len(batches))
    base = float(np.median(seconds["full logits, shuffled"]))
    print(f"{args.steps} batches of {args.batch_size} per way and round, {args.rounds} rounds, one torch thread")
    print(f"{'way':28} {'s/step (median)':>16} {'speed-up':>9} {'padded / real tokens':>21}")
    for name, (batches, loss_of) in ways.items():
        median = float(np.median(seconds[name]))
        parts = args.parts if loss_of is None else 1
        print(f"{name:28} {median:16.3f} {base / median:8.2f}x {padded(batches, parts):21.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
