"""What the choice page does, without the page: propose a pair of images for a user, record the person's choice.

```python
session = ChoiceSession.from_args(pig_args, choose_args)    # the models a training config names
proposal = session.propose("a lighthouse")                   # two rewrites, rendered with one image seed
record = session.record(proposal.pair_id, "left")            # into users/<id>/ (reward/choices.py), context updated
```

A pair. The two sides are two rewrites of one prompt, rendered by the configured renderer from the same image seed
(common random numbers, as in training), so the pictures differ by the words only:

- an adapter (`--adapter auto`: the user's own, `runs/<user>/LATEST`, else the population model,
  `runs/population/LATEST`, which reads the user's context (issue 21); or a folder): the adapter's rewrite, sampled at
  its training temperature, against `--opponent`: `base` (the same policy with the adapter disabled, the same
  sampling seed) or `original` (the prompt itself);
- no adapter (neither exists, or `--adapter none`): two samples of the base policy (the generic rewriter the adapters
  start from) with different sampling seeds.

Which side is left is drawn per pair (position bias), and the page does not say which is which until the choice is
made. Identical rewrites cannot tell the person's taste apart: up to `MAX_ATTEMPTS` sampling seeds are tried, then
the opponent becomes the original prompt.

A choice goes to `reward.choices.record_choice` (safe against crashes, concurrent pages, double clicks); after a
left/right choice the user's context is rebuilt with only the new reference going through the reasoner (the
rationale cache of `reward/context.py`). With `--adapter auto` a newer adapter (after `pig update`) is picked up at the
next pair.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import ConfigError, PigError
from reward.choices import ChoiceRecord, count_choices, record_choice, recorded_choice
from reward.users import USER_FILE, load_user, resolve_user_dir, user_id_of
from rl.config import PigArguments

OPPONENTS = ("base", "original")
MAX_ATTEMPTS = 4
"""Sampling seeds tried for two different rewrites before the opponent becomes the original prompt."""
MAX_PENDING = 64
"""Pairs on offer kept in memory (one per open tab is what a page needs; older ones can no longer be chosen)."""


@dataclass
class ChooseArguments:
    """The choice page's own options (the models, renderer and judge come from training's config keys)."""

    adapter: str = field(
        default="auto",
        metadata={
            "help": "auto: the user's adapter (runs/<user>/LATEST), else the population model "
            "(runs/population/LATEST), else two samples of the base policy; none: two samples of the base policy; or "
            "an adapter folder."
        },
    )
    opponent: str = field(
        default="base",
        metadata={"help": "What the adapter's rewrite is shown against: base (the base policy's) or original."},
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "The base policy without an adapter (default: the recipe's model_name_or_path)."},
    )
    page_prompts: list[str] | None = field(
        default=None,
        metadata={"help": "Prompts to offer besides the user's training prompts (a new user's only ones)."},
    )
    new_user: bool = field(
        default=False, metadata={"help": "Start a new user folder <users_dir>/<user> if there is none."}
    )
    show_context: bool = field(
        default=True,
        metadata={
            "help": "Build and show the user's context with the reasoner (reasoner_model, else judge_model), "
            "updated after each choice: only the new reference goes through the reasoner."
        },
    )
    page_seed: int | None = field(
        default=None, metadata={"help": "Seed of the pairs (sampling, image seeds, sides); default: the clock."}
    )
    port: int = field(default=7860, metadata={"help": "Port of the page on 127.0.0.1 (it never listens elsewhere)."})

    def __post_init__(self):
        if self.opponent not in OPPONENTS:
            raise ConfigError(f"--opponent must be one of {', '.join(OPPONENTS)}, got {self.opponent!r}.")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be a TCP port (1-65535), got {self.port}.")
        if self.page_prompts is not None and not all(p.strip() for p in self.page_prompts):
            raise ConfigError("--page_prompts holds an empty prompt.")


@dataclass
class Side:
    """One side of a pair: who wrote the text that was rendered, and the seeds."""

    policy: str  # "adapter", "base" or "original"
    text: str
    image_seed: int
    sample_seed: int | None = None


@dataclass
class Proposal:
    """A pair on offer: the prompt, both sides and their images (left, right)."""

    pair_id: str
    prompt: str
    left: Side
    right: Side
    left_image: object = field(repr=False)
    right_image: object = field(repr=False)
    adapter: str | None = None
    created_at: float = 0.0

    def shown(self) -> dict:
        """What the log records about the pair (`reward.choices`)."""
        return {"left": asdict(self.left), "right": asdict(self.right), "adapter": self.adapter}


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") % (2**31 - 1)


class ChoiceSession:
    """One user's pairs and choices, on loaded models. Thread-safe: the page's handlers take turns on the models.

    Args:
        user_dir: the user's folder (need not hold a user.json yet: a new user).
        user_id: the id a new user gets; an existing user keeps the one of their user.json.
        rewriter: a `policies.rewriter.PromptRewriter` (with the adapter, or the bare base policy).
        renderer: an `rl.render.Renderer`.
        pig: a `PIGReward` whose reasoner builds the user's context, or None (no context shown).
        adapter: the adapter folder the rewriter carries (None: the base policy).
        opponent: see `ChooseArguments.opponent`.
        prompts: prompts offered besides the user's training prompts.
        seed: seed of the pairs.
        runs_dir: where `runs/<user>/LATEST` is looked up (`follow_latest`).
        follow_latest: reload the rewriter when the user's LATEST adapter changes (`--adapter auto`).
        load_rewriter: `(adapter or None) -> PromptRewriter`, for reloading.
    """

    def __init__(
        self,
        user_dir: str | Path,
        user_id: str,
        rewriter,
        renderer,
        pig=None,
        adapter: str | Path | None = None,
        opponent: str = "base",
        prompts: list[str] | None = None,
        seed: int = 0,
        runs_dir: str | Path = "runs",
        follow_latest: bool = False,
        load_rewriter=None,
    ):
        self.user_dir, self.user_id = Path(user_dir), user_id
        self.rewriter, self.renderer, self.pig = rewriter, renderer, pig
        self.adapter = Path(adapter) if adapter else None
        self.opponent, self.extra_prompts, self.seed = opponent, list(prompts or []), seed
        self.runs_dir, self.follow_latest, self.load_rewriter = Path(runs_dir), follow_latest, load_rewriter
        self.context = None
        self._pending: OrderedDict[str, Proposal] = OrderedDict()
        self._lock = threading.RLock()
        self._count = 0
        self._order: list[str] = []
        if self.pig is not None:
            self.refresh_context()

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_args(cls, pig_args: PigArguments, args: ChooseArguments, recipe: dict | None = None) -> ChoiceSession:
        """The session a training config and the page's options describe; loads the policy, the renderer and (with
        `show_context`) the reasoner."""
        from common.devices import resolve_device
        from rl.render import Renderer
        from rl.reward_stack import build_pigreward

        user_dir, user_id = resolve_user(pig_args.user, pig_args.users_dir, args.new_user)
        recipe = recipe or {}
        base_model = args.base_model or recipe.get("model_name_or_path")
        follow = args.adapter == "auto"
        adapter = starting_adapter(user_id, pig_args.runs_dir) if follow else None
        if args.adapter not in ("auto", "none"):
            adapter = Path(args.adapter)
        if adapter is None and not base_model:
            raise ConfigError("No adapter and no base policy: pass --base_model (or a --config naming one).")
        device = resolve_device("auto")

        def load_rewriter(folder):
            return make_rewriter(folder, base_model, device, recipe)

        rewriter = load_rewriter(adapter)
        if rewriter.needs_context and not args.show_context:
            raise ConfigError(
                f"The adapter {adapter} reads the user's context (a population model): drop --show_context false, "
                "or pass --adapter none."
            )
        renderer = Renderer.from_args(pig_args, device)
        pig = build_pigreward(pig_args, device) if args.show_context else None
        seed = args.page_seed if args.page_seed is not None else int(time.time())
        return cls(
            user_dir,
            user_id,
            rewriter,
            renderer,
            pig,
            adapter=adapter,
            opponent=args.opponent,
            prompts=args.page_prompts,
            seed=seed,
            runs_dir=pig_args.runs_dir,
            follow_latest=follow,
            load_rewriter=load_rewriter,
        )

    # ------------------------------------------------------------------------------------------------- the user
    def user_data(self):
        """The user's folder loaded (`reward.users.UserData`), or None for a new user without a user.json yet."""
        return load_user(str(self.user_dir.resolve())) if (self.user_dir / USER_FILE).is_file() else None

    def prompts(self) -> list[str]:
        """The prompts on offer: the user's training prompts, then `prompts` given to the session."""
        user = self.user_data()
        return list(dict.fromkeys((user.training_prompts if user else []) + self.extra_prompts))

    def refresh_context(self):
        """The user's context rebuilt from their current references (cached rationales reused: only new references
        go through the reasoner); None without a reasoner or references."""
        user = self.user_data() if self.pig is not None else None
        self.context = self.pig.build_context(user) if user is not None else None
        return self.context

    def context_texts(self) -> list[str]:
        return self.context.texts if self.context is not None else []

    def summary(self) -> dict:
        """What the page shows about the user: references, choices made on the page, the adapter."""
        user = self.user_data()
        counts = count_choices(self.user_dir)
        return {
            "user_id": self.user_id,
            "references": len(user.references) if user else 0,
            "choices": counts.choices,
            "skips": counts.skips,
            "adapter": str(self.adapter) if self.adapter else None,
            "opponent": self.opponent if self.adapter else "base",
        }

    # ---------------------------------------------------------------------------------------------------- pairs
    def next_prompt(self) -> str:
        """The next prompt of a shuffled cycle through `prompts()`."""
        prompts = self.prompts()
        if not prompts:
            raise PigError(
                f"No prompt to show for {self.user_id}: the user has no training prompts yet. Type a prompt (or pass "
                "--page_prompts)."
            )
        self._order = [p for p in self._order if p in prompts]
        if not self._order:
            self._order = list(prompts)
            random.Random(_seed(self.seed, "order", self._count)).shuffle(self._order)
        return self._order.pop(0)

    def propose(self, prompt: str | None = None) -> Proposal:
        """A new pair for `prompt` (default: `next_prompt()`): two rewrites rendered with one image seed, sides drawn
        at random. The pair stays on offer (for `record`) among the last `MAX_PENDING`."""
        with self._lock:
            self._follow_latest()
            prompt = " ".join((prompt or "").split()) or self.next_prompt()
            n, self._count = self._count, self._count + 1
            image_seed = _seed(self.seed, "image", n)
            a, b = self._two_texts(prompt, n)
            images = self.renderer.render([a[1], b[1]], [image_seed, image_seed])
            sides = [
                (Side(a[0], a[1], image_seed, a[2]), images[0]),
                (Side(b[0], b[1], image_seed, b[2]), images[1]),
            ]
            if random.Random(_seed(self.seed, "side", n)).random() < 0.5:
                sides.reverse()
            (left, left_image), (right, right_image) = sides
            proposal = Proposal(
                uuid.uuid4().hex,
                prompt,
                left,
                right,
                left_image,
                right_image,
                str(self.adapter) if self.adapter else None,
                time.time(),
            )
            self._pending[proposal.pair_id] = proposal
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
            return proposal

    def _two_texts(self, prompt: str, n: int) -> tuple[tuple, tuple]:
        """(policy, text, sampling seed) of both sides; two different texts."""
        for attempt in range(MAX_ATTEMPTS):
            seed = _seed(self.seed, "sample", n, attempt)
            if self.adapter is None:
                a = ("base", self._sample(prompt, seed, adapter=False), seed)
                b = ("base", self._sample(prompt, seed + 1, adapter=False), seed + 1)
            else:
                a = ("adapter", self._sample(prompt, seed, adapter=True), seed)
                b = ("base", self._sample(prompt, seed, adapter=False), seed) if self.opponent == "base" else None
                b = b or ("original", prompt, None)
            if a[1] != b[1]:
                return a, b
        rewrite = a if a[1] != prompt else b
        if rewrite[1] != prompt:
            return rewrite, ("original", prompt, None)
        raise PigError(
            f"The policy rewrote {prompt!r} into the prompt itself {MAX_ATTEMPTS} times: there is no pair to choose "
            "from. Try another prompt."
        )

    def _sample(self, prompt: str, seed: int, adapter: bool) -> str:
        """One rewrite sampled at the policy's training temperature (as training and `pig evaluate` sample)."""
        from policies.rewriter import extract_rewrite, generate_completions

        rw = self.rewriter
        # A context-conditioned adapter (a population model, issue 21) reads the user's context; the base never does.
        extra = {"context": self.context_texts()} if adapter and rw.needs_context else {}
        off = rw.model.disable_adapter() if (not adapter and self.adapter is not None) else nullcontext()
        with off:
            answer = generate_completions(
                rw.model,
                rw.tokenizer,
                [prompt],
                max_new_tokens=rw.max_new_tokens,
                temperature=rw.train_temperature,
                seed=seed,
                system_prompt=rw.system_prompt,
                few_shot=rw.few_shot,
                **extra,
            )[0]
        return extract_rewrite(answer)

    def _follow_latest(self) -> None:
        """With `--adapter auto`, load the user's newest adapter once `pig update` has written one (in place of an
        older one, or of the population model)."""
        if not self.follow_latest or self.load_rewriter is None:
            return
        latest = latest_adapter_of(self.user_id, self.runs_dir)
        if latest is not None and (self.adapter is None or latest.resolve() != self.adapter.resolve()):
            self.rewriter, self.adapter = self.load_rewriter(latest), latest
            self._pending.clear()  # pairs of the old adapter can no longer be chosen

    # --------------------------------------------------------------------------------------------------- choices
    def record(self, pair_id: str, choice: str) -> ChoiceRecord:
        """Record the person's choice ("left", "right", "skip") about a pair on offer, into the user folder.

        A pair recorded before is not recorded again (`ChoiceRecord.duplicate`). After a new left/right choice the
        context is rebuilt (only the new reference goes through the reasoner).

        Raises:
            PigError: the pair is not on offer (proposed by an earlier run of the page, or too long ago).
            UserDataError: the choice cannot become a reference (`reward.choices.record_choice`).
        """
        with self._lock:
            proposal = self._pending.get(pair_id)
            if proposal is None:
                done = recorded_choice(self.user_dir, pair_id)
                if done is not None:
                    return done
                raise PigError(f"Pair {pair_id!r} is not on offer any more (the page restarted?): ask for a new pair.")
            record = record_choice(
                self.user_dir,
                self.user_id,
                pair_id,
                proposal.prompt,
                choice,
                proposal.left_image,
                proposal.right_image,
                shown=proposal.shown(),
            )
            self._pending.pop(pair_id, None)
            if not record.duplicate and record.reference is not None and self.pig is not None:
                self.refresh_context()
            return record

    def pending(self, pair_id: str) -> Proposal | None:
        return self._pending.get(pair_id)


# ---------------------------------------------------------------------------------------------------- helpers
def resolve_user(user: str, users_dir: str | Path, new_user: bool) -> tuple[Path, str]:
    """(folder, user id) of `user`: an existing user folder, or with `new_user`, `<users_dir>/<user>` to be created
    by the first choice."""
    from reward.users import UserDataError

    try:
        folder = resolve_user_dir(user, users_dir)
    except UserDataError:
        if not new_user:
            raise
        if not user.strip() or "/" in user or user.strip() in (".", ".."):
            raise ConfigError(f"--new_user needs a plain user id (no '/'), got {user!r}.") from None
        return Path(users_dir) / user.strip(), user.strip()
    return folder, user_id_of(str(folder.resolve()), users_dir)


def starting_adapter(user_id: str, runs_dir: str | Path) -> Path | None:
    """The adapter that rewrites for a user by default: their own (`runs/<user>/LATEST`), else the population model
    (`runs/population/LATEST`, issue 21: it reads the user's context, so it serves a user without an adapter), else
    None (the base policy)."""
    from policies.rewriter import POPULATION

    return latest_adapter_of(user_id, runs_dir) or latest_adapter_of(POPULATION, runs_dir)


def latest_adapter_of(user_id: str, runs_dir: str | Path) -> Path | None:
    """The adapter `runs/<user>/LATEST` names, or None when the user has none yet."""
    from policies.rewriter import LATEST, latest_adapter

    if not (Path(runs_dir) / user_id / LATEST).is_file():
        return None
    return latest_adapter(user_id, runs_dir)


def make_rewriter(adapter: str | Path | None, base_model: str | None, device: str, recipe: dict):
    """The policy that writes the pairs: `adapter` on its recorded base, or the bare base policy sampling at the
    recipe's temperature with its token cap (as training samples it)."""
    from policies.rewriter import PromptRewriter

    if adapter is not None:
        return PromptRewriter(adapter, device=device)
    rewriter = PromptRewriter(None, base_model=base_model, device=device)
    if "max_completion_length" in recipe:
        rewriter.max_new_tokens = int(recipe["max_completion_length"])
    if "temperature" in recipe:
        rewriter.train_temperature = float(recipe["temperature"])
    return rewriter
