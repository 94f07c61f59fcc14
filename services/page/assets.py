"""The page's static files other than ``page.css``: the form's script, the payment methods' icons,
and the operator's branding (a stylesheet generated from ``operator.primary_color`` /
``.accent_color``, since inline styles are forbidden, and the logo at ``operator.logo_path``).

Each is read (or generated) once, when the page starts, and linked with its content's hash in the
URL (``?v=…``), so browsers keep it for a year and a new version is a new URL. Everything is served
by the page itself: no CDN, no fonts, nothing from anyone else."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from aiohttp import web

from services.page.method_icons import ICON_KINDS, icon_kind
from shared.runtime import SETTINGS_KEY
from shared.settings import ConfigError, OperatorSettings

STATIC_DIR = Path(__file__).parent / "static"
# Versioned URLs never change content: a year, and no revalidation.
LONG_CACHE = "public, max-age=31536000, immutable"
# A request without the current version (typed by hand, or an old page): an hour, like page.css.
SHORT_CACHE = "public, max-age=3600"
# The logo counts against the first view (under 60 KB in all, compressed): it must stay small.
MAX_LOGO_BYTES = 32 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# An SVG opened on its own (not in <img>) is a document of this origin: it may not run anything.
SVG_HEADERS: Mapping[str, str] = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox"}
LOGO_PATH = "/static/brand/logo"
BRAND_CSS_PATH = "/static/brand.css"


@dataclass(frozen=True)
class Asset:
    path: str
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:16]

    @property
    def url(self) -> str:
        """Where pages link it: its path with its version."""
        return f"{self.path}?v={self.version}"


def _static(path: str, name: str, content_type: str, headers: Mapping[str, str] | None = None) -> Asset:
    return Asset(path, (STATIC_DIR / name).read_bytes(), content_type, headers or {})


FORM_SCRIPT = _static("/static/form.js", "form.js", "text/javascript")
METHOD_ICONS: Mapping[str, Asset] = {
    kind: _static(f"/static/methods/{kind}.svg", f"methods/{kind}.svg", "image/svg+xml", SVG_HEADERS)
    for kind in ICON_KINDS
}


def method_icon_url(method: str, kind: str | None = None) -> str:
    """The icon beside ``method`` on the form, by the kind of method it is (``kind``: as its processor
    declares it)."""
    return METHOD_ICONS[icon_kind(method, kind)].url


@dataclass(frozen=True)
class Brand:
    """The operator's look: a stylesheet (linked only when a colour is configured) and a logo."""

    stylesheet: Asset
    colored: bool
    logo: Asset | None


def brand_css(primary_color: str | None, accent_color: str | None) -> str:
    """Custom properties ``page.css`` reads (with its own colours as fallbacks). The colours were
    checked by the settings: hex, and readable with white text (WCAG 2.2 AA)."""
    properties = [
        f"--brand-{name}:{value}"
        for name, value in (("primary", primary_color), ("accent", accent_color))
        if value is not None
    ]
    return f":root{{{';'.join(properties)}}}\n"


def read_logo(path: str) -> Asset:
    """The logo file, checked: a PNG, or an SVG without scripts, at most ``MAX_LOGO_BYTES``. A
    ``ConfigError`` naming ``operator.logo_path`` otherwise (the page does not start)."""
    try:
        body = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"operator.logo_path: cannot read {path}: {exc.strerror}") from None
    if len(body) > MAX_LOGO_BYTES:
        raise ConfigError(
            f"operator.logo_path: {len(body)} bytes; at most {MAX_LOGO_BYTES} (the page's first view must stay small)"
        )
    if body.startswith(PNG_SIGNATURE):
        return Asset(LOGO_PATH, body, "image/png")
    problem = svg_problem(body)
    if problem is not None:
        raise ConfigError(f"operator.logo_path: {problem}")
    return Asset(LOGO_PATH, body, "image/svg+xml", SVG_HEADERS)


def svg_problem(body: bytes) -> str | None:
    """Why ``body`` cannot be the logo as an SVG; None if it can."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "neither a PNG nor an SVG (UTF-8 XML)"
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        return "an SVG logo may not declare a DOCTYPE or entities"
    try:
        # The operator's own file, read once at start, and without a DOCTYPE (refused above): no
        # entity can expand, and nothing outside the file is read.
        root = ElementTree.fromstring(text)  # noqa: S314
    except ElementTree.ParseError as exc:
        return f"neither a PNG nor a well-formed SVG: {exc}"
    if _local(root.tag) != "svg":
        return f"an SVG's root element must be <svg>, not <{_local(root.tag)}>"
    for element in root.iter():
        if _local(element.tag) in ("script", "foreignObject"):
            return f"an SVG logo may not hold <{_local(element.tag)}>"
        handlers = [name for name in element.attrib if _local(name).lower().startswith("on")]
        if handlers:
            return f"an SVG logo may not hold event handlers ({handlers[0]})"
    return None


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


@lru_cache(maxsize=8)
def _brand(logo_path: str | None, primary_color: str | None, accent_color: str | None) -> Brand:
    stylesheet = Asset(BRAND_CSS_PATH, brand_css(primary_color, accent_color).encode(), "text/css")
    logo = read_logo(logo_path) if logo_path is not None else None
    return Brand(stylesheet, primary_color is not None or accent_color is not None, logo)


def brand(operator: OperatorSettings) -> Brand:
    """The operator's brand, read once (at start: :func:`add_routes`) and then remembered."""
    return _brand(operator.logo_path, operator.primary_color, operator.accent_color)


def _assets(operator: OperatorSettings) -> dict[str, Asset]:
    own = brand(operator)
    found = {asset.path: asset for asset in (FORM_SCRIPT, own.stylesheet, *METHOD_ICONS.values())}
    if own.logo is not None:
        found[own.logo.path] = own.logo
    return found


async def serve(request: web.Request) -> web.Response:
    asset = _assets(request.app[SETTINGS_KEY].operator).get(request.path)
    if asset is None:
        raise web.HTTPNotFound()
    cache = LONG_CACHE if request.query.get("v") == asset.version else SHORT_CACHE
    return web.Response(
        body=asset.body,
        content_type=asset.content_type,
        charset="utf-8" if asset.content_type.startswith("text/") else None,
        headers={"Cache-Control": cache, **asset.headers},
    )


def add_routes(app: web.Application) -> None:
    """The routes, and the brand read now: a missing, oversized or unsafe logo stops the start."""
    operator = app[SETTINGS_KEY].operator
    for path in _assets(operator):
        app.router.add_get(path, serve)
