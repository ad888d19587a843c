"""Kubernetes resource quantities as exact numbers: the one parser of the product and the dev
platform, so "1e3", "1k" and "1000" mean the same everywhere.

The grammar is the API server's (k8s.io/apimachinery resource.Quantity): a signed decimal number
and one suffix, binary (Ki..Ei), decimal (n u m k M G T P E) or an exponent (e3, E-2). What a
caller *accepts* (the catalog's forms, the jobs API's forms) is validated where it is read.
"""

from __future__ import annotations

import re
from decimal import Decimal

_FACTORS = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:[eE]([+-]?[0-9]{1,3})|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?"
)


def parse(text: str | int) -> Decimal:
    """The quantity's exact value ("500m" -> 0.5, "16Gi" -> 17179869184, "1e3" -> 1000).

    Raises ValueError for anything else. Exponents have at most three digits: no real resource
    is that large, and a bound keeps int() of the result cheap.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"not a quantity: {text!r}")
    match = _QUANTITY.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    number, exponent, suffix = match.groups()
    if exponent is not None:
        return Decimal(number).scaleb(int(exponent))
    return Decimal(number) * _FACTORS[suffix or ""]
