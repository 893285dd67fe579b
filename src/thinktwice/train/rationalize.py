"""STaR's rationalization of a stored run: hint the gold answer on unsolved problems, keep the right
rationales, store them WITHOUT the hint (Zelikman et al., arXiv 2203.14465; METHODS §10.1).

Every hinted call is billed: the result carries its summed Usage, and with ``record`` the calls are
stored as a run of kind ``rationalize`` (one decision per problem holding all its hinted samples), so
``thinktwice show`` reports the spend next to the run it came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from thinktwice.errors import ConfigError
from thinktwice.train.bstar import arith_steps_valid, path_key
from thinktwice.train.formats import sft_record
from thinktwice.train.harvest import HarvestConfig, _check_split, _task, prompt_text
from thinktwice.types import Candidate, Decision, Message, Prompt, Usage

__all__ = ["HINT", "Rationalized", "hinted_prompt", "rationalize"]

log = logging.getLogger(__name__)
HINT = "Hint: the correct final answer is {gold}. Write a full solution that reaches it, without mentioning the hint."


@dataclass(frozen=True)
class Rationalized:
    """SFT records from hinted samples, and what every hinted call cost (kept or not)."""

    records: list[dict[str, Any]]
    usage: Usage
    problems: int  # unsolved problems that were sampled with a hint
    samples: int
    run_id: int | None = None  # the ``rationalize`` run holding the calls, when recorded
    by_problem: dict[str, Usage] = field(default_factory=dict, repr=False)


def hinted_prompt(p: Prompt, gold: str) -> Prompt:
    """``p`` with :data:`HINT` appended to its raw text or to its last user turn."""
    hint = HINT.format(gold=gold)
    if p.raw is not None:
        return Prompt(raw=p.raw.rstrip("\n") + f" ({hint})\n", assistant_prefix=p.assistant_prefix)
    msgs = list(p.messages)
    users = [ix for ix, m in enumerate(msgs) if m.role == "user"]
    if not users:
        raise ConfigError("a chat prompt without a user turn cannot carry a hint")
    msgs[users[-1]] = Message("user", msgs[users[-1]].content + "\n\n" + hint)
    return Prompt(messages=tuple(msgs), assistant_prefix=p.assistant_prefix)


async def rationalize(store: Any, run_id: int, backend: Any, cfg: HarvestConfig, *, k: int = 4,
                      temperature: float = 0.7, seed: int = 0, record: bool = True) -> Rationalized:
    """SFT records for the problems of run ``run_id`` with no correct stored sample: ``k`` samples with
    the gold answer as a hint; the correct ones that do not mention the hint are kept (distinct
    reasoning paths, at most ``cfg.max_per_problem``), each stored with the prompt WITHOUT the hint.
    ``record`` (needs a writable store) stores the hinted calls as a ``rationalize`` run."""
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    run = store.get_run(run_id)
    split = _check_split(store, run_id, cfg)
    task = _task(run)
    if task is None:
        raise ConfigError(f"run {run_id} has no task that can be rebuilt here; rationalization needs its grader")
    solved = {s.problem_id for s in store.samples(run_id, with_tokens=False) if s.correct is True}
    todo = [(i, p) for i, p in enumerate(store.problems(run_id)) if p.id not in solved and p.gold is not None]
    model = getattr(backend, "model", None)
    rid = None
    if record and todo:
        rid = store.create_run(kind="rationalize", config={"source_run": run_id, "k": k, "temperature": temperature,
                                                           "seed": seed, "hint": HINT, "split": split},
                               task=run.task, task_version=run.task_version, backend=run.backend, model=model,
                               strategy="rationalize", seed=seed)
        store.put_problems(rid, [p for _, p in todo])
    out: list[dict[str, Any]] = []
    total, n_samples, by_problem = Usage(), 0, {}
    for i, prob in todo:
        params = task.params().replace(temperature=temperature, seed=seed + 1000 * i)
        got = await backend.sample(hinted_prompt(task.prompt(prob), str(prob.gold)), params, n=k)
        spent = Usage.total([s.usage for s in got])
        total, n_samples, by_problem[prob.id] = total + spent, n_samples + len(got), spent
        answers = [task.extract(s.text) for s in got]
        right = [bool(task.grade(a, prob)) for a in answers]
        if rid is not None:
            cands = tuple(Candidate(s, a, stage="rationalize") for s, a in zip(got, answers))
            store.put_decision(rid, prob.id, Decision(None, None, cands, None, spent, {"rationalize": spent},
                                                      strategy="rationalize"), None, candidate_correct=right)
        seen: set[str] = set()
        for j, (smp, ok) in enumerate(zip(got, right)):
            if "hint" in smp.text.lower() or not ok or (cfg.verify_steps and not arith_steps_valid(smp.text)):
                continue
            key = path_key(smp.text)
            if key in seen:
                continue
            seen.add(key)
            out.append(sft_record(prompt_text(task, prob), smp.text.strip(), {
                "run": run_id, "problem_id": prob.id, "source": "rationalization", "samples": [j],
                "source_model": model, "strategy": None, "task": run.task, "temperature": temperature,
                "split": split, "filter": "answer+steps" if cfg.verify_steps else "answer", "hinted": True,
                "rationalize_run": rid}, conversational=cfg.conversational))
            if len(seen) >= cfg.max_per_problem:
                break
    if rid is not None:
        store.set_status(rid, "done")
    log.info("rationalized %d records for %d unsolved problems of run %d (%d calls, %d generated tokens)",
             len(out), len(todo), run_id, total.calls, total.completion_tokens)
    return Rationalized(out, total, len(todo), n_samples, rid, by_problem)
