"""The on-disk image cache: a second renderer (a rerun, another process) reads what the first rendered, any change
of what decides the pixels is another namespace, a damaged file is rendered again, concurrent writers never leave
a half-written image."""

from __future__ import annotations

import multiprocessing

import numpy as np
from PIL import Image

KEYS = (["a warm sun", "a cool box", "a warm sun"], [1, 2, 3])


def _renderer(tiny_models, cache, **overrides):
    from rl.render import Renderer, RenderSettings

    settings = dict(model=tiny_models["sd"], device="cpu", num_inference_steps=2, batch_size=2, disk_cache=str(cache))
    return Renderer(RenderSettings(**{**settings, **overrides}))


def test_a_rerun_reads_the_images_back_instead_of_rendering(tiny_models, tmp_path):
    first = _renderer(tiny_models, tmp_path / "cache")
    images = first.render(*KEYS)
    metrics = first.pop_metrics()
    assert metrics["render/images"] == 3 and metrics["render/disk_cache_hits"] == 0
    assert metrics["render/disk_cache_hit_rate"] == 0.0

    again = _renderer(tiny_models, tmp_path / "cache")  # a new process or a rerun: nothing in memory
    reread = again.render(*KEYS)
    metrics = again.pop_metrics()
    assert metrics["render/images"] == 0 and metrics["render/disk_cache_hit_rate"] == 1.0
    for a, b in zip(images, reread):
        assert np.array_equal(np.asarray(a), np.asarray(b))  # PNG is lossless

    other = _renderer(tiny_models, tmp_path / "cache", num_inference_steps=3)  # other pixels: other namespace
    other.render(*KEYS)
    assert other.pop_metrics()["render/images"] == 3
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2


def test_a_damaged_file_is_rendered_again(tiny_models, tmp_path):
    first = _renderer(tiny_models, tmp_path / "cache")
    first.render(["a warm sun"], [1])
    path = first.disk.path("a warm sun", 1)
    path.write_bytes(path.read_bytes()[:20])  # truncated
    again = _renderer(tiny_models, tmp_path / "cache")
    image = again.render(["a warm sun"], [1])[0]
    assert again.pop_metrics()["render/images"] == 1
    assert Image.open(path).size == image.size  # rewritten whole


def _write_many(root: str, colour: int) -> None:
    from rl.image_cache import ImageCache

    cache = ImageCache(root, {"model": "x"})
    for _ in range(30):
        cache.put("a sun", 7, Image.new("RGB", (64, 64), (colour, colour, colour)))


def test_concurrent_writers_leave_a_whole_image_and_no_temporary_files(tmp_path):
    from rl.image_cache import ImageCache

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(str(tmp_path), c)) for c in (10, 200)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    cache = ImageCache(tmp_path, {"model": "x"})
    image = cache.get("a sun", 7)
    assert image is not None and np.asarray(image).std() == 0  # one writer's whole image, not a mix
    assert not list(tmp_path.rglob("*.tmp"))  # common.files.atomic_write_bytes's temporary names
