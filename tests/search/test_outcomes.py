"""outcomes: the one rule for how a trial ended, over generated last results."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from mixmo_search.search.outcomes import FAILED, Ending, Outcome, classify

OBJECTIVES = ["val/acc", "val/nll"]
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
results = st.fixed_dictionaries(
    {},
    optional={
        "epoch": st.integers(0, 300),
        "val/acc": values,
        "final/val/acc": values,
        "final/val/nll": values,
        FAILED: st.text(min_size=1, max_size=30),
    },
)


@given(
    results,
    st.one_of(st.none(), st.integers(1, 300)),
    st.one_of(st.none(), st.text(min_size=1)),
    st.sampled_from([None, Outcome.INTERRUPTED, Outcome.OUT_OF_TIME]),
)
def test_a_trial_has_one_outcome_and_is_pruned_only_by_the_scheduler(
    result, pruned_at, error, stopped_by
):
    ending = classify(result, objectives=OBJECTIVES, pruned_at=pruned_at, error=error,
                      stopped_by=stopped_by)  # fmt: skip
    finals = [result.get(f"final/{m}") for m in OBJECTIVES]
    has_finals = all(v is not None for v in finals)
    if error is not None or result.get(FAILED):
        expected = Outcome.FAILED
    elif has_finals:
        finite = all(not isinstance(v, float) or math.isfinite(v) for v in finals)
        expected = Outcome.FINISHED if finite else Outcome.FAILED
    elif pruned_at is not None:
        expected = Outcome.PRUNED
    else:
        expected = stopped_by
    assert (ending.outcome if ending else None) == expected
    if ending is not None:
        named_pruned = "pruned" in ending.run_name("t1") or "pruned" in ending.describe()
        assert named_pruned == (ending.outcome is Outcome.PRUNED)
        assert (ending.outcome is Outcome.FAILED) == bool(ending.reason)


def test_the_search_s_stops_are_never_called_pruned():
    for stopped_by in (Outcome.INTERRUPTED, Outcome.OUT_OF_TIME):
        ending = classify({"epoch": 5}, objectives=OBJECTIVES, stopped_by=stopped_by)
        assert ending == Ending(stopped_by, 5)
        assert ending.run_name("abc") == "abc" and "pruned" not in ending.describe()
    pruned = classify({"epoch": 2}, objectives=OBJECTIVES, pruned_at=2)
    assert pruned.run_name("abc") == "abc (pruned at epoch 2)"
