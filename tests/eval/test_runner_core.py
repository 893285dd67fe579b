import pytest

from thinktwice.errors import AuthenticationError, BackendUnavailable
from thinktwice.eval.runner import evaluate, problem_seed
from thinktwice.eval.store import RunStore
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies.self_consistency import SelfConsistency


def right_answer_handler(prompt, params, i):
    # "What is 3+3?" -> answers "6" for sample 0 and 1, "0" otherwise
    q = prompt.messages[-1].content
    a = int(q.split()[2].split("+")[0])
    return f"it is {2 * a}" if i < 2 else "it is 0"


async def test_evaluate_grades_stores_and_counts(tiny_task, tmp_path):
    b = ScriptedBackend(handler=right_answer_handler)
    with RunStore(tmp_path / "r.db") as st:
        rid = st.create_run(kind="eval", config={})
        st.put_problems(rid, tiny_task.load())
        res = await evaluate(tiny_task, SelfConsistency(n=3), b, tiny_task.load(), store=st, run_id=rid,
                             concurrency=3)
        # problem 0: gold 0; every answer is 0 -> right; others: 2 right votes of 3 -> right
        assert res.n == 6 and res.correct == 6 and res.failed == 0
        assert res.usage.calls == 6 and res.usage.completion_tokens == 6 * 3 * 3
        assert len(st.samples(rid)) == 18
        assert {s.correct for s in st.samples(rid, "1")} == {True, False}


async def test_failures_are_recorded_and_resume_retries_only_them(tiny_task, tmp_path):
    fail = {"3"}

    def handler(prompt, params, i):
        if "3+3" in prompt.messages[-1].content and fail:
            return Reply(error=BackendUnavailable("server down"))
        return right_answer_handler(prompt, params, i)

    b = ScriptedBackend(handler=handler)
    with RunStore(tmp_path / "r.db") as st:
        rid = st.create_run(kind="eval", config={})
        res = await evaluate(tiny_task, SelfConsistency(n=2), b, tiny_task.load(), store=st, run_id=rid)
        assert res.failed == 1 and res.n == 5 and [r.problem_id for r in res.rows if r.error] == ["3"]
        assert st.events(rid)[0][0] == "3" and "server down" in st.events(rid)[0][2]
        fail.clear()
        calls_before = len(b.calls)
        res2 = await evaluate(tiny_task, SelfConsistency(n=2), b, tiny_task.load(), store=st, run_id=rid)
        assert len(b.calls) - calls_before == 1  # only problem 3 re-run
        assert res2.failed == 0 and res2.n == 6 and len(st.done_problems(rid)) == 6


async def test_auth_errors_abort_the_run(tiny_task):
    b = ScriptedBackend([Reply(error=AuthenticationError("key rejected"))], cycle=True)
    with pytest.raises(AuthenticationError):
        await evaluate(tiny_task, SelfConsistency(n=1), b, tiny_task.load())


async def test_all_failing_raises_instead_of_empty_accuracy(tiny_task):
    b = ScriptedBackend([Reply(error=BackendUnavailable("connection refused"))], cycle=True)
    with pytest.raises(Exception, match="every problem failed"):
        await evaluate(tiny_task, SelfConsistency(n=1), b, tiny_task.load())


def test_problem_seed_is_stable_and_distinct():
    assert problem_seed(0, "a") == problem_seed(0, "a") != problem_seed(0, "b") != problem_seed(1, "a")
