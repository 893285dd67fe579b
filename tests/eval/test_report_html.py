"""Study reports: self-contained HTML with plots, Markdown, JSON, version warnings, headless rendering."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from thinktwice.eval.curves import parse_specs, replay
from thinktwice.eval.pool import PoolConfig, create_pool_run, draw_pool
from thinktwice.eval.pool_data import PoolData
from thinktwice.eval.report import ReportOptions, write_report
from thinktwice.eval.store import RunStore
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.tasks.gsm8k import Gsm8kTask
from thinktwice.types import Candidate, Decision, Sample, Usage

N_PROBLEMS = 5


def _handler(prompt, params, index):  # type: ignore[no-untyped-def]
    i = int(prompt.text().split("What is ")[1].split(" +")[0])
    r = (params.seed or 0) % 5
    answer = 2 * i if r < 3 else 2 * i + r
    return Reply(f"Adding them gives {answer}. The answer is {answer}.", confidence=0.95 if r < 3 else 0.5 + 0.1 * r)


async def _store(tmp_path: Path) -> tuple[Path, int, int]:
    data = tmp_path / "mini.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"})
                              for i in range(1, N_PROBLEMS + 1)) + "\n")
    task = Gsm8kTask(path=data)
    backend = ScriptedBackend(handler=_handler)
    problems = list(task.load())
    db = tmp_path / "runs.db"
    with RunStore(db) as store:
        cfg = PoolConfig(n=8, batch=4)
        pool_run = create_pool_run(store, task, backend, problems, cfg, spec={"task_options": {"path": str(data)}})
        await draw_pool(task, backend, problems, store, pool_run, cfg)
        store.set_status(pool_run, "done")
        # an eval run of another task version: shown, but not compared
        ev = store.create_run(kind="eval", config={"prompt_version": "p0", "grader_version": "g1"}, task="gsm8k",
                              task_version="gsm8k-p0-g1", backend="scripted", model="other", strategy="greedy")
        store.put_problems(ev, problems)
        for p in problems:
            s = Sample(text="The answer is 2.", usage=Usage(1, 20, 0, 5))
            d = Decision("2", 0.7, (Candidate(s, "2"),), 0, Usage(1, 20, 0, 5), strategy="greedy")
            store.put_decision(ev, p.id, d, p.gold == "2", candidate_correct=[p.gold == "2"])
    return db, pool_run, ev


def _nonblank_png(png: bytes) -> float:
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    return float((img.min(axis=2) < 0.9).mean())  # fraction of pixels that are not (near) white


async def test_report_is_self_contained_with_plots_tables_and_warning(tmp_path: Path) -> None:
    db, pool_run, ev = await _store(tmp_path)
    opts = ReportOptions(strategies=("greedy", "sc", "weighted-sc:self-certainty", "esc", "deepconf"),
                         permutations=30, n_boot=200)
    with RunStore(db, readonly=True) as store:
        paths = write_report(store, [pool_run, ev], tmp_path / "rep", opts)
        pool = PoolData.from_store(store, pool_run)
    page = paths["html"].read_text()
    # self-contained: no external stylesheet, script or image
    assert not re.search(r'<(link|script)[^>]+(href|src)=|src="(?!data:)', page)
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) >= 4
    for b64 in imgs:
        assert _nonblank_png(base64.b64decode(b64)) > 0.01
    # version mismatch banner names the eval run; drill-down per problem with question and gold
    assert "Version mismatch" in page and f"Runs {ev} have task/prompt/grader versions" in page
    assert page.count("<details>") == 2 * N_PROBLEMS
    assert "What is 3 + 3?" in page and "gold 6" in page
    summary = json.loads(paths["json"].read_text())
    assert summary["comparable_runs"] == [pool_run]  # ties between version groups go to the first run
    runs = {r["id"]: r for r in summary["runs"]}
    curves = {c["label"]: c for c in runs[pool_run]["curves"]}
    assert {"greedy", "sc", "esc", "pass@k"} <= set(curves)
    # the JSON holds the same numbers a direct replay gives
    direct = replay(pool, parse_specs("greedy,sc,weighted-sc:self-certainty,esc,deepconf"), n_perm=30, seed=0,
                    n_boot=200)
    assert np.allclose(curves["sc"]["accuracy"], direct[1].accuracy)
    assert runs[ev]["table"][0]["accuracy"] == pytest.approx(1 / N_PROBLEMS)  # only 1 + 1 has gold 2
    md = paths["md"].read_text()
    assert "| run |" in md and f"run{pool_run}_curve_tokens.png" in md
    assert (tmp_path / "rep" / f"run{pool_run}_curve_tokens.png").exists()


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _screenshot(html: Path, png: Path, tmp: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    cmd = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / ('ud-' + png.stem)}", f"--screenshot={png}", "--window-size=1200,2000",
           f"file://{html}"]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert png.exists(), "chromium wrote no screenshot"
    return np.asarray(mpimg.imread(png))[..., :3]


def _colored(img: np.ndarray) -> np.ndarray:
    # plot lines and bands are saturated colours; text, tables and borders are grey
    return (img.max(axis=2) - img.min(axis=2)) > 0.25


@pytest.mark.skipif(CHROMIUM is None, reason="headless rendering needs Debian's chromium (apt-get install chromium)")
async def test_report_renders_its_plots_in_headless_chromium(tmp_path: Path) -> None:
    db, pool_run, _ = await _store(tmp_path)
    opts = ReportOptions(strategies=("sc", "esc"), permutations=10, n_boot=50, drilldown=2)
    with RunStore(db, readonly=True) as store:
        paths = write_report(store, [pool_run], tmp_path / "rep", opts)
    shot = _screenshot(paths["html"], tmp_path / "shot.png", tmp_path)
    # control: the same page without its images
    bare = tmp_path / "rep" / "bare.html"
    bare.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', paths["html"].read_text()))
    control = _screenshot(bare, tmp_path / "bare.png", tmp_path)
    assert shot.shape == control.shape
    colored, colored_control = _colored(shot), _colored(control)
    assert colored.sum() > 2000 and colored.sum() > 20 * max(1, colored_control.sum())
    # the first plot's area (rows holding coloured pixels) is not blank: it has dark axes/text too
    rows = np.flatnonzero(colored.any(axis=1))
    region = shot[rows.min(): rows.max() + 1]
    assert (region.min(axis=2) < 0.5).mean() > 0.002
