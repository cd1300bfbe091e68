"""Importers: small datasets in each source format, written here, with bad rows that must be skipped and reported."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from reward.eval import importers
from reward.eval.dataset import ImportLog, list_users, read_manifest
from reward.users import load_user

REPO = Path(__file__).resolve().parents[1]


def _color(*key: int) -> tuple[int, int, int]:
    """A distinct colour per key, so an output image can be traced back to its source by one pixel."""
    return tuple((37 * (i + 1) * (k + 3)) % 251 for i, k in enumerate((key + (0, 0, 0))[:3]))


def _pixel(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as image:
        assert image.format in ("PNG", "JPEG")  # kept as the source stored it
        return image.convert("RGB").getpixel((0, 0))


# --------------------------------------------------------------------------------------------------- PIGBench
def _ranking_rows(tmp_path: Path) -> list[dict]:
    """alice: 8 good prompts; bob: 7 prompts, one with a wrong rank set, one with a missing rank-4 image (5 usable);
    carol: 3 prompts (too few); one row with an unreadable rank."""
    images = tmp_path / "src" / "images"
    images.mkdir(parents=True)
    rows = []
    for u, (user, n) in enumerate((("alice", 8), ("bob", 7), ("carol", 3))):
        for p in range(n):
            for rank in (1, 2, 3, 4):
                name = f"{user}_{p}_{rank}.png"
                Image.new("RGB", (8, 8), _color(u, p, rank)).save(images / name)
                rows.append(
                    {
                        "user_id": user,
                        "prompt_id": f"p{p}",
                        "prompt": f"prompt {p}",
                        "image": f"images/{name}",
                        "rank": rank,
                    }
                )
    for row in rows:
        if row["user_id"] == "bob" and row["prompt_id"] == "p3" and row["rank"] == 3:
            row["rank"] = 2  # ranks 1, 2, 2, 4
        if row["user_id"] == "bob" and row["prompt_id"] == "p5" and row["rank"] == 4:
            row["image"] = "missing.jpg"
    rows.append({"user_id": "alice", "prompt_id": "p9", "prompt": "x", "image": "x.jpg", "rank": "first"})
    return rows


def _write_csv(path: Path, rows: list[dict], rename: dict[str, str] | None = None) -> Path:
    rename = rename or {}
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[rename.get(k, k) for k in rows[0]])
        writer.writeheader()
        writer.writerows({rename.get(k, k): v for k, v in row.items()} for row in rows)
    return path


def _user_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_pigbench_split_skips_and_manifest(tmp_path, capsys):
    rows = _ranking_rows(tmp_path)
    table = _write_csv(tmp_path / "src" / "rankings.csv", rows)
    out = tmp_path / "ds"
    log = importers.import_pigbench(table, out, seed=0, min_references=4, max_references=5)
    assert "skipped rows" in capsys.readouterr().out

    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["source_format"] == "pigbench" and manifest["seed"] == 0
    assert manifest["counts"]["users"] == 2 and manifest["counts"]["heldout"] == 2
    assert manifest["counts"]["references"] == 5 + 4  # alice: 7 others, capped at 5; bob: 5 usable - 1 test
    assert manifest["counts"]["rows_read"] == len(rows)
    assert manifest["skipped_reasons"] == {"bad_group": 3, "bad_rank": 1, "bad_rank_set": 4, "missing_image": 1}
    bad_image_row = next(i for i, r in enumerate(rows) if r["image"] == "missing.jpg")
    assert {"row": f"rankings.csv:{bad_image_row}", "reason": "missing_image"}.items() <= next(
        r for r in manifest["skipped_rows"] if r["reason"] == "missing_image"
    ).items()
    assert f"rankings.csv:{len(rows) - 1}" in [r["row"] for r in manifest["skipped_rows"] if r["reason"] == "bad_rank"]
    assert [(u["user_id"], u["reason"]) for u in manifest["skipped_users"]] == [("carol", "too_few_prompts")]
    assert log.users == 2

    colors = {
        (r["user_id"], r["prompt"], r["rank"]): _color(u, int(r["prompt_id"][1:]), r["rank"])
        for r in rows
        if r["rank"] in (1, 4)
        for u in [("alice", "bob", "carol").index(r["user_id"])]
    }
    for name in ("alice", "bob"):
        user = load_user(str(out / name))  # valid in the reward/users.py format, every image decodes
        assert len(user.heldout) == 1
        for ref in user.references:
            assert _pixel(ref.chosen_path) == colors[(name, ref.prompt, 1)]
            assert _pixel(ref.rejected_path) == colors[(name, ref.prompt, 4)]
        pair = user.heldout[0]
        best = pair.image_1_path if pair.label == 1 else pair.image_2_path
        assert _pixel(best) == colors[(name, pair.prompt, 1)]
        assert pair.prompt not in {r.prompt for r in user.references}
        referenced = {p.name for r in user.references for p in (r.chosen_path, r.rejected_path)}
        referenced |= {pair.image_1_path.name, pair.image_2_path.name}
        assert {p.name for p in (out / name / "images").iterdir()} == referenced  # nothing unused is left
    assert "p3" not in json.dumps(_user_json(out / "bob" / "user.json"))  # the bad groups are not used
    assert not (out / "carol").exists()
    assert [u.user_id for u in list_users(out)] == ["alice", "bob"]


def test_pigbench_is_seeded_and_column_map(tmp_path):
    rows = _ranking_rows(tmp_path)
    table = _write_csv(tmp_path / "src" / "rankings.csv", rows)
    first = importers.import_pigbench(table, tmp_path / "a", seed=0, min_references=4, verbose=False)
    importers.import_pigbench(table, tmp_path / "b", seed=0, min_references=4, verbose=False)
    assert _user_json(tmp_path / "a" / "alice" / "user.json") == _user_json(tmp_path / "b" / "alice" / "user.json")
    held = set()
    for seed in range(6):
        importers.import_pigbench(table, tmp_path / "s", seed=seed, min_references=4, overwrite=True, verbose=False)
        pair = _user_json(tmp_path / "s" / "alice" / "user.json")["heldout"][0]
        held.add((pair["prompt"], pair["label"]))
    assert len(held) > 1  # the seed decides the held-out prompt and the order

    # the same table as JSONL, with the real release's (unknown) column names mapped
    jsonl = tmp_path / "src" / "rankings.jsonl"
    jsonl.write_text(
        "".join(json.dumps({("annotator" if k == "user_id" else k): v for k, v in r.items()}) + "\n" for r in rows)
    )
    with pytest.raises(ValueError, match="column_map"):
        importers.import_pigbench(jsonl, tmp_path / "c", verbose=False)
    assert not (tmp_path / "c").exists()  # a schema error stops before anything is written
    mapped = importers.import_pigbench(
        jsonl, tmp_path / "c", seed=0, min_references=4, column_map={"user_id": "annotator"}, verbose=False
    )
    assert (mapped.users, mapped.references, len(mapped.skipped_rows)) == (
        first.users,
        first.references,
        len(first.skipped_rows),
    )
    a, c = (_user_json(tmp_path / d / "alice" / "user.json") for d in ("a", "c"))
    assert (a["references"], a["heldout"]) == (c["references"], c["heldout"])

    with pytest.raises(FileExistsError, match="overwrite"):
        importers.import_pigbench(table, tmp_path / "a", verbose=False)


# ------------------------------------------------------------------------------------------------- Pick-a-Pic
def _jpeg(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _close(a, b, tol=6) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))  # JPEG is lossy


@pytest.fixture()
def pickapic_parquet(tmp_path) -> tuple[Path, list[dict]]:
    """Pick-a-Pic v2's columns, 5-row row groups. user 101: 10 good non-tie pairs, 2 ties and 4 bad rows;
    user 202: 3 pairs (too few); user 303: 20 good pairs; plus rows without user or caption."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []

    def add(user, labels, jpg_0=None, jpg_1=None, caption=None):
        i = len(rows)
        rows.append(
            {
                "user_id": user,
                "caption": caption if caption is not None else f"caption {i}",
                "jpg_0": jpg_0 if jpg_0 is not None else _jpeg(_color(i, 0)),
                "jpg_1": jpg_1 if jpg_1 is not None else _jpeg(_color(i, 1)),
                "label_0": labels[0],
                "label_1": labels[1],
                "ranking_id": i,  # real files hold more columns; they are ignored
            }
        )

    for k in range(10):
        add(101, (1.0, 0.0) if k % 2 else (0.0, 1.0))
    add(101, (0.5, 0.5))
    add(303, (1.0, 0.0))
    add(101, (0.5, 0.5))
    add(101, (0.3, 0.7))  # unknown label
    add(101, (1.0, 0.0), jpg_1=b"not a jpeg")  # undecodable
    add(101, (0.0, 1.0), jpg_0=b"")  # missing
    same = _jpeg((1, 2, 3))
    add(101, (1.0, 0.0), jpg_0=same, jpg_1=same)  # identical images
    for _ in range(3):
        add(202, (1.0, 0.0))
    for k in range(19):
        add(303, (0.0, 1.0) if k % 3 else (1.0, 0.0))
    add(None, (1.0, 0.0))
    add(303, (1.0, 0.0), caption="  ")
    path = tmp_path / "pap.parquet"
    table = pa.Table.from_pylist(rows)
    table = table.set_column(
        table.schema.get_field_index("jpg_0"), "jpg_0", pa.array([r["jpg_0"] for r in rows], pa.binary())
    )
    pq.write_table(table, path, row_group_size=5)
    return path, rows


def test_pickapic_split_and_bad_rows(pickapic_parquet, tmp_path):
    path, rows = pickapic_parquet
    out = tmp_path / "ds"
    importers.import_pickapic(path, out, seed=0, n_references=8, max_heldout=10, batch_size=4, verbose=False)
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["counts"]["rows_read"] == len(rows)
    by_reason = {r["reason"]: r for r in manifest["skipped_rows"]}
    expect = {"unknown_label": 13, "undecodable_image": 14, "missing_image": 15, "identical_images": 16}
    for reason, index in expect.items():
        assert by_reason[reason]["row"] == f"pap.parquet:{index}", reason
    assert by_reason["missing_user_id"]["row"] == f"pap.parquet:{len(rows) - 2}"
    assert by_reason["empty_caption"]["row"] == f"pap.parquet:{len(rows) - 1}"
    assert [(u["user_id"], u["reason"]) for u in manifest["skipped_users"]] == [("202", "too_few_pairs")]

    label_of = {r["caption"]: (r["label_0"], r["label_1"]) for r in rows}
    index_of = {r["caption"]: i for i, r in enumerate(rows)}
    u101 = load_user(str(out / "101"))
    # 15 rows with a known label, 3 with bad images: 8 references, the 4 others (2 ties among them) held out
    assert len(u101.references) == 8 and len(u101.heldout) == 4
    assert sorted(p.label for p in u101.heldout).count(0) == 2
    for ref in u101.references:
        i = index_of[ref.prompt]
        assert label_of[ref.prompt] in ((1.0, 0.0), (0.0, 1.0))  # references are never ties
        winner = 0 if label_of[ref.prompt] == (1.0, 0.0) else 1
        assert _close(_pixel(ref.chosen_path), _color(i, winner)) and _close(
            _pixel(ref.rejected_path), _color(i, 1 - winner)
        )
    for pair in u101.heldout:
        i = index_of[pair.prompt]
        assert pair.label == {(1.0, 0.0): 1, (0.0, 1.0): 2, (0.5, 0.5): 0}[label_of[pair.prompt]]
        assert _close(_pixel(pair.image_1_path), _color(i, 0)) and _close(_pixel(pair.image_2_path), _color(i, 1))
    assert not {p.prompt for p in u101.heldout} & {r.prompt for r in u101.references}
    bad_files = [f for f in (out / "101" / "images").iterdir() if f.name.startswith(("r0-14_", "r0-15_", "r0-16_"))]
    assert bad_files == []
    u303 = load_user(str(out / "303"))
    assert len(u303.references) == 8 and len(u303.heldout) == 10  # capped by max_heldout

    again = tmp_path / "again"
    importers.import_pickapic(path, again, seed=0, batch_size=64, verbose=False)  # other batch size, same split
    assert _user_json(out / "101" / "user.json")["references"] == _user_json(again / "101" / "user.json")["references"]


def test_pickapic_max_users_and_schema_error(pickapic_parquet, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, rows = pickapic_parquet
    log = importers.import_pickapic(path, tmp_path / "one", max_users=1, verbose=False)
    assert log.users == 1
    assert sorted(u["reason"] for u in log.skipped_users) == ["max_users", "too_few_pairs"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in rows[0].items() if k != "label_1"}]), bad)
    with pytest.raises(ValueError, match="label_1"):
        importers.import_pickapic(bad, tmp_path / "never", verbose=False)
    assert not (tmp_path / "never").exists()


def test_an_import_that_fails_midway_still_writes_its_manifest(tmp_path, capsys):
    log = ImportLog("pickapic", "x.parquet", 0, {})
    out = tmp_path / "ds"
    out.mkdir()

    def work():
        log.rows_read += 2
        log.skip_row("x.parquet:0", "unknown_label", "0.3, 0.7")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        importers._run(log, out, work, verbose=True)
    manifest = read_manifest(out)
    assert manifest["complete"] is False and manifest["error"] == "RuntimeError: disk full"
    assert manifest["skipped_rows"][0]["row"] == "x.parquet:0" and manifest["counts"]["rows_read"] == 2
    assert "INCOMPLETE" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- own folders
@pytest.mark.parametrize("link", [False, True])
def test_folder_import_validates_and_copies(tmp_path, link):
    src = tmp_path / "src"
    shutil.copytree(REPO / "users" / "demo", src / "demo")
    (src / "broken" / "images").mkdir(parents=True)
    data = _user_json(src / "demo" / "user.json")
    data["user_id"] = "broken"
    (src / "broken" / "user.json").write_text(json.dumps(data))  # its images are missing
    out = tmp_path / "ds"
    log = importers.import_folder(src, out, link=link, verbose=False)
    assert log.users == 1 and log.heldout == 8 and log.references == 8
    assert [(u["user_id"], u["reason"]) for u in log.skipped_users] == [("broken", "invalid_user")]
    assert "does not exist" in log.skipped_users[0]["detail"]
    assert (out / "demo").is_symlink() == link
    assert [u.user_id for u in list_users(out)] == ["demo"]
    assert len(load_user(str(out / "demo")).heldout) == 8
    with pytest.raises(ValueError, match="outside"):
        importers.import_folder(src, src / "inside", verbose=False)


def test_save_image_keeps_jpeg_bytes_and_converts_the_rest(tmp_path):
    import io

    from reward.eval.importers import ImageProblem, save_image

    jpeg = _jpeg((200, 30, 30))
    written = save_image(jpeg, tmp_path / "a.b_0", "jpg_0")
    assert written.name == "a.b_0.jpg" and written.read_bytes() == jpeg  # unchanged, not re-encoded
    bmp = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(bmp, format="BMP")
    converted = save_image(bmp.getvalue(), tmp_path / "c", "jpg_1")
    with Image.open(converted) as image:
        assert converted.suffix == ".png" and image.format == "PNG" and image.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(ImageProblem) as err:
        save_image(b"not an image", tmp_path / "d", "jpg_0")
    assert err.value.reason == "undecodable_image"


@pytest.mark.parametrize("line", ["1", "null", '"a row"', "[1, 2]"])
def test_a_jsonl_line_that_is_no_object_is_refused_by_its_number(tmp_path, line):
    """Found by the fuzzer (`tests/test_fuzz.py`): JSON that is not an object crashed the reader (TypeError)."""
    table = tmp_path / "rankings.jsonl"
    table.write_text(json.dumps(dict.fromkeys(importers.PIGBENCH_COLUMNS, "x")) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=r"rankings.jsonl: line 2 is JSON but not an object"):
        importers.read_ranking_table(table)
