"""Write the demo user shipped in `users/demo/`: a synthetic user of the toy world who likes warm colours and sparse
compositions. Every image is drawn by `localmodels.world` (nothing downloaded); the output is deterministic.

    python -m localmodels.demo_user --out users/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from localmodels import oracle

DEMO_TASTE = oracle.SyntheticUser({"palette": "warm", "layout": "sparse"}, {"palette": 1.0, "layout": 0.8})
TRAINING_PROMPTS = [
    "a sun",
    "a house",
    "a tree",
    "a mountain",
    "a kite",
    "a moon",
    "a box",
    "a tent",
    "an apple",
    "a window",
    "a ball",
    "a gem",
]


def write_demo_user(out: str | Path, n_references: int = 8, n_heldout: int = 8, size: int = 64, seed: int = 7) -> Path:
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    references, heldout = [], []
    for i in range(n_references):
        prompt, chosen, rejected, *_ = oracle.make_reference(DEMO_TASTE, rng, size)
        chosen.save(out / "images" / f"ref{i:02d}_chosen.png")
        rejected.save(out / "images" / f"ref{i:02d}_rejected.png")
        references.append(
            {
                "prompt": prompt,
                "chosen": f"images/ref{i:02d}_chosen.png",
                "rejected": f"images/ref{i:02d}_rejected.png",
            }
        )
    for i in range(n_heldout):
        prompt, chosen, rejected, *_ = oracle.make_reference(DEMO_TASTE, rng, size)
        first_is_chosen = bool(rng.integers(2))
        a, b = (chosen, rejected) if first_is_chosen else (rejected, chosen)
        a.save(out / "images" / f"test{i:02d}_1.png")
        b.save(out / "images" / f"test{i:02d}_2.png")
        heldout.append(
            {
                "prompt": prompt,
                "image_1": f"images/test{i:02d}_1.png",
                "image_2": f"images/test{i:02d}_2.png",
                "label": 1 if first_is_chosen else 2,
            }
        )
    data = {
        "user_id": "demo",
        "description": "Synthetic demo user (localmodels/demo_user.py): prefers warm colours and sparse compositions.",
        "references": references,
        "heldout": heldout,
        "prompts": TRAINING_PROMPTS,
    }
    (out / "user.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="users/demo")
    print(write_demo_user(parser.parse_args().out))
