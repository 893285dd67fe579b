"""The report's honest numbers: tokens-matched SC baselines, native-n billing, labels and notes."""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thinktwice.eval import report as report_mod
from thinktwice.eval.curves import parse_specs, replay
from thinktwice.eval.matched import match_sc
from thinktwice.eval.plots import curve_figure
from thinktwice.eval.pool import PoolConfig, draw_pool
from thinktwice.eval.pool_data import PoolData
from thinktwice.eval.report import ReportOptions, build_report, write_report
from thinktwice.eval.store import RunStore
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.tasks.gsm8k import Gsm8kTask
from thinktwice.types import Capabilities

STRATS = ("greedy", "sc", "weighted-sc:self-certainty", "best-of-n:self-certainty", "adaptive-consistency", "esc",
          "deepconf", "deepconf-online")


def organism_like(prompt: Any, params: Any, index: int) -> Reply:
    """Multi-step sums: each problem has its own accuracy; wrong chains are longer and less confident."""
    i = int(prompt.text().split("What is ")[-1].split(" +")[0])
    rng = random.Random((params.seed or 0) * 131 + index)
    p_right = 0.15 + 0.8 * ((i * 37) % 61) / 60
    right = rng.random() < p_right
    steps = 2 + i % 4 + (0 if right else rng.randint(0, 3))
    chain = " ".join(f"step {j}: {rng.randint(1, 60)} + {rng.randint(1, 60)} carried;" for j in range(steps))
    answer = 2 * i if right else 2 * i + rng.choice([-3, -2, -1, 1, 2, 3, 10])
    conf = (0.85 if right else 0.65) + rng.uniform(-0.1, 0.1)
    return Reply(f"{chain} The answer is {answer}.", confidence=conf)


def make_store(tmp_path: Path, *, problems: int = 60, n: int = 16, native: bool = True, batch: int | None = None,
               record_native: bool = True, temperature: float = 0.8) -> tuple[Path, int]:
    """A pool run of an organism-like scripted model (``record_native=False``: an old run without the key)."""
    data = tmp_path / "sums.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"})
                              for i in range(1, problems + 1)) + "\n")
    task = Gsm8kTask(path=data)
    caps = Capabilities(logprobs=True, top_logprobs=5, full_vocab=True, native_n=native, monitor=True)
    backend = ScriptedBackend(handler=organism_like, capabilities=caps, model="organism-like")
    probs = list(task.load())
    cfg = PoolConfig(n=n, batch=batch or n, temperature=temperature)
    config: dict[str, Any] = {"task_options": {"path": str(data)}, "pool": cfg.to_dict(),
                              "prompt_version": task.prompt_version, "grader_version": task.grader_version}
    if record_native:
        config["native_n"] = native
    db = tmp_path / f"runs-{native}-{record_native}.db"
    with RunStore(db) as store:
        run = store.create_run(kind="pool", config=config, task="gsm8k", task_version=task.version,
                               backend="scripted", model="organism-like", strategy=f"pool-{n}", seed=0)
        store.put_problems(run, probs)
        asyncio.run(draw_pool(task, backend, probs, store, run, cfg))
    return db, run


def _section(db: Path, run: int, **kw: Any) -> Any:
    opts = ReportOptions(**{"strategies": STRATS, "permutations": 20, "n_boot": 100, "drilldown": 2, **kw})
    with RunStore(db, readonly=True) as store:
        return build_report(store, [run], opts)["sections"][0]


def _row(sec: Any, strategy: str, k: int) -> dict[str, Any]:
    return next(r for r in sec.rows if r["spec"] == strategy and r["k"] == k)


@pytest.fixture(scope="module")
def native_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    return make_store(tmp_path_factory.mktemp("native"), problems=12, n=8, batch=4)


def test_report_bills_a_native_pool_as_one_call(native_store: tuple[Path, int]) -> None:
    db, run = native_store
    sec = _section(db, run)
    sc8 = _row(sec, "sc", 8)
    with RunStore(db, readonly=True) as store:
        prompt = PoolData.from_store(store, run).prompt_tokens
    # sampled in calls of n=4, but the backend could serve n=8 in one call: one call, one prompt
    assert sc8["calls"] == 1.0 and sc8["prompt_tokens"] == pytest.approx(float(prompt.mean()))
    assert _row(sec, "esc", 8)["calls"] > 1.0  # ESC re-sends the prompt per window
    assert _row(sec, "pass@k", 8)["calls"] == 1.0  # the oracle draws SC@8's samples
    assert sec.summary["native_n"] is True and sec.summary["native_n_source"] == "run config"
    assert any("with native n (run config)" in n for n in sec.notes)


@pytest.mark.parametrize("record", [True, False])
def test_report_bills_a_non_native_pool_per_sample(tmp_path: Path, record: bool) -> None:
    db, run = make_store(tmp_path, problems=6, n=8, native=False, record_native=record)
    sec = _section(db, run, strategies=("sc",))
    assert _row(sec, "sc", 8)["calls"] == 8.0
    assert sec.summary["native_n"] is False


def test_native_n_is_inferred_from_stored_samples_without_the_config_key(tmp_path: Path) -> None:
    db, run = make_store(tmp_path, problems=6, n=8, batch=8, native=True, record_native=False)
    sec = _section(db, run, strategies=("sc",))
    assert _row(sec, "sc", 8)["calls"] == 1.0
    assert sec.summary["native_n_source"] == "inferred from the stored samples"


def test_report_matches_sc_at_the_rows_tokens(native_store: tuple[Path, int]) -> None:
    db, run = native_store
    opts = ReportOptions(strategies=("sc", "esc", "adaptive-consistency"), permutations=20, n_boot=100)
    with RunStore(db, readonly=True) as store:
        sec = build_report(store, [run], opts)["sections"][0]
        pool = PoolData.from_store(store, run, window=opts.window)
    sc, esc = replay(pool, parse_specs("sc,esc"), n_perm=20, seed=0, n_boot=100, native_n=True)
    row = _row(sec, "esc", 8)
    m = match_sc(row["tokens"], sc.tokens)
    assert row["matched_tokens"] == pytest.approx(row["tokens"], rel=1e-9) and not row["matched_capped"]
    assert row["matched_tokens"] >= row["tokens"] * (1 - 1e-9)
    assert (row["matched_k"], row["matched_weight"], row["matched_sc"]) == (m.k, m.weight, m.label)
    # the paired difference uses the interpolated baseline on the same orders
    base = m.interpolate(lambda j: sc.correct[:, :, j - 1])
    assert row["diff_vs_matched"] == pytest.approx(float((esc.correct[:, :, 7] - base).mean()))
    assert row["diff_lo"] <= row["diff_vs_matched"] <= row["diff_hi"]
    for r in sec.rows:  # SC itself is its own baseline
        if r["spec"] == "sc":
            assert r["matched_sc"] == f"SC@{r['k']}" and r["diff_vs_matched"] == 0.0


def test_greedy_is_named_sc_at_1_of_the_pool(native_store: tuple[Path, int], tmp_path: Path) -> None:
    db, run = native_store
    opts = ReportOptions(strategies=("greedy", "sc"), permutations=10, n_boot=50, drilldown=1)
    with RunStore(db, readonly=True) as store:
        paths = write_report(store, [run], tmp_path / "rep", opts)
    summary = json.loads(paths["json"].read_text())
    (greedy,) = [r for r in summary["runs"][0]["table"] if r["spec"] == "greedy"]
    assert greedy["strategy"] == "SC@1 (first sample at T=0.8)"
    curves = {c["label"]: c["display"] for c in summary["runs"][0]["curves"]}
    assert curves["greedy"] == "SC@1 (first sample at T=0.8)" and curves["sc"] == "sc"
    page = paths["html"].read_text()
    assert "<td>SC@1 (first sample at T=0.8)</td>" in page and "<td>greedy</td>" not in page
    assert "| SC@1 (first sample at T=0.8) |" in paths["md"].read_text()


def test_plots_are_small_multiples_with_the_legend_outside() -> None:
    pool = PoolData.synthetic(30, 16, seed=1)
    specs = parse_specs("greedy,sc,weighted-sc:self-certainty,best-of-n:self-certainty,esc,deepconf,"
                        "adaptive-consistency")
    curves = replay(pool, specs, n_perm=10, n_boot=50)
    from thinktwice.eval.curves import pass_at_k_points

    curves.append(pass_at_k_points(pool, n_boot=50))
    fig = curve_figure(curves, labels={"greedy": "SC@1 (first sample at T=0.7)"})
    try:
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert len(panels) == 6  # one per strategy besides SC and pass@k
        titles = [ax.get_title() for ax in panels]
        assert titles[0] == "SC@1 (first sample at T=0.7)" and not any(t == "greedy" for t in titles)
        assert len({(ax.get_xlim(), ax.get_ylim()) for ax in panels}) == 1  # shared axes
        for ax in panels:  # SC's band (grey) is drawn in every panel beside the strategy
            assert len(ax.collections) >= 1 and not ax.get_legend()
        fig.canvas.draw()
        (legend,) = fig.legends
        box = legend.get_window_extent()
        assert not any(box.overlaps(ax.get_window_extent()) for ax in panels)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_deepconf_online_window_longer_than_the_traces_is_noted(native_store: tuple[Path, int]) -> None:
    db, run = native_store
    sec = _section(db, run, strategies=("sc", "deepconf-online"))
    rows = [r for r in sec.rows if r["spec"] == "deepconf-online"]
    assert rows and all("window ≥ every trace: never cuts one" in r["notes"] for r in rows)
    # one section note says why (the replay's own, when it gives one, else the report's)
    (note,) = [n for n in sec.notes if n.startswith("deepconf-online")]
    assert "window" in note and ("never cuts a trace" in note or "no trace is cut" in note)
    short = _section(db, run, strategies=("sc", "deepconf-online"), window=4)  # traces are ~20-60 tokens
    assert not any("never cuts" in n for r in short.rows for n in r["notes"])
    assert not any(n.startswith("deepconf-online: window of") for n in short.notes)


@dataclass
class _Approx:
    """A PoolData that says which of its scores are approximate (what pool_data adds)."""

    pool: PoolData
    approx_scores: frozenset[str]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


def test_approximate_signals_are_labelled_everywhere(native_store: tuple[Path, int], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    db, run = native_store
    real = PoolData.from_store

    class Shim:
        @staticmethod
        def from_store(*a: Any, **kw: Any) -> Any:
            return _Approx(real(*a, **kw), frozenset({"self-certainty"}))

    monkeypatch.setattr(report_mod, "PoolData", Shim)
    seen: list[str] = []
    orig = report_mod.curve_png_bytes

    def spy(curves: Any, **kw: Any) -> bytes:
        seen.extend(kw["labels"].values())
        return orig(curves, **kw)

    monkeypatch.setattr(report_mod, "curve_png_bytes", spy)
    opts = ReportOptions(strategies=("sc", "best-of-n:self-certainty", "esc"), permutations=10, n_boot=50,
                         drilldown=1)
    with RunStore(db, readonly=True) as store:
        paths = write_report(store, [run], tmp_path / "rep", opts)
    page = paths["html"].read_text()
    tag = "(approx., top-k)"
    assert f"<td>best-of-n:self-certainty {tag}</td>" in page  # comparison table
    assert f"<td>self-certainty {tag}</td>" in page  # calibration table
    assert f"self-certainty {tag}=" in page  # drill-down scores
    assert "<td>esc</td>" in page and f"esc {tag}" not in page  # ESC reads no signal
    assert f"best-of-n:self-certainty {tag}" in seen  # plot labels
    summary = json.loads(paths["json"].read_text())
    (sig,) = [s for s in summary["runs"][0]["signals"] if s["signal"] == "self-certainty"]
    assert sig["label"] == f"self-certainty {tag}" and sig["approx"] is True
    assert f"self-certainty {tag}" in paths["md"].read_text()


def test_capped_rows_say_so(tmp_path: Path) -> None:
    from thinktwice.eval.report import _table_rows

    row = {"run": 1, "model": "m", "strategy": "x", "k": 8, "accuracy": 0.5, "lo": 0.4, "hi": 0.6, "tokens": 900.0,
           "calls": 1.0, "prompt_tokens": 20.0, "matched_sc": "SC@8 (capped)", "matched_tokens": 800.0,
           "matched_capped": True, "notes": [match_sc(900.0, [100.0 * k for k in range(1, 9)]).note]}
    (cells,) = _table_rows([row])
    assert cells[9] == "SC@8 (capped)" and cells[10] == "800 (capped: fewer)"
    assert "capped at the pool size" in cells[12]


def test_report_cli_passes_the_window(native_store: tuple[Path, int], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from thinktwice.cli import app

    db, run = native_store
    res = CliRunner().invoke(app, ["report", str(run), "--store", str(db), "--out", str(tmp_path / "r"),
                                   "--strategies", "sc,deepconf-online", "-B", "5", "--window", "4"])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert "never cuts a trace" not in page and re.search(r"<td>deepconf-online</td>", page)


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.skipif(CHROMIUM is None, reason="headless rendering needs Debian's chromium (apt-get install chromium)")
def test_a_60_problem_report_renders_one_panel_per_strategy(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    db, run = make_store(tmp_path, problems=60, n=16)
    opts = ReportOptions(permutations=40, n_boot=100, drilldown=3)  # the default strategies
    with RunStore(db, readonly=True) as store:
        paths = write_report(store, [run], tmp_path / "rep", opts)
    # only the tokens plot: its small multiples are what the reader must be able to tell apart
    page = paths["html"].read_text()
    first = re.search(r'<img class="plot" alt="accuracy vs generated tokens"[^>]+>', page)
    assert first is not None
    solo = tmp_path / "rep" / "plot.html"
    solo.write_text(f"<!DOCTYPE html><html><body style='margin:0'>{first.group(0)}</body></html>")
    png = tmp_path / "shot.png"
    subprocess.run([CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'ud'}", f"--screenshot={png}", "--window-size=1300,700",
                    f"file://{solo}"], capture_output=True, timeout=120, check=False)
    assert png.exists(), "chromium wrote no screenshot"
    img = np.asarray(mpimg.imread(png))[..., :3]
    blue = (img[..., 2] - img[..., 0] > 0.25) & (img[..., 2] - img[..., 1] > 0.1)  # the strategies' lines
    rows = np.flatnonzero(blue.any(axis=1))
    assert rows.size, "no strategy curve on the page"
    top = blue[rows.min(): rows.min() + (rows.max() - rows.min()) // 2]  # the first row of panels
    cols = np.flatnonzero(top.any(axis=0))
    panels = 1 + int((np.diff(cols) > 15).sum())  # column runs of blue separated by gaps
    assert panels == 4  # seven strategies in rows of four, each in its own panel

