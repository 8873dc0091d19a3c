"""Document tree -> HTML through Jinja2, with an organisation's templates searched first.

Template names resolve in this order:
  "amulet/<name>"  always the packaged template, so a user template can extend the one it replaces;
  "<name>"         the user's `--templates` folder first, then the packaged templates.
Autoescape is on for every template, whatever its file extension.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
)
from markupsafe import Markup

from amulet_audit.core.errors import InputError
from amulet_audit.report.document import build_document
from amulet_audit.core.resources import templates_dir as packaged_templates_dir
from amulet_audit.results.model import AuditResult

MAIN_TEMPLATE = "report.html.j2"
PACKAGED_PREFIX = "amulet"


def environment(user_dir: str | Path | None = None) -> Environment:
    """The Jinja2 environment: `user_dir` (if given) before the packaged templates."""
    packaged = FileSystemLoader(packaged_templates_dir())
    loaders = [PrefixLoader({PACKAGED_PREFIX: packaged})]
    if user_dir is not None:
        folder = Path(user_dir)
        if not folder.is_dir():
            raise InputError(f"--templates {folder}: not a folder; pass the folder that holds your report templates.")
        loaders.append(FileSystemLoader(folder))
    loaders.append(packaged)
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["css_string"] = css_string
    return env


def css_string(value: object) -> Markup:
    """`value` as a quoted CSS string: anything but letters, digits and plain punctuation is
    written as a CSS escape, so no value can end the string, the rule or the <style> element."""
    text = "".join(ch if ch.isalnum() or ch in " .,:-_()/·" else f"\\{ord(ch):x} " for ch in str(value))
    return Markup(f'"{text}"')


def render_html(result: AuditResult, templates_dir: str | Path | None = None) -> str:
    """Render the audit report as one self-contained HTML page (inline CSS and SVG, no scripts).

    `templates_dir` is an organisation's template folder (`--templates`); its files take precedence
    over the packaged ones. A broken user template raises InputError naming the file and line.
    """
    env = environment(templates_dir)
    try:
        template = env.get_template(MAIN_TEMPLATE)  # before the charts are drawn: fail fast
        return template.render(doc=build_document(result))
    except TemplateError as exc:
        if templates_dir is None:
            raise  # a packaged template is broken: an internal error, not bad input
        raise InputError(_describe(exc, templates_dir)) from None
    except RecursionError:
        if templates_dir is None:
            raise
        raise InputError(
            f"a template in {templates_dir} extends or includes itself; to build on the packaged "
            f"{MAIN_TEMPLATE}, write {{% extends \"{PACKAGED_PREFIX}/{MAIN_TEMPLATE}\" %}}."
        ) from None


def _describe(exc: TemplateError, templates_dir: str | Path) -> str:
    """One sentence naming the user template, the line and the fix."""
    if isinstance(exc, TemplateSyntaxError):
        return f"{exc.filename or exc.name}: line {exc.lineno}: {exc.message}; fix the template in {templates_dir}."
    if isinstance(exc, TemplateNotFound):
        return (
            f"template '{exc.name}' is neither in {templates_dir} nor packaged; to extend a packaged template "
            f"use '{PACKAGED_PREFIX}/<name>' (e.g. '{PACKAGED_PREFIX}/{MAIN_TEMPLATE}')."
        )
    return f"a template in {templates_dir} failed to render: {exc.message}; fix that template."
