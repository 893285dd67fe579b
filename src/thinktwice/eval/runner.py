"""The evaluation harness: run a strategy over a task's problems concurrently, grade, store, resume.

The harness knows nothing about any particular strategy. Each finished problem is written to the
store in one transaction (decision plus its candidates), so a killed run resumes from where it
stopped with no duplicated and no missing problems. Every model call's samples are stored as they
arrive (:class:`~thinktwice.eval.call_log.CallLog`), so a kill mid-problem loses nothing already paid
for and the resumed run reuses them. A problem that fails, whether its model calls fail after the
backend's retries or the strategy or grader raises anything unexpected (a bug), is recorded as an
event with its traceback and counted as failed; it never ends the run for the other problems.
Only errors that would fail every problem the same way (a rejected key, a missing capability) stop
the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from thinktwice.errors import AuthenticationError, BackendError, ConfigError
from thinktwice.eval.call_log import CallLog
from thinktwice.eval.stats import wilson_ci
from thinktwice.eval.store import RunStore
from thinktwice.lm.base import Backend
from thinktwice.strategies.base import Strategy
from thinktwice.tasks.base import Query, Task
from thinktwice.types import Budget, Decision, Problem, TraceStep, Usage

__all__ = ["evaluate", "EvalResult", "ProblemResult", "problem_seed", "Progress"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProblemResult:
    problem_id: str
    answer: str | None
    gold: str | None
    correct: bool | None
    usage: Usage
    stopped_because: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Passed to ``on_progress`` after each problem."""

    done: int
    total: int
    correct: int
    failed: int
    usage: Usage


@dataclass
class EvalResult:
    """Outcome of an evaluation; ``rows`` are in problem order and include earlier (resumed) rows."""

    run_id: int | None
    rows: list[ProblemResult] = field(default_factory=list)

    @property
    def graded(self) -> list[ProblemResult]:
        return [r for r in self.rows if r.error is None]

    @property
    def n(self) -> int:
        return len(self.graded)

    @property
    def correct(self) -> int:
        return sum(bool(r.correct) for r in self.graded)

    @property
    def failed(self) -> int:
        return sum(r.error is not None for r in self.rows)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_ci(self.correct, self.n)

    @property
    def usage(self) -> Usage:
        return Usage.total([r.usage for r in self.rows])


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem seed that does not depend on run order or concurrency."""
    return zlib.crc32(f"{seed}:{problem_id}".encode()) & 0x7FFFFFFF


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _grade_candidates(task: Task, decision: Decision, problem: Problem) -> list[bool | None]:
    return [task.grade(c.answer, problem) if c.answer is not None else False for c in decision.candidates]


async def evaluate(
    task: Task,
    strategy: Strategy,
    backend: Backend,
    problems: Sequence[Problem],
    *,
    store: RunStore | None = None,
    run_id: int | None = None,
    budget: Budget | None = None,
    concurrency: int = 16,
    seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
) -> EvalResult:
    """Run ``strategy`` on every problem not yet decided in ``run_id``; returns all rows of the run.

    With a store, problems already decided in the run are skipped (resume) and their stored rows
    are included in the result.
    """
    done: set[str] = store.done_problems(run_id) if (store is not None and run_id is not None) else set()
    prior: dict[str, ProblemResult] = {}
    if store is not None and run_id is not None and done:
        golds = {p.id: p.gold for p in problems}
        for d in store.decisions(run_id):
            prior[d.problem_id] = ProblemResult(d.problem_id, d.answer, golds.get(d.problem_id), d.correct,
                                                d.usage, d.stopped_because or "done")
    todo = [p for p in problems if p.id not in done]
    logged = store.calls(run_id) if (store is not None and run_id is not None and todo) else {}
    results: dict[str, ProblemResult] = {}
    sem = asyncio.Semaphore(max(1, concurrency))
    counters = {"done": len(prior), "correct": sum(bool(r.correct) for r in prior.values()), "failed": 0}
    spent = [Usage.total([r.usage for r in prior.values()])]
    fatal: list[BaseException] = []

    def failed(problem: Problem, msg: str, detail: str | None) -> None:
        if store is not None and run_id is not None:
            store.add_event(run_id, "problem-failed", msg, problem.id, detail=detail)
        results[problem.id] = ProblemResult(problem.id, None, problem.gold, None, Usage(), "error", msg)
        counters["failed"] += 1

    async def one(problem: Problem) -> None:
        async with sem:
            if fatal:
                return
            query = Query.from_task(task, problem)
            calls: Backend = backend
            if store is not None and run_id is not None:
                calls = CallLog(backend, store, run_id, problem.id, logged.get(problem.id))
            try:
                decision = await strategy.run(query, calls, budget, seed=problem_seed(seed, problem.id))
                correct = task.grade(decision.answer, problem)
                candidate_correct = _grade_candidates(task, decision, problem)
            except (AuthenticationError, ConfigError) as e:  # the same for every problem: stop the run
                fatal.append(e)
                return
            except BackendError as e:
                msg = f"{type(e).__name__}: {e}"
                log.warning("problem %s failed: %s", problem.id, msg)
                failed(problem, msg, None)
            except Exception as e:  # noqa: BLE001 (a bug in one problem must not end the run for the others)
                msg = f"{type(e).__name__}: {_one_line(str(e))}"
                log.error("problem %s failed with an unexpected error (recorded with its traceback): %s",
                          problem.id, msg)
                failed(problem, msg, traceback.format_exc())
            else:
                if isinstance(calls, CallLog) and calls.reused_calls:
                    decision = dataclasses.replace(decision, trace=decision.trace + (TraceStep(
                        "resumed", {"reused_calls": calls.reused_calls, "reused_samples": calls.reused_samples}),))
                if store is not None and run_id is not None:
                    store.put_decision(run_id, problem.id, decision, correct, candidate_correct=candidate_correct)
                results[problem.id] = ProblemResult(problem.id, decision.answer, problem.gold, correct,
                                                    decision.usage, decision.stopped_because)
                counters["correct"] += int(correct)
                spent[0] = spent[0] + decision.usage
            counters["done"] += 1
            if on_progress is not None:
                on_progress(Progress(counters["done"], len(problems), counters["correct"], counters["failed"],
                                     spent[0]))

    await asyncio.gather(*(one(p) for p in todo))
    if fatal:
        raise fatal[0]
    rows = [prior.get(p.id) or results.get(p.id) for p in problems]
    result = EvalResult(run_id, [r for r in rows if r is not None])
    if todo and result.failed == len(todo) and not prior:
        # nothing succeeded: surface the failure instead of reporting an empty accuracy
        first = result.rows[0].error if result.rows else "unknown error"
        raise BackendError(f"every problem failed; first error: {first}")
    return result
