"""Which characters the report's fonts can draw, as fontconfig sees the installed fonts.

WeasyPrint (through Pango) falls back to any installed font that has a character, and the charts are given the
same fonts (`fallback_fonts`), so a character prints as a box exactly when no installed font has it.
`glyph_warnings` names such characters among the strings of the results (group and column names, titles: text
from the data and the policy), so the report and results.json say so instead of printing boxes silently;
`reordering_warnings` names strings whose invisible bidirectional overrides show them in another order.
"""

from __future__ import annotations

import bisect
import functools
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from amulet_audit.results.model import AuditResult

# The report's text fonts, first choice first (the stylesheet, templates/partials/styles.css.j2, lists the same):
# DejaVu Sans for Latin, Greek, Cyrillic, Arabic and Hebrew; Noto Sans CJK for Chinese, Japanese and Korean.
FAMILIES = ("DejaVu Sans", "Noto Sans CJK SC")
_REGULAR = ("Regular", "Book", "Normal")
_SHOWN = 8  # characters named with their code point in a warning
_LISTED = 200  # further characters named (beyond these, a count)


@dataclass(frozen=True)
class Font:
    """One installed font face and the code points it has glyphs for (sorted, inclusive ranges)."""

    family: str
    style: str
    file: str
    index: int
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def has(self, char: str) -> bool:
        i = bisect.bisect_right(self.starts, ord(char)) - 1
        return i >= 0 and ord(char) <= self.ends[i]


@functools.lru_cache(maxsize=1)
def installed_fonts() -> tuple[Font, ...] | None:
    """Every font fontconfig knows (what WeasyPrint can use), or None when `fc-list` cannot be run."""
    exe = shutil.which("fc-list")
    if exe is None:
        return None
    try:
        listing = subprocess.run(
            [exe, "--format", "%{family[0]}\t%{style[0]}\t%{file}\t%{index}\t%{charset}\n"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    fonts = []
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) != 5:
            continue
        family, style, file, index, charset = parts
        ranges = sorted(_ranges(charset))
        if ranges:
            fonts.append(Font(family, style, file, int(index or 0), tuple(a for a, _ in ranges),
                              tuple(b for _, b in ranges)))
    return tuple(fonts)


def _ranges(charset: str) -> Iterator[tuple[int, int]]:
    """fontconfig's charset text ("20-7e a0-17f 2010") as (first, last) code points."""
    for item in charset.split():
        first, _, last = item.partition("-")
        try:
            yield int(first, 16), int(last or first, 16)
        except ValueError:
            continue


def needs_glyph(char: str) -> bool:
    """Whether `char` is drawn: controls, format characters (bidi marks, joiners), separators and variation
    selectors are not."""
    if char.isascii():
        return char.isprintable() and char != " "
    if 0xFE00 <= ord(char) <= 0xFE0F or 0xE0100 <= ord(char) <= 0xE01EF:
        return False
    return unicodedata.category(char)[0] not in "CZ"


def missing_characters(chars: Iterable[str], fonts: Iterable[Font]) -> list[str]:
    """The characters of `chars` that need a glyph and that none of `fonts` has, in code-point order."""
    fonts = tuple(fonts)
    return sorted({c for c in chars if needs_glyph(c) and not any(f.has(c) for f in fonts)})


def fallback_fonts(chars: Iterable[str]) -> list[Font]:
    """Installed fonts that together draw `chars`: the report's FAMILIES (those installed) first, then, for
    characters they lack, the fewest further fonts (a greedy cover; sans-serif regular faces preferred)."""
    fonts = installed_fonts() or ()
    chosen: list[Font] = []
    for family in FAMILIES:
        faces = sorted((f for f in fonts if f.family == family), key=lambda f: f.style not in _REGULAR)
        if faces:
            chosen.append(faces[0])
    todo = set(missing_characters(chars, chosen))
    while todo:
        best = max(fonts, key=lambda f: (sum(f.has(c) for c in todo), "Sans" in f.family and "Mono" not in f.family,
                                         f.style in _REGULAR, f.family), default=None)
        covered = {c for c in todo if best is not None and best.has(c)}
        if not covered:
            break
        chosen.append(best)
        todo -= covered
    return chosen


def result_strings(result: AuditResult) -> Iterator[str]:
    """Every string of the results (keys and values, at any depth): the report prints from these."""
    yield from _strings(result.model_dump(mode="json", exclude={"report_warnings"}))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def glyph_warnings(result: AuditResult) -> list[str]:
    """One sentence (or none) naming the characters of the results' strings that no installed font has and
    that therefore print as boxes in the report; what to install instead."""
    first_seen: dict[str, str] = {}
    for text in result_strings(result):
        for char in text:
            if not char.isascii() and char not in first_seen:
                first_seen[char] = text
    if not any(needs_glyph(c) for c in first_seen):
        return []
    fonts = installed_fonts()
    if fonts is None:
        return ["The report's fonts could not be checked for the characters of the data and policy names "
                "(fontconfig's fc-list could not be run); a character no installed font has prints as a box."]
    missing = _interleaved(missing_characters(first_seen, fonts))
    if not missing:
        return []
    named = ", ".join(f"{c} (U+{ord(c):04X})" for c in missing[:_SHOWN])
    rest = missing[_SHOWN:]
    more = ""
    if rest:
        listed = " ".join(rest[:_LISTED])
        beyond = f" and {len(rest) - _LISTED} others" if len(rest) > _LISTED else ""
        more = f" and {len(rest)} more ({listed}{beyond})"
    examples = "; ".join(f"“{visible(s)}”" for s in dict.fromkeys(first_seen[c] for c in missing[:3]))
    return [f"No installed font has {'a glyph' if len(missing) == 1 else 'glyphs'} for {named}{more}, "
            f"used in {examples}: {'it prints' if len(missing) == 1 else 'they print'} as empty boxes in the report. "
            f"Install a font that covers them (on Debian, {_package(missing)}) and re-render with `amulet-audit render`."]


def _kind(char: str) -> str:
    """The script of `char` ("DEVANAGARI", "CJK", ...), or "symbol" for emoji and other symbols."""
    if unicodedata.category(char)[0] == "S":
        return "symbol"
    return (unicodedata.name(char, "") or "?").split()[0]


def _interleaved(chars: list[str]) -> list[str]:
    """`chars` (in code-point order) taken in turn from each script, so that the first few named include every
    script and the emoji: ten Devanagari letters must not hide the one emoji after them."""
    groups: dict[str, list[str]] = {}
    for c in chars:
        groups.setdefault(_kind(c), []).append(c)
    out: list[str] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out.extend(g[i] for g in groups.values() if i < len(g))
    return out


def _is_emoji(char: str) -> bool:
    return unicodedata.category(char) == "So" and (ord(char) >= 0x1F000 or 0x2600 <= ord(char) <= 0x27BF)


def _package(chars: list[str]) -> str:
    """The Debian font packages that cover `chars`: Noto Color Emoji for emoji, Noto CJK for wide (Chinese,
    Japanese, Korean) characters, the Noto core and extra sets for the other scripts."""
    emoji = any(_is_emoji(c) for c in chars)
    wide = any(unicodedata.east_asian_width(c) in "WF" and not _is_emoji(c) for c in chars)
    other = any(unicodedata.east_asian_width(c) not in "WF" and not _is_emoji(c) for c in chars)
    return " and ".join(p for p, needed in (("fonts-noto-cjk", wide), ("fonts-noto-core or fonts-noto-extra", other),
                                            ("fonts-noto-color-emoji", emoji)) if needed)


# Characters that reorder the text around them without being seen (the "Trojan Source" overrides and embeddings).
_REORDERING = {"\u202a": "left-to-right embedding", "\u202b": "right-to-left embedding",
               "\u202d": "left-to-right override", "\u202e": "right-to-left override"}


def reordering_warnings(result: AuditResult) -> list[str]:
    """One sentence (or none) naming the strings of the results that hold a bidirectional override or embedding:
    the report shows their text in another order than it is stored (e.g. "evitcerid" as "directive")."""
    found = {t: sorted({c for c in t if c in _REORDERING}) for t in result_strings(result)
             if any(c in _REORDERING for c in t)}
    if not found:
        return []
    kinds = sorted({c for cs in found.values() for c in cs})
    named = ", ".join(f"a {_REORDERING[c]} (U+{ord(c):04X})" for c in kinds)
    examples = "; ".join(f"“{visible(t)}”" for t in list(found)[:3])
    return [f"{len(found)} name{'s' if len(found) > 1 else ''} from the data or the policy hold{'s' if len(found) == 1 else ''} "
            f"{named}, which shows the text after it in another order than it is stored: {examples}. "
            "Read those names in results.json."]


def report_warnings(result: AuditResult) -> list[str]:
    """What the report cannot show as the results hold it: characters no font has, reordered text."""
    return glyph_warnings(result) + reordering_warnings(result)


def visible(text: str, limit: int = 40) -> str:
    """`text` for a one-line message: control and format characters (terminal escapes, bidi overrides) written
    as \\u escapes, shortened in the middle past `limit` characters."""
    if len(text) > limit:
        text = text[: limit * 2 // 3] + "…" + text[-(limit // 3 - 1):]
    return "".join(c if unicodedata.category(c)[0] != "C" else f"\\u{ord(c):04x}" for c in text)
