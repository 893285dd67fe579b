"""``thinktwice harvest`` and ``thinktwice train star|sft|dpo``: from test-time traces to a better model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from thinktwice.cli.common import (
    ApiKeyOpt,
    BackendOptionsOpt,
    BaseUrlOpt,
    SeedOpt,
    StoreOpt,
    backend_from_options,
    default_store,
    err,
    out,
    parse_kv,
    run_async,
)
from thinktwice.errors import ConfigError

__all__ = ["register"]

train_app = typer.Typer(help="Training-time self-improvement: STaR on the organism, SFT/DPO of HF models.",
                        no_args_is_help=True)


def harvest_cmd(
    run: int = typer.Option(..., "--run", "-r", help="Run id in the store."),
    fmt: str = typer.Option("sft", "--format", "-f", help="sft, dpo or critique."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Output JSONL (TRL dataset format)."),
    store: Path | None = StoreOpt,
    conversational: bool = typer.Option(False, "--conversational", help="SFT as {'messages': [...]} records."),
    max_per_problem: int = typer.Option(4, "--max-per-problem", help="SFT: distinct rationales kept per problem."),
    pairs_per_problem: int = typer.Option(2, "--pairs-per-problem", help="DPO: correct-vs-incorrect pairs per problem."),
    no_dedup: bool = typer.Option(False, "--no-dedup", help="Keep identical reasoning paths."),
    verify_steps: bool = typer.Option(False, "--verify-steps",
                                      help="SFT: keep only arithmetic chains whose every equation is right."),
    allow_test: bool = typer.Option(False, "--allow-test", help="Harvest a run over a test split anyway."),
    rationalize: bool = typer.Option(False, "--rationalize",
                                     help="SFT: add hinted rationales for unsolved problems (needs --backend)."),
    backend: str | None = typer.Option(None, "--backend", "-b", help="Backend for --rationalize."),
    base_url: str | None = BaseUrlOpt,
    api_key: str | None = ApiKeyOpt,
    backend_options: list[str] | None = BackendOptionsOpt,
    k: int = typer.Option(4, "--k", help="Rationalization samples per unsolved problem."),
    seed: int = SeedOpt,
) -> None:
    """Write a training set (SFT, DPO pairs or critiques) from a stored run's samples and decisions.

    With --rationalize the hinted calls are stored as a run of kind ``rationalize`` and their usage is
    printed, so the data's generation cost is on record."""
    from thinktwice.eval.store import RunStore
    from thinktwice.train.formats import write_jsonl
    from thinktwice.train.harvest import HarvestConfig, harvest
    from thinktwice.train.rationalize import Rationalized
    from thinktwice.train.rationalize import rationalize as rationalize_fn

    cfg = HarvestConfig(format=fmt, conversational=conversational, dedup=not no_dedup, max_per_problem=max_per_problem,
                        pairs_per_problem=pairs_per_problem, verify_steps=verify_steps, allow_test=allow_test, seed=seed)
    if rationalize and (fmt != "sft" or backend is None):
        raise ConfigError("--rationalize needs --format sft and a --backend to sample hinted rationales")
    path = default_store(store)
    if not path.is_file():
        raise ConfigError(f"no run store at {path}")
    rat: Rationalized | None = None
    with RunStore(path, readonly=not rationalize) as st:
        st.get_run(run)  # a StoreError naming the recent runs when it is not there
        recs = harvest(st, run, cfg)
        if rationalize:
            be = backend_from_options(backend or "", base_url=base_url, api_key=api_key,
                                      **parse_kv(backend_options))

            async def go() -> Rationalized:
                try:
                    return await rationalize_fn(st, run, be, cfg, k=k, seed=seed)
                finally:
                    await be.aclose()

            rat = run_async(go())
            recs += rat.records
    n = write_jsonl(recs, out_path)
    sources: dict[str, int] = {}
    for r in recs:
        s = str(r["meta"].get("source"))
        sources[s] = sources.get(s, 0) + 1
    err.print(f"wrote {n} {fmt} records to {out_path}: " + (", ".join(f"{v} {k}" for k, v in sources.items()) or "none"))
    summary: dict[str, Any] = {"records": n, "format": fmt, "out": str(out_path), "sources": sources}
    if rat is not None:
        u = rat.usage
        err.print(f"rationalization (run {rat.run_id}): {rat.problems} unsolved problems, {u.calls} calls, "
                  f"{u.prompt_tokens} prompt tokens, {u.completion_tokens} generated tokens")
        summary["rationalize"] = {"run": rat.run_id, "problems": rat.problems, "samples": rat.samples,
                                  "usage": u.to_dict()}
    out.print_json(json.dumps(summary))


def star_cmd(
    task: str = typer.Option("arith", "--task", help="Only 'arith' (the organism's task)."),
    iterations: int = typer.Option(3, "--iterations", "-n"),
    k: int = typer.Option(8, "--k", help="Samples per problem per iteration."),
    temperature: float = typer.Option(0.8, "--temperature", "-t"),
    restart: str = typer.Option("base", "--restart", help="base (STaR: from M0) or continue (from M_{n-1})."),
    problems: int = typer.Option(128, "--problems", help="Train-split problems per iteration."),
    eval_problems: int = typer.Option(300, "--eval-problems", help="Held-out test-split problems (greedy)."),
    steps: int = typer.Option(64, "--steps", help="Fine-tuning steps per iteration."),
    lr: float = typer.Option(3e-4, "--lr"),
    batch_size: int = typer.Option(8, "--batch-size"),
    verify_steps: bool = typer.Option(False, "--verify-steps", help="Select only samples whose equations are all right."),
    adapt: bool = typer.Option(False, "--adapt", help="Pick temperature and threshold by the B-STaR balance score."),
    rationalize: bool = typer.Option(False, "--rationalize/--no-rationalize",
                                     help="STaR's rationalization: resample problems with no kept sample with the gold "
                                          "answer as a hint, train on the rationales without it. Off by default: the "
                                          "organism never saw a hint (without it the loop is RFT-style)."),
    control: bool = typer.Option(False, "--control", help="Also fine-tune the same steps on gold solutions."),
    control_gold: str = typer.Option("random", "--control-gold", help="Control gold data: the same problems in random, story or all orders, or a fresh stream."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Starting organism (default: shipped small)."),
    out_dir: Path = typer.Option(Path("runs/star"), "--out", "-o", help="Checkpoints, data, star.json, bstar.png."),
    seed: int = SeedOpt,
) -> None:
    """STaR iterations on the organism (with --rationalize; else STaR without rationalization, RFT-style) with
    the B-STaR monitor (table + JSON + plot)."""
    if task != "arith":
        raise ConfigError(f"train star runs on the organism's task 'arith', not {task!r}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError("the organism needs torch: pip install 'thinktwice[organism]'") from None
    from rich.table import Table

    from thinktwice.train.star import StarConfig, plot_bstar, run_star

    cfg = StarConfig(iterations=iterations, k=k, temperature=temperature, restart=restart, problems=problems,
                     eval_problems=eval_problems, steps=steps, lr=lr, batch_size=batch_size, verify_steps=verify_steps,
                     adapt=adapt, rationalize=rationalize, control=control, control_gold=control_gold, seed=seed)
    res = run_star(cfg, checkpoint, out_dir)
    plot = plot_bstar(res, out_dir / "bstar.png")
    t = Table(title=f"{cfg.name} ({res.seconds:.0f} s)")
    for c in ("iter", "T", "thr", "pass@k", "exploitation", "balance", "kept", "accuracy", "control"):
        t.add_column(c)
    t.add_row("0", "", "", "", "", "", "", f"{res.base_accuracy:.3f}", "")
    for r in res.iterations:
        b = r["bstar"]
        kept = str(r["kept"]) + (f" ({r['rationalized']} hinted)" if "rationalized" in r else "")
        t.add_row(str(r["iteration"]), f"{r['temperature']:.2f}", f"{r['threshold']:.1f}", f"{b['pass_at_k']:.3f}",
                  f"{b['exploitation']:.3f}", f"{b['balance']:.3f}", kept, f"{r['accuracy']:.3f}",
                  f"{r['control_accuracy']:.3f}" if "control_accuracy" in r else "")
    err.print(t)
    u = res.usage
    err.print("training-data generation: " + ", ".join(
        f"{k} {v.calls} calls / {v.completion_tokens} generated tokens" for k, v in u.items()))
    err.print(f"wrote {out_dir / 'star.json'} and {plot}")
    out.print_json(json.dumps(res.to_dict()))


GradCkptOpt = typer.Option(True, "--gradient-checkpointing/--no-gradient-checkpointing",
                           help="Recompute activations in the backward pass (less memory, slower).")


def _hf(kind: str, model: Path, data: Path, out_dir: Path | None, lora_r: int, epochs: float, max_steps: int | None,
        lr: float, batch_size: int, beta: float, max_length: int, seed: int, grad_ckpt: bool = True) -> None:
    from thinktwice.train.hf_trainers import HFTrainConfig, train_dpo, train_sft

    cfg = HFTrainConfig(lora_r=lora_r, lora_alpha=2 * lora_r, epochs=epochs, max_steps=max_steps or -1, lr=lr,
                        batch_size=batch_size, beta=beta, max_length=max_length, seed=seed,
                        gradient_checkpointing=grad_ckpt)
    dest = out_dir or Path(f"runs/{kind}-lora")
    fn = train_sft if kind == "sft" else train_dpo
    out.print_json(json.dumps(fn(model, data, dest, cfg)))


def sft_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Local Hugging Face model directory."),
    data: Path = typer.Option(..., "--data", "-d", help="JSONL: prompt/completion or messages records."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Adapter directory (default runs/sft-lora)."),
    lora_r: int = typer.Option(8, "--lora-r"),
    epochs: float = typer.Option(1.0, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    lr: float = typer.Option(1e-4, "--lr"),
    batch_size: int = typer.Option(4, "--batch-size"),
    max_length: int = typer.Option(1024, "--max-length"),
    grad_ckpt: bool = GradCkptOpt,
    seed: int = SeedOpt,
) -> None:
    """LoRA SFT through TRL's SFTTrainer (loss on completions only)."""
    _hf("sft", model, data, out_dir, lora_r, epochs, max_steps, lr, batch_size, 0.1, max_length, seed, grad_ckpt)


def dpo_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Local Hugging Face model directory."),
    data: Path = typer.Option(..., "--data", "-d", help="JSONL: prompt/chosen/rejected records."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Adapter directory (default runs/dpo-lora)."),
    lora_r: int = typer.Option(8, "--lora-r"),
    epochs: float = typer.Option(1.0, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    lr: float = typer.Option(5e-5, "--lr"),
    batch_size: int = typer.Option(4, "--batch-size"),
    beta: float = typer.Option(0.1, "--beta"),
    max_length: int = typer.Option(1024, "--max-length"),
    grad_ckpt: bool = GradCkptOpt,
    seed: int = SeedOpt,
) -> None:
    """LoRA DPO through TRL's DPOTrainer (reference = the frozen base model)."""
    _hf("dpo", model, data, out_dir, lora_r, epochs, max_steps, lr, batch_size, beta, max_length, seed, grad_ckpt)


def register(app: typer.Typer) -> None:
    app.command("harvest")(harvest_cmd)
    train_app.command("star")(star_cmd)
    train_app.command("sft")(sft_cmd)
    train_app.command("dpo")(dpo_cmd)
    app.add_typer(train_app, name="train")
