"""Reinforcement learning: environment (render + reward), trainers, rl/train_policy.py."""
