"""HumanEval (Chen et al., arXiv 2107.03374): write a Python function, graded by running its tests.

The answer is the program in the response's last ```python block (or the whole response). A
response that only writes the function body is appended to the prompt. Grading runs the task's
``test`` code and ``check(entry_point)`` in :func:`thinktwice.verify.run_sandboxed`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from thinktwice.errors import ConfigError
from thinktwice.tasks.datadir import hub_rows, load_rows
from thinktwice.tasks.extract import code_block
from thinktwice.tasks.options import create_task
from thinktwice.tasks.prompts import CODE_TEMPLATE, chat_prompt
from thinktwice.types import Problem, Prompt, SamplingParams
from thinktwice.verify.sandbox import (
    Isolation,
    SandboxConfig,
    SandboxResult,
    check_isolation,
    run_sandboxed,
)

__all__ = ["HumanEvalTask", "build_program", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` passed (arXiv 2107.03374, eq. 1):
    ``1 - C(n-c, k) / C(n, k)``, computed as a stable product.

    >>> pass_at_k(10, 0, 1), pass_at_k(10, 10, 5), round(pass_at_k(10, 3, 1), 3)
    (0.0, 1.0, 0.3)
    """
    if not 0 <= c <= n or k < 1:
        raise ConfigError(f"pass_at_k needs 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if k > n:
        raise ConfigError(f"pass_at_k needs k <= n, got k={k} n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _prompt_imports(prompt: str) -> str:
    return "\n".join(ln for ln in prompt.splitlines() if re.match(r"(from \S+ )?import ", ln))


def build_program(answer: str, problem: Problem) -> str:
    """The program that tests ``answer``: the candidate (completed with the prompt's imports, or
    appended to the prompt when it is only a body), the task's tests and ``check(entry_point)``."""
    entry = str(problem.meta["entry_point"])
    prompt = str(problem.meta.get("prompt", problem.question))
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", answer, re.MULTILINE):
        body = _prompt_imports(prompt) + "\n\n" + answer
    else:
        body = prompt + answer
    return f"{body}\n\n{problem.meta['test']}\n\ncheck({entry})\n"


@dataclass(frozen=True)
class HumanEvalTask:
    """HumanEval's 164 problems, graded by execution in the sandbox.

    ``timeout_s`` and ``memory_mb`` bound each test run. ``sandbox`` is the isolation: "bwrap"
    (bubblewrap; loading and grading raise CapabilityError where it cannot start) or "weak" (an
    explicit opt-in, ``-T sandbox=weak``, that the task version records).
    """

    name: ClassVar[str] = "humaneval"
    prompt_version: ClassVar[str] = "p1"
    grader_version: ClassVar[str] = "g1"

    data_dir: str | os.PathLike[str] | None = None
    path: str | os.PathLike[str] | None = None
    max_tokens: int = 768
    timeout_s: float = 10.0
    memory_mb: int = 1024
    shots: int = 0
    seed: int = 0
    sandbox: str = "bwrap"

    def __post_init__(self) -> None:
        if self.shots:
            raise ConfigError("humaneval has no train split, so it supports only shots=0")
        self.sandbox_config()  # validates

    def sandbox_config(self) -> SandboxConfig:
        """The limits and isolation every test run of this task gets (a ConfigError names a bad one)."""
        isolation = cast(Isolation, self.sandbox)  # SandboxConfig rejects anything but bwrap/weak
        return SandboxConfig(timeout_s=self.timeout_s, memory_mb=self.memory_mb, isolation=isolation)

    @classmethod
    def create(cls, **options: Any) -> HumanEvalTask:
        """Build from user options; unknown names and wrong types are ConfigErrors."""
        return create_task(cls, **options)

    @property
    def version(self) -> str:
        weak = "-weak-sandbox" if self.sandbox == "weak" else ""  # graded without bubblewrap
        return f"humaneval-{self.prompt_version}-{self.grader_version}{weak}"

    def load(self, split: str = "test", limit: int | None = None) -> Sequence[Problem]:
        if split != "test":
            raise ConfigError(f"humaneval has only the 'test' split, not {split!r}")
        check_isolation(self.sandbox_config())  # refuse before anything is sampled, not at the first grade
        _, rows = load_rows(
            "humaneval/HumanEval.jsonl",
            data_dir=self.data_dir,
            path=self.path,
            required=("task_id", "prompt", "entry_point", "test"),
            hub=lambda: hub_rows("openai/openai_humaneval", None, "test"),
        )
        return [self._problem(r) for r in (rows if limit is None else rows[:limit])]

    @staticmethod
    def _problem(row: dict[str, Any]) -> Problem:
        meta = {k: row[k] for k in ("prompt", "entry_point", "test", "canonical_solution") if k in row}
        gold = str(row["prompt"]) + str(row.get("canonical_solution", ""))
        return Problem(id=str(row["task_id"]), question=str(row["prompt"]), gold=gold, meta=meta)

    def prompt(self, problem: Problem) -> Prompt:
        return chat_prompt(problem.question, CODE_TEMPLATE)

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens)

    def extract(self, text: str) -> str | None:
        code = code_block(text, "python", prefer="def ")
        return code if code.strip() else None

    def canonical(self, answer: str) -> str:
        """Code without comment-only lines, blank lines and trailing spaces (so identical
        programs group together)."""
        lines = [ln.rstrip() for ln in answer.splitlines()]
        return "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))

    def equivalent(self, a: str, b: str) -> bool:
        return self.canonical(a) == self.canonical(b)

    def run_tests(self, answer: str, problem: Problem) -> SandboxResult:
        """Run ``answer`` against the problem's tests in the sandbox (blocking)."""
        return run_sandboxed(build_program(answer, problem), config=self.sandbox_config())

    def grade(self, answer: str | None, problem: Problem) -> bool:
        if answer is None or not answer.strip():
            return False
        return self.run_tests(answer, problem).passed
