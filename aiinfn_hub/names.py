"""Safe, injective names for users and groups, and the paths and object names derived from them.

Two rules keep one person from ever landing on another's files or numbers:

- what we accept is validated exactly as sent, never repaired: no lowercasing, no dropped
  characters, no Unicode normalisation (NFC would turn the Kelvin sign U+212A into `K`).
  `Alice`, `alice`, `a_lice` and `a.lice` are four different names; any character outside
  ASCII (Cyrillic `а`, fullwidth `ａ`, `ſ`, ligatures, combining marks) is refused, not folded;
- everything derived (home directory, object names) goes through one lossless escaping
  (`escapism.escape`), so two different names never map to one path or object.

Different names can still look alike (`tom`/`torn`, `carol`/`caro1`, `Kate`/`kate`):
`skeleton` and `lookalike` let the authenticator refuse a new account that looks like an
existing one.

Validation happens before anything is derived, and the length check comes first so a
10 MB "username" costs nothing.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable

import escapism

from .errors import UserError

MAX_USERNAME_LENGTH = 64
MAX_GROUP_LENGTH = 128
MAX_OBJECT_NAME_LENGTH = 253

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
_GROUP_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SLUG_SAFE = frozenset(string.ascii_lowercase + string.digits)
_SLUG_ESCAPE = "-"


class InvalidName(UserError):
    """A username or group name we refuse; the message says which rule it broke."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="invalid-name", status=403)


def _describe(char: str) -> str:
    described = f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')}"
    folded = unicodedata.normalize("NFKC", char)
    if folded != char and folded.isascii() and folded.isprintable():
        described += f", which looks like {folded!r}"
    return described


def _checked_text(raw: object, what: str, limit: int) -> str:
    """The name exactly as sent, if it is printable ASCII. Not normalised first: a name that is
    not already in its normal form (for ASCII, any name with a non-ASCII character) is refused."""
    if not isinstance(raw, str):
        raise InvalidName(f"the {what} must be a string")
    if len(raw) > limit:
        raise InvalidName(f"the {what} is longer than {limit} characters")
    if not raw:
        raise InvalidName(f"the {what} is empty")
    for char in raw:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise InvalidName(f"the {what} contains a control character ({_describe(char)})")
        if ord(char) > 0x7E:
            raise InvalidName(
                f"the {what} contains {_describe(char)}; only ASCII characters are allowed "
                "(characters that merely look like them are refused, not converted)"
            )
    return raw


def username(raw: object) -> str:
    """The validated username, unchanged; raises InvalidName with the rule it broke."""
    text = _checked_text(raw, "username", MAX_USERNAME_LENGTH)
    if text.startswith("-"):
        raise InvalidName("the username must not start with '-'")
    if ".." in text:
        raise InvalidName("the username must not contain '..'")
    if not _USERNAME.fullmatch(text):
        bad = sorted({c for c in text if not (c.isalnum() or c in "._@+-")})
        detail = f" (not allowed: {' '.join(repr(c) for c in bad)})" if bad else ""
        raise InvalidName(
            "a username is ASCII letters, digits and . _ @ + -, starting with a "
            f"letter or digit{detail}"
        )
    return text


def group(raw: object) -> str:
    """The validated group name: IAM's leading '/' stripped, subgroups `proj/sub` kept as is."""
    text = _checked_text(raw, "group name", MAX_GROUP_LENGTH)
    text = text[1:] if text.startswith("/") else text
    segments = text.split("/")
    for segment in segments:
        if segment in ("", ".", "..") or ".." in segment:
            raise InvalidName(f"the group name {text!r} has an empty, '.' or '..' part")
        if not _GROUP_SEGMENT.fullmatch(segment):
            raise InvalidName(
                f"the group name {text!r} may only contain ASCII letters, digits, . _ - "
                "and '/' between subgroups, each part starting with a letter or digit"
            )
    return text


# The ASCII confusables of Unicode TR39 (confusables.txt) among the characters a name may hold,
# kept small on purpose. Single characters map to what they look like, pairs included
# (`m` -> `rn`, as in TR39), so a skeleton is taken character by character and a swap anywhere
# collides. `I` looks like `l` only in upper case: folding case first would lose that, and
# merging `i` with `l` would refuse real pairs such as `irossi` and `lrossi`; so there are two
# skeletons, one ignoring case and one keeping it (where `I` and `1` are `l`).
_CONFUSABLES = {"0": "o", "1": "l", "m": "rn", "w": "vv", "d": "cl"}
_CONFUSABLES_CASED = {"0": "O", "1": "l", "I": "l", "m": "rn", "w": "vv", "W": "VV", "d": "cl"}


def skeleton(name: str, *, ignore_case: bool = True) -> str:
    """What a validated name looks like; equal skeletons mean names a reader may take for one
    another. Ignoring case: `Kate`/`kate`, `tom`/`TORN`, `carol`/`caro1`, `will`/`vvill`,
    `dave`/`clave`; keeping it: `alice`/`aIice`."""
    if ignore_case:
        return "".join(_CONFUSABLES.get(char, char) for char in name.casefold())
    return "".join(_CONFUSABLES_CASED.get(char, char) for char in name)


def lookalike(name: str, existing: Iterable[str]) -> str | None:
    """An existing name, other than `name` itself, that looks like `name` (equal skeletons,
    ignoring case or keeping it); None if there is none."""
    caseless, cased = skeleton(name), skeleton(name, ignore_case=False)
    for other in existing:
        if other != name and (
            skeleton(other) == caseless or skeleton(other, ignore_case=False) == cased
        ):
            return other
    return None


def slug(name: str) -> str:
    """Lossless lowercase encoding of a validated name: [a-z0-9] kept, everything else `-XX`.

    Injective (escapism escapes the escape character too), so it is safe for paths and object
    names; `alice` stays `alice`, `Alice` becomes `-41lice`, `cms-ml` becomes `cms-2dml`.
    """
    # Safe characters are already lowercase, so lowercasing only touches the hex digits.
    return escapism.escape(name, safe=_SLUG_SAFE, escape_char=_SLUG_ESCAPE).lower()


def object_name(prefix: str, name: str) -> str:
    """`<prefix>-<slug>`: a valid Kubernetes object name, distinct for distinct names."""
    result = f"{prefix}-{slug(name)}"
    if len(result) > MAX_OBJECT_NAME_LENGTH:
        raise InvalidName(f"the name {name[:32]!r}... is too long for a Kubernetes object name")
    return result


def label_value(name: str) -> str:
    """A label value for selecting by owner (<= 63 characters); exact names live in annotations."""
    return escapism.safe_slug(name, is_valid=escapism.is_valid_label, max_length=63)
