"""Bad inputs, each with a clear error (or a stated conversion), built from real files written to tmp_path."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import AdapterError, ConfigError, PigError
from common.hub import ModelUnavailableError
from reward.users import UserDataError, load_image, load_user, user_id_of
from tests.conftest import REPO


# ----------------------------------------------------------------------------------------------------- helpers
def _png(width: int, height: int, depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG written by hand: PIL cannot write 16-bit RGB, and a decompression bomb only needs a header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _user(root: Path, references: list[dict], **extra) -> Path:
    """A user folder with `references` (image paths relative to it) and the images a test wrote there."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "user.json").write_text(json.dumps({"user_id": "alice", "references": references, **extra}))
    return root


def _solid(path: Path, colour: tuple[int, int, int], size: int = 16) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path.name


@pytest.fixture()
def folder(tmp_path) -> Path:
    """A valid user folder with two references (the tests break one thing at a time)."""
    root = tmp_path / "alice-folder"
    names = [_solid(root / f"{n}.png", c) for n, c in (("a", (200, 0, 0)), ("b", (0, 0, 200)), ("c", (0, 200, 0)))]
    return _user(
        root,
        [
            {"prompt": "a sun", "chosen": names[0], "rejected": names[1]},
            {"prompt": "a house", "chosen": names[2], "rejected": names[1]},
        ],
    )


def _image_error(root: Path, name: str) -> str:
    with pytest.raises(UserDataError) as info:
        load_image(root, name, "references[0].chosen")
    assert "references[0].chosen" in str(info.value)
    return str(info.value)


# ------------------------------------------------------------------------------------------------------ users
def test_unknown_user_lists_the_known_ones(tmp_path):
    with pytest.raises(UserDataError, match=r"Unknown user 'nobody'.*Known users in .*'demo'"):
        load_user("nobody", REPO / "users")


def test_user_json_path_files_the_run_under_its_user_id(folder):
    """`--user .../user.json` (or the folder) names the user by the JSON's id, not by the file or folder name."""
    assert folder.name != "alice"
    assert user_id_of(str(folder / "user.json"), "users") == "alice"
    assert user_id_of(str(folder), "users") == "alice"
    assert load_user(str(folder / "user.json")).user_id == "alice"


def test_training_run_of_a_user_json_path_goes_under_the_user_id(folder, tmp_path):
    from rl.train_policy import parse_args

    args, training_args, _ = parse_args(
        ["--user", str(folder / "user.json"), "--runs_dir", str(tmp_path / "runs"), "--run_name", "r1"],
        check_models=False,
    )
    assert Path(training_args.output_dir) == tmp_path / "runs" / "alice" / "r1"


def test_bad_user_id_is_refused(folder):
    data = json.loads((folder / "user.json").read_text())
    (folder / "user.json").write_text(json.dumps({**data, "user_id": ".."}))
    with pytest.raises(UserDataError, match="'user_id' must be a non-empty string without '/'"):
        user_id_of(str(folder), "users")


def test_missing_zero_byte_truncated_and_non_images(tmp_path):
    assert "does not exist" in _image_error(tmp_path, "absent.png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty file (0 bytes)" in _image_error(tmp_path, "empty.png")
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    assert "cannot be read" in _image_error(tmp_path, "truncated.png")
    (tmp_path / "notes.png").write_text("these are notes, not pixels")
    assert "cannot be read" in _image_error(tmp_path, "notes.png")


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    """PNG headers claiming 81M and 900M pixels over a few bytes of data: refused before anything is decoded (our
    limit, then PIL's own refusal at open)."""
    (tmp_path / "bomb.png").write_bytes(_png(9000, 9000, 8, 2, b"\x00" * 16))
    message = _image_error(tmp_path, "bomb.png")
    assert "9000 x 9000 pixels, over the limit" in message and "Downscale" in message
    (tmp_path / "bigger.png").write_bytes(_png(30000, 30000, 8, 2, b"\x00" * 16))
    assert "over the pixel limit" in _image_error(tmp_path, "bigger.png")


def test_cmyk_and_16_bit_images_are_converted_by_the_stated_rules(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    red = load_image(tmp_path, "cmyk.jpg", "x")[0]
    assert red.mode == "RGB" and red.getpixel((4, 4))[0] > 200 and red.getpixel((4, 4))[1] < 60

    grey16 = np.full((8, 8), 40000, dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")  # really a 16-bit file
    grey = load_image(tmp_path, "grey16.png", "x")[0]
    assert grey.getpixel((0, 0)) == (40000 >> 8,) * 3  # the high byte, not PIL's clip to white

    rgb16 = np.zeros((8, 8, 3), dtype=">u2")
    rgb16[..., 0] = 65535
    rows = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(8))
    (tmp_path / "rgb16.png").write_bytes(_png(8, 8, 16, 2, rows))
    assert load_image(tmp_path, "rgb16.png", "x")[0].getpixel((0, 0)) == (255, 0, 0)


def test_transparency_is_flattened_onto_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path, "clear.png", "x")[0].getpixel((0, 0)) == (255, 255, 255)


def test_animations_are_refused(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert "an animation (2 frames)" in _image_error(tmp_path, "anim.gif")
    frames[0].save(tmp_path / "still.gif")  # a single-frame GIF is an ordinary image
    assert load_image(tmp_path, "still.gif", "x")[0].getpixel((0, 0)) == (255, 0, 0)


def test_empty_and_duplicate_references(folder):
    data = json.loads((folder / "user.json").read_text())
    (folder / "user.json").write_text(json.dumps({**data, "references": []}))
    with pytest.raises(UserDataError, match="'references' is empty"):
        load_user(str(folder))
    (folder / "user.json").write_text(json.dumps({**data, "references": [*data["references"], data["references"][0]]}))
    with pytest.raises(UserDataError, match=r"references\[2\] repeats references\[0\]"):
        load_user(str(folder))


def test_chosen_and_rejected_the_same_image(folder):
    data = json.loads((folder / "user.json").read_text())
    same = {"prompt": "a sun", "chosen": "a.png", "rejected": "./a.png"}
    (folder / "user.json").write_text(json.dumps({**data, "references": [same]}))
    with pytest.raises(UserDataError, match=r"references\[0\]: 'chosen' and 'rejected' are the same image"):
        load_user(str(folder))
    shutil.copy(folder / "a.png", folder / "a_copy.png")  # another file, the same bytes
    (folder / "user.json").write_text(json.dumps({**data, "references": [{**same, "rejected": "a_copy.png"}]}))
    with pytest.raises(UserDataError, match="the same image"):
        load_user(str(folder))


def test_heldout_must_be_a_list(folder):
    data = json.loads((folder / "user.json").read_text())
    (folder / "user.json").write_text(json.dumps({**data, "heldout": 5}))
    with pytest.raises(UserDataError, match="'heldout' must be a list"):
        load_user(str(folder))


# ---------------------------------------------------------------------------------------------------- configs
def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_training_config_unknown_key_and_wrong_type(tmp_path):
    from rl.train_policy import parse_args

    base = ["--user", "demo", "--users_dir", str(REPO / "users"), "--runs_dir", str(tmp_path)]
    with pytest.raises(ConfigError, match=r"unknown keys 'render_step' \(did you mean 'render_steps'\?\)"):
        parse_args([*base, "--config", _yaml(tmp_path, "render_step: 4\n")], check_models=False)
    with pytest.raises(ConfigError, match=r"render_steps must be an integer, got \[4\]"):
        parse_args([*base, "--config", _yaml(tmp_path, "render_steps: [4]\n")], check_models=False)
    with pytest.raises(ConfigError, match="use_peft must be true or false, got 3"):
        parse_args([*base, "--config", _yaml(tmp_path, "use_peft: 3\n")], check_models=False)
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_args([*base, "--config", _yaml(tmp_path, "render_steps: [4\n")], check_models=False)
    with pytest.raises(ConfigError, match="does not exist"):
        parse_args([*base, "--config", str(tmp_path / "absent.yaml")], check_models=False)
    # strings that convert like a flag are fine (YAML 1.1 reads 5e-4 as a string); the shipped configs pass
    args, training_args, _ = parse_args(
        [*base, "--config", _yaml(tmp_path, "learning_rate: 5e-4\nrender_steps: '3'\n")], check_models=False
    )
    assert training_args.learning_rate == 5e-4 and args.render_steps == 3
    parse_args([*base, "--config", str(REPO / "configs" / "cpu.yaml")], check_models=False)


def test_config_consistency_errors_are_config_errors(tmp_path):
    from rl.train_policy import parse_args

    base = ["--user", "demo", "--users_dir", str(REPO / "users"), "--runs_dir", str(tmp_path)]
    with pytest.raises(ConfigError, match="compare_to must be one of"):
        parse_args([*base, "--compare_to", "everyone"], check_models=False)


@pytest.mark.parametrize("module", ["policy_eval.evaluate_policy", "policy_eval.cross_user", "policy_eval.diagnose"])
def test_evaluate_matrix_diagnose_refuse_unknown_yaml_keys(module, tmp_path):
    """They read training's YAML: trainer keys are accepted (and unused), unknown keys and wrong types are not."""
    import importlib

    command = importlib.import_module(module)
    parse = command.main if module == "policy_eval.diagnose" else command.parse_args
    argv = ["--user", "demo", "--users", "demo"] if module == "policy_eval.cross_user" else ["--user", "demo"]
    with pytest.raises(ConfigError, match=r"unknown keys 'eval_sample'"):
        parse([*argv, "--config", _yaml(tmp_path, "eval_sample: 3\n")])
    with pytest.raises(ConfigError, match="judge_mode must be a string, got 5"):
        parse([*argv, "--config", _yaml(tmp_path, "judge_mode: 5\n")])
    if module != "policy_eval.diagnose":  # the training config itself is accepted as it is
        parse([*argv, "--config", str(REPO / "configs" / "cpu.yaml")])


def test_config_naming_a_missing_model(tmp_path):
    from rl.train_policy import parse_args

    argv = ["--user", "demo", "--users_dir", str(REPO / "users"), "--judge_model", str(tmp_path / "no-judge")]
    with pytest.raises(ModelUnavailableError, match=r"judge: local folder .*no-judge.* does not exist.*make setup"):
        parse_args(argv)


def test_pickle_only_model_folder_is_refused(tmp_path):
    from common.hub import check_models

    folder = tmp_path / "pickled-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelUnavailableError, match=r"pickle format \(pytorch_model.bin\).*safetensors only"):
        check_models({"policy": str(folder)})
    (folder / "model.safetensors").write_bytes(b"")  # with safetensors beside it, those are what gets loaded
    check_models({"policy": str(folder)})


# --------------------------------------------------------------------------------------------------- adapters
def _tiny_causal_lm(path: Path, hidden: int, tokenizer_from: str) -> str:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _adapter(base: str, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.rewriter import SYSTEM_PROMPT, AdapterInfo

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    AdapterInfo(user_id="alice", base_model=base, system_prompt=SYSTEM_PROMPT, max_new_tokens=4).save(out)
    return out


def test_adapter_of_another_base_model(tiny_models, tmp_path):
    from policies.rewriter import ADAPTER_META, PromptRewriter

    base_a = _tiny_causal_lm(tmp_path / "base-a", 32, tiny_models["policy"])
    base_b = _tiny_causal_lm(tmp_path / "base-b", 48, tiny_models["policy"])
    adapter = _adapter(base_a, tmp_path / "adapter")
    assert PromptRewriter(adapter).info.user_id == "alice"  # its own base: fine
    with pytest.raises(AdapterError, match=r"was trained on .*base-a.*which is here, but --base_model is"):
        PromptRewriter(adapter, base_model=base_b)
    # the recorded base moved away: --base_model is allowed, and a base whose shapes do not fit is named
    meta = json.loads((adapter / ADAPTER_META).read_text())
    (adapter / ADAPTER_META).write_text(json.dumps({**meta, "base_model": str(tmp_path / "moved")}))
    with pytest.raises(AdapterError, match=r"does not fit the base model .*base-b.*q_proj.*trained on another base"):
        PromptRewriter(adapter, base_model=base_b)
    assert PromptRewriter(adapter, base_model=base_a).info.base_model.endswith("moved")


def test_adapter_files_pickle_and_corrupt_metadata(tmp_path):
    from policies.rewriter import ADAPTER_META, AdapterInfo, check_adapter_files

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(AdapterError, match="no adapter_model.safetensors .*pickle file, never loaded"):
        check_adapter_files(folder)
    (folder / ADAPTER_META).write_text("{not json")
    with pytest.raises(AdapterError, match=f"{ADAPTER_META} is corrupt"):
        AdapterInfo.load(folder)
    (folder / ADAPTER_META).write_text(json.dumps({"user_id": "alice", "colour": "red"}))
    with pytest.raises(AdapterError, match="is corrupt"):
        AdapterInfo.load(folder)


def test_corrupt_latest_pointer(tmp_path):
    from policies.rewriter import latest_adapter

    pointer = tmp_path / "alice" / "LATEST"
    pointer.parent.mkdir()
    for content, expected in (
        (b"", "is empty"),
        (b"\xff\xfe\x00garbage", "is not text"),
        (b"run-a/adapter\nrun-b/adapter\n", "more than one line"),
    ):
        pointer.write_bytes(content)
        with pytest.raises(AdapterError, match=expected):
            latest_adapter("alice", tmp_path)
    pointer.write_text("gone/adapter\n")
    with pytest.raises(FileNotFoundError, match="holds no adapter_config.json. Fix the pointer"):
        latest_adapter("alice", tmp_path)


# ------------------------------------------------------------------------------------------------ context cache
@pytest.mark.parametrize(
    "content",
    [b"{torn", b"\x80\x81 binary", b"[1, 2]", b'{"user_id": "alice"}', b'{"rationales": "abc"}'],
)
def test_corrupt_context_cache_is_named_and_rebuilt(content, tmp_path, caplog):
    from reward import context as ctx

    good = ctx.new_context("alice", [ctx.Rationale(0, "a sun", "warm colours")], "m", "t", "h", {}, 0.0)
    path = ctx.save(good, tmp_path)
    assert ctx.load_cached(path, good.key).texts == ["warm colours"]
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="reward.context"):
        assert ctx.load_cached(path, good.key) is None
    assert f"Context cache {path} is corrupt" in caplog.text and "rebuilding it" in caplog.text


def test_errors_share_one_base_class():
    from reward.openai_backend import BackendError

    for error in (UserDataError, ModelUnavailableError, BackendError, ConfigError, AdapterError):
        assert issubclass(error, PigError)
