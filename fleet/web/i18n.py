"""The pages' message catalogue: Vietnamese first, English second (docs/broadcasts.md, "Pages").

Every text of the broadcast and audio pages comes from `messages/<language>.json` (one flat
object: key -> text with `{name}` placeholders). The language of a request: `?lang=` if it names
one, else the `ioc_lang` cookie (set by `/lang/<code>`), else the first language of
`Accept-Language` the catalogue has, else Vietnamese. A key missing from a catalogue renders as
the key itself (never an error page); tests/unit/test_i18n.py keeps both catalogues complete.
"""

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, pass_context
from starlette.requests import Request

LANGUAGES = ("vi", "en")  # the first is the default
DEFAULT = LANGUAGES[0]
COOKIE = "ioc_lang"
CATALOGUES = Path(__file__).parent / "messages"
_STATE = "ioc_lang"  # request.state: the language, decided once per request


@cache
def catalogue(language: str) -> Mapping[str, str]:
    """The messages of one language (read once per process)."""
    if language not in LANGUAGES:
        raise ValueError(f"no catalogue for {language!r}")
    messages: dict[str, str] = json.loads((CATALOGUES / f"{language}.json").read_text(encoding="utf-8"))
    return messages


def translate(language: str, key: str, **params: Any) -> str:
    text = catalogue(language).get(key)
    if text is None:
        return key
    return text.format(**params) if params else text


def _accepted(header: str) -> str | None:
    """The first catalogue language in an Accept-Language header, by its q weights."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, rest = part.strip().partition(";")
        quality = 1.0
        if rest.strip().startswith("q="):
            try:
                quality = float(rest.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            weighted.append((-quality, index, primary))
    return min(weighted)[2] if weighted else None


def choose(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return str(candidate)
    return (_accepted(accept_language) if accept_language else None) or DEFAULT


def language_of(request: Request) -> str:
    chosen: str | None = getattr(request.state, _STATE, None)
    if chosen is None:
        chosen = choose(request.query_params.get("lang"), request.cookies.get(COOKIE),
                        request.headers.get("accept-language"))
        setattr(request.state, _STATE, chosen)
    return chosen


def install(env: Environment) -> None:
    """`t(key, **params)` and `lang()` in every template rendered with a `request` in its context."""

    @pass_context
    def t(context: Mapping[str, Any], key: str, **params: Any) -> str:
        request = context.get("request")
        return translate(language_of(request) if isinstance(request, Request) else DEFAULT, key, **params)

    @pass_context
    def lang(context: Mapping[str, Any]) -> str:
        request = context.get("request")
        return language_of(request) if isinstance(request, Request) else DEFAULT

    env.globals["t"] = t
    env.globals["lang"] = lang
    env.globals["languages"] = LANGUAGES
