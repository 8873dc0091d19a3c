"""YAML loading that keeps line numbers, so errors can name the line of a bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from amulet_audit.core.errors import InputError


def load_yaml(path: Path, what: str) -> tuple[Any, yaml.Node | None]:
    """Parse `path`; return (data, node tree). Errors name the file, the line and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file not found; check the path.") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a {what} file; pass the YAML file itself.") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file; a {what} must be UTF-8 YAML.") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "malformed YAML"
        raise InputError(f"{path}: {line}invalid YAML ({problem}); fix the syntax there.") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML ({exc}); fix the syntax.") from None
    return data, node


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at `loc` (a pydantic error location), or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    line = k.start_mark.line + 1
                    node = v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def describe_validation_error(path: Path, node: yaml.Node | None, exc: Any, fix_hint: str) -> str:
    """One sentence for the first pydantic error: file, line, key, problem, fix."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic puts union-member tags into the location; keep only real keys and indices
    loc = tuple(p for p in loc if isinstance(p, int) or p in _keys_in(node, loc))
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = line_of(node, loc)
    where = f"line {line}: " if line else ""
    if err["type"] == "extra_forbidden":
        msg = f"unknown key '{loc[-1]}'"
    elif err["type"] == "missing":
        msg = f"required key '{loc[-1]}' is missing"
    else:
        msg = err["msg"][0].lower() + err["msg"][1:]
    return f"{path}: {where}key '{key}': {msg}; {fix_hint}"


def _keys_in(node: yaml.Node | None, loc: tuple[Any, ...]) -> set[str]:
    keys: set[str] = set()
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                keys.add(k.value)
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    # a missing key is not in the file, but is a real key: keep the last element
    if loc and isinstance(loc[-1], str):
        keys.add(loc[-1])
    return keys
