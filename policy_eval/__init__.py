"""Evaluating a trained policy (as `reward/eval/` evaluates the judge): an adapter against the base policy and the
original prompt, every sandbox adapter under every taste, and the reward chain link by link. Built on the training
path's renderer and reward stack (`rl/`), so it sits above `rl/`."""
