"""Step-up authentication (RFC 9470): a route's ``acr_values`` and ``max_age``, checked on a token."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from typing import Final

#: An acr value goes into a quoted-string of a space-separated list (RFC 9470 §3): visible
#: ASCII without the quote and backslash, so a challenge never needs escaping.
_ACR_VALUE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,256}")
#: A year: longer than any session an API would call recent.
MAX_MAX_AGE: Final = 366 * 86400


@dataclass(frozen=True, slots=True)
class StepUp:
    """What a route asks of the user's authentication: one of ``acr_values``, within ``max_age`` s."""

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None

    @classmethod
    def from_options(cls, acr_values: Any = None, max_age: Any = None) -> StepUp | None:
        """Validate a route's options (a list or one space-separated string, and seconds).

        None when neither is set; ValueError naming the fault otherwise.
        """
        values: tuple[str, ...] = ()
        if acr_values is not None:
            if isinstance(acr_values, str):
                acr_values = acr_values.split(" ")
            if not isinstance(acr_values, Iterable) or isinstance(acr_values, bytes | dict):
                raise ValueError("acr_values must be a list of strings or one space-separated string")
            values = tuple(dict.fromkeys(acr_values))
            if not values:
                raise ValueError("acr_values must not be empty")
            for value in values:
                if not isinstance(value, str) or not _ACR_VALUE.fullmatch(value):
                    raise ValueError(
                        f"acr_values: {value!r} is not 1-256 visible ASCII characters "
                        "without spaces, quotes or backslashes"
                    )
        if max_age is not None and (
            not isinstance(max_age, int) or isinstance(max_age, bool)
            or not 0 <= max_age <= MAX_MAX_AGE
        ):
            raise ValueError(f"max_age: {max_age!r} must be whole seconds from 0 to {MAX_MAX_AGE}")
        if not values and max_age is None:
            return None
        return cls(values, max_age)

    def unmet(self, claims: dict[str, Any], now: float, leeway: float) -> tuple[tuple[str, str], ...]:
        """The challenge parameters of every requirement the token's claims fail (empty: all met).

        RFC 9470 §3: ``acr`` must be one of ``acr_values``; ``auth_time`` must be a NumericDate
        at most ``max_age`` seconds old (clock leeway allowed), and not in the future.
        """
        params: list[tuple[str, str]] = []
        if self.acr_values and claims.get("acr") not in self.acr_values:
            params.append(("acr_values", " ".join(self.acr_values)))
        if self.max_age is not None:
            auth_time = claims.get("auth_time")
            fresh = (
                isinstance(auth_time, int | float) and not isinstance(auth_time, bool)
                and math.isfinite(auth_time)
                and now - self.max_age - leeway <= auth_time <= now + leeway
            )
            if not fresh:
                params.append(("max_age", str(self.max_age)))
        return tuple(params)
