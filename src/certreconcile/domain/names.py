"""Certificate and domain names.

Domain names are normalised to their IDNA (ASCII, lower-case) form before anything
compares them. A wildcard is allowed only as the whole leftmost label.

Homographs: a label whose letters come from more than one script (``example`` spelt with a
Cyrillic U+0430, ``google`` with Greek U+03BF) is refused, in Unicode or in ``xn--`` form,
following UTS #39's "highly restrictive" level: one script per label, except Latin with
Han and Japanese kana, Han and Bopomofo, or Han and Hangul. Digits and hyphens belong to
no script. A label written entirely in one other script (``apple`` spelt in Cyrillic) is a
whole-script confusable: IDNA2008 accepts it, and so does certreconcile, since whole
labels in Cyrillic or Greek are real names; the policy's ``allowed_domains`` is the guard.
Invisible characters that UTS #46 would silently drop (zero-width space, soft hyphen,
variation selectors) are refused too: a name must be what it looks like.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache
from typing import TYPE_CHECKING

import idna

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

__all__ = [
    "CERT_NAME_PATTERN",
    "MAX_NAMES_PER_CERTIFICATE",
    "DomainNameError",
    "is_wildcard",
    "matches_allowed",
    "normalize_domain",
    "registered_domain",
]

CERT_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
MAX_NAMES_PER_CERTIFICATE = 100
_LDH = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
# UTS #46 full stops: U+3002 ideographic, U+FF0E fullwidth, U+FF61 halfwidth ideographic.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# The script sets UTS #39 "highly restrictive" allows in one label besides a single script.
_SCRIPT_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
# Default-ignorable code points UTS #46 maps to nothing; ZWJ/ZWNJ are left to IDNA's CONTEXTJ rules.
_INVISIBLE = re.compile("[\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b\u200e\u200f\u2060-\u206f"
                        "\u3164\ufe00-\ufe0f\ufeff\uffa0\U0001bca0-\U0001bca3\U000e0000-\U000e0fff]")
_SCRIPT_WORDS = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "HALFWIDTH": "", "FULLWIDTH": "", "KATAKANA-HIRAGANA": ""}


class DomainNameError(ValueError):
    """A domain that cannot be put in a certificate; ``code`` is stable."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def normalize_domain(raw: str) -> str:
    """Return the IDNA ASCII, lower-case form of ``raw`` or raise :class:`DomainNameError`."""
    name = raw.strip()
    if name != raw or not name:
        raise DomainNameError(
            "domain-empty" if not name else "domain-whitespace", f"{raw!r} is empty or has surrounding spaces"
        )
    name = name.translate(_DOTS)
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if any(label == "" for label in labels):
        raise DomainNameError("domain-empty-label", f"{raw!r} has an empty label (two dots in a row?)")
    wildcard = labels[0] == "*"
    if any("*" in label for label in labels[1:]) or (not wildcard and "*" in labels[0]):
        raise DomainNameError(
            "domain-wildcard-position", f"{raw!r}: a wildcard must be the whole leftmost label, as in *.example.com"
        )
    if wildcard and len(labels) < 3:
        raise DomainNameError("domain-wildcard-too-broad", f"{raw!r}: a wildcard needs at least two labels after it")
    ascii_labels = ["*"] if wildcard else []
    for label in labels[1:] if wildcard else labels:
        ascii_labels.append(_label_to_ascii(raw, label))
    result = ".".join(ascii_labels)
    if len(result) > 253:
        raise DomainNameError("domain-too-long", f"{raw!r} is {len(result)} characters; the limit is 253")
    if len(ascii_labels) < 2:
        raise DomainNameError(
            "domain-not-qualified", f"{raw!r} is not a fully qualified name; write e.g. {raw}.example.com"
        )
    if ascii_labels[-1].isdigit():
        raise DomainNameError("domain-ip-address", f"{raw!r} looks like an IP address, not a domain name")
    return result


def _label_to_ascii(raw: str, label: str) -> str:
    if label.isascii():
        lowered = label.lower()
        if len(lowered) > 63:
            raise DomainNameError(
                "domain-label-too-long",
                f"{raw!r}: the label {label[:20]!r}... is {len(label)} characters; the limit is 63",
            )
        if not _LDH.match(lowered):
            raise DomainNameError(
                "domain-bad-characters", f"{raw!r}: the label {label!r} may hold only letters, digits and inner hyphens"
            )
        if lowered[2:4] == "--" and not lowered.startswith("xn--"):
            # RFC 5891 4.2.3.1: "??--" labels are reserved (R-LDH); only xn-- (punycode) is in use.
            raise DomainNameError(
                "domain-reserved-label",
                f"{raw!r}: the label {label!r} has hyphens in the 3rd and 4th positions, a form reserved "
                "for future IDNA encodings (CAs such as Let's Encrypt refuse it)",
                "move or remove the hyphens at positions 3-4; only xn-- (punycode) labels may have them",
            )
        if lowered.startswith("xn--"):
            try:
                _check_scripts(raw, idna.decode(lowered))
            except idna.IDNAError as exc:
                raise DomainNameError("domain-bad-idna", f"{raw!r}: {label!r} is not valid punycode") from exc
        return lowered
    invisible = _INVISIBLE.search(label)
    if invisible:
        raise DomainNameError(
            "domain-invisible-character",
            f"{raw!r}: the label {label!r} holds the invisible U+{ord(invisible.group()):04X}, which IDNA drops",
            "retype the name: it must be exactly what it looks like",
        )
    try:
        encoded = idna.encode(label, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise DomainNameError("domain-bad-idna", f"{raw!r}: {label!r} cannot be IDNA-encoded ({exc})") from exc
    _check_scripts(raw, idna.decode(encoded))
    if len(encoded) > 63:
        raise DomainNameError("domain-label-too-long", f"{raw!r}: {label!r} encodes to more than 63 characters")
    return encoded


def _script(character: str) -> str:
    """The script of a letter, from its Unicode name ("CYRILLIC SMALL LETTER A"); "" for none."""
    word = unicodedata.name(character, "UNKNOWN").split(" ", 1)[0]
    return _SCRIPT_WORDS.get(word, word)


def label_scripts(label: str) -> frozenset[str]:
    """The scripts of the letters of a Unicode label (digits, hyphens and marks have none)."""
    letters = (character for character in label if unicodedata.category(character).startswith("L"))
    return frozenset(script for character in letters if (script := _script(character)))


def _check_scripts(raw: str, label: str) -> None:
    scripts = label_scripts(label)
    if len(scripts) <= 1 or any(scripts <= allowed for allowed in _SCRIPT_MIXES):
        return
    named = " and ".join(sorted(script.title() for script in scripts))
    raise DomainNameError(
        "domain-mixed-scripts",
        f"{raw!r}: the label {label!r} mixes {named} letters, the mark of a look-alike (homograph) name",
        "write each label in one script: retype it on a plain keyboard, or copy the name from a trusted source",
    )


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")


def matches_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """Is the normalised ``name`` covered by one of the normalised ``allowed`` patterns?

    ``example.com`` allows exactly that name; ``*.example.com`` allows any name below
    it (``a.example.com``, ``a.b.example.com`` and the wildcard ``*.example.com``).
    """
    for pattern in allowed:
        if pattern.startswith("*."):
            suffix = pattern[1:]
            if name.endswith(suffix) and len(name) > len(suffix):
                return True
        elif name == pattern:
            return True
    return False


@cache
def _suffix_list() -> PublicSuffixList:
    """The Public Suffix List bundled with ``publicsuffixlist`` (no network), parsed once, on first use."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=1 << 16)  # a plan asks for each name several times; the list lookup is slow
def registered_domain(name: str) -> str:
    """The registered domain of a normalised name, by the Public Suffix List (ICANN and private sections).

    ``*.a.example.co.uk`` → ``example.co.uk``; ``foo.github.io`` → ``foo.github.io``. A name that is
    itself a public suffix (``co.uk``), or under no known suffix, is its own registered domain.
    This is how Let's Encrypt groups names for its per-domain rate limit.
    """
    bare = name.removeprefix("*.").rstrip(".").lower()
    return _suffix_list().privatesuffix(bare) or bare
