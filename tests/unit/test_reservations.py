"""Reserve or fail fast: refusals say what else is free."""

import pytest

from aiinfn_hub import catalog, policy, profiles, reservations
from aiinfn_hub.errors import UserError
from aiinfn_hub.profiles import Availability

CATALOG = catalog.load(catalog.default_path())
USER = policy.for_user(
    policy.parse_rules(
        {"accelerators": "*", "environments": "*", "max_accelerators": 2}, CATALOG, "d"
    ),
    {},
    [],
)
ALL = set(CATALOG.accelerators)


def plan(key, count=None):
    options = {"accelerator": key} if count is None else {"accelerator": key, "count": count}
    return profiles.resolve(CATALOG, USER, options, 0)


def test_promises_take_units_off_until_released():
    ledger = reservations.Reservations()
    raw = {"a100": Availability(free=1, total=5, free_now=1)}
    reservations.check(plan("a100"), CATALOG, reservations.available(raw, ledger), 1, ALL)
    ledger.promise("alice/", "a100", 1)
    with pytest.raises(UserError) as error:
        reservations.check(plan("a100"), CATALOG, reservations.available(raw, ledger), 1, ALL)
    assert error.value.status == 503
    assert error.value.message == "no NVIDIA A100 80GB free now (0/5)"
    ledger.release("alice/")
    assert reservations.available(raw, ledger)["a100"].free == 1


def test_promises_take_units_off_both_free_numbers_and_units_lent_to_batch_count():
    ledger = reservations.Reservations()
    raw = {"t4": Availability(free=3, total=8, batch=2, batch_jobs=2, free_now=1)}
    ledger.promise("alice/", "t4", 2)
    assert reservations.available(raw, ledger) == {
        "t4": Availability(free=1, total=8, batch=2, batch_jobs=2, free_now=0)
    }
    # A spawn is checked against the units a notebook can get: idle or lent to batch jobs.
    reservations.check(plan("t4"), CATALOG, reservations.available(raw, ledger), 1, ALL)
    ledger.promise("bob/", "t4", 1)
    with pytest.raises(UserError, match=r"^no NVIDIA Tesla T4 free now \(0/8\)$"):
        reservations.check(plan("t4"), CATALOG, reservations.available(raw, ledger), 1, ALL)


def test_refusal_names_alternatives():
    availability = {
        "a100": Availability(0, 5, free_now=0),
        "a100-mig-3g-40gb": Availability(2, 2, free_now=2),
        "t4": Availability(0, 8, free_now=0),
        "u50": Availability(2, 2, free_now=2),
    }
    with pytest.raises(
        UserError,
        match=r"^no NVIDIA A100 80GB free now \(0/5\); A100 MIG slice 3g\.40gb has 2 free$",
    ):
        reservations.check(plan("a100"), CATALOG, availability, 0, ALL)


def test_fragmentation_is_named():
    with pytest.raises(
        UserError, match="2 NVIDIA A100 80GB free in total, but no single node has 2 free"
    ):
        reservations.check(
            plan("a100", 2), CATALOG, {"a100": Availability(2, 5, free_now=2)}, 1, ALL
        )


def test_cpu_is_never_held_back():
    reservations.check(plan("cpu"), CATALOG, {}, 0, ALL)
