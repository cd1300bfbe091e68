"""The prompt-rewriting policy: its chat prompt, rewrite extraction, adapters, serving."""
