"""Retrieval metrics of a model on a BEIR-format directory (trainer/evaluators/ir.py):

  python -m trainer.ir_eval --model=M --beir_dir=D [--split=test]    # or: set-ir-eval ...

prints one JSON object with ndcg@10, mrr@10, recall@100 and map@100. The command line lives in
trainer/cli.py.
"""

if __name__ == "__main__":
    import sys

    from trainer.cli import ir_eval_main

    sys.exit(ir_eval_main())
