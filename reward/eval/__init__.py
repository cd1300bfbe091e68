"""Evaluation of PIGReward against baselines on per-user preference datasets (PIGBench and friends).

- `reward.eval.dataset`: the canonical per-user preference dataset (user folders + `manifest.json`).
- `reward.eval.importers`: PIGBench-style ranking tables, Pick-a-Pic v2 parquet, our own folders -> that format.
- `reward.eval.metrics`: accuracy with / without ties, position consistency, per-user accuracy, bootstrap CIs (pure).
- `reward.eval.baselines`: every method, by name, in one dict (`METHODS`).
- `reward.eval.bench`: the resumable benchmark run; `reward.eval.report`: table, plots and the HTML report.
- `reward.eval.cli`: `pig bench` (and `import` for datasets).
"""
