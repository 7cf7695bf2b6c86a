"""Credentials in URLs: refused, and redacted wherever a URL is shown.

A password given in a URL stays in shell history, in the process list (``ps``) for the
whole run and in every log line or file that shows the URL. So the rig takes secrets only
from the environment, refuses a URL that carries one (userinfo ``user:pass@``, or a query
or fragment parameter named like a secret) with an error that does not repeat it, and
shows every URL through `redact_url`.
"""

from __future__ import annotations

import urllib.parse

from twin.errors import ConfigError

# Parameter (and manifest field) names holding a secret: a name containing one of these.
SECRET_WORDS = ("password", "passwd", "pwd", "token", "secret", "key", "auth", "credential",
                "signature", "sig")
# Exact short names: InfluxDB 1.x takes ``u`` and ``p`` as query parameters.
SECRET_NAMES = frozenset({"p", "u", "pass", "user", "username"})
MASK = "***"


def is_secret_name(name: str) -> bool:
    """True when a parameter or field called ``name`` holds a credential."""
    low = name.lower()
    return low in SECRET_NAMES or any(word in low for word in SECRET_WORDS)


def _split(url: str) -> urllib.parse.SplitResult | None:
    try:
        return urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def _params(text: str) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(text, keep_blank_values=True)


def url_credentials(url: str) -> list[str]:
    """Where ``url`` carries credentials: ``"userinfo"`` and the secret parameter names."""
    parts = _split(url)
    if parts is None:  # look at it the simple way: authority before "?", parameters after
        head, _, tail = url.partition("?")
        found = ["userinfo"] if "@" in head else []
        texts = tail.split("#", 1)
    else:
        found = ["userinfo"] if "@" in parts.netloc else []
        texts = [parts.query, parts.fragment]
    for text in texts:
        found += [name for name, _ in _params(text) if is_secret_name(name)]
    return found


def redact_url(url: str) -> str:
    """``url`` with userinfo and the values of secret parameters replaced by ``***``.

    A URL without credentials is returned as it is; one that cannot be parsed is shown
    as its scheme only (``http://***``).
    """
    if not url_credentials(url):
        return url
    parts = _split(url)
    if parts is None:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme}://{MASK}" if scheme.isalnum() else MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"

    def clean(text: str) -> str:
        if not text or not any(is_secret_name(n) for n, _ in _params(text)):
            return text
        return urllib.parse.urlencode([(n, MASK if is_secret_name(n) else v)
                                       for n, v in _params(text)], safe="*")

    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=clean(parts.query),
                                                  fragment=clean(parts.fragment)))


def refuse_url_credentials(url: str, what: str, use: str) -> None:
    """Raise ConfigError when ``url`` carries credentials; the message does not repeat them.

    ``what`` names the URL (``InfluxDB URL``); ``use`` says where the secrets go instead
    (``set HEATRIG_INFLUX_PASSWORD``).
    """
    found = url_credentials(url)
    if found:
        where = ", ".join(f"parameter {n!r}" if n != "userinfo" else "user:password@"
                          for n in dict.fromkeys(found))
        raise ConfigError(f"{what} {redact_url(url)}: credentials in the URL are not accepted "
                          f"({where}; a URL stays in shell history and the process list); "
                          f"{use}")
