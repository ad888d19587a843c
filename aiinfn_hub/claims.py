"""Who is logging in, from OpenID Connect claims: identity, username, groups, admin rights. Pure.

Every decision here fails closed. A claim that is missing or has the wrong shape refuses the
login with a message the user can act on; nothing is repaired or guessed. The one exception is
a single unusable entry in a list of groups: it is dropped (and reported for the log), since a
group only ever gives access. Usernames and group
names go through `names.py`, the one validation every derived path and object name relies on.

An account is bound to the identity provider's (issuer, subject) pair, which never changes for a
person, not to the username, which an IdP may rename or hand to someone else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import jwt

from . import names
from .errors import UserError

MAX_GROUPS = 1024
MAX_SUBJECT_LENGTH = 255
MAX_EMAIL_LENGTH = 254
_PREVIEW = 32


class LoginRefused(UserError):
    """A login (or refresh) we refuse; `message` is shown to the user, never a token or a secret."""

    def __init__(self, message: str, log_detail: str = "") -> None:
        super().__init__(message, reason="login-refused", log_detail=log_detail, status=403)


class DiscoveryError(ValueError):
    """The issuer's OpenID configuration is unusable; the message names what is wrong."""


@dataclass(frozen=True)
class GroupClaims:
    """The usable groups, and why each unusable entry was dropped (for the log)."""

    groups: tuple[str, ...]
    ignored: tuple[str, ...]


@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    username: str
    groups: tuple[str, ...]
    email: str | None
    ignored_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Access:
    """What the groups give: hub groups to keep, which of them are projects, admin, entry."""

    groups: tuple[str, ...]
    projects: tuple[str, ...]
    admin: bool | None
    allowed: bool


@dataclass(frozen=True)
class Endpoints:
    authorize: str
    token: str
    userinfo: str


def preview(value: object) -> str:
    """A short, printable rendering of untrusted input for messages (a 10 MB name stays short)."""
    text = value if isinstance(value, str) else repr(type(value).__name__)
    shown = text[:_PREVIEW]
    return repr(shown) + ("..." if len(text) > _PREVIEW else "")


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: object, what: str) -> str:
    """An https URL (plain http only on a loopback address, as in the tests); else ValueError."""
    if not isinstance(url, str) or not url:
        raise DiscoveryError(f"{what} is missing")
    parsed = urlparse(url)
    if not parsed.hostname or parsed.scheme not in ("https", "http"):
        raise DiscoveryError(f"{what} {url!r} is not an absolute URL")
    if parsed.scheme == "http" and not is_loopback_url(url):
        raise DiscoveryError(f"{what} {url!r} must use https")
    return url


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def endpoints(document: object, issuer: str) -> Endpoints:
    """An issuer's `.well-known/openid-configuration` endpoints, checked (OIDC Discovery 4.3)."""
    if not isinstance(document, Mapping):
        raise DiscoveryError(f"the OpenID configuration of {issuer} is not a JSON object")
    if document.get("issuer") != issuer:
        raise DiscoveryError(
            f"the OpenID configuration at {discovery_url(issuer)} names issuer "
            f"{preview(document.get('issuer'))}, not {issuer!r}: configure the exact issuer"
        )
    return Endpoints(
        authorize=check_url(document.get("authorization_endpoint"), "authorization_endpoint"),
        token=check_url(document.get("token_endpoint"), "token_endpoint"),
        userinfo=check_url(document.get("userinfo_endpoint"), "userinfo_endpoint"),
    )


def subject_of(userinfo: Mapping[str, Any]) -> str:
    subject = userinfo.get("sub")
    if (
        not isinstance(subject, str)
        or not subject
        or len(subject) > MAX_SUBJECT_LENGTH
        or not subject.isprintable()
    ):
        raise LoginRefused(
            "the identity provider sent no usable subject ('sub') for your account",
            log_detail=f"unusable sub claim {preview(subject)}",
        )
    return subject


def verified_email(userinfo: Mapping[str, Any]) -> str | None:
    """The e-mail address only if the provider says it is verified (`email_verified` is true)."""
    email = userinfo.get("email")
    if userinfo.get("email_verified") is not True or not isinstance(email, str):
        return None
    if not email or len(email) > MAX_EMAIL_LENGTH or not email.isprintable():
        return None
    return email


def username_of(userinfo: Mapping[str, Any], claim: str) -> str:
    """The hub username from `claim`, validated by names.username (never changed or lowercased)."""
    raw = userinfo.get(claim)
    if raw is None or raw == "":
        raise LoginRefused(
            f"the identity provider sent no '{claim}' for your account, so the hub "
            "cannot name it; ask the hub admins"
        )
    if claim == "email" and verified_email(userinfo) is None:
        raise LoginRefused(
            "your e-mail address is not verified at the identity provider; verify it "
            "there and log in again"
        )
    try:
        return names.username(raw)
    except names.InvalidName as error:
        raise LoginRefused(
            f"your username {preview(raw)} cannot be used on this hub: {error.message}; "
            "ask the hub admins"
        ) from None


def groups_of(userinfo: Mapping[str, Any], claims: Sequence[str]) -> GroupClaims:
    """Validated group names from every claim in `claims` that is present.

    A string claim is one group. No claim at all, or one of the wrong shape (neither a string nor
    a list, or too long a list), refuses the login: without its group membership the hub cannot
    know what a person may use. An entry that is not a usable group name is dropped and reported
    in `ignored`: a group only gives access, so leaving one out never gives more.
    """
    present = [claim for claim in claims if claim in userinfo]
    if not present:
        raise LoginRefused(
            "the identity provider sent no group membership for your account (no "
            f"{' or '.join(repr(c) for c in claims)} claim); ask the hub admins to check that "
            "the hub may request the groups scope, or ask to join a project"
        )
    groups: set[str] = set()
    ignored: list[str] = []
    for claim in present:
        value = userinfo[claim]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise LoginRefused(
                f"the '{claim}' claim from the identity provider is neither a group nor a "
                "list of groups; ask the hub admins",
                log_detail=f"{claim} claim of type {type(value).__name__}",
            )
        if len(items) > MAX_GROUPS:
            raise LoginRefused(
                f"the '{claim}' claim lists more than {MAX_GROUPS} groups; ask the hub admins"
            )
        for item in items:
            try:
                groups.add(names.group(item))
            except names.InvalidName as error:
                ignored.append(f"{preview(item)} in the '{claim}' claim: {error.message}")
    return GroupClaims(tuple(sorted(groups)), tuple(ignored))


def identity(
    userinfo: Mapping[str, Any], *, issuer: str, username_claim: str, group_claims: Sequence[str]
) -> Identity:
    """Everything the hub takes from one userinfo answer; raises LoginRefused with the reason."""
    if not isinstance(userinfo, Mapping):
        raise LoginRefused("the identity provider's user information is not a JSON object")
    found = groups_of(userinfo, group_claims)
    return Identity(
        issuer=issuer,
        subject=subject_of(userinfo),
        username=username_of(userinfo, username_claim),
        groups=found.groups,
        email=verified_email(userinfo),
        ignored_groups=found.ignored,
    )


def access(
    groups: Collection[str],
    *,
    projects: Collection[str],
    system_groups: Collection[str],
    allowed_groups: Collection[str],
    admin_groups: Collection[str],
) -> Access:
    """Hub groups are the projects and groups the hub is configured to know; other IdP groups are
    dropped. Admin follows `admin_groups` (None, i.e. unchanged, when none are configured)."""
    member = set(groups)
    known = set(projects) | set(system_groups) | set(allowed_groups) | set(admin_groups)
    admin = bool(member & set(admin_groups)) if admin_groups else None
    return Access(
        groups=tuple(sorted(member & known)),
        projects=tuple(sorted(member & set(projects))),
        admin=admin,
        allowed=bool(admin) or bool(member & set(allowed_groups)),
    )


def binding(state: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """The (issuer, subject) an account's auth_state is bound to, if any."""
    ours = (state or {}).get("aiinfn")
    if not isinstance(ours, Mapping):
        return None
    issuer, subject = ours.get("issuer"), ours.get("subject")
    return (issuer, subject) if isinstance(issuer, str) and isinstance(subject, str) else None


def check_binding(existing: tuple[str, str] | None, who: Identity) -> bool:
    """True if the account is already this person's, False if it is unbound (bound now).

    An account bound to another (issuer, subject) is never handed over: an IdP rename that
    reuses a username would otherwise open someone else's files.
    """
    if existing is None:
        return False
    if existing != (who.issuer, who.subject):
        raise LoginRefused(
            f"the hub account {who.username!r} belongs to another person (the identity provider "
            "gave this username to a different account). Nothing was changed; ask the hub admins",
            log_detail=f"account {who.username!r} is bound to another subject"
            + ("" if existing[0] == who.issuer else f" of issuer {existing[0]!r}"),
        )
    return True


def check_new_username(username: str, existing: Iterable[str]) -> None:
    """A new account must not look like an existing one (names.lookalike): `torn` next to `tom`,
    `Kate` next to `kate`, could pass for the other person. The message does not name the other
    account; the log does."""
    other = names.lookalike(username, existing)
    if other is not None:
        raise LoginRefused(
            f"your username {username!r} looks like the name of an existing account on this hub "
            "(letters that look alike, or the same letters in another case), so the hub does not "
            "create it; ask the hub admins",
            log_detail=f"new account {username!r} looks like the existing account {other!r}",
        )


def check_id_token(token: str | None, *, issuer: str, client_id: str, subject: str) -> None:
    """The ID token must be for this client, from this issuer, about the userinfo's subject
    (OIDC Core 5.3.2). It came straight from the token endpoint over TLS, so its signature need
    not be checked (OIDC Core 3.1.3.7)."""
    if not token:
        return
    try:
        claims = jwt.decode(
            token, options={"verify_signature": False, "verify_exp": False, "verify_aud": False}
        )
    except jwt.PyJWTError:
        raise LoginRefused(
            "the identity provider sent an unreadable ID token", log_detail="undecodable id_token"
        ) from None
    audience = claims.get("aud")
    audiences = (
        [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
    )
    if claims.get("iss") != issuer or client_id not in audiences or claims.get("sub") != subject:
        raise LoginRefused(
            "the identity provider's answers do not match each other; "
            "try again or ask the hub admins",
            log_detail="id_token issuer, audience or subject does not match",
        )


def expires_at(token_response: Mapping[str, Any], now: float) -> float | None:
    """When the access token expires: kept from an earlier answer, else now + expires_in."""
    known = token_response.get("expires_at")
    if isinstance(known, (int, float)) and not isinstance(known, bool):
        return float(known)
    lifetime = token_response.get("expires_in")
    if isinstance(lifetime, str) and lifetime.isdigit():
        lifetime = int(lifetime)
    if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) and lifetime > 0:
        return now + float(lifetime)
    return None


def needs_refresh(expiry: float | None, now: float, margin: float) -> bool:
    """Refresh with the refresh token when the access token has less than `margin` seconds left."""
    return expiry is not None and expiry - margin <= now
