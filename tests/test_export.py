"""`pig export`: the shared tiny real run (GRPO, W&B offline) and its tiny real evaluation exported as a package;
the card carries the run's own configuration and figures and never the user's id; merged weights equal base +
adapter; the PEFT serving recipe of the card serves two adapters on one base exactly as each adapter alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import PRIVATE_USER

USER = PRIVATE_USER  # a string that appears nowhere in a package unless the raw user id leaked


@pytest.fixture(scope="module")
def trained(trained_run):
    """The shared tiny run (`trained_run` in conftest): GRPO of a copy of the demo user renamed USER (W&B offline:
    the run records its config), and `pig evaluate` of its adapter (ground truth only, 2 prompts). Read only."""
    return trained_run


def _export(argv, capsys=None) -> int:
    from pig.export import main

    return main([str(a) for a in argv])


def _all_text(folder) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(folder.rglob("*")) if p.is_file())


def test_package_is_complete_self_describing_and_names_no_user(trained, tmp_path):
    from policies.export import user_hash
    from policies.rewriter import AdapterInfo, PromptRewriter

    out = tmp_path / "pkg"
    assert _export([trained["run"], "--out", out]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "pig_adapter.json", "README.md"} <= names
    assert "tokenizer_config.json" in names and "training_args.bin" not in names
    info = AdapterInfo.load(out)
    assert info.user_id == user_hash(USER) and info.trained_steps == trained["steps"]
    assert info.system_prompt == AdapterInfo.load(trained["adapter"]).system_prompt
    assert USER not in _all_text(out), "the raw user id leaked into the package"

    card = (out / "README.md").read_text()
    assert user_hash(USER) in card
    assert f"| `fidelity_weight` | `{trained['fidelity_weight']}` |" in card  # the run's own config, from W&B
    assert f"| `max_steps` | `{trained['steps']}` |" in card and f"{trained['steps']} optimizer steps" in card
    # the evaluation of this adapter, with the figures of its results.json
    results = json.loads((trained["runs"] / USER / "eval" / "r1" / "results.json").read_text())
    truth = results["blocks"][0]["summary"]["adapter_vs_base"]["ground_truth"]["preference"]
    assert "`pig evaluate` (eval/r1)" in card and f"truth {truth:.2f}" in card

    # the package serves like the run's adapter
    prompts = ["a sun", "a red hydrant"]
    assert PromptRewriter(out).rewrite(prompts) == PromptRewriter(trained["adapter"]).rewrite(prompts)


def test_user_id_follows_latest_and_stale_evaluations_are_not_reported(trained, tmp_path):
    out = tmp_path / "by-user"
    assert _export([USER, "--runs_dir", trained["runs"], "--out", out]) == 0
    assert "eval/r1" in (out / "README.md").read_text()

    results = trained["runs"] / USER / "eval" / "r1" / "results.json"
    weights = trained["adapter"] / "adapter_model.safetensors"
    old = weights.stat().st_mtime - 60
    saved = results.stat().st_mtime
    os.utime(results, (old, old))  # an evaluation written before these weights: of an earlier run in that folder
    try:
        assert _export([trained["run"], "--out", tmp_path / "stale"]) == 0
    finally:
        os.utime(results, (saved, saved))
    card = (tmp_path / "stale" / "README.md").read_text()
    assert "No evaluation of this adapter" in card and "eval/r1 predates" in card


def test_refuses_to_overwrite_unless_forced_and_never_a_foreign_folder(trained, tmp_path, capsys):
    out = tmp_path / "pkg"
    assert _export([trained["run"], "--out", out]) == 0
    (out / "merged").mkdir()  # as an earlier --merge export left it
    assert _export([trained["run"], "--out", out]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert _export([trained["run"], "--out", out, "--force"]) == 0
    assert not (out / "merged").exists(), "a stale merged/ of the earlier export survived --force"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert _export([trained["run"], "--out", foreign, "--force"]) == 2
    assert "not an earlier export" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "mine"
    assert _export([trained["run"], "--out", trained["run"] / "pkg"]) == 2
    assert "inside the run folder" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        _export(["nobody", "--runs_dir", trained["runs"], "--out", tmp_path / "x"])


def test_merged_weights_equal_base_plus_adapter(trained, tiny_models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pkg"
    assert _export([trained["run"], "--out", out, "--merge"]) == 0
    assert (out / "merged" / "model.safetensors").is_file() and (out / "merged" / "tokenizer_config.json").is_file()
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_models["policy"])
    with torch.no_grad():
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(trained["adapter"]))(ids).logits
        merged_logits = merged(ids).logits
    assert not torch.allclose(adapted, base_logits), "the adapter does not change the model: the test cannot fail"
    torch.testing.assert_close(merged_logits, adapted, rtol=1e-4, atol=1e-5)
    assert "`merged/`" in (out / "README.md").read_text()


def test_peft_recipe_serves_two_adapters_on_one_base_as_each_alone(trained, tiny_models, tmp_path):
    """The card's Python recipe, run as written: base loaded once, one load_adapter per user, set_adapter per request.
    The second adapter is a real LoRA with random (non-zero) weights saved by PEFT, and a run without W&B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from policies.export import peft_script, user_hash
    from policies.rewriter import AdapterInfo, PromptRewriter, generate_completions

    other_run = tmp_path / "runs" / "bob" / "random-lora"  # beside the shared run's folders, never inside them
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models["policy"]), lora).save_pretrained(
        other_run / "adapter"
    )
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (trained["adapter"] / name).is_file():
            shutil.copyfile(trained["adapter"] / name, other_run / "adapter" / name)
    info = AdapterInfo.load(trained["adapter"])
    AdapterInfo(**{**info.__dict__, "user_id": "bob", "trained_steps": 0}).save(other_run / "adapter")

    a, b = tmp_path / "alice", tmp_path / "bob"
    assert _export([trained["run"], "--out", a]) == 0 and _export([other_run, "--out", b]) == 0
    assert "recorded no configuration" in (b / "README.md").read_text()
    script = tmp_path / "serve.py"
    prompts = ["a sun", "a lighthouse on a cliff"]
    script.write_text(peft_script({"alice": str(a), "bob": str(b)}, prompts))
    as_in_card = peft_script({f"user-{user_hash(USER)[7:15]}": "path/to/this/package"}, ["a lighthouse on a cliff"])
    assert as_in_card in (a / "README.md").read_text()  # the recipe run here is the card's, with other paths
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = {(r["adapter"], r["prompt"]): r["rewrite"] for r in map(json.loads, proc.stdout.splitlines())}

    for name, folder in (("alice", a), ("bob", b)):
        alone = PromptRewriter(folder)
        # one prompt per call, as the recipe generates (no padding: the same floats, the same greedy tokens)
        answers = [
            generate_completions(alone.model, alone.tokenizer, [p], max_new_tokens=alone.max_new_tokens)[0]
            for p in prompts
        ]
        expected = [x.strip().splitlines()[0] if x.strip() else "" for x in answers]
        assert [served[name, p] for p in prompts] == expected, name
    assert [served["alice", p] for p in prompts] != [served["bob", p] for p in prompts]


def test_push_to_hub_offline_fails_with_a_clear_message_after_writing(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pkg"
    assert _export([trained["run"], "--out", out, "--push_to_hub", "someone/pig-adapter"]) == 2
    err = capsys.readouterr().err
    assert "could not push" in err and "hf upload someone/pig-adapter" in err
    assert "OfflineModeIsEnabled" in err  # refused by the offline mode at once, not a network call that timed out
    assert (out / "README.md").is_file() and (out / "pig_adapter.json").is_file()
    with pytest.raises(SystemExit):
        _export([trained["run"], "--out", tmp_path / "y", "--push_to_hub", "not a repo"])


def test_run_config_reads_a_w_and_b_file_that_is_still_being_written(trained, tmp_path):
    """The config records come first; a torn record at the end (W&B writes asynchronously) ends the read."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    from reports.runs import load_run, run_config
    from reports.wandb_offline import find_run_files, iter_records

    run_dir = tmp_path / "r1"
    shutil.copytree(trained["run"], run_dir)
    file = find_run_files(run_dir / "wandb")[-1]
    data = file.read_bytes()

    def naive_read_fails() -> bool:
        try:
            for raw in iter_records(file):
                wandb_internal_pb2.Record().ParseFromString(raw)
        except DecodeError:
            return True
        return False

    for cut in range(1, 2000):  # the first cut that tears a record (cutting padding tears nothing)
        file.write_bytes(data[:-cut])
        if naive_read_fails():
            break
    assert naive_read_fails(), "no cut tore a record: the test would not test anything"
    config = run_config(load_run(run_dir / "adapter"))
    assert config["pig"]["fidelity_weight"] == trained["fidelity_weight"]
    assert config["trainer"]["max_steps"] == trained["steps"]


def test_the_card_of_an_adapter_reading_the_nearest_rationales_says_how_to_pick_them():
    from policies.export import serving_recipes
    from policies.rewriter import CONTEXT_FORMAT, AdapterInfo

    def card(nearest: int) -> str:
        info = AdapterInfo("u", "base", "Rewrite.", 8, context_format=CONTEXT_FORMAT, context_nearest=nearest)
        info.context_source = {"prompt_embedder": "sentence-transformers/all-MiniLM-L6-v2"}
        return "\n".join(serving_recipes(info, {"u": "adapter"}, 16))

    assert "only the 2 rationales whose choices' prompts are nearest" in card(2)
    assert "all-MiniLM-L6-v2" in card(2) and "nearest" not in card(0)
