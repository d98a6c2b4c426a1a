"""What a remote KMS may say about itself in an error: never credentials, never key material."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["display_url"]


def display_url(url: str) -> str:
    """``scheme://host[:port]`` only: user info, path and query (which may hold tokens) are dropped."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")
