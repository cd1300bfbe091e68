"""A person's new choices, made in a browser page, become references of their user folder; their context and their
adapter learn from them (issue 22). `session.py` proposes pairs and records choices (no browser needed: a benchmark
drives it directly), `page.py` is the Gradio page (`pig choose`), `update.py` continues the adapter (`pig update`)."""
