"""DNS-01 through RFC 2136 dynamic updates signed with TSIG (BIND, Knot, PowerDNS...).

``present`` adds one TXT rdata (other values of the name stay), ``cleanup`` deletes exactly
that rdata (deleting an absent one is a no-op for the server). Updates go over TCP to the
declared primary; the response's rcode and TSIG are checked. The TSIG secret is read from
the environment variable the declaration names, at the first update, and never shown.
dnspython is imported here only.
"""

from __future__ import annotations

import binascii
import threading
from collections.abc import Mapping
from datetime import timedelta

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.propagation import NameServer, PropagationWaiter, find_zone, name_server
from certreconcile.plugins.dns01.rfc2136_config import Rfc2136Config
from certreconcile.plugins.ports import DnsTxtRecord
from certreconcile.retry import RetryPolicy, Verdict

__all__ = ["Rfc2136Provider"]

_ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}

_TTL = 60  # seconds; challenge records live minutes at most

# dnspython's TSIG failures: the server (or our check of its answer) refused the key.
_TSIG_ERRORS: tuple[type[Exception], ...] = (
    dns.tsig.BadSignature,
    dns.tsig.BadTime,
    dns.tsig.BadAlgorithm,
    dns.tsig.PeerError,
)


def _unanswered(exc: BaseException) -> Verdict:
    """Retry a server that did not answer (connection refused or reset, timeout); never a TSIG refusal."""
    if isinstance(exc, _TSIG_ERRORS):
        return Verdict(False)
    return Verdict(isinstance(exc, dns.exception.Timeout | OSError | EOFError), None, type(exc).__name__)


class Rfc2136Provider:
    """One declared ``rfc2136`` provider: a primary server, a TSIG key, optionally a fixed zone."""

    def __init__(
        self,
        name: str,
        config: Rfc2136Config,
        *,
        env: Mapping[str, str],
        propagation: PropagationWaiter,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._env = env
        self._propagation = propagation
        self._timeout = timeout
        #: An update adds or deletes one exact rdata: repeating it is harmless, so a server that does
        #: not answer (refused, timed out) is asked again, bounded; a refusal of the key never is.
        self.retry = retry or RetryPolicy(attempts=3, total=15.0, first_delay=0.2, max_delay=2.0)
        self._server: NameServer | None = None
        self._zones: dict[str, str] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers

    def _primary(self) -> NameServer:
        with self._lock:
            if self._server is None:
                self._server = name_server(self._config.server)
            return self._server

    def _key(self) -> dns.tsig.Key:
        variable = self._config.tsig_secret_env
        secret = self._env.get(variable)
        if not secret:
            raise DnsError(
                f"the environment variable {variable} (TSIG secret of the DNS provider {self.name}) is not set",
                code="dns-credentials-missing",
                hint=f"export {variable}=<base64 secret of the TSIG key {self._config.tsig_key_name}>",
            )
        try:
            return dns.tsig.Key(
                self._config.tsig_key_name, secret.strip(), _ALGORITHMS[self._config.tsig_algorithm]
            )
        except (binascii.Error, ValueError, dns.exception.DNSException) as exc:
            raise DnsError(
                f"the TSIG secret in {variable} (DNS provider {self.name}) is not valid base64",
                code="dns-credentials-invalid",
                hint="copy the secret of the key from the server's configuration",
            ) from exc

    def _zone(self, fqdn: str) -> str:
        if self._config.zone:
            return self._config.zone
        with self._lock:
            known = self._zones.get(fqdn)
        if known is None:
            known = find_zone(fqdn, self._primary(), self._timeout)
            with self._lock:
                self._zones[fqdn] = known
        return known

    def _update(self, record: DnsTxtRecord, *, add: bool) -> None:
        key = self._key()
        server = self._primary()
        zone = self._zone(record.fqdn)
        update = dns.update.UpdateMessage(zone, keyring=key)
        owner = dns.name.from_text(record.fqdn)
        rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [record.value.encode()])
        if add:
            update.add(owner, _TTL, rdata)
        else:
            update.delete(owner, rdata)
        what = f"{'adding' if add else 'removing'} the TXT record {record.fqdn} at {server}"
        try:
            response = self.retry.call(
                what,
                lambda: dns.query.tcp(update, server.address, timeout=self._timeout, port=server.port),
                _unanswered,
            )
        except _TSIG_ERRORS as exc:
            raise DnsError(
                f"{what}: the server refused the TSIG key {self._config.tsig_key_name} ({type(exc).__name__})",
                code="dns-auth-failed",
                hint=f"check tsig_key_name, tsig_algorithm and the secret in {self._config.tsig_secret_env}",
            ) from exc
        except (dns.exception.DNSException, OSError, EOFError) as exc:  # EOFError: the server hung up
            raise DnsError(
                f"{what} failed ({type(exc).__name__})",
                code="dns-server-unreachable",
                hint="check the server address and that it accepts TCP",
            ) from exc
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        if rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED):
            raise DnsError(
                f"{what}: the server answered {dns.rcode.to_text(rcode)}",
                code="dns-update-refused",
                hint=f"check that the key {self._config.tsig_key_name} may update zone {zone} (update-policy)",
            )
        raise DnsError(f"{what}: the server answered {dns.rcode.to_text(rcode)}", code="dns-update-failed")

    # ------------------------------------------------------------------ Dns01Provider

    def present(self, record: DnsTxtRecord) -> None:
        self._update(record, add=True)

    def cleanup(self, record: DnsTxtRecord) -> None:
        self._update(record, add=False)

    def wait_until_visible(self, records: tuple[DnsTxtRecord, ...], timeout: timedelta) -> None:
        self._propagation.wait(records, timeout)

    # ------------------------------------------------------------------ SupportsCheck

    def check(self) -> str:
        """A TSIG-signed SOA query to the primary (of the declared zone, else of the root): the server
        checks the key's signature before it answers, so a wrong secret, name or algorithm fails here."""
        key = self._key()
        server = self._primary()
        zone = self._config.zone or "."
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        query.use_tsig(keyring=key)
        what = f"a TSIG-signed query to {server}"
        try:
            dns.query.tcp(query, server.address, timeout=self._timeout, port=server.port)
        except _TSIG_ERRORS as exc:
            raise DnsError(
                f"{what}: the server refused the TSIG key {self._config.tsig_key_name} ({type(exc).__name__})",
                code="dns-auth-failed",
                hint=f"check tsig_key_name, tsig_algorithm and the secret in {self._config.tsig_secret_env}",
            ) from exc
        except (dns.exception.DNSException, OSError, EOFError) as exc:
            raise DnsError(
                f"{what} failed ({type(exc).__name__})",
                code="dns-server-unreachable",
                hint="check the server address and that it accepts TCP",
            ) from exc
        return f"{server} accepted the TSIG key {self._config.tsig_key_name}"
