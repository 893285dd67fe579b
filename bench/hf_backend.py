"""Throughput of the hf backend's batched sampling with full-vocabulary token statistics, against plain
``model.generate`` (no statistics) on the same model, prompt and token counts.

A Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, 14 heads / 2 KV heads, vocab 151936, tied
embeddings) with random weights in bf16 on CUDA: no weights are downloaded. Token ids only (a word-level
``t0 .. tV`` tokenizer); no end-of-sequence token and no stop strings, so every one of the N sequences
runs to ``--max-new`` tokens in every variant. Warm-up first, then ``--reps`` repetitions; medians.

    python bench/hf_backend.py            # CUDA, N=16, 200-token prompt, 256 new tokens
    python bench/hf_backend.py --small    # a tiny model on CPU, a quick local check
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from thinktwice.lm.hf import HFBackend
from thinktwice.lm.hf_tiny import QWEN25_05B, id_tokenizer, qwen2_model
from thinktwice.types import Prompt, SamplingParams


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(fn: Callable[[], int], dev: torch.device, reps: int) -> tuple[float, float, int]:
    """Median seconds, peak memory (GiB, CUDA only) and tokens per run of ``fn`` (returns tokens made)."""
    times, tokens = [], 0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(reps):
        _sync(dev)
        t0 = time.perf_counter()
        tokens = fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return statistics.median(times), peak, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny model on CPU (quick check)")
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sync-every", type=int, default=16)
    args = ap.parse_args()
    con = Console()
    if args.small:
        dev, dtype, shape, vocab = torch.device("cpu"), torch.float32, {}, 4096
        args.prompt_tokens, args.max_new, args.reps = min(args.prompt_tokens, 32), min(args.max_new, 32), 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: pass --small for a CPU check")
        dev, dtype = torch.device("cuda"), torch.bfloat16
        shape = {k: v for k, v in QWEN25_05B.items() if k != "vocab_size"}
        vocab = QWEN25_05B["vocab_size"]
    model = qwen2_model(vocab, seed=0, dtype=dtype, device=dev, **shape)
    n_params = sum(p.numel() for p in model.parameters())
    tok = id_tokenizer(vocab)
    backend = HFBackend.from_model(model, tok, name="qwen2-random", device=str(dev),
                                   dtype="bf16" if dtype == torch.bfloat16 else "fp32",
                                   max_batch=args.n, sync_every=args.sync_every)
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(0, vocab, (args.prompt_tokens,), generator=g).tolist()
    prompt = Prompt(raw=" ".join(f"t{i}" for i in prompt_ids))
    assert backend.count_tokens(prompt) == args.prompt_tokens
    n, new = args.n, args.max_new

    def ours(stats: bool) -> Callable[[], int]:
        params = SamplingParams(max_tokens=new, temperature=1.0, seed=1, logprobs=stats, top_logprobs=5 if stats else 0)

        def go() -> int:
            out = asyncio.run(backend.sample(prompt, params, n=n))
            assert all(s.finish_reason == "length" for s in out)
            assert not stats or all(s.tokens is not None and s.tokens[0].entropy is not None for s in out)
            return sum(s.usage.completion_tokens for s in out)
        return go

    ids = torch.tensor([prompt_ids], device=dev)

    def generate() -> int:
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0,
                                 temperature=1.0, num_return_sequences=n, max_new_tokens=new, min_new_tokens=new,
                                 pad_token_id=0)
        return int((out.shape[1] - ids.shape[1]) * out.shape[0])

    variants: dict[str, Callable[[], int]] = {
        "model.generate (no stats)": generate,
        "hf backend, no stats": ours(False),
        "hf backend, full stats + top-5": ours(True),
    }
    for fn in variants.values():  # warm-up (kernels, allocator, tokenizer caches)
        fn()
    rows: dict[str, tuple[float, float, int]] = {}
    for name, fn in variants.items():
        rows[name] = measure(fn, dev, args.reps)
    base_tps = rows["model.generate (no stats)"][2] / rows["model.generate (no stats)"][0]
    t = Table(title=f"{'CPU tiny' if args.small else torch.cuda.get_device_name(dev)}: {n_params / 1e6:.0f}M params, "
                    f"N={n}, prompt {args.prompt_tokens}, {new} new tokens, median of {args.reps}")
    for col in ("variant", "seconds", "tokens/s", "vs generate", "peak GiB"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for name, (sec, peak, toks) in rows.items():
        t.add_row(name, f"{sec:.3f}", f"{toks / sec:,.0f}", f"{toks / sec / base_tps:.3f}x", f"{peak:.2f}")
    con.print(t)
    sec, peak, toks = rows["hf backend, full stats + top-5"]
    print(f"hf_stats_throughput_ratio: {toks / sec / base_tps:.3f}")
    print(f"hf_tokens_per_s: {toks / sec:.0f}")
    print(f"hf_nostats_tokens_per_s: {rows['hf backend, no stats'][2] / rows['hf backend, no stats'][0]:.0f}")
    print(f"generate_tokens_per_s: {base_tps:.0f}")
    print(f"hf_peak_mem_gib: {peak:.2f}")
    print(f"generate_peak_mem_gib: {rows['model.generate (no stats)'][1]:.2f}")


if __name__ == "__main__":
    main()
