"""The tests' wait helper: it returns what it waited for, fails naming it, and scales."""

from __future__ import annotations

import time

import pytest

from tests.waiting import SCALE_ENV, WaitTimeout, scaled, timeout_scale, wait_until


def test_wait_until_returns_the_first_truthy_value():
    values = iter([None, 0, [], "ready"])
    assert wait_until(lambda: next(values), 5, "a value", interval=0.01) == "ready"


def test_a_wait_in_vain_fails_naming_what_it_waited_for(monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "2")
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"waited 0.2 s for the 5th epoch, in vain .* now 2\)"):
        wait_until(lambda: False, 0.1, "the 5th epoch", interval=0.01)
    assert 0.2 <= time.monotonic() - started < 5  # 0.1 s scaled by 2


def test_an_exception_in_the_condition_ends_the_wait_at_once():
    def exited():
        raise AssertionError("the server exited")

    started = time.monotonic()
    with pytest.raises(AssertionError, match="the server exited"):
        wait_until(exited, 60, "the server")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("raw", "scale"), [("", 1.0), ("3", 3.0), (" 0.5 ", 0.5)])
def test_the_scale_comes_from_one_setting(monkeypatch, raw, scale):
    monkeypatch.setenv(SCALE_ENV, raw)
    assert timeout_scale() == scale and scaled(10) == 10 * scale


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "fast"])
def test_a_bad_scale_is_one_clear_error(monkeypatch, raw):
    monkeypatch.setenv(SCALE_ENV, raw)
    with pytest.raises(ValueError, match=f"{SCALE_ENV}=.* must be a number > 0"):
        timeout_scale()
