"""16 samples for one prompt: the shared-prompt batched path vs 16 sequential generations (issue 4).

All contenders draw 16 samples of up to 128 new tokens for one chat prompt, with the same sampling
settings (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05: llama-cpp-python's defaults), 2 threads,
interleaved repetitions. The batched path evaluates the prompt once, shares its KV cache across the 16
sequences and decodes all of them in one ``llama_decode`` per step, with full per-token statistics on.

Samples end at different lengths (end-of-turn), so speed is compared per generated token:
``speedup = (sequential seconds / sequential tokens) / (batched seconds / batched tokens)``; raw wall
times and token counts are printed too.

Weights: "same weights" rows use the shipped Q4_1 file on both sides; "best configuration" uses a
BF16 (or Q8_0) copy converted once from it for the batched side (Q4_1 batches poorly on CPU), against
the fastest sequential baseline on the shipped file.

    python bench/batched_sampling.py [--reps 3] [--n 16] [--tokens 128] [--threads 2] [--weights bf16,q8_0]
"""

from __future__ import annotations

import argparse
import asyncio

from _llamacpp_common import STORY, Timing, console, high_level_llama, in_thread, machine, table, timed

from thinktwice.lm.gguf_weights import shipped_model_path
from thinktwice.lm.llamacpp import LlamaCppBackend
from thinktwice.types import Prompt, SamplingParams

SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default="bf16,q8_0", help="converted copies to try on the batched side")
    ap.add_argument("--no-own-sequential", action="store_true", help="skip thinktwice's own n=1 x N baseline")
    ap.add_argument("--seq-copies", action="store_true",
                    help="also time thinktwice's own sequential baseline on each converted copy (same weights)")
    args = ap.parse_args()
    in_thread(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    n, threads = args.n, args.threads
    console.print(f"[bold]batched_sampling[/]: {machine()}; {threads} threads, {n} samples x {args.tokens} "
                  f"new tokens, {args.reps} interleaved repetitions")
    extra = [w for w in args.weights.split(",") if w]
    loop = asyncio.new_event_loop()
    backends = {w: LlamaCppBackend(n_ctx=args.tokens + 256, max_batch=n, n_threads=threads, weights=w)
                for w in ["shipped", *extra]}
    for b in backends.values():
        loop.run_until_complete(b.call(lambda e: e.n_vocab))  # load (and convert) outside the timings
    shipped = backends["shipped"]
    raw = Prompt(raw=shipped.render_prompt(Prompt.user(STORY)))
    hl = high_level_llama(str(shipped_model_path()), threads, n_ctx=args.tokens + 256)
    params = SamplingParams(max_tokens=args.tokens, seed=0, top_logprobs=5, **SAMPLING)

    def batched(b: LlamaCppBackend) -> int:
        loop.run_until_complete(b.call(lambda e: e.clear_cache()))
        out = loop.run_until_complete(b.sample(raw, params, n=n))
        return sum(s.usage.completion_tokens for s in out)

    def own_sequential(b: LlamaCppBackend) -> int:
        total = 0
        for i in range(n):
            loop.run_until_complete(b.call(lambda e: e.clear_cache()))
            p = params.replace(seed=i, logprobs=False)
            total += loop.run_until_complete(b.sample(raw, p))[0].usage.completion_tokens
        return total

    def hl_sequential() -> int:
        total = 0
        for i in range(n):
            hl.reset()
            out = hl.create_completion(raw.raw, max_tokens=args.tokens, seed=i, **SAMPLING)
            total += int(out["usage"]["completion_tokens"])
        return total

    seq_hl = f"sequential: llama-cpp-python x{n} (shipped Q4_1)"
    seq_own = f"sequential: thinktwice n=1 x{n}, no stats (shipped Q4_1)"
    contenders = {seq_hl: hl_sequential}
    if not args.no_own_sequential:
        contenders[seq_own] = lambda: own_sequential(shipped)
    if args.seq_copies:
        for w in extra:
            contenders[f"sequential: thinktwice n=1 x{n}, no stats ({w} copy)"] = (
                lambda b=backends[w]: own_sequential(b))  # type: ignore[misc]
    for w, b in backends.items():
        label = "shipped Q4_1" if w == "shipped" else f"{w} copy"
        contenders[f"batched: thinktwice n={n}, full stats ({label})"] = lambda b=b: batched(b)  # type: ignore[misc]
    for fn in contenders.values():  # warm-up
        fn()
    rows = {k: Timing(k) for k in contenders}
    for _ in range(args.reps):
        for k, fn in contenders.items():
            rows[k].add(*timed(fn))
    console.print(table(f"{n} samples for one prompt", list(rows.values())))

    def speedup(seq: str, bat: str) -> float:
        return rows[seq].median_ms_per_token / rows[bat].median_ms_per_token

    same = f"batched: thinktwice n={n}, full stats (shipped Q4_1)"
    wall = rows[seq_hl].median / rows[same].median
    print(f"batched_wall_ratio_same_weights: {wall:.2f}")
    if seq_own in rows:
        print(f"batched_speedup_vs_own_sequential: {speedup(seq_own, same):.2f}")
    best_seq = min((k for k in rows if k.startswith("sequential")), key=lambda k: rows[k].median_ms_per_token)
    for w in extra:
        bat = f"batched: thinktwice n={n}, full stats ({w} copy)"
        print(f"batched_speedup_{w}_copy: {speedup(best_seq, bat):.2f}")
        same_copy = f"sequential: thinktwice n=1 x{n}, no stats ({w} copy)"
        if same_copy in rows:
            print(f"batched_speedup_{w}_both_sides: {speedup(same_copy, bat):.2f}")
    best_bat = min((k for k in rows if k.startswith("batched")), key=lambda k: rows[k].median_ms_per_token)
    console.print(f"best configuration: {best_bat!r} against {best_seq!r}")
    print(f"batched_speedup_best: {speedup(best_seq, best_bat):.2f}")
    print(f"batched_speedup: {speedup(seq_hl, same):.2f}")
    for b in backends.values():
        loop.run_until_complete(b.aclose())
    loop.close()


if __name__ == "__main__":
    main()
