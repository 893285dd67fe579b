"""B-STaR monitor: reasoning paths, step checks, balance score."""

from __future__ import annotations

import pytest

from thinktwice.errors import ConfigError
from thinktwice.train.bstar import Scored, arith_path, arith_steps_valid, balance_score, measure, path_key


def test_paths_normalise_equations_and_whitespace() -> None:
    assert arith_path("6 + 7 = 13.  13+8=21.\n#### 21") == ("6+7=13", "13+8=21")
    assert path_key("6+7=13. 13+8=21.\n#### 21") == path_key("6 + 7 = 13.\n13 + 8 = 21.\n####   21")
    assert path_key("no  numbers\nhere") == "no numbers here"


@pytest.mark.parametrize(("text", "ok"), [
    ("6+7=13. 13-8=5.\n#### 5", True),
    ("6+7=14. 14-8=6.\n#### 6", False),  # wrong arithmetic, answer consistent with it
    ("6+7=13. 13-8=5.\n#### 6", False),  # answer differs from the last equation
    ("the answer\n#### 5", False),  # nothing to verify
])
def test_step_check(text: str, ok: bool) -> None:
    assert arith_steps_valid(text) is ok


def test_balance_score_formula() -> None:
    assert balance_score(0, 0) == 0.0
    assert balance_score(4, 8) == pytest.approx(min(4 / 8, 1) * 4 / 8)
    assert balance_score(16, 16) == 1.0
    with pytest.raises(ConfigError):
        balance_score(1, 1, n_star=0)


def test_measure_separates_exploration_and_exploitation() -> None:
    good = Scored("1+1=2.\n#### 2", "2", True, True)
    lucky = Scored("1+1=3. 3-1=2.\n#### 2", "2", True, False)  # right answer, wrong step
    wrong = Scored("1+1=3.\n#### 3", "3", False, False)
    groups = [[good, good, lucky, wrong], [wrong, wrong]]
    st = measure(groups, threshold=1.0, temperature=0.8)
    assert st.pass_at_k == 0.5 and st.sample_accuracy == pytest.approx((3 / 4 + 0) / 2)
    assert st.selected == 3 and st.selected_distinct == 2  # the two identical good texts merge
    assert st.exploitation == 0.5  # one of the two distinct selected samples has valid steps
    strict = measure(groups, threshold=1.5)
    assert strict.exploitation == 1.0 and strict.selected_distinct == 1
    assert strict.distinct_correct_paths == 0.5 and strict.distinct_correct_answers == 0.5  # means over queries


def test_balance_counts_final_answers_over_queries_with_a_selection() -> None:
    """The released B-STaR code (cal_modi_acc_soft): a selected sample is correct on its final answer,
    and queries with no selected sample are left out of the mean."""
    good = Scored("1+1=2.\n#### 2", "2", True, True)
    lucky = Scored("1+1=3. 3-1=2.\n#### 2", "2", True, False)  # right answer, wrong step: still correct
    wrong = Scored("1+1=3.\n#### 3", "3", False, False)
    # query 1: 2 distinct selected (good twice merges), both right on the final answer -> min(2/8, 1) * 2/2
    # query 2: nothing selected -> not in the mean; query 3: 9 distinct right answers -> min(9/8, 1) * 9/9
    many = [Scored(f"1+1=2. 2+{i}={2 + i}. {2 + i}-{i}=2.\n#### 2", "2", True, True) for i in range(9)]
    groups = [[good, good, lucky, wrong], [wrong, wrong], many]
    st = measure(groups, threshold=1.0)
    assert st.balance_queries == 2
    assert st.balance == pytest.approx((0.25 + 1.0) / 2)
    # with a score threshold below a right answer, wrong samples are selected too: 2 right of 3 distinct
    loose = measure([[good, lucky, wrong]], threshold=0.0)
    assert loose.balance == pytest.approx((2 / 8) * (2 / 3))
    assert measure([[wrong]], threshold=1.0).balance == 0.0 and measure([[wrong]]).balance_queries == 0
