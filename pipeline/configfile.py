"""YAML loading that remembers where each key came from, and pydantic errors turned into messages a person
can act on: file, line, key path, the value found and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.errors import ConfigError

Loc = Sequence[str | int]


class YamlDoc:
    """A parsed YAML file plus the node tree, so a key path can be mapped back to its line."""

    def __init__(self, path: Path, data: Any, root: yaml.Node | None) -> None:
        self.path = path
        self.data = data
        self.root = root

    def line_of(self, loc: Loc) -> int | None:
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        node, line = value, key.start_mark.line + 1
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def load_yaml(path: str | Path, what: str = "file") -> YamlDoc:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    return YamlDoc(path, data, root)


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def problem_line(doc: YamlDoc | None, file: Path | str, loc: Loc, message: str, value: Any = ...) -> str:
    line = doc.line_of(loc) if doc is not None else None
    where = f"{file}:{line}" if line else str(file)
    got = "" if value is ... else f" (got {_short(value)})"
    return f"{where}: {format_loc(loc)}: {message}{got}"


def _clean_loc(loc: Iterable[str | int]) -> list[str | int]:
    # pydantic adds union-branch and validator names to loc ("function-after[...]", "str", "int"): drop them
    skip = {"str", "int", "float", "bool", "list[str]", "dict[str,any]", "decimal", "literal['stop']"}
    return [p for p in loc if isinstance(p, int) or ("[" not in p and p.lower() not in skip)]


def validation_messages(
    exc: ValidationError,
    doc: YamlDoc | None,
    file: Path | str,
    prefix: Loc = (),
    known_keys: dict[str, Iterable[str]] | None = None,
) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = [*prefix, *_clean_loc(err["loc"])]
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key"
            if known_keys is not None:
                parent = format_loc(loc[:-1])
                close = difflib.get_close_matches(str(loc[-1]), list(known_keys.get(parent, ())), n=1)
                if close:
                    msg += f"; did you mean {close[0]!r}?"
            text = problem_line(doc, file, loc, msg)
        elif kind == "missing":
            text = problem_line(doc, file, loc, "required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            text = problem_line(doc, file, loc, f"expected: {msg}", err.get("input"))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def raise_problems(problems: list[str], what: str) -> None:
    if problems:
        head = f"invalid {what} ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n  "
        raise ConfigError(head + "\n  ".join(problems) if len(problems) > 1 else problems[0])
