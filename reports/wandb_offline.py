"""Read an offline W&B run (`wandb/offline-run-*/run-*.wandb`) without syncing it anywhere.

Offline runs are what this project writes by default (no account, no network). `wandb sync` uploads them; this module
reads them back locally: the logged history rows (metrics, and references to tables/images) and the media files.
The `.wandb` file is W&B's record log: a 7-byte header (`:W&B`, magic 0xBEE1, version) followed by LevelDB-log
blocks of 32 KiB whose records (CRC-32C, length, type FULL/FIRST/MIDDLE/LAST) carry `wandb_internal_pb2.Record`s.

    python -m reports.wandb_offline runs/demo/<run>/wandb        # prints the last value of every metric
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

_HEADER = b":W&B"
_HEADER_LEN = 7
_BLOCK = 32768
_RECORD_HEADER = 7  # crc32c (4) + length (2) + type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def find_run_files(path: str | Path) -> list[Path]:
    """All `.wandb` files under `path` (a run folder, a `wandb/` folder or an output folder), oldest first."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(path.rglob("offline-run-*/run-*.wandb")) or sorted(path.rglob("run-*.wandb"))


def iter_records(file: str | Path):
    """Yield the serialized protobuf records of one `.wandb` file."""
    data = Path(file).read_bytes()
    if not data.startswith(_HEADER):
        raise ValueError(f"{file} is not a W&B run file (no ':W&B' header).")
    pos, pending = _HEADER_LEN, b""
    while pos + _RECORD_HEADER <= len(data):
        room = _BLOCK - (pos % _BLOCK)
        if room < _RECORD_HEADER:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _RECORD_HEADER])
        pos += _RECORD_HEADER
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            pos += _BLOCK - (pos % _BLOCK) if pos % _BLOCK else 0
        else:
            raise ValueError(f"{file}: unknown record type {kind} at byte {pos}.")


def read_config(path: str | Path) -> dict | None:
    """The arguments the newest W&B run under `path` recorded: `{"pig": PigArguments, "policy": ModelConfig,
    "trainer": the TRL config}`, or None when there is no W&B run file.

    rl/train_policy.py starts the W&B run with `config={"pig": ..., "policy": ...}` (the run record); TRL's callback
    adds the trainer's keys later (config records). A torn record at the end of a file W&B is still writing ends the
    read: the config records come first.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    files = find_run_files(path) if Path(path).exists() else []
    if not files:
        return None
    config: dict = {"pig": {}, "policy": {}, "trainer": {}}
    for raw in iter_records(files[-1]):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except DecodeError:
            break
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in items:
            key = item.key or "/".join(item.nested_key)
            if key.startswith("_"):
                continue
            value = json.loads(item.value_json)
            if key in ("pig", "policy") and isinstance(value, dict):
                config[key].update(value)
            else:
                config["trainer"][key] = value
    return config


def read_history(path: str | Path) -> list[dict]:
    """The history rows (`wandb.log` calls) of the offline run(s) under `path`, as dicts of decoded JSON values."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for file in find_run_files(path):
        for raw in iter_records(file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return rows


def media_files(path: str | Path) -> list[Path]:
    """Images and tables the run logged (`files/media/...`)."""
    return sorted(p for f in find_run_files(path) for p in (f.parent / "files" / "media").rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    rows = read_history(argv[0])
    last: dict = {}
    for row in rows:
        last.update({k: v for k, v in row.items() if not isinstance(v, dict)})
    print(f"{len(rows)} history rows, {len(media_files(argv[0]))} media files")
    for key in sorted(last):
        print(f"  {key} = {last[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
