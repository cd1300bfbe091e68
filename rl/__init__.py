"""Training a policy: environment (render + reward), trainers, rl/train_policy.py."""
