"""`pig choose`: the choice page. A person sees two images for a prompt, picks one (or skips), and their user folder
gains a reference; their context updates at once, their adapter with `pig update`.

    pig choose --user demo                        # http://127.0.0.1:7860, the models of configs/cpu.yaml
    pig choose --user alice --new_user --page_prompts "a lighthouse" "a red hydrant"   # a new user's first choices
    pig choose --user demo --opponent original --port 7861 --config configs/gpu.yaml

Built with Gradio (`pip install -e ".[ui]"`). The page listens on 127.0.0.1 only, never makes a public share link,
and sends no analytics. What it shows and records: `feedback/session.py`; how a choice is written safely:
`reward/choices.py`. The page's handlers are plain functions of `ChoiceSession` (`propose`, `record`), so everything
but the clicking is tested and benchmarked without a browser.
"""

from __future__ import annotations

import os
import re
import sys

from common.errors import PigError
from feedback.session import ChoiceSession, ChooseArguments, Proposal
from rl.config import PigArguments

HOST = "127.0.0.1"
CSS = "#left-image img, #right-image img {image-rendering: pixelated;}"
_NAMES = {"adapter": "the adapter's rewrite", "base": "the base policy's rewrite", "original": "the original prompt"}


def _md(text: object) -> str:
    """Text from a model or a person shown as itself in Markdown (no links, emphasis or HTML)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", str(text))


def _side(side) -> str:
    return f"{_NAMES[side.policy]} “{_md(side.text)}”"


def _header(session: ChoiceSession) -> str:
    s = session.summary()
    if s["adapter"]:
        against = "the base policy's" if s["opponent"] == "base" else "the original prompt"
        what = f"the adapter {_md(s['adapter'])} against {against}"
    else:
        what = "two samples of the base policy (no adapter yet)"
    return (
        f"### Which picture does **{_md(s['user_id'])}** prefer?\n"
        f"Each pair: {what}, rendered from the same seed; the sides are drawn at random. "
        f"So far: {s['references']} references, {s['choices']} choices made here, {s['skips']} skips."
    )


def _context_text(session: ChoiceSession) -> str:
    if session.pig is None:
        return "(context not shown: --show_context false)"
    texts = session.context_texts()
    if not texts:
        return "(no references yet: the first choice starts the context)"
    return "\n".join(f"{i}. {' '.join(t.split())}" for i, t in enumerate(texts, 1))  # one line per rationale


def require_gradio():
    """Gradio, imported with its analytics off (nothing leaves this machine), or a clear error naming the install."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError as err:
        raise PigError(
            f'The choice page needs Gradio ({err}): pip install -e ".[ui]" (`make test` and `make demo` install it).'
        ) from err
    return gradio


def build_page(session: ChoiceSession):
    """The Gradio Blocks of the page, on `session`."""
    gr = require_gradio()

    def show(proposal: Proposal | None, status: str):
        if proposal is None:
            return None, None, "", status, _header(session), _context_text(session), gr.update()
        prompts = session.prompts()
        choices = prompts if proposal.prompt in prompts else [*prompts, proposal.prompt]
        return (
            proposal.left_image,
            proposal.right_image,
            proposal.pair_id,
            status,
            _header(session),
            _context_text(session),
            gr.update(choices=choices, value=proposal.prompt),
        )

    def new_pair(prompt: str | None):
        try:
            proposal = session.propose(prompt or None)
        except PigError as err:
            return show(None, f"**No pair:** {_md(err)}")
        return show(proposal, f"A new pair for “{_md(proposal.prompt)}”.")

    def choose(pair_id: str, choice: str):
        shown = session.pending(pair_id)
        try:
            record = session.record(pair_id, choice)
        except PigError as err:  # the pair stays on the page: the person can skip it or ask for another
            keep = gr.update()
            return keep, keep, keep, f"**Not recorded:** {_md(err)}", keep, keep, keep
        if record.duplicate:
            said = f"Already recorded ({record.choice}): nothing written twice."
        elif choice == "skip":
            said = "Skipped (logged, not a reference)."
        else:
            said = f"Recorded: reference {record.reference + 1} of {record.references}."
        if shown is not None and not record.duplicate:  # the sides are revealed once the choice is made
            chosen, other = (shown.left, shown.right) if choice == "left" else (shown.right, shown.left)
            if choice != "skip":
                said += f" You chose {_side(chosen)} over {_side(other)}."
            else:
                said += f" Left was {_side(shown.left)}; right was {_side(shown.right)}."
        try:
            return show(session.propose(), said)
        except PigError as err:
            return show(None, f"{said} **No next pair:** {_md(err)}")

    # delete_cache: the pictures Gradio serves (copies under its temp folder) go after an hour, checked hourly
    with gr.Blocks(title="pig choose", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        header = gr.Markdown(_header(session), elem_id="header")
        with gr.Row():
            prompt = gr.Dropdown(
                choices=session.prompts(),
                allow_custom_value=True,
                label="Prompt (pick one, or type your own)",
                elem_id="prompt",
                scale=4,
            )
            new = gr.Button("New pair", elem_id="new-pair", scale=1)
        with gr.Row():
            left_image = gr.Image(
                label="Left", type="pil", format="png", interactive=False, height=320, elem_id="left-image"
            )
            right_image = gr.Image(
                label="Right", type="pil", format="png", interactive=False, height=320, elem_id="right-image"
            )
        with gr.Row():
            left = gr.Button("Left is better", variant="primary", elem_id="choose-left")
            skip = gr.Button("Skip", elem_id="choose-skip")
            right = gr.Button("Right is better", variant="primary", elem_id="choose-right")
        status = gr.Markdown("", elem_id="status")
        # The pair on the page travels with each click (a hidden field), so a click is about the pair the person saw.
        pair_id = gr.Textbox(visible=False, elem_id="pair-id")
        window = session.pig.settings.context_references if session.pig is not None else 0
        context = gr.Textbox(
            _context_text(session),
            label="What the judge knows about this user (the reasoner's rationales, one per reference"
            + (f": the {window} most recent)" if window else ")"),
            lines=6,
            interactive=False,
            elem_id="context",
        )
        outputs = [left_image, right_image, pair_id, status, header, context, prompt]
        page.load(lambda: new_pair(None), outputs=outputs)
        new.click(new_pair, inputs=prompt, outputs=outputs)
        for button, choice in ((left, "left"), (right, "right"), (skip, "skip")):
            button.click(lambda p, c=choice: choose(p, c), inputs=pair_id, outputs=outputs, trigger_mode="once")
    return page


def parse_args(argv: list[str] | None) -> tuple[PigArguments, ChooseArguments, dict]:
    from common.errors import ConfigError
    from policy_eval.evaluate_policy import parse_dataclasses
    from rl.config import recipe_of

    argv = list(sys.argv[1:] if argv is None else argv)
    pig_args, args = parse_dataclasses((PigArguments, ChooseArguments), argv)
    if not pig_args.user:
        raise ConfigError("--user is required: a user id under --users_dir (e.g. demo) or a path to a user folder.")
    return pig_args, args, recipe_of(argv)


def main(argv: list[str] | None = None) -> int:
    pig_args, args, recipe = parse_args(argv)
    require_gradio()  # before the models load
    session = ChoiceSession.from_args(pig_args, args, recipe)
    page = build_page(session)
    print(f"[choose] {session.user_id}: {session.summary()['references']} references; folder {session.user_dir}")
    print(f"[choose] open http://{HOST}:{args.port} (Ctrl-C stops the page)", flush=True)
    page.queue(default_concurrency_limit=1).launch(
        server_name=HOST, server_port=args.port, share=False, inbrowser=False, quiet=True, footer_links=[], css=CSS
    )
    return 0


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
