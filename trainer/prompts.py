"""Prompt look-ups: a prompt name (a flag's value) -> its text in a prompt table (a manifest's or a
model's), shared by the evaluators, mining and the command lines. A name the table lacks is a
UserError naming the flag."""

from __future__ import annotations

from pipeline.user_errors import UserError


def prompt_text(prompts: dict[str, str], name: str | None, flag: str, owner: str) -> str:
    """The text of prompt `name` in a prompt table ("" when no name is given); a name the table lacks
    is a UserError naming the flag."""
    if not name:
        return ""
    if name not in prompts:
        raise UserError(
            f"--{flag}={name}: {owner} has no prompt {name!r} "
            f"({'it has ' + ', '.join(map(repr, prompts)) if prompts else 'it has no prompts'})"
        )
    return prompts[name]


def ir_prompts(
    prompts: dict[str, str], query_name: str | None, corpus_name: str | None, owner: str, flag_prefix: str = ""
) -> dict[str, str]:
    """IrEvaluator's query_prompt and corpus_prompt from the flags <prefix>query_prompt_name and
    <prefix>corpus_prompt_name, looked up in `prompts` (the table of `owner`)."""
    return {
        f"{role}_prompt": prompt_text(prompts, name, f"{flag_prefix}{role}_prompt_name", owner)
        for role, name in (("query", query_name), ("corpus", corpus_name))
    }


def training_ir_prompts(cfg, manifest) -> dict[str, str]:
    """A training run's IR prompts: its --ir_query_prompt_name / --ir_corpus_prompt_name in the manifest's
    table (train_main.py checks them before the run starts)."""
    return ir_prompts(
        manifest.prompts,
        cfg.ir_query_prompt_name,
        cfg.ir_corpus_prompt_name,
        f"the manifest {manifest.path}",
        flag_prefix="ir_",
    )
