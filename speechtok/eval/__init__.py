"""Codec evaluation: objective metrics and the `speechtok eval` harness."""

from speechtok.eval.harness import add_eval_arguments, evaluate_codec, load_items, run_eval, write_results

__all__ = ["add_eval_arguments", "evaluate_codec", "load_items", "run_eval", "write_results"]
