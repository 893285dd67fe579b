"""Tasks: data loaders with their prompt format, answer extraction and grader, found by name."""

from __future__ import annotations

from thinktwice.registry import tasks
from thinktwice.tasks.base import AnswerFormat, Query, Task

__all__ = ["AnswerFormat", "Query", "Task", "tasks"]

tasks.add("gsm8k", "thinktwice.tasks.gsm8k:Gsm8kTask.create", help="GSM8K grade-school math (numeric answers)")
tasks.add("math", "thinktwice.tasks.math:MathTask.create", help="MATH-500 competition math (\\boxed answers, math-verify)")
tasks.add("jsonl", "thinktwice.tasks.jsonl:JsonlTask.create", help="any JSONL file (path=..., grader=numeric|math|exact|contains)")
tasks.add("humaneval", "thinktwice.tasks.code:HumanEvalTask.create", help="HumanEval Python functions, graded in a sandbox")
tasks.add("arith", "thinktwice.tasks.arith:ArithTask", help="synthetic multi-step arithmetic (the model organism)")
