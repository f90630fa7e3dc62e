"""The hold point fault tests kill or signal at (MIXMO_HOLD_AT)."""

from __future__ import annotations

import os
import threading

import pytest

from mixmo_search.search.hold import HOLD_ENV, RELEASE, maybe_hold
from tests.waiting import wait_until


def test_a_trial_holds_once_at_its_epoch_until_released(tmp_path, monkeypatch):
    monkeypatch.setenv(HOLD_ENV, f"3:{tmp_path}")
    maybe_hold(2, "t1")  # another epoch: no hold
    assert not list(tmp_path.iterdir())
    waiter = threading.Thread(target=maybe_hold, args=(3, "t1"), daemon=True)
    waiter.start()
    held = wait_until(lambda: list(tmp_path.glob("*.held")), 30, "the hold's marker")
    assert [p.name for p in held] == ["t1.held"] and held[0].read_text() == str(os.getpid())
    waiter.join(timeout=0.3)
    assert waiter.is_alive()  # still held
    (tmp_path / RELEASE).touch()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    (tmp_path / RELEASE).unlink()
    maybe_hold(3, "t1")  # the trial's retry: held once already, so it goes on at once


@pytest.mark.parametrize("value", ["3", ":x", "three:/tmp", "-1:/tmp"])
def test_a_malformed_hold_point_is_refused_naming_the_form(value, monkeypatch):
    monkeypatch.setenv(HOLD_ENV, value)
    with pytest.raises(ValueError, match="<epoch>:<folder>"):
        maybe_hold(3, "t1")


def test_no_hold_point_means_no_hold(monkeypatch, tmp_path):
    monkeypatch.delenv(HOLD_ENV, raising=False)
    maybe_hold(3, "t1")
    assert not list(tmp_path.iterdir())
