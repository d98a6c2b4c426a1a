"""DNS-01 through dns-lexicon: any of its providers, chosen by name.

lexicon's ``Client`` guesses the zone from the public suffix list (``tldextract``, which
downloads that list at first use) or from the system resolver; this adapter knows the zone
instead (declared, or found by SOA queries like the other kinds) and builds the provider
class lexicon's ``Client`` would build, with the same configuration keys, then calls its
``authenticate`` / ``list_records`` / ``create_record`` / ``delete_record``. Present and
cleanup list the name first, so presenting twice and removing an absent value are no-ops
whatever the provider does. Secrets come from the environment variables the declaration
names, are read at each change, and are masked in every message. lexicon and the HTTP client
under it log requests at debug level (some providers put their key in the URL): their loggers are
kept at INFO or above. lexicon is imported here only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.lexicon_config import LexiconConfig
from certreconcile.plugins.dns01.propagation import (
    PropagationWaiter,
    discover_authoritative_servers,
    find_zone,
    name_server,
)
from certreconcile.plugins.ports import DnsTxtRecord

__all__ = ["LexiconProvider"]


#: Loggers that would print request URLs or bodies (a secret in a query string) at debug level.
_QUIET_LOGGERS = ("lexicon", "urllib3", "requests")


def _quiet_debug_logs() -> None:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def _lexicon() -> tuple[Callable[[], dict[str, bool]], Callable[[str], Any], Any]:
    """lexicon's provider discovery, its module loader and its configuration resolver class."""
    try:
        from lexicon._private.discovery import find_providers, load_provider_module
        from lexicon.config import ConfigResolver
    except ImportError as exc:
        raise DnsError(
            "the lexicon DNS provider kind needs dns-lexicon, which is not installed",
            code="dns-lexicon-missing",
            hint="pip install 'certreconcile[lexicon]'",
        ) from exc
    _quiet_debug_logs()
    return find_providers, load_provider_module, ConfigResolver


class LexiconProvider:
    """One declared ``lexicon`` provider: a lexicon provider name, its options and credentials."""

    def __init__(
        self,
        name: str,
        config: LexiconConfig,
        *,
        env: Mapping[str, str],
        propagation: PropagationWaiter,
        nameservers: tuple[str, ...] | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._env = env
        self._propagation = propagation
        self._nameservers = nameservers
        self._zones: dict[str, str] = {}
        self._provider_class: Any = None
        self._lock = threading.Lock()  # one change at a time: lexicon providers keep state

    # ------------------------------------------------------------------ helpers

    def _secrets(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for option, variable in self._config.credentials_env.items():
            value = self._env.get(variable)
            if not value:
                raise DnsError(
                    f"the environment variable {variable} ({option} of the DNS provider {self.name}) is not set",
                    code="dns-credentials-missing",
                    hint=f"export {variable}=<the {self._config.provider} {option}>",
                )
            values[option] = value
        return values

    def _masked(self, text: str) -> str:
        for variable in self._config.credentials_env.values():
            value = self._env.get(variable, "")
            if len(value) >= 4:
                text = text.replace(value, "***")
        return " ".join(text.split())[:300]

    def _class(self) -> Any:
        if self._provider_class is None:
            find_providers, load_provider_module, _ = _lexicon()
            available = find_providers().get(self._config.provider)
            if available is None:
                raise DnsError(
                    f"DNS provider {self.name}: lexicon has no provider {self._config.provider!r}",
                    code="dns-lexicon-provider-unknown",
                    hint="name one of lexicon's providers (lexicon --help lists them)",
                )
            if not available:
                raise DnsError(
                    f"DNS provider {self.name}: lexicon's provider {self._config.provider} needs more packages",
                    code="dns-lexicon-provider-unknown",
                    hint=f"pip install 'dns-lexicon[{self._config.provider}]'",
                )
            self._provider_class = load_provider_module(self._config.provider).Provider
        return self._provider_class

    def _zone(self, fqdn: str) -> str:
        if self._config.zone:
            return self._config.zone.rstrip(".").lower()
        with self._lock:
            known = self._zones.get(fqdn)
        if known is None:
            if self._nameservers:
                known = find_zone(fqdn, name_server(self._nameservers[0]))
            else:
                known = discover_authoritative_servers(fqdn)[0]
            with self._lock:
                self._zones[fqdn] = known
        return known

    @contextmanager
    def _session(self, fqdn: str, what: str) -> Iterator[Any]:
        """An authenticated lexicon provider for the zone of ``fqdn``; its failures as DnsError."""
        provider_class = self._class()
        _, _, config_resolver = _lexicon()
        settings: dict[str, Any] = {
            "provider_name": self._config.provider,
            "domain": self._zone(fqdn),
            "ttl": self._config.ttl,
            self._config.provider: {**self._config.options, **self._secrets()},
        }
        with self._lock:
            try:
                provider = provider_class(config_resolver().with_dict(settings))
                provider.authenticate()
                try:
                    yield provider
                finally:
                    provider.cleanup()
            except DnsError:
                raise
            except Exception as exc:
                raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Exception) -> DnsError:
        prefix = f"DNS provider {self.name} (lexicon {self._config.provider}): {what}"
        status = getattr(getattr(exc, "response", None), "status_code", None)
        kind = type(exc).__name__
        if kind == "AuthenticationError" or status in (401, 403):
            return DnsError(
                f"{prefix}: the provider refused the credentials ({kind}{f' {status}' if status else ''})",
                code="dns-auth-failed",
                hint=f"check the variables {', '.join(self._config.credentials_env.values()) or '(none)'}",
            )
        if status == 429:
            return DnsError(f"{prefix}: the provider throttled the request (429)", code="dns-throttled")
        if kind in ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "SSLError"):
            return DnsError(
                f"{prefix}: the provider's API did not answer ({kind})",
                code="dns-server-unreachable",
                hint="check the provider's endpoint option and the network",
            )
        detail = self._masked(str(exc))
        return DnsError(
            f"{prefix} failed ({kind}{f' {status}' if status else ''})" + (f": {detail}" if detail else ""),
            code="dns-provider-error",
            hint="check the provider's options and that the zone exists at the provider",
        )

    @staticmethod
    def _holds(provider: Any, record: DnsTxtRecord) -> bool:
        found = provider.list_records("TXT", record.fqdn, record.value) or []
        return any(str(item.get("content", "")).strip('"') == record.value for item in found)

    # ------------------------------------------------------------------ Dns01Provider

    def present(self, record: DnsTxtRecord) -> None:
        with self._session(record.fqdn, f"adding the TXT record {record.fqdn}") as provider:
            if not self._holds(provider, record):
                provider.create_record("TXT", record.fqdn, record.value)

    def cleanup(self, record: DnsTxtRecord) -> None:
        with self._session(record.fqdn, f"removing the TXT record {record.fqdn}") as provider:
            if self._holds(provider, record):
                provider.delete_record(None, "TXT", record.fqdn, record.value)

    def wait_until_visible(self, records: tuple[DnsTxtRecord, ...], timeout: timedelta) -> None:
        self._propagation.wait(records, timeout)
