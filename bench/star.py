"""STaR on the organism: three iterations vs the base checkpoint, a gold-data control arm, B-STaR
monitor and plot, and DPO on harvested correct-vs-incorrect pairs (METHODS.md §10).

    python bench/star.py [--problems 128] [--k 8] [--steps 64] [--restart base] [--filter steps]
                         [--control-gold stream] [--eval-problems 200] [--dev-problems 200]
                         [--rationalize] [--dpo-lr 1e-6,3e-6,1e-5,3e-5] [--out runs/bench-star]

Without ``--rationalize`` the loop is STaR without rationalization (RFT-style). Everything runs on
CPU with one torch thread and deterministic algorithms, so a seed repeats its figures to the digit
on one machine and torch build; other CPUs may run other kernels (the ``numerics`` line says which:
``ATEN_CPU_CAPABILITY=avx2`` pins torch's kernels). The baseline (the starting checkpoint's held-out
greedy accuracy) is measured in the same run. Settings are chosen on a dev set of TRAIN-split
problems that STaR never samples (``--dev-problems``): the DPO learning rate is picked on it
automatically, and the STaR filter by comparing the dev columns of ``--filter answer`` and
``--filter steps`` runs; the TEST-split accuracy is reported for every setting but picks nothing.
Ends with ``name: value`` headline lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from thinktwice.train.star import StarConfig, eval_greedy, plot_bstar, run_star


def _dev(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="starting organism checkpoint (default: shipped small)")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--restart", default="base", choices=["base", "continue"])
    ap.add_argument("--eval-problems", type=int, default=200)
    ap.add_argument("--filter", default="steps", choices=["answer", "steps"],
                    help="select by the final answer only, or also require every equation to be right")
    ap.add_argument("--control-gold", default="stream", choices=["random", "story", "all", "stream"])
    ap.add_argument("--rationalize", action="store_true",
                    help="STaR's rationalization (hinted resampling of problems with no kept sample)")
    ap.add_argument("--dpo-steps", type=int, default=40)
    ap.add_argument("--dpo-lr", default="1e-6,3e-6,1e-5,3e-5",
                    help="DPO learning rates; with --dev-problems the best on the dev set is the headline")
    ap.add_argument("--dev-problems", type=int, default=200,
                    help="train-split problems never sampled, for choosing settings (0 = none)")
    ap.add_argument("--seed", type=int, default=0, help="problems, samples and fine-tuning order")
    ap.add_argument("--out", default="runs/bench-star")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    err = Console(stderr=True)
    cfg = StarConfig(iterations=args.iterations, k=args.k, temperature=args.temperature, restart=args.restart,
                     problems=args.problems, eval_problems=args.eval_problems, steps=args.steps,
                     batch_size=args.batch_size, lr=args.lr, verify_steps=args.filter == "steps", control=True,
                     control_gold=args.control_gold, dev_problems=args.dev_problems, rationalize=args.rationalize,
                     seed=args.seed)
    out = Path(args.out)
    t0 = time.perf_counter()
    res = run_star(cfg, args.checkpoint, out)
    star_seconds = time.perf_counter() - t0

    # DPO from the starting checkpoint on pairs harvested from iteration 1's samples (drawn from the base),
    # under the same numerics as the STaR arm (run_star restores the global flag when it returns).
    import torch

    torch.use_deterministic_algorithms(True)
    from thinktwice.organism.checkpoint import load
    from thinktwice.train.organism_dpo import dpo, preference_pairs
    from thinktwice.train.star import _problems

    base = load(args.checkpoint)
    triples = preference_pairs([p.question for p in res.train_problems], res.samples[1], per_problem=2,
                               seed=args.seed)
    test_ps = _problems(cfg, "test", cfg.eval_problems)
    t0 = time.perf_counter()
    sweep = []
    for lr in (float(x) for x in args.dpo_lr.split(",")):
        tuned, dsum = dpo(base, triples, steps=args.dpo_steps, beta=0.1, lr=lr, batch_size=8, seed=args.seed)
        row = {**dsum, "lr": lr, "accuracy": eval_greedy(tuned, test_ps, cfg.max_tokens)}
        if res.dev_problems:
            row["dev_accuracy"] = eval_greedy(tuned, res.dev_problems, cfg.max_tokens)
        sweep.append(row)
    pick = max(sweep, key=lambda r: r.get("dev_accuracy", r["accuracy"])) if res.dev_problems else sweep[0]
    dpo_acc = pick["accuracy"]
    dpo_seconds = time.perf_counter() - t0

    plot = plot_bstar(res, out / "bstar.png")
    t = Table(title=f"{cfg.name} on the organism ({cfg.problems} train problems x k={cfg.k}, {cfg.steps} steps/iter, "
                    f"restart={cfg.restart}, held-out greedy on {cfg.eval_problems} test problems)")
    for c in ("iter", "T", "pass@k", "sample acc", "distinct paths", "kept", "kept w/ bad steps", "exploitation",
              "balance", "STaR acc", "control acc", "STaR dev acc", "s (sample/train/eval)"):
        t.add_column(c)
    t.add_row("0 (base)", "", "", "", "", "", "", "", "", f"{res.base_accuracy:.3f}", f"{res.base_accuracy:.3f}",
              _dev(res.base_dev_accuracy), "")
    for r in res.iterations:
        b = r["bstar"]
        t.add_row(str(r["iteration"]), f"{r['temperature']:.2f}", f"{b['pass_at_k']:.3f}", f"{b['sample_accuracy']:.3f}",
                  f"{b['distinct_correct_paths']:.2f}",
                  str(r["kept"]) + (f" ({r['rationalized']} hinted)" if "rationalized" in r else ""),
                  str(r["kept_with_bad_steps"]),
                  f"{b['exploitation']:.3f}", f"{b['balance']:.3f}", f"{r['accuracy']:.3f}",
                  f"{r.get('control_accuracy', float('nan')):.3f}", _dev(r.get("dev_accuracy")),
                  f"{r['sample_seconds']}/{r['train_seconds']}/{r['eval_seconds']}")
    wide = Console(width=200)
    wide.print(t)
    d = Table(title=f"DPO (beta 0.1, reference = base) on {pick['pairs']} pairs from iteration 1, "
                    f"{pick['steps']} steps" + (" - learning rate picked on the dev set" if res.dev_problems else ""))
    for c in ("lr", "dev acc", "test acc", "last-batch loss", "margin"):
        d.add_column(c)
    d.add_row("base", _dev(res.base_dev_accuracy), f"{res.base_accuracy:.3f}", "", "")
    for r in sweep:
        d.add_row(f"{r['lr']:g}" + (" (picked)" if r is pick else ""), _dev(r.get("dev_accuracy")),
                  f"{r['accuracy']:.3f}", f"{r['loss']:.3f}", f"{r['reward_margin']:.2f}")
    wide.print(d)
    summary = {"star": res.to_dict(), "dpo": {"picked": pick, "sweep": sweep, "seconds": round(dpo_seconds, 1)},
               "star_seconds": round(star_seconds, 1), "plot": str(plot)}
    (out / "bench.json").write_text(json.dumps(summary, indent=1))
    err.print(f"wrote {out / 'bench.json'} and {plot}")
    ctl = res.control[-1]["accuracy"] if res.control else res.base_accuracy
    num = res.numerics
    usage = res.usage
    print(f"loop: {cfg.name}")
    print(f"numerics: torch {num['torch']}, kernels {num['cpu_capability']}, {num['threads']} thread, "
          f"deterministic {num['deterministic']}, cpu {num['cpu']}")
    print("generated_tokens: " + ", ".join(f"{k} {u.completion_tokens}" for k, u in usage.items()))
    print(f"base_accuracy: {res.base_accuracy:.3f}")
    print(f"star_final_accuracy: {res.final_accuracy:.3f}")
    print(f"star_gain_points: {100 * (res.final_accuracy - res.base_accuracy):.1f}")
    print(f"control_gain_points: {100 * (ctl - res.base_accuracy):.1f}")
    if res.iterations and "dev_accuracy" in res.iterations[-1]:
        print(f"star_dev_gain_points: {100 * (res.iterations[-1]['dev_accuracy'] - res.base_dev_accuracy):.1f}")
    print(f"dpo_lr: {pick['lr']:g}")
    print(f"dpo_change_points: {100 * (dpo_acc - res.base_accuracy):.1f}")
    print(f"wall_seconds: {star_seconds + dpo_seconds:.0f}")


if __name__ == "__main__":
    main()
