"""Record shapes of the datasets TRL's trainers read, each with a ``meta`` provenance object.

- SFT, standard: ``{"prompt": str, "completion": str}``; conversational: ``{"messages": [...]}``
  (user = problem, assistant = solution). TRL's SFTTrainer reads both.
- Preference (DPO): ``{"prompt": str, "chosen": str, "rejected": str}``.
- Critique: ``{"messages": [user: problem + wrong solution + instruction, assistant: critique +
  corrected solution]}``.

``meta`` (run id, problem id, sample indices, source model, strategy, temperature, iteration, filter)
rides along; :func:`read_jsonl` checks shapes and names ``file:line`` on a malformed record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from thinktwice.errors import DataError

__all__ = ["CRITIQUE_INSTRUCTION", "critique_record", "dpo_record", "kind_of", "read_jsonl", "sft_record",
           "write_jsonl"]

CRITIQUE_INSTRUCTION = ("Critique this solution: find the first mistake, explain it, then write a corrected "
                        "solution.")


def sft_record(prompt: str, completion: str, meta: Mapping[str, Any], *, conversational: bool = False
               ) -> dict[str, Any]:
    if conversational:
        return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
                "meta": dict(meta)}
    return {"prompt": prompt, "completion": completion, "meta": dict(meta)}


def dpo_record(prompt: str, chosen: str, rejected: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": dict(meta)}


def critique_record(problem: str, wrong: str, critique: str, corrected: str, meta: Mapping[str, Any]
                    ) -> dict[str, Any]:
    user = f"{problem.strip()}\n\nProposed solution:\n{wrong.strip()}\n\n{CRITIQUE_INSTRUCTION}"
    assistant = f"{critique.strip()}\n\nCorrected solution:\n{corrected.strip()}"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            "meta": dict(meta)}


def kind_of(rec: Mapping[str, Any]) -> str | None:
    """``"dpo"``, ``"sft"``, ``"messages"`` or None for a record of no known shape."""
    if all(isinstance(rec.get(k), str) for k in ("prompt", "chosen", "rejected")):
        return "dpo"
    if isinstance(rec.get("prompt"), str) and isinstance(rec.get("completion"), str):
        return "sft"
    msgs = rec.get("messages")
    if isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in msgs):
        return "messages"
    return None


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path, kinds: tuple[str, ...] = ("sft", "dpo", "messages")) -> list[dict[str, Any]]:
    """Records of ``path``; a line that is not JSON or not of one of ``kinds`` raises
    :class:`DataError` naming ``file:line``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no data file at {p}")
    out = []
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{i}: not JSON ({e.msg})") from None
            k = kind_of(rec) if isinstance(rec, dict) else None
            if k not in kinds:
                raise DataError(f"{p}:{i}: expected a record of kind {'/'.join(kinds)} "
                                "(prompt+completion, prompt+chosen+rejected, or messages)")
            out.append(rec)
    if not out:
        raise DataError(f"{p}: no records")
    return out
