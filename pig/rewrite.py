"""`pig rewrite --user U`: the user's own adapter, or else the population model given the user's context.

    pig rewrite --user demo "a lighthouse"                          # demo's adapter (runs/demo/LATEST)
    pig rewrite --user newcomer --users_dir runs/users "a sun"      # no adapter of their own: the population model
                                                                    # (runs/population/LATEST) reads their context

Which adapter serves `--user U` (`--adapter` overrides):

1. U's own adapter, `runs/U/LATEST` (trained with `--user U`, possibly started from the population model);
2. else the population model, `runs/population/LATEST` (trained with `--population`), and the output says so.

A context-conditioned adapter (the population model, or a per-user run started from it: `pig_adapter.json` records
`context_format`) reads U's context, the reasoner's rationales about U's choices, in its chat. It is the one cached in
`runs/U/context/` by the reasoner the adapter was trained with (recorded in `context_source`), else built now with
that reasoner from U's references in `--users_dir` (`--reasoner_model` names another), and cached; `--context FILE`
gives it directly. The serving itself (prompts, files, `--compare`, JSON) is `policies/cli.py`'s; this module adds
what needs the judge's side (users and contexts), which `policies/` may not import.
"""

from __future__ import annotations

import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from policies.cli import cmd_rewrite

    return cmd_rewrite(list(argv or []), resolve=resolve_for_user)


def resolve_for_user(args) -> tuple[Path, list[str] | None, list[str]]:
    """(adapter folder, the user's rationales when the adapter reads a context, notes saying where both came from).

    Raises:
        FileNotFoundError: the user has no adapter and there is no population model.
        AdapterError: a context-conditioned adapter without --user or --context.
    """
    from common.errors import AdapterError
    from policies.rewriter import LATEST, POPULATION, AdapterInfo, latest_adapter

    notes: list[str] = []
    if args.adapter:
        adapter = Path(args.adapter)
    else:
        key = runs_key(args.user, args.users_dir)
        own = Path(args.runs_dir) / key / LATEST
        population = Path(args.runs_dir) / POPULATION / LATEST
        if not own.is_file() and not population.is_file():
            raise FileNotFoundError(
                f"No adapter for user {key!r}: {own} is missing, and there is no population model ({population}) "
                f"either. Train one first: `accelerate launch rl/train_policy.py --user {key}` (this user's adapter) "
                "or `--population <folder of users>` (one model for every user, reading their context)."
            )
        if own.is_file():
            adapter = latest_adapter(key, args.runs_dir)  # a broken pointer is named with the fix
        else:
            adapter = latest_adapter(POPULATION, args.runs_dir)
            notes.append(
                f"population model: {key} has no adapter of their own ({own} is missing), so the population model "
                f"{adapter} (runs/{POPULATION}/LATEST) rewrites for them, reading their context"
            )
    info = AdapterInfo.load(adapter)
    if not info.needs_context or args.context:
        return adapter, None, notes
    if not args.user:
        raise AdapterError(
            f"The adapter {adapter} reads the user's context: pass --user U (their context is read from the cache "
            "or built) or --context FILE."
        )
    context, where = user_context(args, info.context_source)
    notes.append(f"context: {len(context.rationales)} rationales of {runs_key(args.user, args.users_dir)} ({where})")
    if not info.context_nearest:
        return adapter, context.texts, notes
    notes.append(f"the adapter reads the {info.context_nearest} rationales nearest each prompt, as it was trained")
    return adapter, nearest_reader(context, info), notes


def nearest_reader(context, info):
    """For an adapter trained with `--context_nearest K`: a function from prompts to each prompt's K nearest
    rationales (`reward.context.NearestRationales`, with the prompt embedder the run used)."""
    from reward import context as ctx
    from reward.similarity import TextEmbedder
    from rl.config import PigArguments

    embedder = info.context_source.get("prompt_embedder") or PigArguments.fidelity_model
    selector = ctx.NearestRationales(TextEmbedder(embedder))
    return lambda prompts: selector.select(prompts, context, info.context_nearest)


def runs_key(user: str, users_dir: str | Path) -> str:
    """The folder under runs/ of `user`: an id as given, or the `user_id` of a user folder named by its path."""
    from reward.users import user_id_of

    return user if "/" not in user and not user.endswith(".json") else user_id_of(user, users_dir)


def user_context(args, source: dict):
    """The user's context (`reward.context.UserContext`) for a context-conditioned adapter, and where it came from.

    The context the adapter's own reasoner (`source`, recorded at training) cached for the user's current references,
    else one built now (with `--reasoner_model`, or the recorded reasoner's folder) and cached.

    Raises:
        UserDataError: the user's folder is missing or malformed (it holds the references the context is built from).
        PigError: no reasoner to build a missing context with.
    """
    from common.errors import PigError
    from common.hub import check_models
    from reward import context as ctx
    from reward.backends import GenerationSettings
    from reward.pigreward import PIGReward
    from reward.templates import load_template
    from reward.users import load_user

    user = load_user(args.user, args.users_dir)
    recorded = source.get("reasoner_model_id")
    template = source.get("reasoner_template") or load_template("reasoner-v1").id
    generation = source.get("reasoner_generation") or GenerationSettings(max_new_tokens=96).to_dict()
    if recorded and not args.reasoner_model:
        key = ctx.context_key(recorded, template, user.references_hash(), generation)
        path = ctx.context_path(args.runs_dir, user.user_id, key)
        cached = ctx.load_cached(path, key)
        if cached is not None:
            return cached, f"cached {path}"
    model = args.reasoner_model or (recorded.rsplit("@", 1)[0] if recorded else None)
    if not model:
        raise PigError(
            "The adapter records no reasoner to build the user's context with: pass --reasoner_model (the judge's "
            "reasoner, e.g. .models/tiny-pigreward) or --context FILE."
        )
    check_models({"reasoner (--reasoner_model)": model})
    began = time.perf_counter()
    pig = PIGReward.from_names(
        judge=model,
        backend_kwargs=dict(device=args.device),
        reasoner_template=template_named(template),
        reasoner_generation=GenerationSettings(**generation),
        cache_dir=args.runs_dir,
    )
    context = pig.build_context(user)
    where = (
        f"built by {model} in {time.perf_counter() - began:.1f} s, cached in "
        f"{ctx.context_path(args.runs_dir, user.user_id, context.key)}"
    )
    if recorded and context.model_id != recorded:
        where += f"; the adapter was trained on contexts by {recorded}"
    return context, where


def template_named(template_id: str) -> str:
    """The name (`reward/templates/<name>.yaml`) of the template whose `id` is `template_id`, as a context records it.

    Raises:
        FileNotFoundError: no template of that id ships here.
    """
    from reward.templates import TEMPLATE_DIR, load_template

    for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
        if load_template(path.stem).id == template_id:
            return path.stem
    raise FileNotFoundError(
        f"The adapter's contexts were written with the reasoner template {template_id!r}, which is not in "
        f"{TEMPLATE_DIR}: pass --context FILE, or serve with the pig-rl version that trained the adapter."
    )
