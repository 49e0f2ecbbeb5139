"""The command lines of the trainer's tools (console scripts in pyproject.toml; `python -m` works too):

  set-export    python -m trainer.cli export     a training workdir or any model -> a SentenceTransformers dir
  set-sts-eval  python -m trainer.cli sts-eval   Spearman of the encoder on an STS benchmark file
  set-ir-eval   python -m trainer.cli ir-eval    nDCG@10, MRR@10, recall@100, MAP@100 on a BEIR-format set
  set-plan      python -m trainer.plan.planner   the compile-only TPU planner (its flags: trainer/plan/planner.py)

Each command's main lives here and nothing imports this module back.

A user's mistake (a bad flag, a missing workdir, model directory or file) is one line on stderr,
`<prog>: error: <message>`, and exit status 2; anything else keeps its traceback. The libraries
stay free of argparse.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline import storage
from pipeline.model_source import DEMO_MODEL
from pipeline.user_errors import ArgumentParser, UserError, as_user_errors, prog_name, run_cli

MODEL_HELP = f"Hugging Face name, local or gs:// directory, or {DEMO_MODEL}"


def _int_at_least(least: int):
    """An argparse type: an integer >= least."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or v < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {s!r}")
        return v

    return parse


def _encoding_flags(ap: argparse.ArgumentParser, max_seq_length: int | None, help: str | None = None) -> None:
    """--max_seq_length and --batch_size, as every tool that embeds texts takes them."""
    ap.add_argument("--max_seq_length", type=_int_at_least(2), default=max_seq_length, help=help)
    ap.add_argument("--batch_size", type=_int_at_least(1), default=64)


def cpu_devices_flag(ap) -> None:
    """--cpu_devices, as every tool that embeds many texts takes it (trainer/mesh.py split_cpu_into_devices)."""
    ap.add_argument(
        "--cpu_devices",
        type=_int_at_least(0),
        default=0,
        help="on a CPU: devices to split it into, each batch spread over them (0: one per core; "
        "1: one device on all cores); XLA_FLAGS' --xla_force_host_platform_device_count "
        "wins; accelerators are not affected",
    )


# ------------------------------------------------------------------------------------------ export


def export_main(argv: Sequence[str] | None = None) -> int:
    """set-export: exit 0 with the output directory printed, 2 for a user's mistake."""
    prog = prog_name("set-export", "python -m trainer.cli export")
    return run_cli(prog, lambda a: _export(a, prog), argv)


def _export(argv: Sequence[str] | None, prog: str) -> int:
    from trainer.model import export

    ap = ArgumentParser(prog=prog, description=export.__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--init_from", help=MODEL_HELP)
    src.add_argument("--workdir", help="training workdir: export its latest checkpoint")
    ap.add_argument("--output_dir", required=True, help="local or gs:// directory")
    ap.add_argument(
        "--max_seq_length",
        type=_int_at_least(2),
        default=None,
        help="default: the source's sentence_bert_config.json, or the run's max_seq_length",
    )
    args = ap.parse_args(argv)
    if args.workdir is not None and not storage.exists(args.workdir):
        raise UserError(f"--workdir={args.workdir}: no such directory")
    with as_user_errors(FileNotFoundError):  # the model, checkpoint or tokenizer files the flags name
        if args.init_from:
            out = export.export_from_pretrained(args.init_from, args.output_dir, args.max_seq_length)
        else:
            from trainer.train.checkpointing import restore_latest_params

            params, meta = restore_latest_params(args.workdir)
            out = export.export_from_checkpoint(params, meta, args.workdir, args.output_dir, args.max_seq_length)
    print(f"exported a SentenceTransformers model to {out}")
    return 0


# ----------------------------------------------------------------------------------------- STS eval


def sts_eval_main(argv: Sequence[str] | None = None) -> int:
    """set-sts-eval: prints the Spearman correlation; exit 2 for a user's mistake."""
    prog = prog_name("set-sts-eval", "python -m trainer.cli sts-eval")
    return run_cli(prog, lambda a: _sts_eval(a, prog), argv)


def _sts_eval(argv: Sequence[str] | None, prog: str) -> int:
    ap = ArgumentParser(
        prog=prog,
        description="Spearman correlation of the Flax encoder's cosine similarities "
        "with an STS file's gold scores (and, with --reference, of sentence-transformers on the "
        "same model directory).",
    )
    ap.add_argument("--model", required=True, help=MODEL_HELP)
    ap.add_argument("--sts", required=True, help="STS benchmark layout file (local or gs://)")
    ap.add_argument(
        "--prompt_name",
        default=None,
        help="a prompt of the model's config_sentence_transformers.json, "
        "prepended to both sentences of every pair (default: none)",
    )
    _encoding_flags(ap, 128)
    ap.add_argument("--reference", action="store_true", help="also run sentence-transformers (needs torch)")
    args = ap.parse_args(argv)

    from trainer.evaluators.sts import read_sts, sts_spearman
    from trainer.model.encode import encode, load_tokenizer
    from trainer.model.export import sentence_transformers_prompts
    from trainer.model.hf_loading import load_pretrained
    from trainer.prompts import prompt_text

    rows = read_sts(args.sts)
    with as_user_errors(FileNotFoundError):  # the model the flag names
        pre = load_pretrained(args.model)
    prompt = prompt_text(
        sentence_transformers_prompts(pre.source_dir)[0],
        args.prompt_name,
        "prompt_name",
        f"{args.model}'s config_sentence_transformers.json",
    )
    tok = load_tokenizer(pre.source_dir)
    ours = sts_spearman(
        lambda s: encode(pre.model, pre.params, tok, [prompt + x for x in s], args.batch_size, args.max_seq_length),
        rows,
    )
    named = f", prompt {args.prompt_name!r}" if args.prompt_name else ""
    print(f"flax encoder: spearman {ours:.4f} ({len(rows)} pairs, max_seq_length {args.max_seq_length}{named})")
    if args.reference:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(pre.source_dir, device="cpu")
        st.max_seq_length = args.max_seq_length
        # prompt="" when none is named: no prompt (no name would let the model's default prompt apply).
        ref = sts_spearman(lambda s: st.encode(list(s), batch_size=args.batch_size, prompt=prompt), rows)
        print(f"sentence-transformers: spearman {ref:.4f}; difference {abs(ours - ref):.2e}")
    return 0


# ------------------------------------------------------------------------------------------ IR eval


def ir_eval_main(argv: Sequence[str] | None = None) -> int:
    """set-ir-eval: prints one JSON object of retrieval metrics; exit 2 for a user's mistake."""
    prog = prog_name("set-ir-eval", "python -m trainer.cli ir-eval")
    return run_cli(prog, lambda a: _ir_eval(a, prog), argv)


def _ir_eval(argv: Sequence[str] | None, prog: str) -> int:
    ap = ArgumentParser(
        prog=prog,
        description="Retrieval metrics of the Flax encoder on a BEIR-format directory "
        "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv), as sentence-transformers' "
        "InformationRetrievalEvaluator computes them. Progress on stderr, one JSON object on stdout.",
    )
    ap.add_argument("--model", required=True, help=MODEL_HELP)
    ap.add_argument("--beir_dir", required=True, help="BEIR-format directory (local or gs://)")
    ap.add_argument("--split", default="test", help="qrels/<split>.tsv (default: test)")
    for role, texts in (("query", "queries"), ("corpus", "documents")):
        ap.add_argument(
            f"--{role}_prompt_name",
            default=None,
            help=f"a prompt of the model's config_sentence_transformers.json, prepended to the {texts} (default: none)",
        )
    _encoding_flags(ap, None, "default: the model's sentence_bert_config.json, else 128")
    cpu_devices_flag(ap)
    args = ap.parse_args(argv)

    import json

    from trainer.evaluators.ir_data import read_beir
    from trainer.mesh import local_mesh, split_cpu_into_devices

    data = read_beir(args.beir_dir, args.split)  # a malformed set stops here, before JAX and the model load
    split_cpu_into_devices(args.cpu_devices)  # before any JAX backend starts
    from trainer.evaluators.ir import IrEvaluator
    from trainer.model.encode import load_tokenizer
    from trainer.model.export import sentence_bert_max_len, sentence_transformers_prompts
    from trainer.model.hf_loading import load_pretrained
    from trainer.prompts import ir_prompts

    with as_user_errors(FileNotFoundError):  # the model the flag names
        pre = load_pretrained(args.model)
    max_len = args.max_seq_length or sentence_bert_max_len(pre.source_dir)
    prompts = ir_prompts(
        sentence_transformers_prompts(pre.source_dir)[0],
        args.query_prompt_name,
        args.corpus_prompt_name,
        f"{args.model}'s config_sentence_transformers.json",
    )
    evaluator = IrEvaluator(
        pre.model, load_tokenizer(pre.source_dir), [data], max_len, args.batch_size, mesh=local_mesh(), **prompts
    )
    metrics = evaluator.evaluate(pre.params, progress=True)[data.name]
    named = {
        f"{role}_prompt_name": name
        for role, name in (("query", args.query_prompt_name), ("corpus", args.corpus_prompt_name))
        if name
    }
    print(
        json.dumps(
            {
                "dataset": data.name,
                "split": args.split,
                "queries": len(data.query_ids),
                "corpus": len(data.corpus_ids),
                "max_seq_length": evaluator.max_seq_length,
                "pooling": pre.model.pooling,
                **named,
                **metrics,
            }
        )
    )
    return 0


COMMANDS = {"export": export_main, "sts-eval": sts_eval_main, "ir-eval": ir_eval_main}


def dispatch(argv: Sequence[str]) -> int:
    """`python -m trainer.cli COMMAND [flags]`: the console scripts' commands from a checkout."""
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m trainer.cli {{{','.join(COMMANDS)}}} [flags]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](list(argv[1:]))


if __name__ == "__main__":
    sys.exit(dispatch(sys.argv[1:]))
