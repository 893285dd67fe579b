"""ProcessBench F1 of a critic beside the trivial baselines, so a reader sees whether it beats chance.

    python bench/critic.py --subset gsm8k --limit 100            # embedded SmolLM2-135M (default)
    python bench/critic.py --backend openai --base-url URL --model M
    python bench/critic.py --prompt thinktwice                     # our prompt instead of the released one

The default prompt and parser are the released ProcessBench ones (comparable with the published F1);
the released runs allow 8192 tokens per reply, so raise --max-tokens for models that think at length.

The organism is not run as a critic: it only knows its synthetic arithmetic format and cannot read
ProcessBench's natural-language solutions (its critic F1 would be meaningless).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console
from rich.table import Table

from thinktwice.cli.common import backend_from_options
from thinktwice.eval.processbench import load_processbench, pb_metrics, run_processbench, trivial_predictions
from thinktwice.lm.meter import Meter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", default="gsm8k")
    ap.add_argument("--limit", type=int, default=None,
                    help="N items, half erroneous and half correct, in file order (default: all)")
    ap.add_argument("--backend", default="llamacpp")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt", default="official", choices=["official", "thinktwice"])
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("-n", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()

    items = load_processbench(args.subset, limit=args.limit)
    lm = backend_from_options(args.backend, base_url=args.base_url, model=args.model)
    labels = [it.label for it in items]

    async def go():  # type: ignore[no-untyped-def]
        try:
            return await run_processbench(items, Meter(lm), prompt=args.prompt, n=args.n,
                                          max_tokens=args.max_tokens, concurrency=args.concurrency)
        finally:
            await lm.aclose()

    t0 = time.perf_counter()
    res = asyncio.run(go())
    secs = time.perf_counter() - t0
    rows = [(f"critic: {args.backend} {getattr(lm, 'model', '')}", res.metrics, res.ci, res.confusion)]
    baselines = {}
    for kind in ("no-error", "step-0"):
        m, c, conf = pb_metrics(labels, trivial_predictions(items, kind))
        rows.append((f"always {kind}", m, c, conf))
        baselines[kind] = m["f1"]
    table = Table(title=f"ProcessBench {args.subset}: {len(items)} items ({int(res.metrics['n_err'])} erroneous), "
                        f"{args.prompt} prompt")
    for col in ("predictor", "acc erroneous", "acc correct", "F1 [95% CI]", "confusion"):
        table.add_column(col)
    for name, m, c, conf in rows:
        table.add_row(name, f"{m['acc_err']:.3f}", f"{m['acc_cor']:.3f}",
                      f"{m['f1']:.3f} [{c['f1'][0]:.3f}, {c['f1'][1]:.3f}]",
                      ", ".join(f"{k} {v}" for k, v in sorted(conf.items())))
    con = Console()
    con.print(table)
    con.print(f"{res.usage.calls} calls, {res.usage.completion_tokens} generated tokens in {secs:.0f} s; "
              f"{res.truncated} replies cut at {args.max_tokens} tokens")
    print(f"critic_f1: {res.metrics['f1']:.3f}")
    print(f"critic_acc_err: {res.metrics['acc_err']:.3f}")
    print(f"critic_acc_cor: {res.metrics['acc_cor']:.3f}")
    print(f"baseline_no_error_f1: {baselines['no-error']:.3f}")
    print(f"baseline_step0_f1: {baselines['step-0']:.3f}")
    print(f"items: {len(items)}")
    print(f"prompt: {args.prompt}")
    print(f"truncated_replies: {res.truncated}")


if __name__ == "__main__":
    main()
