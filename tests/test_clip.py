"""The tiny CLIP of the `similarity` baseline: trained on the toy world, it loads by path like a real CLIP."""

from __future__ import annotations

import torch

from common.hub import local_model_note
from localmodels.clip import train_tiny_clip


def test_training_lowers_the_contrastive_loss_and_saves_a_loadable_model(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    out = tmp_path / "clip"
    figures = train_tiny_clip(out, steps=30, batch_size=16, num_scenes=128, lr=3e-3, progress=False)
    assert figures["final_loss"] < float(torch.log(torch.tensor(16.0)))  # below chance for a batch of 16
    model, processor = CLIPModel.from_pretrained(out), CLIPProcessor.from_pretrained(out)
    assert model.config.projection_dim == 64 and processor.tokenizer.model_max_length == 32
    note = local_model_note(str(out))
    assert note["weights"] == "trained" and note["figures"] == figures
