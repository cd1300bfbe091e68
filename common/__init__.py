"""Plumbing every package may use: expected errors and the command runner, atomic files, safe model loading and
model checks, the device/dtype rule. Imports nothing of the project."""
