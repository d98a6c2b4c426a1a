"""The ACME directory, the account (loaded or registered once per directory) and per-thread connections."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import b64, jwa, jwk
from josepy import errors as jose_errors

from certreconcile.actual.store import AcmeAccountRecord, AcmeStore, SessionSource
from certreconcile.crypto.envelope import open_envelope, seal
from certreconcile.crypto.keys import load_private_key, private_key_pem
from certreconcile.errors import ConfigError, IssuerError
from certreconcile.plugins.issuers.acme import acme_account_context
from certreconcile.plugins.issuers.acme.client import (
    AcmeConnection,
    Poller,
    RecordingClientNetwork,
    problem_error,
    transport_error,
)
from certreconcile.plugins.issuers.acme_config import AcmeIssuerConfig
from certreconcile.plugins.ports import (
    Dns01Provider,
    Http01Solver,
    Kms,
)
from certreconcile.retry import RetryPolicy

__all__ = ["WIRE_ERRORS", "AcmeAccountBase"]

#: What the wire can throw besides the CA's problem documents (messages.Error, caught first where it matters).
WIRE_ERRORS = (requests.RequestException, acme_errors.Error, jose_errors.DeserializationError, ValueError)


@dataclass(frozen=True, slots=True)
class _Account:
    key: jwk.JWK
    url: str


class AcmeAccountBase:
    """The issuer's state: the directory, the account (registered once per directory), per-thread connections."""

    def __init__(
        self,
        name: str,
        config: AcmeIssuerConfig,
        store: SessionSource[AcmeStore],
        kms: Kms,
        *,
        http01: Http01Solver,
        dns_providers: Mapping[str, Dns01Provider],
        env: Mapping[str, str],
        ca_bundle: str | None = None,
        poller: Poller | None = None,
        wall_clock: Callable[[], datetime] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self.directory_url = config.directory_url
        self._config = config
        self._store = store
        self._kms = kms
        self._http01 = http01
        self._dns_providers = dict(dns_providers)
        self._env = env
        self._verify: str | bool = ca_bundle if ca_bundle else True
        self._poller = poller or Poller()
        self._now = wall_clock or (lambda: datetime.now(UTC))
        #: Bounded retries of idempotent requests; sleeps through the poller's (injected) sleep.
        self.retry = retry or RetryPolicy(sleep=self._poller.sleep)
        self._order_timeout = config.order_timeout.delta
        self._lock = threading.Lock()
        self._directory: messages.Directory | None = None
        self._account: _Account | None = None
        self._local = threading.local()

    # --- directory, account, connections ------------------------------------------
    # --- HTTP-01 self-check (the facade's validate_acme_challenge) -----------------
    @property
    def http01_solver(self) -> Http01Solver:
        """The configured HTTP-01 solver (standalone server or webroot)."""
        return self._http01

    def key_authorization(self, token: str) -> str:
        """RFC 8555 §8.1: ``token.base64url(SHA-256 JWK thumbprint of the account key)``; loads or registers
        the account."""
        account = self._get_account(self._get_directory())
        return f"{token}.{b64.b64encode(account.key.thumbprint()).decode()}"

    def _get_directory(self) -> messages.Directory:
        with self._lock:
            if self._directory is None:
                try:
                    self._directory = AcmeConnection.fetch_directory(
                        self.directory_url, self._verify, self.retry, self._now
                    )
                except WIRE_ERRORS as exc:
                    raise transport_error(f"reading the ACME directory {self.directory_url}", exc) from exc
            return self._directory

    def _offers(self, name: str) -> bool:
        try:
            self._get_directory()[name]
        except KeyError:
            return False
        return True

    def _directory_entry(self, name: str) -> str:
        try:
            return str(self._get_directory()[name])
        except KeyError as exc:
            raise IssuerError(f"the ACME directory has no {name} resource", code="acme-directory") from exc

    def _anonymous(self) -> RecordingClientNetwork:
        network: RecordingClientNetwork | None = getattr(self._local, "anonymous", None)
        if network is None:
            network = AcmeConnection.anonymous_network(self._verify)
            self._local.anonymous = network
        return network

    def _connection(self) -> AcmeConnection:
        connection: AcmeConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            directory = self._get_directory()
            account = self._get_account(directory)
            connection = AcmeConnection(
                directory, account.key, jwa.ES256, self._verify, retry=self.retry, now=self._now
            )
            connection.use_account(account.url)
            self._local.connection = connection
        return connection

    def _get_account(self, directory: messages.Directory) -> _Account:
        with self._lock:
            if self._account is None:
                self._account = self._load_or_register(directory)
            return self._account

    def _load_or_register(self, directory: messages.Directory) -> _Account:
        context = acme_account_context(self.directory_url)
        with self._store.session() as session:
            stored = session.get_acme_account(self.directory_url)
        if stored is None:
            private = ec.generate_private_key(ec.SECP256R1())
            key = jwk.JWKEC(key=private)
            account_url = self._register(directory, key)
            key_ref = seal(self._kms, private_key_pem(private), context)
            with self._store.session() as session:
                stored = session.put_acme_account(
                    AcmeAccountRecord(directory_url=self.directory_url, key_ref=key_ref, account_url=account_url)
                )
            if stored.account_url == account_url:
                return _Account(key=key, url=account_url)
            # Another process registered first: use its account (ours stays unused at the CA).
        pem = open_envelope(self._kms, stored.key_ref, context)
        return _Account(key=jwk.JWKEC(key=load_private_key(pem)), url=stored.account_url)

    def _register(self, directory: messages.Directory, key: jwk.JWK) -> str:
        connection = AcmeConnection(directory, key, jwa.ES256, self._verify, retry=self.retry, now=self._now)
        fields: dict[str, Any] = {"terms_of_service_agreed": True}
        if self._config.email:
            fields["email"] = self._config.email
        if self._config.eab is not None:
            kid = self._env.get(self._config.eab.key_id_env)
            hmac_key = self._env.get(self._config.eab.hmac_key_env)
            if not kid or not hmac_key:
                raise ConfigError(
                    f"issuer {self.name}: External Account Binding needs {self._config.eab.key_id_env}"
                    f" and {self._config.eab.hmac_key_env} in the environment",
                    code="acme-eab-missing",
                    hint="export both variables (the CA gives you the key id and the HMAC key)",
                )
            fields["external_account_binding"] = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(), kid=kid, hmac_key=hmac_key, directory=directory
            )
        try:
            response = connection.post(directory["newAccount"], messages.NewRegistration.from_data(**fields))
        except messages.Error as exc:
            raise problem_error(f"registering an account at {self.directory_url}", exc, code="acme-account") from exc
        except WIRE_ERRORS as exc:
            raise transport_error(f"registering an account at {self.directory_url}", exc) from exc
        location = response.headers.get("Location")
        if not location:
            raise IssuerError("the CA created an account but sent no account URL", code="acme-account")
        return location

    # --- the order -------------------------------------------------------------------
    def _fetch_order(self, connection: AcmeConnection, url: str) -> tuple[messages.Order, requests.Response]:
        response = connection.post_as_get(url)
        return messages.Order.from_json(response.json()), response
