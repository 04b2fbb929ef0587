"""Renders a named email template in one language: subject, plain text and HTML.

Templates live in templates/<name>/<language>.{subject.txt,body.txt,body.html}.
HTML is autoescaped (data may hold a customer's own words); a template that
uses a variable the data lacks fails loudly instead of mailing a blank.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"
PARTS = ("subject.txt", "body.txt", "body.html")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class UnknownTemplate(LookupError):
    pass


class TemplateDataError(ValueError):
    pass


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    language: str


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


def known_templates() -> set[str]:
    return {path.name for path in TEMPLATES.iterdir() if path.is_dir() and _NAME.fullmatch(path.name)}


def render(template: str, language: str, data: dict[str, Any]) -> RenderedEmail:
    import jinja2

    if not _NAME.fullmatch(template) or template not in known_templates():
        raise UnknownTemplate(template)
    env = _environment()
    try:
        subject, text, html = (env.get_template(f"{template}/{language}.{part}").render(**data) for part in PARTS)
    except jinja2.TemplateNotFound:
        raise UnknownTemplate(f"{template} ({language})") from None
    except jinja2.UndefinedError as exc:
        raise TemplateDataError(str(exc)) from None
    # A subject is one header line: never let data inject another header.
    subject = " ".join(subject.split())
    return RenderedEmail(subject=subject, text=text, html=html, language=language)
