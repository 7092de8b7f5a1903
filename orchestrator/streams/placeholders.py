"""Placeholder templates used in streams.yaml commands, settings and URLs.

One syntax everywhere so that an operator never has to remember which field supports what:
`{name}` is replaced wherever it occurs, `{{` and `}}` are literal braces, and the old JSON
configs' `%EXTERNAL_HOSTNAME%`, `%SFU_PORT%`, `%USER_ID%`, `%SESSION_ID%` are read as aliases.
An unknown name (or an unknown `%UPPER_CASE%` token, almost always a typo) is an error at load time
instead of a URL that silently contains the raw placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Placeholders a worker's command, env and settings may use (values known when it starts).
COMMAND_NAMES = frozenset({
    "python", "port", "control_port", "udp_min", "udp_max", "host", "public_host",
    "settings_file", "log_level", "name", "kind",
})
#: Placeholders a URL template may use (values known when sfuData is rendered for one user).
URL_NAMES = frozenset({"public_host", "port", "session_id", "user_id"})
#: The old orchestrator's tokens and what they mean now.
LEGACY = {"EXTERNAL_HOSTNAME": "public_host", "SFU_PORT": "port", "USER_ID": "user_id",
          "SESSION_ID": "session_id"}

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|%([A-Z][A-Z_]*)%|[{}]")


class TemplateError(ValueError):
    """A template that cannot be parsed or names a placeholder that is not allowed there."""


def _tokens(template: str):
    """Yield (start, end, placeholder name or None for a literal, literal text)."""
    for m in _TOKEN.finditer(template):
        text = m.group(0)
        if text in ("{{", "}}"):
            yield m.start(), m.end(), None, text[0]
        elif m.group(1) is not None:
            yield m.start(), m.end(), m.group(1), ""
        elif m.group(2) is not None:
            if m.group(2) not in LEGACY:
                raise TemplateError(f"unknown placeholder %{m.group(2)}% (old names: "
                                    + ", ".join(f"%{k}%" for k in LEGACY) + ")")
            yield m.start(), m.end(), LEGACY[m.group(2)], ""
        else:
            raise TemplateError(f"unbalanced {text!r} at offset {m.start()} (write {text * 2} for a literal)")


def names(template: str, allowed: frozenset[str]) -> set[str]:
    """The placeholders a template uses; TemplateError if one is not in `allowed`."""
    found = {name for _, _, name, _ in _tokens(template) if name is not None}
    unknown = sorted(found - allowed)
    if unknown:
        raise TemplateError(f"unknown placeholder {{{unknown[0]}}} (allowed here: "
                            + ", ".join(f"{{{n}}}" for n in sorted(allowed)) + ")")
    return found


def render(template: str, values: Mapping[str, object]) -> str:
    """Replace every placeholder occurrence (not just the first one, as the old orchestrator did)."""
    out: list[str] = []
    pos = 0
    for start, end, name, literal in _tokens(template):
        out.append(template[pos:start])
        out.append(literal if name is None else str(values[name]))
        pos = end
    out.append(template[pos:])
    return "".join(out)
