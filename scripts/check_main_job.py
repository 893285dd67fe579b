"""Check the table the README's main job printed: 20 graded problems, a summary row, no failures.

Usage: python scripts/check_main_job.py OUTPUT.txt (the job's stdout; CI runs it after the job).
"""

from __future__ import annotations

import re
import sys


def check(text: str, problems: int = 20) -> list[str]:
    """The problems found in the printed output (empty when it looks right)."""
    issues = []
    rows = re.findall(r"gsm8k-test-\d+", text)
    if len(set(rows)) != problems:
        issues.append(f"expected {problems} problem rows, found {len(set(rows))}")
    header = re.search(r"accuracy\s*┃\s*95% CI\s*┃\s*n\s*┃\s*failed\s*┃\s*calls\s*┃\s*prompt tok\s*┃\s*gen tok", text)
    summary = re.search(r"│\s*(\d\.\d{3})\s*│\s*\[(\d\.\d{3}), (\d\.\d{3})\]\s*│\s*(\d+)\s*│\s*(\d+)\s*│", text)
    if header is None or summary is None:
        issues.append("no summary table (accuracy, 95% CI, n, failed)")
    else:
        acc, lo, hi, n, failed = summary.groups()
        if int(n) != problems or int(failed) != 0:
            issues.append(f"summary says n={n}, failed={failed}")
        if not float(lo) <= float(acc) <= float(hi):
            issues.append(f"accuracy {acc} outside its interval [{lo}, {hi}]")
    return issues


if __name__ == "__main__":
    found = check(open(sys.argv[1], encoding="utf-8").read())
    for line in found:
        print(f"main job check: {line}", file=sys.stderr)
    sys.exit(1 if found else 0)
