"""Full per-token statistics vs plain generation on the embedded backend (issue 4).

Contenders, all greedy on the same weights (the shipped SmolLM2-135M-Instruct Q4_1), 2 threads,
128 new tokens, prompt evaluated from scratch each time, interleaved repetitions:

- llama-cpp-python ``Llama.create_completion`` without logprobs (plain generation);
- llama-cpp-python ``create_completion(logprobs=5)`` with ``logits_all=True`` (the naive route; --naive);
- thinktwice's decode loop without statistics;
- thinktwice's decode loop with chosen-token logprob, entropy, self-certainty and top-5 from the full
  49,152-token distribution at every token.

Prints a table and ``stats_overhead: X`` = with-statistics time per token / plain (llama-cpp-python)
time per token (target <= 1.15), plus the ratio against thinktwice's own loop without statistics.

    python bench/token_stats.py [--reps 3] [--tokens 128] [--threads 2] [--naive]
"""

from __future__ import annotations

import argparse
import asyncio

from _llamacpp_common import STORY, Timing, console, high_level_llama, in_thread, machine, table, timed

from thinktwice.lm.gguf_weights import shipped_model_path
from thinktwice.lm.llamacpp import LlamaCppBackend
from thinktwice.types import Prompt, SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--naive", action="store_true", help="also time create_completion(logprobs=5)")
    args = ap.parse_args()
    in_thread(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    path = str(shipped_model_path())
    console.print(f"[bold]token_stats[/]: {machine()}; {args.threads} threads, {args.tokens} new tokens, "
                  f"{args.reps} interleaved repetitions")
    lm = LlamaCppBackend(n_ctx=1024, max_batch=1, n_threads=args.threads)
    raw = Prompt(raw=lm.render_prompt(Prompt.user(STORY)))  # same text for both libraries
    hl = high_level_llama(path, args.threads)
    naive = high_level_llama(path, args.threads, logits_all=True) if args.naive else None
    greedy = {"max_tokens": args.tokens, "temperature": 0.0}
    loop = asyncio.new_event_loop()

    def ours(stats: bool) -> int:
        loop.run_until_complete(lm.call(lambda e: e.clear_cache()))
        s = loop.run_until_complete(lm.sample(raw, SamplingParams(**greedy, logprobs=stats, top_logprobs=5)))
        return s[0].usage.completion_tokens

    def high(model, logprobs: int | None) -> int:  # type: ignore[no-untyped-def]
        model.reset()
        out = model.create_completion(raw.raw, max_tokens=args.tokens, temperature=0.0, logprobs=logprobs)
        return int(out["usage"]["completion_tokens"])

    contenders = {
        "llama-cpp-python create_completion (plain)": lambda: high(hl, None),
        "thinktwice loop, no statistics": lambda: ours(False),
        "thinktwice loop, full statistics (top-5)": lambda: ours(True),
    }
    if naive is not None:
        contenders["llama-cpp-python create_completion(logprobs=5)"] = lambda: high(naive, 5)
    for fn in contenders.values():  # warm-up: page in the weights, build graphs
        fn()
    rows = {k: Timing(k) for k in contenders}
    for _ in range(args.reps):
        for k, fn in contenders.items():
            rows[k].add(*timed(fn))
    console.print(table("Generation with and without full-vocabulary statistics", list(rows.values())))
    plain = rows["llama-cpp-python create_completion (plain)"]
    own = rows["thinktwice loop, no statistics"]
    full = rows["thinktwice loop, full statistics (top-5)"]
    per_rep = [f / p for f, p in zip(full.ms_per_token, plain.ms_per_token)]
    console.print(f"per-repetition ratios vs plain: {', '.join(f'{r:.3f}' for r in per_rep)}")
    if naive is not None:
        r = rows["llama-cpp-python create_completion(logprobs=5)"].median_ms_per_token / plain.median_ms_per_token
        print(f"naive_logprobs_overhead: {r:.2f}")
    print(f"own_loop_vs_plain: {own.median_ms_per_token / plain.median_ms_per_token:.3f}")
    print(f"stats_overhead_vs_own_loop: {full.median_ms_per_token / own.median_ms_per_token:.3f}")
    print(f"stats_overhead: {full.median_ms_per_token / plain.median_ms_per_token:.3f}")
    loop.run_until_complete(lm.aclose())
    loop.close()


if __name__ == "__main__":
    main()
