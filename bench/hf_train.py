"""LoRA SFT then DPO of a Hugging Face model through ``thinktwice train sft|dpo`` on data harvested
from organism traces, with held-out measures before and after each stage.

    python bench/hf_train.py [--shape tiny|qwen05b] [--problems 300] [--sft-steps 200] [--dpo-steps 100]
                             [--out runs/bench-hf-train]

No weights can be downloaded here, so the model is randomly initialised (``--shape qwen05b``: the
Qwen2.5-0.5B layer shape with a BPE vocabulary trained on the harvested text; ``tiny`` for a CPU
smoke run). The pipeline is the real one: ``eval`` on the arith TRAIN split with the organism
(self-consistency, n=8) -> ``harvest --format sft --verify-steps`` and ``--format dpo`` -> problems
split 90/10 into train/held-out -> ``train sft`` (LoRA) -> merge -> ``train dpo`` (LoRA, reference =
the merged SFT model). Measured on the held-out problems: completion NLL per token (SFT) and the share
of pairs whose chosen solution has the higher log-likelihood (DPO); each stage's baseline is the model
it started from, measured in the same run. Ends with ``name: value`` headline lines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from thinktwice.cli import main as cli_main
from thinktwice.lm.hf_tiny import QWEN25_05B, bpe_tokenizer, qwen2_model


def cli(args: list[str]) -> dict[str, Any]:
    """Run a ``thinktwice`` command in this process; return its JSON result (stdout)."""
    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf):
        try:
            cli_main(args)
        except SystemExit as e:
            code = int(e.code or 0)
    text = buf.getvalue()
    if code != 0:
        raise SystemExit(f"thinktwice {' '.join(args[:2])} failed ({code}): {text[-500:]}")
    return json.loads(text[text.index("{"):])


def split(recs: list[dict[str, Any]], held_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    problems = sorted({str(r["meta"]["problem_id"]) for r in recs})
    random.Random(seed).shuffle(problems)
    held = set(problems[: max(1, round(held_share * len(problems)))])
    return ([r for r in recs if str(r["meta"]["problem_id"]) not in held],
            [r for r in recs if str(r["meta"]["problem_id"]) in held])


def write(path: Path, recs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def logprob(model: Any, tok: Any, prompt: str, completion: str) -> tuple[float, int]:
    """Sum of the completion tokens' log-probabilities given the prompt, and their count."""
    import torch

    p = tok(prompt, add_special_tokens=False).input_ids
    full = tok(prompt + completion, add_special_tokens=False).input_ids
    ids = torch.tensor([full], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
    comp = lp[len(p) - 1:]
    return float(comp.sum()), int(comp.numel())


def sft_nll(model: Any, tok: Any, recs: list[dict[str, Any]]) -> float:
    tot, n = 0.0, 0
    for r in recs:
        s, k = logprob(model, tok, r["prompt"], r["completion"])
        tot, n = tot - s, n + k
    return tot / max(n, 1)


def pref(model: Any, tok: Any, recs: list[dict[str, Any]]) -> tuple[float, float]:
    """Share of pairs whose chosen completion is more likely than the rejected one, and the mean margin."""
    wins, margins = 0, []
    for r in recs:
        c, _ = logprob(model, tok, r["prompt"], r["chosen"])
        j, _ = logprob(model, tok, r["prompt"], r["rejected"])
        wins += c > j
        margins.append(c - j)
    return wins / max(len(recs), 1), sum(margins) / max(len(margins), 1)


def load(path: Path, adapter: Path | None = None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if torch.cuda.is_available() else None)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), tok


def peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="tiny", choices=["tiny", "qwen05b"])
    ap.add_argument("--problems", type=int, default=300, help="arith train problems sampled for harvesting")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--sft-steps", type=int, default=200)
    ap.add_argument("--sft-lr", type=float, default=1e-3)
    ap.add_argument("--dpo-steps", type=int, default=100)
    ap.add_argument("--dpo-lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--data", default=None, help="a directory with sft.jsonl and dpo.jsonl from an earlier run "
                    "(skips sampling and harvesting)")
    ap.add_argument("--no-gradient-checkpointing", action="store_true",
                    help="pass --no-gradient-checkpointing to train sft|dpo (faster steps, more memory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-hf-train")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import torch

    err = Console(stderr=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.data:
        for fmt in ("sft", "dpo"):
            (out / f"{fmt}.jsonl").write_text((Path(args.data) / f"{fmt}.jsonl").read_text())
    else:
        store = out / "traces.db"
        store.unlink(missing_ok=True)
        run = cli(["eval", "--task", "arith", "--split", "train", "--limit", str(args.problems), "--backend",
                   "organism", "--strategy", "self-consistency", "-n", "8", "--store", str(store), "--seed",
                   str(args.seed), "--json"])
        run_id = str(run.get("run") or run.get("run_id") or 1)
        for fmt, extra in (("sft", ["--verify-steps"]), ("dpo", [])):
            cli(["harvest", "--run", run_id, "--store", str(store), "--format", fmt, "--out",
                 str(out / f"{fmt}.jsonl"), *extra])
    harvest_s = time.perf_counter() - t0
    sft_train, sft_held = split(read(out / "sft.jsonl"), 0.1, args.seed)
    dpo_train, dpo_held = split(read(out / "dpo.jsonl"), 0.1, args.seed)
    write(out / "sft-train.jsonl", sft_train)
    write(out / "dpo-train.jsonl", dpo_train)
    err.print(f"harvested {len(sft_train)}+{len(sft_held)} sft and {len(dpo_train)}+{len(dpo_held)} dpo records "
              f"(train+held-out) in {harvest_s:.0f} s")

    texts = [r["prompt"] + r["completion"] for r in sft_train] + [r["prompt"] + r["chosen"] for r in dpo_train]
    tok = bpe_tokenizer(args.vocab, texts)
    shape = {k: v for k, v in QWEN25_05B.items() if k != "vocab_size"} if args.shape == "qwen05b" else {}
    model = qwen2_model(len(tok), seed=args.seed, eos=tok.eos_token_id, **shape)
    base_dir = out / "base"
    model.to(torch.bfloat16 if torch.cuda.is_available() else torch.float32).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    params = sum(p.numel() for p in model.parameters())
    del model

    m, tok = load(base_dir)
    nll0 = sft_nll(m, tok, sft_held)
    del m
    reset_peak()
    common = ["--batch-size", str(args.batch_size), "--lora-r", str(args.lora_r), "--seed", str(args.seed),
              "--max-length", "512"] + (["--no-gradient-checkpointing"] if args.no_gradient_checkpointing else [])
    sft = cli(["train", "sft", "--model", str(base_dir), "--data", str(out / "sft-train.jsonl"), "--out",
               str(out / "sft-lora"), "--max-steps", str(args.sft_steps), "--lr", str(args.sft_lr), *common])
    sft_peak = peak_gib()
    m, tok = load(base_dir, out / "sft-lora")
    nll1 = sft_nll(m, tok, sft_held)
    merged = m.merge_and_unload()
    merged.save_pretrained(out / "sft-merged")
    tok.save_pretrained(out / "sft-merged")
    acc0, mar0 = pref(merged, tok, dpo_held)
    del m, merged
    reset_peak()
    dpo = cli(["train", "dpo", "--model", str(out / "sft-merged"), "--data", str(out / "dpo-train.jsonl"), "--out",
               str(out / "dpo-lora"), "--max-steps", str(args.dpo_steps), "--lr", str(args.dpo_lr), "--beta", "0.1",
               *common])
    dpo_peak = peak_gib()
    m, tok = load(out / "sft-merged", out / "dpo-lora")
    acc1, mar1 = pref(m, tok, dpo_held)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    t = Table(title=f"LoRA SFT -> DPO through TRL on {device}; model {args.shape} ({params / 1e6:.1f}M params, "
                    f"random init), held-out = {len(sft_held)} sft / {len(dpo_held)} dpo records")
    for c in ("stage", "records", "steps", "seconds", "steps/s", "first loss", "last loss", "peak GiB",
              "held-out before", "held-out after"):
        t.add_column(c)
    t.add_row("sft", str(sft["records"]), str(sft["steps"]), f"{sft['seconds']:.1f}",
              f"{sft['steps'] / sft['seconds']:.2f}", f"{sft['first_loss']:.3f}", f"{sft['loss']:.3f}",
              f"{sft_peak:.2f}", f"NLL {nll0:.3f}", f"NLL {nll1:.3f}")
    t.add_row("dpo", str(dpo["records"]), str(dpo["steps"]), f"{dpo['seconds']:.1f}",
              f"{dpo['steps'] / dpo['seconds']:.2f}", f"{dpo['first_loss']:.3f}", f"{dpo['loss']:.3f}",
              f"{dpo_peak:.2f}", f"acc {acc0:.3f} (margin {mar0:.2f})", f"acc {acc1:.3f} (margin {mar1:.2f})")
    Console(width=200).print(t)
    summary = {"device": device, "shape": args.shape, "params": params, "harvest_seconds": round(harvest_s, 1),
               "sft": sft, "dpo": dpo, "sft_heldout_nll": [nll0, nll1], "dpo_heldout_pref_acc": [acc0, acc1],
               "dpo_heldout_margin": [mar0, mar1], "peak_gib": {"sft": sft_peak, "dpo": dpo_peak},
               "args": vars(args)}
    (out / "bench.json").write_text(json.dumps(summary, indent=1))
    print(f"device: {device}")
    print(f"sft_heldout_nll_before: {nll0:.3f}")
    print(f"sft_heldout_nll_after: {nll1:.3f}")
    print(f"dpo_heldout_pref_acc_before: {acc0:.3f}")
    print(f"dpo_heldout_pref_acc_after: {acc1:.3f}")
    print(f"sft_steps_per_s: {sft['steps'] / sft['seconds']:.2f}")
    print(f"dpo_steps_per_s: {dpo['steps'] / dpo['seconds']:.2f}")
    print(f"peak_gpu_gib: {max(sft_peak, dpo_peak):.2f}")


if __name__ == "__main__":
    main()
