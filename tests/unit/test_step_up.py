"""Step-up requirements (RFC 9470): validation of a route's options and the check on claims."""

from __future__ import annotations

import pytest

from service.jose.step_up import StepUp

NOW = 1_800_000_000.0


def test_no_options_is_no_requirement() -> None:
    assert StepUp.from_options() is None
    assert StepUp.from_options(None, None) is None


@pytest.mark.parametrize(
    ("acr_values", "max_age"),
    [([], None), ([""], None), (["a b"], None), (['a"'], None), (["a\\b"], None), ([1], None),
     (b"mfa", None), (None, -1), (None, True), (None, 1.5), (None, "300"), (None, 10**9)],
)
def test_malformed_options_are_refused_when_the_route_is_declared(acr_values, max_age) -> None:
    with pytest.raises(ValueError):
        StepUp.from_options(acr_values, max_age)


def test_acr_values_accept_a_list_or_a_space_separated_string() -> None:
    assert StepUp.from_options("a b a") == StepUp(("a", "b"))
    assert StepUp.from_options(["a", "b"], 0) == StepUp(("a", "b"), 0)


def test_acr_must_be_one_of_the_values() -> None:
    rule = StepUp(("urn:mfa", "urn:hw"))
    assert rule.unmet({"acr": "urn:hw"}, NOW, 5) == ()
    for claims in ({}, {"acr": "urn:pwd"}, {"acr": ["urn:mfa"]}, {"acr": None}):
        assert rule.unmet(claims, NOW, 5) == (("acr_values", "urn:mfa urn:hw"),)


@pytest.mark.parametrize(
    ("auth_time", "fresh"),
    [(NOW, True), (NOW - 300, True), (NOW - 305, True), (NOW - 306, False), (NOW + 5, True),
     (NOW + 6, False), (None, False), ("1800000000", False), (True, False), (float("nan"), False)],
)
def test_auth_time_must_be_within_max_age_with_leeway(auth_time, fresh) -> None:
    claims = {} if auth_time is None else {"auth_time": auth_time}
    expected = () if fresh else (("max_age", "300"),)
    assert StepUp((), 300).unmet(claims, NOW, 5) == expected


def test_every_failed_requirement_is_named_and_only_those() -> None:
    rule = StepUp(("urn:mfa",), 60)
    assert rule.unmet({"acr": "x"}, NOW, 0) == (("acr_values", "urn:mfa"), ("max_age", "60"))
    assert rule.unmet({"acr": "x", "auth_time": NOW}, NOW, 0) == (("acr_values", "urn:mfa"),)
    assert rule.unmet({"acr": "urn:mfa"}, NOW, 0) == (("max_age", "60"),)
