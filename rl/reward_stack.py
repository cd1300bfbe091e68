"""What training, `pig evaluate`, `pig matrix` and `pig diagnose` build alike from a configuration: the checks of the
configured models and the reward stack (PIGReward with the user's context, the renderer, the fidelity embedder).

A library module, so that the commands that evaluate need not import `rl/train_policy.py`, which is a script (it sets
W&B's environment when imported).
"""

from __future__ import annotations

import time

from rl.config import PigArguments


def check_configured_models(args: PigArguments, model_args=None) -> None:
    """Fail fast, naming every configured model that is neither a local folder, cached, nor reachable."""
    from common.hub import check_models

    local_judge = args.judge_backend == "transformers"  # a served judge is the server's business
    check_models(
        {
            "policy": model_args.model_name_or_path if model_args is not None else "",
            "renderer": args.renderer_model,
            "judge": args.judge_model if local_judge else "",
            "reasoner": (args.reasoner_model or args.judge_model) if local_judge else "",
            "fidelity": args.fidelity_model,
            "init_adapter": args.init_adapter or "",
        }
    )


def build_reward_stack(args: PigArguments, user, device: str, state):
    """PIGReward (the user's context built once, cached), the renderer and the fidelity embedder, from `args`.

    Returns (pig, context, renderer, embedder); shared by training and `policy_eval/evaluate_policy.py`.
    """
    renderer, embedder = _renderer_and_embedder(args, device)
    pig = build_pigreward(args, device, embedder)
    with state.main_process_first():  # the main process builds the context; the others then read its cache
        context = pig.build_context(user, rebuild=args.rebuild_context and state.is_main_process)
    if state.is_main_process:
        print(context_heading(context, len(user.references)))
        for r in context.rationales:
            print(f"  {r.reference_index}. {r.text}")
    return pig, context, renderer, embedder


def context_heading(context, n_references: int) -> str:
    """The console's line above a user's rationales; it says when `context_references` left older choices out."""
    window = ""
    if len(context.rationales) < n_references:
        window = f", from the most recent of {n_references} choices (--context_references 0 reads all)"
    return f"[context] {len(context.rationales)} rationales for {context.user_id} ({context.model_id}){window}:"


def build_population_stack(args: PigArguments, users: list, device: str, state):
    """`build_reward_stack` for a population: every user's context built once (cached) before training.

    Returns (pig, {user_id: context}, renderer, embedder).
    """
    renderer, embedder = _renderer_and_embedder(args, device)
    pig = build_pigreward(args, device, embedder)
    began, contexts = time.perf_counter(), {}
    with state.main_process_first():  # the main process builds the contexts; the others then read its cache
        for user in users:
            contexts[user.user_id] = pig.build_context(user, rebuild=args.rebuild_context and state.is_main_process)
    if state.is_main_process:
        first = next(iter(contexts.values()))
        lo, hi = min(len(c.rationales) for c in contexts.values()), max(len(c.rationales) for c in contexts.values())
        print(
            f"[context] {len(contexts)} users' contexts ({lo if lo == hi else f'{lo}-{hi}'} rationales each, by "
            f"{first.model_id}) ready in {time.perf_counter() - began:.1f} s; the first one:"
        )
        for r in first.rationales:
            print(f"  {first.user_id} {r.reference_index}. {r.text}")
    return pig, contexts, renderer, embedder


def _renderer_and_embedder(args: PigArguments, device: str):
    from reward.similarity import TextEmbedder
    from rl.render import Renderer

    return Renderer.from_args(args, device), TextEmbedder(args.fidelity_model, device=device)


def build_pigreward(args: PigArguments, device: str, embedder=None):
    """The frozen PIGReward (judge and reasoner) that `args` configure, with contexts cached under `runs_dir`.

    `embedder`: the fidelity embedder, which also picks each prompt's nearest rationales (`context_nearest`); loaded
    here when that is set and none is given."""
    from reward.backends import GenerationSettings
    from reward.pigreward import JudgeSettings, PIGReward

    if args.context_nearest and embedder is None:
        from reward.similarity import TextEmbedder

        embedder = TextEmbedder(args.fidelity_model, device=device)

    return PIGReward.from_names(
        judge=args.judge_model,
        reasoner=args.reasoner_model,
        backend=args.judge_backend,
        backend_kwargs=dict(
            device=args.judge_device if args.judge_device != "auto" else device,
            dtype=args.judge_dtype,
            batch_size=args.judge_batch_size,
            max_pixels=args.judge_max_pixels,
        )
        if args.judge_backend == "transformers"
        else dict(
            base_url=args.judge_base_url, api_key_env=args.judge_api_key_env, concurrency=args.judge_concurrency
        ),
        settings=JudgeSettings(
            mode=args.judge_mode,
            both_orders=args.judge_both_orders,
            strict=args.judge_strict,
            generation=GenerationSettings(
                max_new_tokens=args.judge_max_new_tokens,
                repetition_penalty=args.judge_repetition_penalty,
                stop_after_verdict=True,
            ),
            context_references=args.context_references,
            context_nearest=args.context_nearest,
        ),
        cache_dir=args.runs_dir,
        prompt_embedder=embedder,
    )
