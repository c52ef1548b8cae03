"""The subset of Go's text/template that `weave report -f` users rely on, over the
/report JSON: `{{.A.B}}` fields, `{{range .X}}...{{end}}` (with `.` the element),
`{{if .X}}...{{else}}...{{end}}`, `{{len .X}}`, `{{json .X}}`, `{{printf "%v" .X}}`.
Anything else is a TemplateError naming it (not silently ignored)."""
from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)


class TemplateError(ValueError):
    pass


def render(template: str, data: Any) -> str:
    nodes, rest = _parse(_tokens(template), ())
    if rest:
        raise TemplateError(f"unexpected {{{{{rest[0][1]}}}}}")
    return "".join(_eval(nodes, data))


def _tokens(template: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    for m in _TOKEN.finditer(template):
        if m.start() > pos:
            out.append(("text", template[pos:m.start()]))
        out.append(("action", m.group(1)))
        pos = m.end()
    if pos < len(template):
        out.append(("text", template[pos:]))
    return out


def _parse(tokens: list, until: tuple[str, ...]) -> tuple[list, list]:
    nodes = []
    while tokens:
        kind, value = tokens[0]
        if kind == "action" and value.split(" ")[0] in until:
            return nodes, tokens
        tokens = tokens[1:]
        if kind == "text":
            nodes.append(("text", value))
        elif value.startswith(("range ", "if ")):
            word, expr = value.split(" ", 1)
            body, tokens = _parse(tokens, ("end", "else"))
            other = []
            if tokens and tokens[0][1] == "else":
                other, tokens = _parse(tokens[1:], ("end",))
            if not tokens:
                raise TemplateError(f"{{{{{value}}}}} has no {{{{end}}}}")
            tokens = tokens[1:]
            nodes.append((word, expr, body, other))
        else:
            nodes.append(("expr", value))
    if until:
        raise TemplateError(f"missing {{{{{until[0]}}}}}")
    return nodes, tokens


def _eval(nodes: list, dot: Any) -> list[str]:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(_format(_expr(node[1], dot)))
        elif node[0] == "range":
            items = _expr(node[1], dot) or []
            items = items.values() if isinstance(items, dict) else items
            out += [s for item in items for s in _eval(node[2], item)] if items else _eval(node[3], dot)
        else:  # if
            out += _eval(node[2] if _expr(node[1], dot) else node[3], dot)
    return out


def _expr(text: str, dot: Any) -> Any:
    parts = text.split(" ", 1)
    if parts[0] in ("len", "json", "printf") and len(parts) == 2:
        if parts[0] == "printf":
            fmt, _, arg = parts[1].partition('" ')
            return fmt.strip('"').replace("%v", "{}").replace("%s", "{}").replace("%d", "{}").format(
                _format(_expr(arg, dot)))
        value = _expr(parts[1], dot)
        return len(value or ()) if parts[0] == "len" else json.dumps(value)
    if text == ".":
        return dot
    if not text.startswith("."):
        raise TemplateError(f"unsupported template action {{{{{text}}}}}")
    value = dot
    for field in text[1:].split("."):
        if not isinstance(value, dict) or field not in value:
            raise TemplateError(f"no field {field!r} in {text}")
        value = value[field]
    return value


def _format(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_format(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_format(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)
