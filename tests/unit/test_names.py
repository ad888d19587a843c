"""names.py: validation refuses before deriving; derived names are injective."""

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiinfn_hub import names

USERNAME_CHARS = st.sampled_from("abcXYZ019._@+-")
USERNAMES = st.text(USERNAME_CHARS, min_size=1, max_size=names.MAX_USERNAME_LENGTH).filter(
    lambda s: s[0].isalnum() and ".." not in s
)
# Characters that are, or normalise (NFC or NFKC) to, or combine into, something ASCII-looking.
LOOKALIKES = st.sampled_from(
    [
        "\u212a",  # KELVIN SIGN: NFC makes it 'K'
        "\u212b",  # ANGSTROM SIGN: NFC makes it U+00C5
        "\u037e",  # GREEK QUESTION MARK: NFC makes it ';'
        "\u1fef",  # GREEK VARIA: NFC makes it '`'
        "\uff21",
        "\uff41",  # FULLWIDTH A, a
        "\u017f",  # LONG S: NFKC makes it 's'
        "\ufb01",  # LIGATURE FI
        "\u0301",
        "\u0338",
        "\u0307",  # combining acute, long solidus overlay, dot above
        "\u0430",
        "\u0131",  # CYRILLIC a, DOTLESS i
    ]
)
MIXED = st.lists(st.one_of(USERNAME_CHARS, st.just("/"), LOOKALIKES), min_size=1, max_size=12).map(
    "".join
)


@pytest.mark.parametrize(
    "raw", ["alice", "Alice", "a_lice", "a.lice", "mario.rossi@infn.it", "x+tag", "0day"]
)
def test_valid_usernames_are_kept_unchanged(raw):
    assert names.username(raw) == raw


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("", "empty"),
        ("a/b", "not allowed: '/'"),
        ("a..b", "'..'"),
        ("..", "'..'"),
        ("-rf", "start with '-'"),
        ("al\x00ice", "control character"),
        ("a" * 300, "longer than 64"),
        ("\u0430lice", "CYRILLIC SMALL LETTER A"),
        ("\uff41lice", "FULLWIDTH LATIN SMALL LETTER A"),
        ("\u212aate", "U+212A KELVIN SIGN"),
        ("\u017fam", "U+017F LATIN SMALL LETTER LONG S"),
        ("\ufb01le", "U+FB01 LATIN SMALL LIGATURE FI"),
        ("jose\u0301", "U+0301 COMBINING ACUTE ACCENT"),
        ("al ice", "not allowed: ' '"),
        (42, "must be a string"),
        (["alice"], "must be a string"),
    ],
)
def test_bad_usernames_are_refused_with_the_rule(raw, fragment):
    with pytest.raises(names.InvalidName) as error:
        names.username(raw)
    assert fragment in error.value.message
    assert error.value.status == 403


def test_huge_username_is_refused_before_any_work():
    raw = "a" * 10_000_000
    started = time.perf_counter()
    with pytest.raises(names.InvalidName):
        names.username(raw)
    assert time.perf_counter() - started < 1.0  # a guard against scanning, not a benchmark


def test_composed_and_decomposed_accents_are_one_text_and_both_refused():
    with pytest.raises(names.InvalidName):
        names.username("jos\u00e9")
    with pytest.raises(names.InvalidName):
        names.username("jose\u0301")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("/cms-ml", "cms-ml"),
        ("lhcb/flashsim", "lhcb/flashsim"),
        ("/lhcb/flashsim", "lhcb/flashsim"),
        ("Admins", "Admins"),
    ],
)
def test_groups_strip_the_leading_slash_and_keep_subgroups(raw, expected):
    assert names.group(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/",
        "a//b",
        "a/../b",
        "a/./b",
        "a/",
        "-x",
        "a b",
        "g\u0435",
        None,
        7,
        "\u212aqml",
        "/cms-ml/\u212a",
        "\uff51ml",
        "q\ufb01",
    ],
)
def test_bad_groups_are_refused(raw):
    with pytest.raises(names.InvalidName):
        names.group(raw)


def test_a_look_alike_is_named_in_the_refusal():
    with pytest.raises(names.InvalidName) as error:
        names.username("\u212aate")
    assert "U+212A KELVIN SIGN, which looks like 'K'" in error.value.message


@given(MIXED)
def test_names_are_taken_exactly_as_sent_or_refused(raw):
    """Nothing is normalised: a name is accepted only as it is, and only in ASCII."""
    for validate in (names.username, names.group):
        try:
            accepted = validate(raw)
        except names.InvalidName:
            continue
        assert raw.isascii()
        assert accepted == raw or (validate is names.group and accepted == raw[1:])


@pytest.mark.parametrize(
    "a, b",
    [
        ("Kate", "kate"),
        ("tom", "torn"),
        ("tom", "TORN"),
        ("carol", "caro1"),
        ("carol", "CAROL"),
        ("will", "vvill"),
        ("dave", "clave"),
        ("bOb0", "bob0"),
        ("bob0", "bobO"),
        ("rnarn", "mam"),
        ("m.rossi@infn.it", "rn.rossi@infn.it"),
    ],
)
def test_look_alike_names_share_a_skeleton(a, b):
    assert names.skeleton(a) == names.skeleton(b)


@pytest.mark.parametrize("a, b", [("alice", "aIice"), ("Il1", "lll"), ("WOO", "VV00")])
def test_upper_case_look_alikes_share_the_skeleton_that_keeps_case(a, b):
    assert names.skeleton(a, ignore_case=False) == names.skeleton(b, ignore_case=False)
    assert names.lookalike(a, [b]) == b


@pytest.mark.parametrize(
    "a, b",
    [
        ("a_b", "ab"),
        ("a.b", "a_b"),
        ("alice", "bob"),
        ("ii", "u"),
        ("irossi", "lrossi"),
        ("eli", "ell"),
    ],
)
def test_different_looking_names_are_not_look_alikes(a, b):
    assert names.skeleton(a) != names.skeleton(b)
    assert names.lookalike(a, [b]) is None


def test_lookalike_finds_an_existing_different_account():
    existing = ["alice", "tom", "Carol"]
    assert names.lookalike("torn", existing) == "tom"
    assert names.lookalike("caro1", existing) == "Carol"
    assert names.lookalike("ALICE", existing) == "alice"
    assert names.lookalike("aIice", existing) == "alice"
    assert names.lookalike("alice", existing) is None  # the same account, not a look-alike
    assert names.lookalike("bob", existing) is None


SWAPS = {
    "m": ["rn", "RN", "M"],
    "w": ["vv", "W", "VV"],
    "d": ["cl", "D", "CL"],
    "o": ["0", "O"],
    "l": ["1", "L"],
    "a": ["A"],
}
SWAPS_CASED = {"m": ["rn"], "w": ["vv"], "W": ["VV"], "d": ["cl"], "O": ["0"], "l": ["1", "I"]}


@given(st.text(st.sampled_from("mwdolabz._"), min_size=1, max_size=20), st.data())
def test_swapping_look_alikes_or_case_keeps_the_skeleton(name, data):
    """The skeleton is taken character by character, so any look-alike swap anywhere collides."""
    variant = "".join(data.draw(st.sampled_from([c, *SWAPS.get(c, [])])) for c in name)
    assert names.skeleton(variant) == names.skeleton(name)
    assert names.lookalike(variant, [name]) == (None if variant == name else name)


@given(st.text(st.sampled_from("mwWdOlabZ._"), min_size=1, max_size=20), st.data())
def test_swapping_upper_case_look_alikes_keeps_the_skeleton_that_keeps_case(name, data):
    variant = "".join(data.draw(st.sampled_from([c, *SWAPS_CASED.get(c, [])])) for c in name)
    assert names.skeleton(variant, ignore_case=False) == names.skeleton(name, ignore_case=False)
    assert names.lookalike(variant, [name]) == (None if variant == name else name)


def test_slug_examples():
    assert names.slug("alice") == "alice"
    assert names.slug("Alice") == "-41lice"
    assert names.slug("cms-ml") == "cms-2dml"
    assert names.slug("a_b") != names.slug("ab")
    assert names.object_name("aiinfn-token", "a.b") == "aiinfn-token-a-2eb"


@given(USERNAMES, USERNAMES)
def test_slug_is_injective(a, b):
    if a != b:
        assert names.slug(a) != names.slug(b)


@given(USERNAMES)
def test_slug_is_a_dns_label_charset_and_fits_object_names(name):
    result = names.object_name("aiinfn-home", names.username(name))
    assert set(result) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert len(result) <= names.MAX_OBJECT_NAME_LENGTH


def test_label_value_is_short_and_valid():
    value = names.label_value("A" * 64)
    assert len(value) <= 63
