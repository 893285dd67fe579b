"""``thinktwice solve``: answer one question with a strategy; show candidates, votes and compute."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from thinktwice.cli.common import (
    ApiKeyOpt, BackendOpt, BackendOptionsOpt, BaseUrlOpt, ModelOpt, SeedOpt, StrategyOptionsOpt,
    backend_from_options, out, parse_kv, positive, run_async,
)

__all__ = ["register"]


def _show(decision: Any, as_json: bool) -> None:
    import json

    if as_json:
        out.print_json(json.dumps(decision.to_dict()))
        return
    table = Table(title="candidates")
    for col in ("#", "answer", "votes", "scores", "tokens", "text"):
        table.add_column(col, overflow="fold")
    for i, c in enumerate(decision.candidates):
        mark = "*" if i == decision.chosen else str(i)
        votes = decision.votes.get(c.answer, "") if c.answer is not None else ""
        scores = ", ".join(f"{k}={v:.3f}" for k, v in c.scores.items())
        snippet = " ".join(c.sample.text.split())
        table.add_row(mark, escape(str(c.answer)), str(votes), scores, str(c.sample.usage.completion_tokens),
                      escape(snippet[:160] + ("..." if len(snippet) > 160 else "")))
    out.print(table)
    u = decision.usage
    conf = "n/a" if decision.confidence is None else f"{decision.confidence:.3f}"
    out.print(f"[bold]answer:[/bold] {escape(str(decision.answer))}   confidence: {conf}   "
              f"stopped: {decision.stopped_because}")
    out.print(f"compute: {u.calls} calls, {u.prompt_tokens} prompt tokens "
              f"({u.cached_prompt_tokens} cached), {u.completion_tokens} generated tokens, {u.seconds:.2f} s"
              + (" (estimated)" if u.estimated else ""))


def register(app: typer.Typer) -> None:
    @app.command("solve")
    def solve(
        question: str = typer.Argument(..., help="The question to answer."),
        strategy: str | None = typer.Option(
            None, "--strategy", help="Strategy spec (default: greedy, or self-consistency with -n)."
        ),
        n: int | None = typer.Option(None, "-n", help="Samples (strategies that sample)."),
        options: list[str] | None = StrategyOptionsOpt,
        task: str = typer.Option("gsm8k", "--task", "-t", help="Task whose prompt and answer format to use."),
        backend: str = BackendOpt,
        backend_options: list[str] | None = BackendOptionsOpt,
        base_url: str | None = BaseUrlOpt,
        api_key: str | None = ApiKeyOpt,
        model: str | None = ModelOpt,
        budget_tokens: int | None = typer.Option(None, "--budget-tokens", help="Generated-token budget.",
                                                   callback=positive("--budget-tokens")),
        seed: int = SeedOpt,
        as_json: bool = typer.Option(False, "--json", help="Print the whole Decision as JSON."),
    ) -> None:
        """Answer QUESTION; print the answer, the candidates with their votes, and the compute used."""
        import os

        from thinktwice.registry import tasks
        from thinktwice.strategies import create_strategy
        from thinktwice.tasks.base import Query
        from thinktwice.types import Budget, Problem

        sopts = parse_kv(options)
        if n is not None:
            sopts["n"] = n
        strat = create_strategy(strategy or ("self-consistency" if n is not None else "greedy"), **sopts)
        t = tasks.create(task)
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        lm = backend_from_options(backend, base_url=base_url, api_key=key, model=model, **parse_kv(backend_options))
        query = Query.from_task(t, Problem(id="cli", question=question))

        async def go() -> Any:
            try:
                return await strat.run(query, lm, Budget(max_tokens=budget_tokens) if budget_tokens else None,
                                       seed=seed)
            finally:
                await lm.aclose()

        _show(run_async(go()), as_json)
