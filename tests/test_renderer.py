"""The tiny Stable Diffusion renderer: exact CLIP tokenizer, save / reload like a checkpoint, seeded batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch

from localmodels import renderer, renderer_eval, renderer_train, world
from tests.conftest import built_model


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_sd")
    pipe = renderer.build_tiny_pipeline(seed=0)
    pipe.save_pretrained(path)
    return pipe, path


def _pixels(images) -> list[np.ndarray]:
    return [np.asarray(im, dtype=np.int16) for im in images]


def test_clip_tokenizer_matches_openai_ids():
    tok = renderer.build_clip_tokenizer(model_max_length=16)
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.convert_ids_to_tokens(tok("A golden, minimal sun!").input_ids)[1:-1] == [
        "a</w>",
        "golden</w>",
        ",</w>",
        "minimal</w>",
        "sun</w>",
        "!</w>",
    ]
    padded = tok(["a sun"], padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids[0]
    assert len(padded) == 16 and padded[-1] == tok.pad_token_id == tok.eos_token_id


def test_find_clip_bpe_reports_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download open-clip-torch"):
        renderer.find_clip_bpe(tmp_path / "missing.txt.gz")


def test_build_tiny_pipeline_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = renderer.build_tiny_pipeline(seed=1, tokenizer="bytes")
    assert torch.equal(torch.get_rng_state(), state)
    b = renderer.build_tiny_pipeline(seed=1, tokenizer="bytes")
    c = renderer.build_tiny_pipeline(seed=2, tokenizer="bytes")
    wa, wb, wc = (p.unet.conv_in.weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    counts = renderer.count_parameters(a)
    assert 100_000 < counts["unet"] < 5_000_000 and counts["vae"] < 2_000_000
    with pytest.raises(ValueError, match="tokenizer"):
        renderer.build_tiny_pipeline(tokenizer="words")


def test_saved_pipeline_reloads_and_renders_seeded_batches(saved_pipeline):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe, path = saved_pipeline
    loaded = StableDiffusionPipeline.from_pretrained(path)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    assert loaded.tokenizer.model_max_length == pipe.tokenizer.model_max_length
    loaded.set_progress_bar_config(disable=True)
    # One pipeline call, two images from per-image generators with the same seed: identical images.
    out = loaded(
        prompt=["a warm sun", "a warm sun"],
        generator=[torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)],
        num_inference_steps=3,
        guidance_scale=4.0,
    )
    first, second = _pixels(out.images)
    assert out.images[0].size == (renderer.IMAGE_SIZE, renderer.IMAGE_SIZE)
    assert np.array_equal(first, second)
    # A different seed gives a different image; the reloaded weights render what the original renders.
    other = _pixels(renderer_eval.render(loaded, ["a warm sun", "a warm sun"], [5, 6], num_inference_steps=3))
    original = _pixels(renderer_eval.render(pipe, ["a warm sun", "a warm sun"], [5, 6], num_inference_steps=3))
    assert np.array_equal(other[0], first)
    assert np.abs(other[1] - first).mean() > 1.0
    assert all(np.array_equal(a, b) for a, b in zip(original, other))
    # Another batch size may change floating-point summation order, never the image.
    alone = _pixels(renderer_eval.render(loaded, ["a warm sun"], [5], num_inference_steps=3))[0]
    assert np.abs(alone - first).max() <= 2


def test_render_needs_one_seed_per_prompt(saved_pipeline):
    with pytest.raises(ValueError, match="one seed per prompt"):
        renderer_eval.render(saved_pipeline[0], ["a sun", "a moon"], [0])


def test_pole_prompts_name_only_their_pole():
    from localmodels.world import AXES, parse_caption

    for axis, poles in AXES.items():
        for pole in poles:
            for prompt in renderer_eval.pole_prompts(axis, pole, 12):
                parsed = parse_caption(prompt)
                assert parsed[axis] == pole and parsed["subject"] is not None
                assert all(parsed[a] is None for a in AXES if a != axis)


def test_short_training_saves_atomically_and_changes_weights(tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "model"
    report = renderer_train.train_renderer(
        out, seed=0, num_scenes=64, vae_steps=2, unet_steps=2, refine_steps=2, progress=False
    )
    assert report["vae_steps"] == 2 and report["unet_steps"] == 2 and report["refine_steps"] == 2
    assert not any(report[f"{phase}_time_limited"] for phase in ("vae", "unet", "refine"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind
    assert json.loads((out / "training_report.json").read_text())["unet_steps"] == 2
    trained = StableDiffusionPipeline.from_pretrained(out)
    initial = renderer.build_tiny_pipeline(seed=0)
    for name in ("vae", "unet", "text_encoder"):
        a, b = getattr(trained, name).state_dict(), getattr(initial, name).state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a), f"{name} did not change"
    assert trained.vae.config.scaling_factor != initial.vae.config.scaling_factor
    with pytest.raises(FileExistsError, match="overwrite"):
        renderer_train.train_renderer(out, num_scenes=8, vae_steps=1, unet_steps=1, refine_steps=0, progress=False)


def test_training_is_deterministic_given_the_seed(tmp_path):
    def train(name: str, seed: int) -> dict:
        renderer_train.train_renderer(
            tmp_path / name, seed=seed, num_scenes=32, vae_steps=2, unet_steps=3, refine_steps=1, progress=False
        )
        return safetensors.torch.load_file(tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors")

    a, b, c = train("a", 0), train("b", 0), train("c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_evaluate_renderer_reports_every_pole(saved_pipeline):
    kwargs = dict(n_prompts=2, num_inference_steps=2, measure_speed=False)
    result = renderer_eval.evaluate_renderer(saved_pipeline[0], **kwargs)
    for axis, (attribute, high_pole) in world.AXIS_ATTRIBUTES.items():
        (low_pole,) = set(world.AXES[axis]) - {high_pole}
        means = {pole: result[f"{axis}/{attribute}/{pole}"] for pole in world.AXES[axis]}
        # the separation is the difference of the two poles' reported means (each rounded to 4 places)
        assert result[f"{axis}/separation"] == pytest.approx(means[high_pole] - means[low_pole], abs=2e-4)
        assert 0.0 <= result[f"{axis}/auc"] <= 1.0 and 0.0 <= result[f"baseline/{attribute}"] <= 1.0
    assert renderer_eval.evaluate_renderer(saved_pipeline[0], **kwargs) == result  # seeded: the same figures


def test_rl_renderer_gives_the_same_image_alone_and_in_a_batch(saved_pipeline):
    """A (prompt, seed) renders the same image whatever batch it lands in and whatever the batch size (within 2 of
    255: a batch may change the order of floating-point sums, never the picture)."""
    from rl.render import Renderer, RenderSettings

    path = saved_pipeline[1]
    settings = dict(model=str(path), device="cpu", num_inference_steps=3)
    alone = Renderer(RenderSettings(**settings, batch_size=1)).render(["a warm sun"], [5])[0]
    batched = Renderer(RenderSettings(**settings, batch_size=4)).render(
        ["a dark moon", "a warm sun", "a busy kite", "a warm sun"], [1, 5, 2, 6]
    )
    assert np.abs(_pixels([alone])[0] - _pixels([batched[1]])[0]).max() <= 2
    assert np.abs(_pixels([alone])[0] - _pixels([batched[3]])[0]).mean() > 1.0  # another seed: another image


@pytest.mark.models  # the renderer `make setup` builds (its full default training, 10-30 minutes on one core)
def test_trained_renderer_follows_style_words():
    """The built renderer (`make test-models` builds it first when missing): every axis clearly separated, in prose
    too."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(built_model("tiny-sd"))
    result = renderer_eval.evaluate_renderer(pipe, n_prompts=24)
    for axis in world.AXES:
        assert result[f"{axis}/auc"] > 0.85, (axis, result)
        assert result[f"prose_{axis}/auc"] > 0.85, (axis, result)
    # Speed is measured, not asserted (a shared CPU stretches any bound): `evaluate_renderer` reports it, and
    # `python -m localmodels.renderer_train` prints it with the model's other figures.
    assert result["render/seconds_batch8"] > 0 and result["render/images_per_second_batch8"] > 0


def test_rl_renderer_caches_seeds_and_counts_truncated_prompts(saved_pipeline, caplog):
    from rl.render import Renderer, RenderSettings

    pipe, path = saved_pipeline
    r = Renderer(RenderSettings(model=str(path), device="cpu", num_inference_steps=2, batch_size=2))
    limit = r.pipe.tokenizer.model_max_length
    long_prompt = "a warm sun " + "with many bright red shapes " * limit
    images = r.render(["a sun", "a moon", "a sun", long_prompt], [1, 1, 1, 2])
    assert len(images) == 4 and images[0] is images[2]  # same (prompt, seed): rendered once, reused
    metrics = r.pop_metrics()
    assert metrics["render/images"] == 3 and metrics["render/truncated_fraction"] == 1 / 3
    assert "truncated" in caplog.text
    r.render(["a sun"], [1])  # cached: nothing rendered, nothing to report
    assert r.pop_metrics() == {"render/images": 0.0}
