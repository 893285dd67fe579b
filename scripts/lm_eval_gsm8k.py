"""Run lm-evaluation-harness against ``thinktwice serve``: a few GSM8K problems from a local JSONL file,
through ``local-chat-completions`` and ``local-completions`` (token-id prompts, remote tokenizer).

The proxy runs in this process in front of the fake OpenAI upstream (answers the gold number with
probability ``--p-correct`` per sample, so voting has something to do) or, with ``--upstream URL``, a
real server; ``lm_eval`` runs as a subprocess, as a user would run it. Prints lm-eval's table per
client and what the proxy spent (from /metrics). Needs ``pip install lm-eval``; runs offline.

    python scripts/lm_eval_gsm8k.py --data PATH/TO/gsm8k/test.jsonl --limit 5 \
        --strategy self-consistency -o n=4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from thinktwice.serve import ServeConfig, ServerThread, create_app
from thinktwice.testing import FakeOpenAIServer

TASK = "gsm8k_thinktwice_local"
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer.split('####')[-1].strip()}}}}"
generation_kwargs:
  until: ["Question:"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: 128
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    regexes_to_ignore: [",", "\\\\$"]
metadata:
  version: 1.0
"""


def fake_upstream(problems: list[dict[str, Any]], p_correct: float) -> FakeOpenAIServer:
    """A fake upstream that knows the gold answers: each sample is right with probability ``p_correct``."""
    gold = {p["question"]: p["answer"].split("####")[-1].strip() for p in problems}

    def handler(body: dict[str, Any], index: int) -> str:
        text = json.dumps(body.get("messages") or body.get("prompt"))
        answer = next((g for q, g in gold.items() if json.dumps(q)[1:-1][:60] in text), "0")
        rng = random.Random(f"{body.get('seed')}/{index}/{answer}")
        if rng.random() >= p_correct:
            answer = str(int(answer.replace(",", "")) + 1)
        return f"Let me work it out step by step. The answer is {answer}.\n#### {answer}"

    return FakeOpenAIServer(handler, model="fake-model")


def run_lm_eval(model: str, base: str, served: str, include: Path, limit: int, out: Path) -> dict[str, Any]:
    args = [f"base_url={base}", f"model={served}", "num_concurrent=1", "max_retries=1", "timeout=600"]
    if model == "local-completions":
        args += ["tokenizer_backend=remote"]  # the proxy forwards /tokenizer_info, /tokenize, /detokenize
    cmd = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", ",".join(args),
           "--tasks", TASK, "--include_path", str(include), "--limit", str(limit), "--output_path", str(out)]
    if model == "local-chat-completions":
        cmd.append("--apply_chat_template")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    table = "\n".join(ln for ln in done.stdout.splitlines() if ln.startswith("|"))
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"lm_eval {model} failed with exit code {done.returncode}")
    return {"table": table}


def metrics(srv: ServerThread) -> dict[str, float]:
    text = httpx.get(srv.url.removesuffix("/v1") + "/metrics").text
    pick = re.compile(r"^(thinktwice_upstream_(?:calls|tokens)_total\S*|thinktwice_decisions_total\S*) (\S+)$")
    return {m.group(1): float(m.group(2)) for ln in text.splitlines() if (m := pick.match(ln))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="a GSM8K JSONL file (question, answer)")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--strategy", default="self-consistency")
    ap.add_argument("-o", "--option", action="append", default=["n=4"], help="strategy option key=value")
    ap.add_argument("--upstream", help="a real OpenAI-compatible base URL instead of the fake upstream")
    ap.add_argument("--model", default="fake-model", help="the upstream model name")
    ap.add_argument("--p-correct", type=float, default=0.6)
    a = ap.parse_args()
    lines = a.data.read_text().splitlines()[: a.limit]
    problems = [json.loads(ln) for ln in lines]
    options = {k: json.loads(v) if v[:1].isdigit() else v for k, v in (o.split("=", 1) for o in a.option)}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "gsm8k.jsonl"
        data.write_text("\n".join(lines) + "\n")  # a temporary copy of the few problems used
        (Path(tmp) / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data))
        fake = None if a.upstream else fake_upstream(problems, a.p_correct).start()
        upstream = a.upstream or fake.url  # type: ignore[union-attr]
        cfg = ServeConfig(upstreams=(upstream,), model=a.model, strategy=a.strategy, strategy_options=options)
        try:
            with ServerThread(create_app(cfg)) as srv:
                for client, path in (("local-chat-completions", "/chat/completions"),
                                     ("local-completions", "/completions")):
                    before = metrics(srv)
                    result = run_lm_eval(client, srv.url + path, a.model, Path(tmp), a.limit, Path(tmp) / "out")
                    spent = {k: v - before.get(k, 0.0) for k, v in metrics(srv).items()}
                    print(f"## {client} -> thinktwice serve ({a.strategy} {options}) -> "
                          f"{'fake upstream' if fake else upstream}\n")
                    print(result["table"] + "\n")
                    print("proxy spent: " + ", ".join(f"{k} {v:g}" for k, v in spent.items() if v) + "\n")
        finally:
            if fake is not None:
                fake.stop()


if __name__ == "__main__":
    main()
