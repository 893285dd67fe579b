"""Study reports: a self-contained HTML page, a Markdown file and a JSON summary for stored runs.

For each pool run: accuracy-vs-tokens and -vs-calls curves replayed from the pool (METHODS §1.3),
one panel per strategy beside self-consistency; a comparison table at k = 1, 2, 4, ... N with 95%
two-level bootstrap intervals and the paired difference against self-consistency at the same
generated tokens (METHODS §1.5: SC@k or the SC@k/SC@(k+1) mixture whose expected tokens equal the
row's, its correctness interpolated per order and problem, on the same orders), with the
baseline's own tokens beside the row's; the calibration of every per-sample signal (AUROC, ECE,
Brier; reliability and risk-coverage plots), and a per-problem drill-down.

Calls and prompt tokens are billed as the pool's backend could serve them: when it returned n
samples per call (the run config's ``native_n``, else inferred from the stored samples: the
siblings of one n-sample call carry zero calls), SC@k is one call and one prompt. ``greedy``
replayed from a pool is its first sample (SC@1 at the pool's temperature) and is named so.
Signals computed from a top-k renormalisation (``PoolData.approx_scores``) are marked
``(approx., top-k)``, and a DeepConf-online window at least as long as the traces (which then
never cuts one) is noted on its rows. Eval runs add their decisions (accuracy with a Wilson interval, compute,
decision confidence calibration). Runs are compared only when task, prompt and grader versions
match; otherwise the page opens with a warning naming the differing runs. Plots are inlined as
base64 PNGs, so the page needs no other file.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from thinktwice.errors import ConfigError, StoreError
from thinktwice.eval.curves import Curve, CurveSpec, parse_specs, pass_at_k_points, replay, table_ks
from thinktwice.eval.matched import match_sc
from thinktwice.eval.metrics import two_level_bootstrap
from thinktwice.eval.plots import curve_png_bytes, png_data_uri, signal_label, strategy_label
from thinktwice.eval.pool_data import PoolData, answer_format_for
from thinktwice.eval.store import RunInfo, RunStore

__all__ = ["DEFAULT_STRATEGIES", "ReportOptions", "build_report", "pool_native_n", "pool_temperature", "version_key",
           "window_note", "write_report"]

log = logging.getLogger(__name__)

DEFAULT_STRATEGIES = ("greedy", "sc", "weighted-sc:self-certainty", "best-of-n:self-certainty",
                      "adaptive-consistency", "esc", "deepconf", "deepconf-online")
_TEMPLATE = Path(__file__).with_name("assets") / "report.html"


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """``strategies`` replayed on pool runs (those needing a missing signal are skipped with a note);
    ``permutations`` B; ``n_boot`` bootstrap draws; ``drilldown`` problems shown per run;
    ``samples_shown`` samples listed per problem; ``window`` DeepConf group size."""

    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    permutations: int = 200
    n_boot: int = 1000
    seed: int = 0
    drilldown: int = 50
    samples_shown: int = 16
    window: int = 2048

    def __post_init__(self) -> None:
        if self.permutations < 1 or self.n_boot < 1:
            raise ConfigError("permutations and n_boot must be >= 1")


def version_key(info: RunInfo) -> tuple[str | None, str | None, str | None, str | None]:
    """(task, task version, prompt version, grader version): runs compare only when these match."""
    cfg = info.config or {}
    return (info.task, info.task_version, cfg.get("prompt_version"), cfg.get("grader_version"))


@dataclass
class _RunSection:
    info: RunInfo
    curves: list[Curve] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # curve label -> the name shown to readers
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)
    drill: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def build_report(store: RunStore, run_ids: Sequence[int], options: ReportOptions | None = None) -> dict[str, Any]:
    """Compute everything the report shows; returns a dict with ``sections`` and ``warnings``."""
    opts = options or ReportOptions()
    if not run_ids:
        raise ConfigError("name at least one run to report on")
    infos = [store.get_run(r) for r in run_ids]
    keys = {i.id: version_key(i) for i in infos}
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in infos:
        groups.setdefault(keys[i.id], []).append(i.id)
    warnings = []
    if len(groups) > 1:
        ref = max(groups.values(), key=len)
        for key, ids in groups.items():
            if ids is not ref:
                warnings.append(
                    f"Runs {', '.join(map(str, ids))} have task/prompt/grader versions {_fmt_key(key)}, unlike "
                    f"runs {', '.join(map(str, ref))} ({_fmt_key(keys[ref[0]])}): they are shown but not compared."
                )
    comparable = max(groups.values(), key=len)
    sections = []
    for info in infos:
        sec = _RunSection(info)
        if info.kind == "pool":
            _pool_section(store, sec, opts)
        else:
            _decision_section(store, sec, opts)
        sections.append(sec)
    return {"sections": sections, "warnings": warnings, "comparable": comparable}


def _fmt_key(key: tuple[Any, ...]) -> str:
    return "task={} version={} prompt={} grader={}".format(*key)


def pool_native_n(info: RunInfo, samples: Sequence[Any]) -> tuple[bool, str]:
    """Whether the pool's backend returned n samples per call, and how that is known.

    The run config's ``native_n`` when recorded; else inferred from ``samples`` (stored rows): the
    siblings of a native n-sample call carry ``usage.calls == 0``. A native backend drawn one
    sample per call leaves no such trace, so a pool without the config key then reads as not native.
    """
    v = (info.config or {}).get("native_n")
    if isinstance(v, bool):
        return v, "run config"
    native = any(r.sample.usage.calls == 0 for r in samples if getattr(r, "stage", "sample") == "sample")
    return native, "inferred from the stored samples"


def pool_temperature(info: RunInfo) -> float | None:
    """The pool's sampling temperature from its run config (None when not recorded)."""
    t = ((info.config or {}).get("pool") or {}).get("temperature")
    return float(t) if isinstance(t, (int, float)) else None


def window_note(pool: PoolData, window: int) -> tuple[str, str] | None:
    """(short, full) notes when the DeepConf window is at least as long as most traces, which the
    online stop then never cuts (a trace of T <= window tokens has one group, ending at its end)."""
    tok = np.asarray(pool.completion_tokens, dtype=float)
    if not tok.size:
        return None
    share = float((tok <= window).mean())
    if share >= 1.0:
        return ("window ≥ every trace: never cuts one",
                f"window of {window} tokens is at least as long as every trace (longest {tok.max():.0f} tokens): "
                "the online rule never cuts a trace mid-way, so cutting saves no tokens here and low-confidence "
                "traces only lose their votes (pass a smaller --window to measure the cut)")
    if share >= 0.5:
        return (f"window ≥ {100 * share:.0f}% of traces: those are never cut",
                f"window of {window} tokens is at least as long as {100 * share:.0f}% of the traces (median "
                f"{np.median(tok):.0f} tokens): those are never cut early")
    return None


def _pool_section(store: RunStore, sec: _RunSection, opts: ReportOptions) -> None:
    info = sec.info
    fmt = answer_format_for(info)
    try:
        pool = PoolData.from_store(store, info.id, fmt, window=opts.window)
    except (StoreError, ConfigError) as e:
        sec.notes.append(f"no curves: {e}")
        return
    approx = frozenset(getattr(pool, "approx_scores", frozenset()))
    temperature = pool_temperature(info)
    stored = store.samples(info.id, with_tokens=False)
    native, how = pool_native_n(info, stored)
    specs: list[CurveSpec] = []
    for spec in parse_specs(list(opts.strategies)):
        name = spec.score_name
        if name is not None and name not in pool.scores:
            sec.notes.append(f"skipped {spec.label}: the pool has no {name!r} scores")
            continue
        if spec.kind == "deepconf-online" and pool.dc_values is None:
            sec.notes.append("skipped deepconf-online: the pool has no per-token confidences")
            continue
        specs.append(spec)
    if not any(s.kind == "sc" for s in specs):  # the compute-matched baseline of every row
        specs.insert(0, CurveSpec("sc"))
    curves = replay(pool, specs, n_perm=opts.permutations, seed=opts.seed, n_boot=opts.n_boot, native_n=native)
    sc = next(c for c in curves if c.label == "sc")
    oracle = pass_at_k_points(pool, n_boot=opts.n_boot, seed=opts.seed)
    # the oracle draws SC@k's samples: bill it SC@k's calls and prompts (one call each with native n)
    curves.append(dataclasses.replace(oracle, calls=sc.calls.copy(), prompt_tokens=sc.prompt_tokens.copy()))
    sec.curves = curves
    labels = {c.label: strategy_label(c.label, temperature=temperature, approx=approx) for c in curves}
    labels["pass@k"] = "pass@k (oracle)"
    sec.labels = labels
    online_note = window_note(pool, opts.window) if any(s.kind == "deepconf-online" for s in specs) else None
    replay_notes = [n for c in curves for n in getattr(c, "notes", ())]  # the replay's caveats, if it states them
    if online_note and not any(n.startswith("deepconf-online") for n in replay_notes):
        sec.notes.append(f"deepconf-online: {online_note[1]}")
    sec.notes.extend(dict.fromkeys(replay_notes))
    sec.notes.append(f"calls and prompt tokens billed as a backend {'with' if native else 'without'} native n "
                     f"({how}): SC@k is {'one call' if native else 'k calls'}, ESC one call per window")
    approx_here = sorted(a for a in approx if a in pool.scores)
    if approx_here:
        sec.notes.append(f"{', '.join(approx_here)}: computed from token statistics renormalised over the top "
                         "alternatives the backend returned, so approximate; marked (approx., top-k)")
    P, N = pool.shape
    for c in curves:
        ks = [k for k in table_ks(N) if k in c.ks]
        matches = [match_sc(c.at(k)["tokens"], sc.tokens) for k in ks] if c.label != "pass@k" else []
        diff = None
        if matches and c.correct is not None and sc.correct is not None:
            diff = _matched_difference(c.correct, sc.correct, ks, matches, opts)
        for i, k in enumerate(ks):
            row: dict[str, Any] = {"run": info.id, "model": info.model, "strategy": labels[c.label],
                                   "spec": c.label, **c.at(k), "notes": []}
            if matches:
                m = matches[i]
                row.update(matched_sc=m.label, matched_k=m.k, matched_weight=m.weight, matched_tokens=m.tokens,
                           matched_capped=m.capped)
                if m.note:
                    row["notes"].append(m.note)
            if diff is not None:
                row.update(diff_vs_matched=float(diff[0][i]), diff_lo=float(diff[1][i]), diff_hi=float(diff[2][i]))
            if c.label == "deepconf-online" and online_note:
                row["notes"].append(online_note[0])
            sec.rows.append(row)
    title = f"run {info.id}: {info.model or info.backend} on {info.task} ({P} problems x {N} samples)"
    sec.images["curve_tokens"] = curve_png_bytes(curves, x="tokens", title=title, labels=labels)
    sec.images["curve_calls"] = curve_png_bytes(curves, x="calls", title=title, labels=labels)
    _signal_calibration(pool, sec, approx)
    _pool_drilldown(store, pool, sec, opts, approx)
    endpoints = sorted({r.sample.endpoint for r in stored if r.sample.endpoint})
    sec.summary = {"problems": P, "samples_per_problem": N, "endpoints": endpoints,
                   "mean_completion_tokens": float(pool.completion_tokens.mean()),
                   "sample_accuracy": float(pool.correct.mean()), "native_n": native, "native_n_source": how,
                   "temperature": temperature, "approx_scores": approx_here}


def _matched_difference(correct: np.ndarray, sc_correct: np.ndarray, ks: Sequence[int], matches: Sequence[Any],
                        opts: ReportOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and two-level bootstrap interval of (row correct - matched SC), per table budget.

    ``correct`` and ``sc_correct`` are (B, P, K) on the same orders; the baseline's correctness on each
    (order, problem) is the mixture's interpolation of SC@k's and SC@(k+1)'s (common random numbers).
    """
    def sc_at(j: int) -> np.ndarray:
        return sc_correct[:, :, j - 1]

    d = np.stack([correct[:, :, k - 1].astype(float) - m.interpolate(sc_at) for k, m in zip(ks, matches)],
                 axis=2)
    lo, hi = two_level_bootstrap(d, n_boot=opts.n_boot, seed=opts.seed)
    return d.mean(axis=(0, 1)), lo, hi


def _signal_calibration(pool: PoolData, sec: _RunSection, approx: frozenset[str] = frozenset()) -> None:
    """Per-sample calibration of every pool signal against sample correctness (signals engineer's code)."""
    from thinktwice.eval.calibration import mapping_for, signal_report, to_unit
    from thinktwice.eval.calibration_plots import reliability_diagram, risk_coverage_plot

    if not pool.scores:
        return
    y = pool.correct.ravel()
    groups = np.repeat(np.asarray(pool.problem_ids), pool.shape[1])
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(pool.scores):
            s = pool.scores[name].ravel()
            if np.isnan(s).all():
                continue
            rep = signal_report(name, s, y, groups, n_boot=200, approx=name in approx)
            sec.signals.append({**rep.to_dict(), "label": signal_label(name, approx), "approx": name in approx})
            curves[signal_label(name, approx)] = (s, y)
        best = max(sec.signals, key=lambda r: -1 if math.isnan(r["auroc"]) else r["auroc"], default=None)
        if best is not None:
            s = pool.scores[best["signal"]].ravel()
            p = to_unit(s, mapping_for(best["signal"], s))
            path = reliability_diagram(p, y, Path(tmp) / "rel.png", title=best["label"])
            sec.images["reliability"] = path.read_bytes()
        if curves:
            path = risk_coverage_plot(curves, Path(tmp) / "rc.png", title="selective risk per sample")
            sec.images["risk_coverage"] = path.read_bytes()


def _pool_drilldown(store: RunStore, pool: PoolData, sec: _RunSection, opts: ReportOptions,
                    approx: frozenset[str] = frozenset()) -> None:
    problems = {p.id: p for p in store.problems(sec.info.id)}
    for i, pid in enumerate(pool.problem_ids[: opts.drilldown]):
        rows = store.samples(sec.info.id, pid, with_tokens=False)
        labels = pool.labels[i]
        counts = np.bincount(labels[labels >= 0], minlength=len(pool.class_answers[i]))
        votes = {a: int(c) for a, c in zip(pool.class_answers[i], counts)}
        winner = None
        if counts.size and counts.max() > 0:  # SC over the whole pool; ties to the earliest class
            winner = int(np.flatnonzero(counts == counts.max())[0])
        samples = []
        for r in rows[: opts.samples_shown]:
            sc = {signal_label(k, approx): round(float(v[i, r.index]), 4) for k, v in pool.scores.items()
                  if r.index < pool.shape[1] and math.isfinite(v[i, r.index])}
            samples.append({"index": r.index, "answer": r.answer, "correct": r.correct,
                            "tokens": r.sample.usage.completion_tokens, "scores": sc, "text": r.sample.text})
        prob = problems.get(pid)
        sec.drill.append({
            "problem": pid, "question": prob.question if prob else "", "gold": prob.gold if prob else None,
            "votes": votes, "decision": pool.class_answers[i][winner] if winner is not None else None,
            "decision_rule": f"majority of all {pool.shape[1]} samples",
            "correct": bool(pool.class_correct[i, winner]) if winner is not None else False,
            "samples": samples, "n_samples": len(rows),
        })


def _decision_section(store: RunStore, sec: _RunSection, opts: ReportOptions) -> None:
    from thinktwice.eval.calibration_plots import reliability_diagram
    from thinktwice.eval.stats import wilson_ci

    decisions = store.decisions(sec.info.id)
    if not decisions:
        sec.notes.append("the run has no decisions yet")
        return
    graded = [d for d in decisions if d.correct is not None]
    n, c = len(graded), sum(bool(d.correct) for d in graded)
    lo, hi = wilson_ci(c, n)
    per = max(1, len(decisions))
    usage = [d.usage for d in decisions]
    row = {"run": sec.info.id, "model": sec.info.model, "strategy": sec.info.strategy or sec.info.kind, "k": None,
           "accuracy": c / n if n else math.nan, "lo": lo, "hi": hi,
           "tokens": sum(u.completion_tokens for u in usage) / per, "calls": sum(u.calls for u in usage) / per,
           "prompt_tokens": sum(u.prompt_tokens for u in usage) / per, "samples": math.nan}
    sec.rows.append(row)
    conf = np.array([d.confidence if d.confidence is not None else np.nan for d in graded], dtype=float)
    if np.isfinite(conf).any():
        with tempfile.TemporaryDirectory() as tmp:
            path = reliability_diagram(np.clip(conf, 0, 1), np.array([bool(d.correct) for d in graded]),
                                       Path(tmp) / "rel.png", title="decision confidence")
            sec.images["reliability"] = path.read_bytes()
    problems = {p.id: p for p in store.problems(sec.info.id)}
    for d in decisions[: opts.drilldown]:
        cands = [r for r in store.samples(sec.info.id, d.problem_id, with_tokens=False)][: opts.samples_shown]
        prob = problems.get(d.problem_id)
        sec.drill.append({
            "problem": d.problem_id, "question": prob.question if prob else "", "gold": prob.gold if prob else None,
            "votes": d.votes, "decision": d.answer, "decision_rule": f"{d.strategy} ({d.stopped_because})",
            "correct": d.correct, "n_samples": len(cands),
            "samples": [{"index": r.index, "answer": r.answer, "correct": r.correct,
                         "tokens": r.sample.usage.completion_tokens, "scores": {}, "text": r.sample.text}
                        for r in cands],
        })
    sec.summary = {"problems": len(decisions), "accuracy": row["accuracy"], "ci95": [lo, hi]}


# -- rendering ------------------------------------------------------------------------------------

def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        diff = "-"
        if "diff_vs_matched" in r:
            diff = f"{r['diff_vs_matched']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]"
        base_tok = _f(r.get("matched_tokens"), 0)
        if r.get("matched_capped"):
            base_tok += " (capped: fewer)"
        out.append([str(r["run"]), str(r.get("model") or "-"), r["strategy"], _f(r.get("k")), _f(r["accuracy"]),
                    f"[{_f(r['lo'])}, {_f(r['hi'])}]", _f(r["tokens"], 0), _f(r["calls"], 1),
                    _f(r["prompt_tokens"], 0), str(r.get("matched_sc") or "-"), base_tok, diff,
                    "; ".join(r.get("notes") or ())])
    return out


_HEAD = ["run", "model", "strategy", "k", "accuracy", "95% CI", "gen tokens", "calls", "prompt tokens",
         "matched SC", "SC gen tokens", "Δ vs matched SC [95% CI]", "note"]


_TABLE_TEXT = (
    "Accuracy per budget k with 95% two-level bootstrap intervals (problems, then one permutation each). "
    "Each row is compared with self-consistency at the same generated tokens, never fewer: SC@k, or "
    "\"SC@k/k+1 mix w\", which runs SC@(k+1) with probability w so that its expected tokens equal the row's "
    "(SC@k's tokens are the pool's mean tokens of the first k samples over the orders). \"SC gen tokens\" is "
    "what that baseline spends; a baseline capped at the pool size spends fewer and is marked. Δ is the paired "
    "difference against it on the same permutations, its correctness interpolated per order and problem.")


def _html_table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _render_html(data: dict[str, Any], title: str) -> str:
    parts: list[str] = []
    for w in data["warnings"]:
        parts.append(f'<div class="warning" role="alert"><b>Version mismatch.</b> {html.escape(w)}</div>')
    comparable = set(data["comparable"])
    rows = [r for s in data["sections"] if s.info.id in comparable for r in s.rows]
    parts.append("<h2>Comparison</h2>")
    parts.append(f"<p>Runs compared: {', '.join(map(str, sorted(comparable)))}. {html.escape(_TABLE_TEXT)}</p>")
    parts.append(_html_table(_HEAD, _table_rows(rows), cls="comparison"))
    runs_head = ["run", "kind", "task", "task version", "backend", "model", "strategy", "status", "git"]
    parts.append("<h2>Runs</h2>")
    parts.append(_html_table(runs_head, [[str(s.info.id), s.info.kind, str(s.info.task), str(s.info.task_version),
                                          str(s.info.backend), str(s.info.model), str(s.info.strategy),
                                          s.info.status, (s.info.git_sha or "-")[:10]] for s in data["sections"]]))
    for s in data["sections"]:
        parts.append(f'<h2 id="run-{s.info.id}">Run {s.info.id}: {html.escape(str(s.info.model or s.info.backend))}'
                     f" on {html.escape(str(s.info.task))}</h2>")
        if s.info.id not in comparable:
            parts.append('<div class="warning">Not compared with the runs above (different versions).</div>')
        for note in s.notes:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        if s.summary.get("endpoints"):
            parts.append(f"<p>Endpoints: {html.escape(', '.join(s.summary['endpoints']))}</p>")
        for key, alt in (("curve_tokens", "accuracy vs generated tokens"), ("curve_calls", "accuracy vs calls"),
                         ("reliability", "reliability diagram"), ("risk_coverage", "risk-coverage curve")):
            if key in s.images:
                caption = alt
                if key == "curve_calls" and s.summary.get("native_n"):
                    caption += (" (the pool's backend returns n samples per call: SC@k, votes and selections "
                                "are one call whatever k; ESC pays one call per window, adaptive-consistency "
                                "one per sample)")
                parts.append(f'<figure><img class="plot" alt="{alt}" src="{png_data_uri(s.images[key])}">'
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        if s.signals:
            head = ["signal", "n", "AUROC", "AUROC within problem", "ECE", "Brier", "AURC"]
            parts.append("<h3>Signal calibration (per sample)</h3>")
            parts.append(_html_table(head, [[r["label"], str(r["n"]), _f(r["auroc"]), _f(r["auroc_within"]),
                                              _f(r["ece"]), _f(r["brier"]), _f(r["aurc"])] for r in s.signals]))
        if s.drill:
            parts.append(f"<h3>Problems ({len(s.drill)} shown)</h3>")
            for d in s.drill:
                mark = "✔" if d["correct"] else "✘"
                summary = (f"{mark} {html.escape(d['problem'])}: decision {html.escape(str(d['decision']))}, "
                           f"gold {html.escape(str(d['gold']))}")
                votes = ", ".join(f"{html.escape(str(a))}: {v:g}" for a, v in d["votes"].items())
                samp = "".join(
                    f"<li><b>#{x['index']}</b> answer {html.escape(str(x['answer']))} "
                    f"({'correct' if x['correct'] else 'wrong'}, {x['tokens']} tokens"
                    + (", " + ", ".join(f"{k}={v}" for k, v in x["scores"].items()) if x["scores"] else "")
                    + f")<pre>{html.escape(x['text'][:2000])}</pre></li>"
                    for x in d["samples"])
                parts.append(
                    f'<details><summary>{summary}</summary><p class="q">{html.escape(d["question"])}</p>'
                    f"<p>Votes: {votes or '-'}<br>Decision ({html.escape(d['decision_rule'])}): "
                    f"{html.escape(str(d['decision']))}; gold: {html.escape(str(d['gold']))}</p>"
                    f"<ol>{samp}</ol><p>{d['n_samples']} samples stored.</p></details>")
    tpl = Template(_TEMPLATE.read_text(encoding="utf-8"))
    return tpl.substitute(title=html.escape(title), body="\n".join(parts))


def _render_md(data: dict[str, Any], title: str, images: dict[str, str]) -> str:
    lines = [f"# {title}", ""]
    for w in data["warnings"]:
        lines += [f"> **Version mismatch.** {w}", ""]
    comparable = set(data["comparable"])
    rows = [r for s in data["sections"] if s.info.id in comparable for r in s.rows]
    lines += ["## Comparison", "", _TABLE_TEXT, "", _md_table(_HEAD, _table_rows(rows)), ""]
    for s in data["sections"]:
        lines += [f"## Run {s.info.id}: {s.info.model or s.info.backend} on {s.info.task}", ""]
        lines += [f"- {n}" for n in s.notes]
        for key, name in images.items():
            if name.startswith(f"run{s.info.id}_"):
                lines += [f"![{key}]({name})", ""]
        if s.signals:
            head = ["signal", "n", "AUROC", "ECE", "Brier", "AURC"]
            lines += ["", _md_table(head, [[r["label"], str(r["n"]), _f(r["auroc"]), _f(r["ece"]), _f(r["brier"]),
                                             _f(r["aurc"])] for r in s.signals]), ""]
    return "\n".join(lines) + "\n"


def _summary_json(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "warnings": data["warnings"],
        "comparable_runs": list(data["comparable"]),
        "runs": [{
            "id": s.info.id, "kind": s.info.kind, "task": s.info.task, "task_version": s.info.task_version,
            "prompt_version": s.info.config.get("prompt_version"), "grader_version": s.info.config.get("grader_version"),
            "backend": s.info.backend, "model": s.info.model, "strategy": s.info.strategy,
            "summary": s.summary, "notes": s.notes, "table": s.rows,
            "curves": [{**c.to_dict(), "display": s.labels.get(c.label, c.label)} for c in s.curves],
            "signals": s.signals,
        } for s in data["sections"]],
    }


def write_report(store: RunStore, run_ids: Sequence[int], out_dir: str | os.PathLike[str],
                 options: ReportOptions | None = None, *, title: str | None = None) -> dict[str, Path]:
    """Write ``report.html`` (self-contained), ``report.md`` (+ its PNGs) and ``summary.json`` to ``out_dir``."""
    data = build_report(store, run_ids, options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"thinktwice report: runs {', '.join(map(str, run_ids))}"
    images: dict[str, str] = {}
    for s in data["sections"]:
        for key, png in s.images.items():
            name = f"run{s.info.id}_{key}.png"
            (out / name).write_bytes(png)
            images[f"{s.info.id}:{key}"] = name
    paths = {"html": out / "report.html", "md": out / "report.md", "json": out / "summary.json"}
    paths["html"].write_text(_render_html(data, title), encoding="utf-8")
    paths["md"].write_text(_render_md(data, title, images), encoding="utf-8")
    paths["json"].write_text(json.dumps(_summary_json(data), indent=1, default=_json_default), encoding="utf-8")
    return paths


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
