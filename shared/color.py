"""Colours the operator brands the page with, checked for contrast as WCAG 2.2 measures it: white
text on the colour (a button), or the colour as text on white (a link), must reach 4.5:1 (AA for
normal text). Pure functions: the settings refuse a colour that fails, and suggest a darker one."""

from __future__ import annotations

import re

HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
WHITE = "#ffffff"
# WCAG 2.2 AA, normal text (success criterion 1.4.3).
AA_NORMAL_TEXT = 4.5


def normalise_hex(value: str) -> str:
    """``#ABC`` or ``#aabbcc`` as ``#aabbcc``; ``ValueError`` for anything else."""
    if HEX_COLOR.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a hex colour like #0a7c3a")
    digits = value[1:].lower()
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return f"#{digits}"


def _channels(color: str) -> tuple[int, int, int]:
    digits = normalise_hex(color)[1:]
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def relative_luminance(color: str) -> float:
    """WCAG's relative luminance: 0 for black, 1 for white."""
    r, g, b = (_linear(c) for c in _channels(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(first: str, second: str) -> float:
    """From 1 (the same) to 21 (black on white), whichever is lighter."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def darkened_for_contrast(color: str, against: str = WHITE, minimum: float = AA_NORMAL_TEXT) -> str:
    """``color`` itself if it reaches ``minimum`` against ``against``, else the lightest darker shade
    of it (the same hue, each channel scaled down alike) that does: what an error suggests."""
    r, g, b = _channels(color)
    for percent in range(100, -1, -1):
        shade = "#{:02x}{:02x}{:02x}".format(*(round(c * percent / 100) for c in (r, g, b)))
        if contrast_ratio(shade, against) >= minimum:
            return shade
    return "#000000"  # pragma: no cover - black reaches 21:1 against white


def check_contrast_with_white(color: str) -> str:
    """``color`` normalised, if white text on it (and it as text on white) reaches AA; else a
    ``ValueError`` saying by how much it misses and which darker shade would do."""
    normal = normalise_hex(color)
    ratio = contrast_ratio(normal, WHITE)
    if ratio < AA_NORMAL_TEXT:
        raise ValueError(
            f"{normal} against white text has a contrast of {ratio:.2f}:1; WCAG 2.2 AA needs"
            f" {AA_NORMAL_TEXT}:1: choose a darker colour, e.g. {darkened_for_contrast(normal)}"
        )
    return normal
