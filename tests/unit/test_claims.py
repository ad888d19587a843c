"""claims.py: every identity decision as literal cases, plus a property test that usernames are
either taken exactly as sent or refused (so two people never share one account)."""

from __future__ import annotations

import time

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiinfn_hub import claims
from aiinfn_hub.claims import LoginRefused

ISSUER = "https://iam.example.org/"
CLAIMS = ("wlcg.groups", "groups")


def userinfo(**extra):
    return {"sub": "sub-1", "preferred_username": "alice", "wlcg.groups": ["/cms-ml"], **extra}


# -- usernames -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "Alice", "a_b", "ab", "a.b", "alice@infn.it", "x" * 64])
def test_valid_usernames_are_kept_exactly(name):
    assert claims.username_of({"preferred_username": name}, "preferred_username") == name


def test_distinct_people_stay_distinct():
    names = ["a_b", "ab", "a.b", "Alice", "alice"]
    assert len({claims.username_of({"u": n}, "u") for n in names}) == len(names)


@pytest.mark.parametrize(
    "raw, says",
    [
        ("\u0430lice", "U+0430 CYRILLIC SMALL LETTER A"),
        ("\uff41lice", "U+FF41 FULLWIDTH LATIN SMALL LETTER A"),
        ("ali\u0301ce", "U+0301 COMBINING ACUTE ACCENT"),  # refused as sent, not composed first
        ("\u212aate", "U+212A KELVIN SIGN, which looks like 'K'"),  # NFC would make it 'Kate'
        ("\u017fam", "U+017F LATIN SMALL LETTER LONG S, which looks like 's'"),
        ("\ufb01le", "U+FB01 LATIN SMALL LIGATURE FI, which looks like 'fi'"),
        ("a/b", "not allowed: '/'"),
        ("a..b", "'..'"),
        ("..", "'..'"),
        ("al\x00ice", "control character"),
        ("-rf", "must not start with '-'"),
        ("x" * 65, "longer than 64 characters"),
        ("a b", "not allowed: ' '"),
        (42, "must be a string"),
        (["alice"], "must be a string"),
    ],
)
def test_bad_usernames_are_refused_with_the_rule(raw, says):
    with pytest.raises(LoginRefused) as refused:
        claims.username_of({"preferred_username": raw}, "preferred_username")
    assert says in refused.value.message
    assert refused.value.status == 403


def test_a_10_mb_username_is_refused_and_not_echoed():
    huge = "a" * 10_000_000
    with pytest.raises(LoginRefused) as refused:
        claims.username_of({"preferred_username": huge}, "preferred_username")
    assert "longer than 64" in refused.value.message
    assert len(refused.value.message) < 300


@pytest.mark.parametrize("info", [{}, {"preferred_username": ""}, {"preferred_username": None}])
def test_a_missing_username_is_refused(info):
    with pytest.raises(LoginRefused, match="sent no 'preferred_username'"):
        claims.username_of(info, "preferred_username")


@pytest.mark.parametrize("verified", [False, "true", 1, None])
def test_an_unverified_email_is_never_a_username(verified):
    info = {"email": "alice@infn.it", "email_verified": verified}
    with pytest.raises(LoginRefused, match="not verified"):
        claims.username_of(info, "email")
    assert claims.verified_email(info) is None


def test_a_verified_email_is_used():
    info = {"email": "alice@infn.it", "email_verified": True}
    assert claims.username_of(info, "email") == "alice@infn.it"
    assert claims.verified_email(info) == "alice@infn.it"


# Text in general, and in particular ASCII mixed with characters that normalise to ASCII.
LOOKALIKES = st.sampled_from("\u212a\u212b\u037e\u1fef\uff21\u017f\ufb01\u0301\u0307\u0430")
ASCII_AND_LOOKALIKES = st.lists(st.one_of(st.sampled_from("abK._-"), LOOKALIKES), max_size=12)
RAW_NAMES = st.one_of(st.text(max_size=80), ASCII_AND_LOOKALIKES.map("".join))


@given(RAW_NAMES)
def test_usernames_are_taken_exactly_or_refused(raw):
    try:
        assert claims.username_of({"u": raw}, "u") == raw
    except LoginRefused:
        pass


# -- groups ----------------------------------------------------------------------------------


def test_wlcg_groups_lose_the_leading_slash_and_keep_subgroups_distinct():
    info = {"wlcg.groups": ["/cms-ml", "/cms-ml/gpu", "/aiinfn-admins"]}
    assert claims.groups_of(info, CLAIMS).groups == ("aiinfn-admins", "cms-ml", "cms-ml/gpu")


def test_every_groups_claim_present_is_read():
    info = {"wlcg.groups": ["/cms-ml"], "groups": ["qml", "cms-ml"]}
    assert claims.groups_of(info, CLAIMS).groups == ("cms-ml", "qml")


def test_a_string_claim_is_one_group_not_its_characters():
    assert claims.groups_of({"groups": "cms-ml"}, CLAIMS) == claims.GroupClaims(("cms-ml",), ())


def test_an_empty_list_is_membership_of_nothing():
    assert claims.groups_of({"groups": []}, CLAIMS) == claims.GroupClaims((), ())


def test_a_missing_groups_claim_refuses_the_login():
    with pytest.raises(LoginRefused, match="no group membership"):
        claims.groups_of({"preferred_username": "alice"}, CLAIMS)


@pytest.mark.parametrize(
    "value, says",
    [
        ({"cms-ml": True}, "neither a group nor a list"),
        (7, "neither a group nor a list"),
        (None, "neither a group nor a list"),
        (["g"] * (claims.MAX_GROUPS + 1), "more than 1024"),
    ],
)
def test_a_malformed_groups_claim_refuses_the_login(value, says):
    with pytest.raises(LoginRefused) as refused:
        claims.groups_of({"groups": value}, CLAIMS)
    assert says in refused.value.message


@pytest.mark.parametrize(
    "entry, says",
    [
        (3, "must be a string"),
        (None, "must be a string"),
        (["qml"], "must be a string"),
        ("cms ml", "may only contain"),
        ("cms-ml,qml", "may only contain"),
        ("/cms-ml/../qml", "'..'"),
        ("", "empty"),
        ("g" * 129, "longer than 128"),
        ("/\u0441ms-ml", "U+0441 CYRILLIC SMALL LETTER ES"),
        ("/\u212aqml", "U+212A KELVIN SIGN"),
    ],
)
def test_an_unusable_group_among_good_ones_is_dropped_and_reported(entry, says):
    """One bad entry does not refuse the login: it is dropped (a group only ever gives access),
    and what was dropped is returned for the log."""
    found = claims.groups_of({"wlcg.groups": ["/cms-ml", entry, "/qml"]}, CLAIMS)
    assert found.groups == ("cms-ml", "qml")
    [why] = found.ignored
    assert "in the 'wlcg.groups' claim" in why and says in why
    assert len(why) < 400


def test_unusable_string_claims_and_lists_of_only_bad_groups_give_no_groups():
    found = claims.groups_of({"groups": "cms ml", "wlcg.groups": ["/qml"]}, CLAIMS)
    assert found.groups == ("qml",)
    found = claims.groups_of({"groups": ["cms ml", "a..b"]}, CLAIMS)
    assert (found.groups, len(found.ignored)) == ((), 2)


# -- identity, access ------------------------------------------------------------------------


def test_identity_collects_everything_the_hub_takes():
    info = userinfo(email="alice@infn.it", email_verified=True, groups="qml")
    assert claims.identity(
        info, issuer=ISSUER, username_claim="preferred_username", group_claims=CLAIMS
    ) == claims.Identity(ISSUER, "sub-1", "alice", ("cms-ml", "qml"), "alice@infn.it")


@pytest.mark.parametrize("sub", [None, "", 7, "x" * 256, "a\nb"])
def test_a_missing_or_odd_subject_refuses_the_login(sub):
    with pytest.raises(LoginRefused, match="subject"):
        claims.identity(
            userinfo(sub=sub),
            issuer=ISSUER,
            username_claim="preferred_username",
            group_claims=CLAIMS,
        )


SETTINGS = dict(
    projects={"cms-ml", "lhcb-flashsim", "qml"},
    system_groups={"env-curators", "cms-ml/gpu"},
    allowed_groups={"cms-ml", "lhcb-flashsim", "qml"},
    admin_groups={"aiinfn-admins"},
)


def test_access_keeps_known_groups_and_drops_the_rest():
    assert claims.access(
        ["cms-ml", "cms-ml/gpu", "env-curators", "other-experiment", "qml/sub"], **SETTINGS
    ) == claims.Access(
        groups=("cms-ml", "cms-ml/gpu", "env-curators"),
        projects=("cms-ml",),
        admin=False,
        allowed=True,
    )


def test_admins_come_from_admin_groups_and_may_enter():
    assert claims.access(["aiinfn-admins"], **SETTINGS) == claims.Access(
        groups=("aiinfn-admins",), projects=(), admin=True, allowed=True
    )


def test_admin_is_left_alone_without_admin_groups():
    assert claims.access(["cms-ml"], **{**SETTINGS, "admin_groups": set()}).admin is None


def test_a_subgroup_is_not_its_project():
    assert claims.access(["cms-ml/gpu"], **SETTINGS) == claims.Access(
        groups=("cms-ml/gpu",), projects=(), admin=False, allowed=False
    )


def test_no_allowed_group_means_no_entry():
    assert not claims.access(["other-experiment"], **SETTINGS).allowed


# -- identity binding ------------------------------------------------------------------------

ALICE = claims.Identity(ISSUER, "sub-1", "alice", ("cms-ml",), None)


def test_binding_is_read_from_auth_state():
    assert claims.binding({"aiinfn": {"issuer": ISSUER, "subject": "sub-1"}}) == (ISSUER, "sub-1")
    assert claims.binding(None) is None
    assert claims.binding({"access_token": "t"}) is None
    assert claims.binding({"aiinfn": {"issuer": ISSUER}}) is None


def test_an_unbound_account_is_bound_and_a_bound_one_recognised():
    assert claims.check_binding(None, ALICE) is False
    assert claims.check_binding((ISSUER, "sub-1"), ALICE) is True


@pytest.mark.parametrize("bound", [(ISSUER, "sub-2"), ("https://other-iam.example.org/", "sub-1")])
def test_an_account_bound_to_someone_else_is_never_taken_over(bound):
    with pytest.raises(LoginRefused, match="belongs to another person"):
        claims.check_binding(bound, ALICE)


def test_a_new_account_may_not_look_like_an_existing_one():
    claims.check_new_username("ab", ["a_b", "a.b", "alice"])
    with pytest.raises(LoginRefused) as refused:
        claims.check_new_username("torn", ["alice", "tom"])
    assert "looks like the name of an existing account" in refused.value.message
    assert "'tom'" not in refused.value.message  # the other account is named in the log only
    assert refused.value.log_detail == "new account 'torn' looks like the existing account 'tom'"


def id_token(**fields):
    return jwt.encode(
        {"iss": ISSUER, "aud": "hub", "sub": "sub-1", **fields}, "k" * 32, algorithm="HS256"
    )


@pytest.mark.parametrize("token", [None, "", id_token(), id_token(aud=["other", "hub"])])
def test_a_matching_or_absent_id_token_passes(token):
    claims.check_id_token(token, issuer=ISSUER, client_id="hub", subject="sub-1")


@pytest.mark.parametrize(
    "token",
    [id_token(sub="sub-2"), id_token(aud="other"), id_token(iss="https://evil/"), "not-a-jwt"],
)
def test_an_id_token_about_someone_else_refuses(token):
    with pytest.raises(LoginRefused):
        claims.check_id_token(token, issuer=ISSUER, client_id="hub", subject="sub-1")


# -- discovery -------------------------------------------------------------------------------

DOCUMENT = {
    "issuer": ISSUER,
    "authorization_endpoint": "https://iam.example.org/authorize",
    "token_endpoint": "https://iam.example.org/token",
    "userinfo_endpoint": "https://iam.example.org/userinfo",
}


def test_endpoints_come_from_the_discovery_document():
    assert (
        claims.discovery_url(ISSUER) == "https://iam.example.org/.well-known/openid-configuration"
    )
    assert claims.endpoints(DOCUMENT, ISSUER) == claims.Endpoints(
        "https://iam.example.org/authorize",
        "https://iam.example.org/token",
        "https://iam.example.org/userinfo",
    )


@pytest.mark.parametrize(
    "document, says",
    [
        ({**DOCUMENT, "issuer": "https://iam.example.org"}, "names issuer"),
        ({**DOCUMENT, "token_endpoint": "http://iam.example.org/token"}, "must use https"),
        (
            {k: v for k, v in DOCUMENT.items() if k != "userinfo_endpoint"},
            "userinfo_endpoint is missing",
        ),
        ({**DOCUMENT, "authorization_endpoint": "/authorize"}, "not an absolute URL"),
        (["not", "an", "object"], "not a JSON object"),
    ],
)
def test_a_bad_discovery_document_is_refused(document, says):
    with pytest.raises(claims.DiscoveryError, match=says):
        claims.endpoints(document, ISSUER)


@pytest.mark.parametrize(
    "url, ok",
    [
        ("https://iam.cloud.infn.it/", True),
        ("http://127.0.0.1:8080/realms/x", True),
        ("http://localhost/x", True),
        ("http://iam.cloud.infn.it/", False),
        ("ftp://iam/", False),
        ("", False),
    ],
)
def test_issuer_urls_need_https_off_loopback(url, ok):
    if ok:
        assert claims.check_url(url, "issuer") == url
    else:
        with pytest.raises(claims.DiscoveryError):
            claims.check_url(url, "issuer")


# -- token expiry ----------------------------------------------------------------------------


def test_expiry_is_computed_once_and_kept():
    assert claims.expires_at({"expires_in": 3600}, 1000.0) == 4600.0
    assert claims.expires_at({"expires_in": "60"}, 1000.0) == 1060.0
    assert claims.expires_at({"expires_in": 3600, "expires_at": 2000.0}, 5000.0) == 2000.0
    assert claims.expires_at({}, 1000.0) is None
    assert claims.expires_at({"expires_in": True}, 1000.0) is None
    assert claims.expires_at({"expires_in": -5}, 1000.0) is None


def test_refresh_is_needed_inside_the_margin():
    now = time.time()
    assert claims.needs_refresh(now + 100, now, margin=300)
    assert claims.needs_refresh(now - 1, now, margin=0)
    assert not claims.needs_refresh(now + 1000, now, margin=300)
    assert not claims.needs_refresh(None, now, margin=300)
