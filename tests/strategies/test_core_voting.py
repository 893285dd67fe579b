import pytest

from thinktwice.strategies.voting import group_answers, vote
from thinktwice.types import Candidate, Sample


class HalfFmt:
    """Treats '0.5' and '1/2' as the same answer (equivalent, but different canonical keys)."""

    def extract(self, text):
        return text

    def canonical(self, a):
        return a.strip()

    def equivalent(self, a, b):
        def val(x):
            if "/" in x:
                n, d = x.split("/")
                return float(n) / float(d)
            return float(x)

        return abs(val(a) - val(b)) < 1e-9


def cands(answers):
    return [Candidate(Sample(str(a)), a) for a in answers]


def test_equivalent_answers_merge_into_one_class():
    classes = group_answers(["0.5", "3", "1/2", None, "3", " 0.5"], HalfFmt())
    assert [c.members for c in classes] == [(0, 2, 5), (1, 4)]
    assert classes[0].answer == "0.5"


def test_vote_ties_go_to_first_appearance_and_nones_do_not_vote():
    v = vote(cands(["3", "0.5", None, "1/2", "3"]), HalfFmt())
    assert v.answer == "3" and v.share == pytest.approx(0.5) and v.representative == 0
    assert v.tallies == {"3": 2.0, "0.5": 2.0}


def test_weighted_vote_and_validation():
    v = vote(cands(["3", "0.5", "1/2"]), HalfFmt(), weights=[5.0, 1.0, 1.0])
    assert v.answer == "3" and v.share == pytest.approx(5 / 7)
    with pytest.raises(ValueError):
        vote(cands(["3"]), HalfFmt(), weights=[-1.0])
    empty = vote(cands([None, None]), HalfFmt())
    assert empty.answer is None and empty.share is None
