"""Benchmark the model organism: train a preset (or load a checkpoint) and measure greedy, SC@16 and
pass@16 accuracy on held-out arithmetic problems, with best-of-16 by mean logprob and by
self-certainty as extra rows.

    python bench/organism.py --preset small                 # train, then evaluate
    python bench/organism.py --load src/thinktwice/organism/checkpoints/small.pt
    python bench/organism.py --preset small --device cuda --steps-list 4,5,6 --temperatures 0.7,1.0

Ends with one ``name: value`` line per headline figure (at the first difficulty and temperature).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table


def evaluate(ckpt, steps: int | None, temperature: float, problems: int, n: int, seed: int = 0,
             distractors: int | None = None) -> dict:
    from thinktwice.organism.generate import generate
    from thinktwice.organism.train import prompt_ids
    from thinktwice.tasks.arith import ArithTask

    task = ArithTask(seed=seed, **({"steps": steps} if steps else {}),
                     **({"distractors": distractors} if distractors is not None else {}))
    model, tok = ckpt.model, ckpt.tokenizer
    rows = {"greedy": [], "sc": [], "pass": [], "sample": [], "bo_lp": [], "bo_sc": [], "tokens_greedy": 0,
            "tokens_sampled": 0}
    auroc_lp, auroc_sc = [], []
    t0 = time.perf_counter()
    for i, p in enumerate(task.load("test", problems)):
        ids = prompt_ids(tok, p.question)
        g = generate(model, tok, ids, 1, max_tokens=task.max_tokens, stats=False)[0]
        rows["greedy"].append(task.grade(task.extract(g.text), p))
        rows["tokens_greedy"] += len(g.ids)
        gens = generate(model, tok, ids, n, temperature=temperature, max_tokens=task.max_tokens,
                        seed=seed * 1_000_003 + i * n)
        answers = [task.extract(x.text) for x in gens]
        ok = [task.grade(a, p) for a in answers]
        rows["tokens_sampled"] += sum(len(x.ids) for x in gens)
        votes = Counter(task.canonical(a) for a in answers if a is not None)
        top = max(votes.values()) if votes else 0
        winner = next((task.canonical(a) for a in answers if a is not None and votes[task.canonical(a)] == top),
                      None)
        rows["sc"].append(winner is not None and task.grade(winner, p))
        rows["pass"].append(any(ok))
        rows["sample"].append(float(np.mean(ok)))
        mlp = [float(np.mean([s.logprob for s in x.stats])) if x.stats else -1e9 for x in gens]
        msc = [float(np.mean([s.self_certainty for s in x.stats])) if x.stats else -1e9 for x in gens]
        rows["bo_lp"].append(ok[int(np.argmax(mlp))])
        rows["bo_sc"].append(ok[int(np.argmax(msc))])
        auroc_lp += list(zip(mlp, ok))
        auroc_sc += list(zip(msc, ok))
    secs = time.perf_counter() - t0

    def auroc(pairs):
        pos = [s for s, y in pairs if y]
        neg = [s for s, y in pairs if not y]
        if not pos or not neg:
            return float("nan")
        a, b = np.array(pos)[:, None], np.array(neg)[None, :]
        return float((a > b).mean() + 0.5 * (a == b).mean())

    return {
        "steps": task.steps, "distractors": task.distractors, "temperature": temperature, "problems": problems, "n": n,
        "greedy": float(np.mean(rows["greedy"])), "sc": float(np.mean(rows["sc"])),
        "pass": float(np.mean(rows["pass"])), "sample": float(np.mean(rows["sample"])),
        "bo_logprob": float(np.mean(rows["bo_lp"])), "bo_self_certainty": float(np.mean(rows["bo_sc"])),
        "auroc_logprob": auroc(auroc_lp), "auroc_self_certainty": auroc(auroc_sc),
        "tokens_greedy": rows["tokens_greedy"], "tokens_sampled": rows["tokens_sampled"],
        "eval_seconds": round(secs, 1),
        "gen_tokens_per_second": round((rows["tokens_greedy"] + rows["tokens_sampled"]) / secs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--load", default=None, help="evaluate this checkpoint instead of training")
    ap.add_argument("--save", default=None, help="where to save the trained checkpoint")
    ap.add_argument("--train-steps", type=int, default=None, help="override the preset's optimizer steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps-list", default="", help="difficulties (events per problem); default: the task's")
    ap.add_argument("--distractors", type=int, default=None, help="distractor sentences (default: the task's)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for sampling)")
    ap.add_argument("--temperatures", default="0.8")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)

    import torch

    from thinktwice.organism.checkpoint import load
    from thinktwice.organism.presets import preset
    from thinktwice.organism.train import train

    err = Console(stderr=True)
    torch.set_num_threads(a.threads)
    result: dict = {"preset": a.preset, "device": a.device}
    if a.load:
        ckpt = load(a.load)
        result["preset"] = Path(a.load).stem
        result["train"] = ckpt.meta.get("summary", {})
    else:
        over = {"seed": a.seed} | ({"steps": a.train_steps} if a.train_steps else {})
        cfg = preset(a.preset, **over)
        last = [0.0]

        def progress(step: int, total: int, info: dict) -> None:
            if step == total or time.perf_counter() - last[0] > 10:
                last[0] = time.perf_counter()
                err.print(f"step {step}/{total} loss {info['loss']:.3f}")

        ckpt, summary = train(cfg, a.save, device=a.device, progress=progress, eval_problems=0)
        result["train"] = summary
    if a.device != "cpu":
        ckpt.model.to(a.device)
    evals = []
    for s in [int(x) for x in a.steps_list.split(",") if x] or [None]:
        for t in [float(x) for x in a.temperatures.split(",")]:
            r = evaluate(ckpt, s, t, a.problems, a.n, a.seed, a.distractors)
            evals.append(r)
            err.print(json.dumps(r))
            if a.json:
                Path(a.json).write_text(json.dumps({**result, "evals": evals}, indent=1))
    result["evals"] = evals
    table = Table(title=f"organism {a.preset} ({result['train'].get('params', '?')} params, {a.device})")
    for col in ("steps", "distr.", "T", "greedy", f"SC@{a.n}", f"pass@{a.n}", "per-sample", "best-of lp", "best-of sc",
                "AUROC lp/sc", "eval s"):
        table.add_column(col)
    for r in evals:
        table.add_row(str(r["steps"]), str(r["distractors"]), str(r["temperature"]), f"{r['greedy']:.3f}", f"{r['sc']:.3f}",
                      f"{r['pass']:.3f}", f"{r['sample']:.3f}", f"{r['bo_logprob']:.3f}",
                      f"{r['bo_self_certainty']:.3f}",
                      f"{r['auroc_logprob']:.2f}/{r['auroc_self_certainty']:.2f}", str(r["eval_seconds"]))
    Console(width=140).print(table)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    h = evals[0]
    print(f"greedy_accuracy: {h['greedy']:.3f}")
    print(f"sc{a.n}_accuracy: {h['sc']:.3f}")
    print(f"pass{a.n}: {h['pass']:.3f}")
    print(f"train_seconds: {result['train'].get('train_seconds', float('nan'))}")
    print(f"train_tokens_per_second: {result['train'].get('tokens_per_second', float('nan'))}")
    print(f"generated_tokens_per_second: {h['gen_tokens_per_second']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
