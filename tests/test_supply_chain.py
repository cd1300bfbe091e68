"""Supply chain: no checkpoint code runs unless asked, weights load from safetensors only, and an API key handed
through the environment appears in no file a training run writes (run folder, W&B offline files, caches)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from common.hub import load_kwargs
from tests.conftest import REPO
from tests.test_openai_backend import MODEL, ChatServer, _paper_format_answer

SECRET = "sk-planted-7f3a9c-DO-NOT-LEAK"


def test_load_kwargs_are_safe_by_default(monkeypatch):
    monkeypatch.delenv("PIG_TRUST_REMOTE_CODE", raising=False)
    assert load_kwargs() == {"trust_remote_code": False, "use_safetensors": True}
    assert load_kwargs(weights=False) == {"trust_remote_code": False}
    monkeypatch.setenv("PIG_TRUST_REMOTE_CODE", "1")
    assert load_kwargs()["trust_remote_code"] is True


def test_checkpoint_code_is_not_run(tiny_models, tmp_path, monkeypatch):
    """A model folder whose config maps the Auto class to its own Python file: loading it through the project's
    loader uses the stock class and never imports that file (it would leave a marker)."""
    import shutil

    from policies.rewriter import PromptRewriter

    monkeypatch.delenv("PIG_TRUST_REMOTE_CODE", raising=False)
    folder = tmp_path / "model-with-code"
    shutil.copytree(tiny_models["policy"], folder)
    marker = tmp_path / "code-ran"
    (folder / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import Qwen2ForCausalLM\nclass Evil(Qwen2ForCausalLM):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    rewriter = PromptRewriter(base_model=str(folder))
    assert type(rewriter.model).__name__ == "Qwen2ForCausalLM"
    assert not marker.exists()


def test_pickle_weights_are_not_loaded(tiny_models, tmp_path):
    """`use_safetensors=True`: a folder whose weights are only a pickle file fails to load instead of unpickling."""
    import shutil

    import torch

    from reward.similarity import TextEmbedder

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models["minilm"], folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        TextEmbedder(str(folder))


def test_api_key_reaches_the_server_and_no_file(tiny_models, tmp_path, monkeypatch):
    """A 1-step GRPO run judged by an OpenAI-compatible server that requires the planted key: the key travels in the
    Authorization header only; no file of the run folder, the W&B offline run or the W&B data dirs holds it."""
    monkeypatch.setenv("PIG_TEST_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var, sub in (("WANDB_DATA_DIR", "wandb-data"), ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_CONFIG_DIR", "wc")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    server = ChatServer(api_key=SECRET)
    server.answer = _paper_format_answer
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        from rl.train_policy import main

        adapter = main(
            [
                "--user", "demo", "--users_dir", str(REPO / "users"), "--runs_dir", str(tmp_path / "runs"),
                "--model_name_or_path", tiny_models["policy"], "--renderer_model", tiny_models["sd"],
                "--fidelity_model", tiny_models["minilm"], "--judge_backend", "openai", "--judge_model", MODEL,
                "--judge_base_url", server.url, "--judge_api_key_env", "PIG_TEST_API_KEY", "--render_steps", "2",
                "--max_completion_length", "8", "--max_steps", "1", "--num_iterations", "1",
                "--per_device_train_batch_size", "4", "--images_per_prompt", "1", "--compare_to", "original",
                "--log_images_every", "1", "--report_to", "wandb", "--run_name", "leak-check",
            ]
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert server.hits, "the judge server was never called"
    assert len(server.bodies) > 0  # every accepted request carried the right key (401 otherwise)
    run_dir = adapter.parent
    wandb_files = list(run_dir.glob("wandb/*/*"))
    assert wandb_files, "no W&B offline files were written"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    leaks = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaks, f"the API key was written to {leaks}"
    assert len(files) > 10  # the grep saw the run: adapter, logs, samples, W&B files, the cached context
    assert any(Path(p).suffix == ".wandb" for p in map(str, files))
