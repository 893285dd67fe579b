"""Cost of running HumanEval's tests in the sandbox (bubblewrap, and the weak mode), beside a plain
subprocess.

    python bench/sandbox.py                 # first 40 HumanEval problems, canonical solutions
    python bench/sandbox.py --limit 164 --repeat 3

All columns run the same programs (prompt + canonical solution + tests) one at a time, ``--repeat``
rounds interleaved so that machine noise hits them alike; the baseline is a plain ``python -I -S
-c`` subprocess with no limits, no uid switch and no namespace. The bwrap column is skipped (and
said so) where bubblewrap cannot start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from thinktwice.tasks.code import HumanEvalTask, build_program
from thinktwice.verify import SandboxConfig, bwrap_support, run_sandboxed


def _plain(prog: str) -> bool:
    r = subprocess.run([sys.executable, "-I", "-S", "-c", prog], capture_output=True, timeout=30, check=False)
    return r.returncode == 0


def _sandboxed(isolation: str, layers: set[str]) -> Callable[[str], bool]:
    cfg = SandboxConfig(timeout_s=10, memory_mb=1024, isolation=isolation)  # type: ignore[arg-type]

    def run(prog: str) -> bool:
        res = run_sandboxed(prog, config=cfg)
        layers.update(res.isolated)
        return res.passed

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    problems = HumanEvalTask().load(limit=args.limit)
    programs = [build_program(p.gold or "", p) for p in problems]

    support = bwrap_support(os.path.realpath(sys.executable))
    layers: dict[str, set[str]] = {"bwrap": set(), "weak": set()}
    runners: dict[str, Callable[[str], bool]] = {"plain": _plain, "weak": _sandboxed("weak", layers["weak"])}
    if support.ok:
        runners["bwrap"] = _sandboxed("bwrap", layers["bwrap"])
    else:
        print(f"bwrap column skipped: {support.reason}", file=sys.stderr)
    secs: dict[str, list[float]] = {k: [] for k in runners}
    ok = dict.fromkeys(runners, 0)
    for _ in range(args.repeat):
        for prog in programs:
            for name, fn in runners.items():
                t0 = time.perf_counter()
                ok[name] += fn(prog)
                secs[name].append(time.perf_counter() - t0)

    total = len(programs) * args.repeat
    labels = {"plain": "plain subprocess (baseline)",
              "weak": f"sandbox weak ({', '.join(sorted(layers['weak'])) or 'no kernel layers'})",
              "bwrap": f"sandbox bwrap ({', '.join(sorted(layers['bwrap']))})"}
    title = f"HumanEval canonical solutions, {len(programs)} programs x {args.repeat}, sequential"
    table = Table(title=title)
    for col in ("runner", "passed", "median ms", "p90 ms", "total s"):
        table.add_column(col, justify="right" if col != "runner" else "left")
    for name, s in secs.items():
        q = statistics.quantiles(s, n=10)
        table.add_row(labels[name], f"{ok[name]}/{total}", f"{statistics.median(s) * 1e3:.1f}",
                      f"{q[-1] * 1e3:.1f}", f"{sum(s):.2f}")
    Console(stderr=False).print(table)
    base = statistics.median(secs["plain"])
    print(f"baseline_median_ms: {base * 1e3:.1f}")
    for name in ("weak", "bwrap"):
        if name in secs:
            med = statistics.median(secs[name])
            print(f"{name}_median_ms: {med * 1e3:.1f}")
            print(f"{name}_overhead_ms: {(med - base) * 1e3:.1f}")
            print(f"{name}_pass_rate: {ok[name] / total:.3f}")


if __name__ == "__main__":
    main()
