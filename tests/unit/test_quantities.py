"""The one Kubernetes quantity parser, against the API server's grammar."""

from __future__ import annotations

from decimal import Decimal

import pytest

from aiinfn_hub import quantities


@pytest.mark.parametrize(
    "text, value",
    [
        ("4", 4),
        (2, 2),
        ("500m", Decimal("0.5")),
        ("100n", Decimal("1e-7")),
        ("3u", Decimal("3e-6")),
        ("1.5k", 1500),
        ("2M", 2 * 10**6),
        ("1G", 10**9),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1E", 10**18),
        ("16Gi", 16 * 2**30),
        ("1Ki", 1024),
        ("8Ti", 8 * 2**40),
        ("1Pi", 2**50),
        ("1Ei", 2**60),
        ("1e3", 1000),
        ("1E3", 1000),
        ("25e-3", Decimal("0.025")),
        (".5", Decimal("0.5")),
        ("1.", 1),
        ("-2Mi", -2 * 2**20),
        ("+3", 3),
        (" 8Gi ", 8 * 2**30),
    ],
)
def test_every_suffix_of_the_grammar(text, value):
    assert quantities.parse(text) == value


@pytest.mark.parametrize(
    "text", ["", "x", "Gi", "1.2.3", "1e", "1ki", "1 Gi", "1GiB", "1e1234", True, 1.5, None]
)
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError, match="not a quantity"):
        quantities.parse(text)


def test_values_are_exact():
    assert quantities.parse("0.1Gi") * 10 == quantities.parse("1Gi")
