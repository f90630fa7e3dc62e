"""The asha rule, replayed over a search's recorded decisions (scheduler.jsonl).

Shared by the tests (the `asha_rule` fixture) and the chaos soak (benchmarks/chaos.py).
"""

from __future__ import annotations

import warnings


def asha_rule(decisions: list[dict], *, reduction_factor: float, mode: str, max_t: int) -> None:
    """Replay asha's recorded decisions in order, each against the rule over the rung's
    earlier records: stop exactly when the value is below the (1 - 1/reduction_factor)
    quantile of the values recorded at that rung before it (numpy's nanpercentile, as Ray
    computes it); every trial reaching max_t stops. Raises AssertionError at the first
    decision that breaks the rule."""
    import numpy as np

    sign = 1 if mode == "max" else -1
    seen: dict[float, list[float]] = {}
    for d in decisions:
        if d["rung"] >= max_t:
            assert d["stop"], d
            continue
        earlier = seen.setdefault(d["rung"], [])
        with warnings.catch_warnings():  # a rung of NaN values so far: no cutoff
            warnings.simplefilter("ignore", RuntimeWarning)
            q = (1 - 1 / reduction_factor) * 100
            cutoff = np.nanpercentile([sign * v for v in earlier], q) if earlier else None
        assert d["stop"] == bool(cutoff is not None and sign * d["value"] < cutoff), (d, earlier)
        earlier.append(d["value"])
