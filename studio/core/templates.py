"""The genre template catalog: load prompts/*.toml, validate field values, render safely.

A template file holds its name, description, fields, suggested sampler settings and a Jinja2
prompt. Adding a genre means adding a file. Rendering runs in Jinja2's immutable sandbox with
StrictUndefined, so a template can neither reach Python internals nor silently drop a field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from jinja2 import StrictUndefined
from jinja2 import TemplateError as JinjaError
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from studio.errors import TemplateError
from studio.serving.sampling import SamplerSettings

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class TemplateField:
    name: str
    label: str
    default: str = ""
    required: bool = False
    max_length: int = 500
    multiline: bool = False
    placeholder: str = ""


@dataclass(frozen=True)
class GenreTemplate:
    id: str
    name: str
    description: str
    language: str
    category: str
    source: str
    fields: tuple[TemplateField, ...]
    sampler: SamplerSettings
    system: str = ""
    untrusted: bool = False  # a writer's own template: rendered in a limited child process
    _compiled: Any = field(default=None, repr=False, compare=False)

    def resolve_values(self, values: Mapping[str, Any] | None) -> dict[str, str]:
        """Fill in defaults and check every value; raise TemplateError naming the bad field."""
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in self.fields})
        if unknown:
            known = ", ".join(f.name for f in self.fields)
            raise TemplateError(f"Template '{self.id}' has no field {unknown[0]!r}; its fields are: {known}.")
        resolved: dict[str, str] = {}
        for f in self.fields:
            value = values.get(f.name)
            # An absent field takes its default; a field sent empty is the writer's choice.
            value = f.default if value is None else str(value)
            value = value.replace("\x00", "").strip()
            if f.required and not value:
                raise TemplateError(f"“{f.label}” is required: please fill it in.")
            if len(value) > f.max_length:
                raise TemplateError(
                    f"“{f.label}” is {len(value)} characters long; the limit is {f.max_length}."
                )
            resolved[f.name] = value
        return resolved

    def render(self, values: Mapping[str, Any] | None = None) -> str:
        """The prompt for these field values (defaults for the missing ones)."""
        resolved = self.resolve_values(values)
        if self.untrusted:
            from studio.trust.sandbox import render_untrusted

            return render_untrusted(self.source, resolved, name=f"The template “{self.name}”").strip()
        try:
            return self._compiled.render(**resolved).strip()
        except (JinjaError, OverflowError) as exc:  # the sandbox raises OverflowError for huge ranges
            raise TemplateError(f"Template '{self.id}' could not be rendered: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The public description of the template (API and command line)."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "language": self.language,
            "category": self.category,
            "fields": [vars(f).copy() for f in self.fields],
            "sampler": self.sampler.to_dict(),
        }


def _free_names(parsed: nodes.Template) -> set[str]:
    """Variables a template reads but never sets.

    Read straight off the syntax tree: jinja2.meta would run the code generator, which
    evaluates constant expressions ('x' * 10**10) in this process.
    """
    loads = {n.name for n in parsed.find_all(nodes.Name) if n.ctx == "load"}
    bound = {n.name for n in parsed.find_all(nodes.Name) if n.ctx in ("store", "param")}
    bound |= {m.name for m in parsed.find_all(nodes.Macro)}
    return loads - bound - set(_ENV.globals) - {"loop", "caller", "varargs", "kwargs"}


def parse_template(template_id: str, text: str, untrusted: bool = False) -> GenreTemplate:
    """Build a template from the text of a .toml file; raise TemplateError saying what is wrong."""
    where = f"Template '{template_id}'"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{where} is not valid TOML: {exc}") from exc
    for key in ("name", "template", "fields"):
        if key not in data:
            raise TemplateError(f"{where} lacks the key '{key}'.")
    try:
        fields = tuple(TemplateField(**f) for f in data["fields"])
    except TypeError as exc:
        raise TemplateError(f"{where} has a malformed field: {exc}") from exc
    names = [f.name for f in fields]
    bad = [n for n in names if not _FIELD_NAME.fullmatch(n)]
    if bad or len(set(names)) != len(names):
        raise TemplateError(f"{where}: field names must be unique snake_case identifiers ({names}).")
    try:
        parsed = _ENV.parse(data["template"])
        # Compiling folds constant expressions ('x' * 10**10 would be built right here), so a
        # writer's template is only parsed in this process and compiled in the sandbox child.
        compiled = None if untrusted else _ENV.from_string(data["template"])
    except JinjaError as exc:
        raise TemplateError(f"{where} has a Jinja2 syntax error: {exc}") from exc
    undeclared = _free_names(parsed) - set(names)
    if undeclared:
        raise TemplateError(f"{where} uses undeclared variables: {', '.join(sorted(undeclared))}.")
    try:
        sampler = SamplerSettings(**data.get("sampler", {}))
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"{where} has bad sampler settings: {exc}") from exc
    return GenreTemplate(
        id=template_id,
        name=data["name"],
        description=data.get("description", ""),
        language=data.get("language", "en"),
        category=data.get("category", "fiction"),
        source=data["template"],
        fields=fields,
        sampler=sampler,
        system=data.get("system", ""),
        untrusted=untrusted,
        _compiled=compiled,
    )


class TemplateCatalog:
    """The templates of one folder, by id (the file name without .toml), sorted by name."""

    def __init__(self, templates: list[GenreTemplate]):
        self._by_id = {t.id: t for t in sorted(templates, key=lambda t: (t.language, t.name))}

    @classmethod
    def load(cls, folder: Path = PROMPTS_DIR) -> "TemplateCatalog":
        files = sorted(Path(folder).glob("*.toml"))
        if not files:
            raise TemplateError(f"No templates found in {folder}: add a .toml file per genre.")
        return cls([parse_template(f.stem, f.read_text(encoding="utf-8")) for f in files])

    def get(self, template_id: str) -> GenreTemplate:
        try:
            return self._by_id[template_id]
        except KeyError:
            raise TemplateError(
                f"Unknown template '{template_id}'. Available: {', '.join(self._by_id)}."
            ) from None

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def ids(self) -> list[str]:
        return list(self._by_id)
