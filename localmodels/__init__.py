"""Small models trained here, from scratch, on a procedural toy world (no downloaded weights)."""
