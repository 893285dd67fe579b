"""Cost of running HumanEval's tests in the sandbox, beside an unsandboxed subprocess baseline.

    python bench/sandbox.py                 # first 40 HumanEval problems, canonical solutions
    python bench/sandbox.py --limit 164

Both columns run the same programs (prompt + canonical solution + tests) one at a time; the
baseline is a plain ``python -c`` subprocess with no limits, no uid switch and no namespace.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from thinktwice.tasks.code import HumanEvalTask, build_program
from thinktwice.verify.sandbox import run_sandboxed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40)
    args = ap.parse_args()
    task = HumanEvalTask()
    problems = task.load(limit=args.limit)
    programs = [build_program(p.gold or "", p) for p in problems]

    base_s, base_ok = [], 0
    for prog in programs:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-I", "-S", "-c", prog], capture_output=True, timeout=30, check=False)
        base_s.append(time.perf_counter() - t0)
        base_ok += r.returncode == 0

    sbx_s, sbx_ok, layers = [], 0, set()
    for prog in programs:
        t0 = time.perf_counter()
        res = run_sandboxed(prog, timeout_s=10, memory_mb=1024)
        sbx_s.append(time.perf_counter() - t0)
        sbx_ok += res.passed
        layers.update(res.isolated)

    table = Table(title=f"HumanEval canonical solutions, {len(programs)} programs, sequential")
    for col in ("runner", "passed", "median ms", "p90 ms", "total s"):
        table.add_column(col, justify="right" if col != "runner" else "left")
    for name, ok, secs in (("plain subprocess (baseline)", base_ok, base_s),
                           (f"sandbox ({', '.join(sorted(layers)) or 'no kernel layers'})", sbx_ok, sbx_s)):
        q = statistics.quantiles(secs, n=10)
        table.add_row(name, f"{ok}/{len(programs)}", f"{statistics.median(secs) * 1e3:.1f}",
                      f"{q[-1] * 1e3:.1f}", f"{sum(secs):.2f}")
    Console(stderr=False).print(table)
    print(f"sandbox_median_ms: {statistics.median(sbx_s) * 1e3:.1f}")
    print(f"baseline_median_ms: {statistics.median(base_s) * 1e3:.1f}")
    print(f"sandbox_overhead_ms: {(statistics.median(sbx_s) - statistics.median(base_s)) * 1e3:.1f}")
    print(f"sandbox_pass_rate: {sbx_ok / len(programs):.3f}")


if __name__ == "__main__":
    main()
