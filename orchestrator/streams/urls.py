"""sfuData rendering: the connection URLs a client receives for its session's stream worker.

Pure functions. The host comes from the client's own Host header (or the configured public_host), so
it is validated and IPv6 literals are bracketed; ids are percent-encoded so that no id can change
the shape of a URL handed to another member of the session.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote

from . import placeholders

URL_KEYS = ("url_gen", "url_audio", "url_pcc")
EMPTY: dict[str, str] = dict.fromkeys(URL_KEYS, "")

_HOSTNAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?")


def normalize_host(value: str) -> str | None:
    """The bare host of a Host header or configured name ("[::1]:8090" → "::1", "a.b:80" → "a.b").

    None when it is neither a DNS name nor an IP literal; such a value must never reach a URL.
    """
    v = value.strip()
    if v.startswith("["):
        end = v.find("]")
        host, rest = (v[1:end], v[end + 1:]) if end > 0 else ("", "")
        if end < 0 or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            return None
        return host if _is_ipv6(host) else None
    if v.count(":") > 1:
        return v if _is_ipv6(v) else None
    host, _, port = v.partition(":")
    if _ and not re.fullmatch(r"\d{1,5}", port):
        return None
    return host if _HOSTNAME.fullmatch(host) else None


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6 and "%" not in text
    except ValueError:
        return False


def url_host(host: str) -> str:
    """A bare host as it must appear in a URL authority (IPv6 literals bracketed)."""
    return f"[{host}]" if ":" in host else host


def render_sfu_data(templates: dict[str, str], *, public_host: str, port: int,
                    session_id: str, user_id: str) -> dict[str, str]:
    """{"url_gen", "url_audio", "url_pcc"} for one user; an empty template stays "" (old samples' value)."""
    host = normalize_host(public_host)
    if host is None:
        raise ValueError(f"invalid public host {public_host!r}")
    values = {"public_host": url_host(host), "port": port,
              "session_id": quote(str(session_id), safe="-._~"), "user_id": quote(str(user_id), safe="-._~")}
    return {key: placeholders.render(templates.get(key, ""), values) for key in URL_KEYS}
