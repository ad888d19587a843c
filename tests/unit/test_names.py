"""names.py: validation refuses before deriving; derived names are injective."""

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiinfn_hub import names

USERNAME_CHARS = st.sampled_from("abcXYZ019._@+-")
USERNAMES = st.text(USERNAME_CHARS, min_size=1, max_size=names.MAX_USERNAME_LENGTH).filter(
    lambda s: s[0].isalnum() and ".." not in s)


@pytest.mark.parametrize("raw", ["alice", "Alice", "a_lice", "a.lice", "mario.rossi@infn.it", "x+tag", "0day"])
def test_valid_usernames_are_kept_unchanged(raw):
    assert names.username(raw) == raw


@pytest.mark.parametrize("raw, fragment", [
    ("", "empty"),
    ("a/b", "not allowed: '/'"),
    ("a..b", "'..'"),
    ("..", "'..'"),
    ("-rf", "start with '-'"),
    ("al\x00ice", "control character"),
    ("a" * 300, "longer than 64"),
    ("\u0430lice", "CYRILLIC SMALL LETTER A"),
    ("\uff41lice", "FULLWIDTH LATIN SMALL LETTER A"),
    ("al ice", "not allowed: ' '"),
    (42, "must be a string"),
    (["alice"], "must be a string"),
])
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


@pytest.mark.parametrize("raw, expected", [
    ("/cms-ml", "cms-ml"), ("lhcb/flashsim", "lhcb/flashsim"), ("/lhcb/flashsim", "lhcb/flashsim"),
    ("Admins", "Admins"),
])
def test_groups_strip_the_leading_slash_and_keep_subgroups(raw, expected):
    assert names.group(raw) == expected


@pytest.mark.parametrize("raw", ["", "/", "a//b", "a/../b", "a/./b", "a/", "-x", "a b", "g\u0435", None, 7])
def test_bad_groups_are_refused(raw):
    with pytest.raises(names.InvalidName):
        names.group(raw)


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
