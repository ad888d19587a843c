"""Only the access token leaves auth_state, into a labelled per-user Secret."""

from __future__ import annotations

import base64

import pytest

from aiinfn_hub import names, tokens

AUTH_STATE = {
    "access_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
    "refresh_token": "refresh-must-never-leave-the-hub",
    "id_token": "id-token-stays-too",
    "token_response": {"access_token": "x", "refresh_token": "refresh-must-never-leave-the-hub"},
    "oauth_user": {"preferred_username": "alice"},
}


def test_only_the_access_token_is_taken():
    assert tokens.access_token(AUTH_STATE) == AUTH_STATE["access_token"]


@pytest.mark.parametrize(
    "auth_state",
    [
        None,
        {},
        "token",
        ["access_token"],
        {"refresh_token": "r"},
        {"access_token": None},
        {"access_token": ""},
        {"access_token": 42},
        {"access_token": "a b"},
        {"access_token": "a\nb"},
        {"access_token": "x" * (tokens.MAX_TOKEN_LENGTH + 1)},
        {"access_token": "tökén"},
    ],
)
def test_no_usable_access_token_means_none(auth_state):
    assert tokens.access_token(auth_state) is None


def test_the_secret_holds_one_key_and_names_its_owner():
    secret = tokens.make_secret("Alice.B", AUTH_STATE["access_token"])
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "aiinfn-token--41lice-2e-42",
            "labels": {
                "app.kubernetes.io/managed-by": "aiinfn-hub",
                "app.kubernetes.io/part-of": "aiinfn-hub",
                "app.kubernetes.io/component": "access-token",
                "aiinfn.infn.it/owner": names.label_value("Alice.B"),
            },
            "annotations": {"aiinfn.infn.it/owner-name": "Alice.B"},
        },
        "data": {"access_token": base64.b64encode(AUTH_STATE["access_token"].encode()).decode()},
    }
    assert "refresh" not in str(secret)


def test_secret_names_differ_for_names_that_look_alike():
    variants = ["alice", "Alice", "a_lice", "a.lice", "a-lice", "al.ice"]
    assert len({tokens.secret_name(v) for v in variants}) == len(variants)


@pytest.mark.parametrize("bad", ["a/b", "..", "-x", "a\x00b", "a" * 300, "\u0430lice"])
def test_invalid_names_get_no_secret(bad):
    with pytest.raises(names.InvalidName):
        tokens.secret_name(bad)
    with pytest.raises(names.InvalidName):
        tokens.make_secret(bad, "t")


def test_fingerprint_notices_a_change_without_holding_the_token():
    first, again, other = (tokens.fingerprint(t) for t in ("token-a", "token-a", "token-b"))
    assert first == again != other
    assert "token-a" not in first and len(first) == 64
