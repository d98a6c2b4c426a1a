"""OpenBao's PKI engine and ACME server for the tests, on the ``bao server -dev`` of ``bao_transit``.

Loaded as a plugin by ``tests/conftest.py``. Fixture:

* ``bao_pki`` (session, one per xdist worker like ``bao_transit``): the PKI engine mounted
  at ``pki/`` (max lease TTL 10 years), an internal root CA, and a role ``certreconcile``
  allowing ``certreconcile.test`` and every name below it (wildcards too, any key type).
  The same mount serves OpenBao's ACME server without External Account Binding:
  ``pki/config/cluster`` (path and AIA path), ``pki/config/acme`` (enabled, the default
  directory bound to the role) and the headers the ACME protocol needs passed through
  the mount (Replay-Nonce, Link, Location, Retry-After, Last-Modified; If-Modified-Since in).

The directory is ``{url}/v1/pki/acme/directory``, plain http (dev mode has no TLS). OpenBao
validates HTTP-01 at ``http://<name>:80/.well-known/acme-challenge/<token>`` (port 80, fixed),
TLS-ALPN-01 on port 443, and DNS-01 by asking one resolver for ``_acme-challenge.<name>`` TXT:
``/etc/resolv.conf``'s first server, or the ``dns_resolver`` (``IP:PORT``, no host name) set
with :func:`set_acme_dns_resolver`; that resolver also resolves the names for HTTP-01.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kms_servers import BaoTransit

__all__ = ["BaoPki", "bao_pki", "set_acme_dns_resolver"]

PKI_MOUNT = "pki"
PKI_ROLE = "certreconcile"
PKI_DOMAIN = "certreconcile.test"
_TEN_YEARS = "87600h"


@dataclasses.dataclass(frozen=True)
class BaoPki:
    url: str  # http://127.0.0.1:PORT, the bao server (shared with bao_transit)
    token: str  # the root token: may sign, revoke and configure
    mount: str  # "pki"
    role: str  # "certreconcile": certreconcile.test and its subdomains, wildcards, any key type
    acme_directory_url: str  # {url}/v1/pki/acme/directory
    ca_pem_path: Path  # the root CA certificate (PEM)
    bao_ca_bundle: Path | None  # CA of the bao listener's TLS; None: dev mode listens on plain http

    @property
    def domain(self) -> str:
        return PKI_DOMAIN


def set_acme_dns_resolver(bao_pki: BaoPki, resolver: str | None) -> None:
    """Make OpenBao's ACME server resolve and validate through ``resolver`` (``"127.0.0.1:PORT"``).

    ``None`` goes back to the system resolver. The mount is shared by the whole session (per
    worker): a test that changes it should put it back.
    """
    import hvac

    client = hvac.Client(url=bao_pki.url, token=bao_pki.token)
    client.adapter.post(f"/v1/{bao_pki.mount}/config/acme", json={"dns_resolver": resolver or ""})


@pytest.fixture(scope="session")
def bao_pki(bao_transit: BaoTransit, tmp_path_factory: pytest.TempPathFactory) -> BaoPki:
    import hvac

    client = hvac.Client(url=bao_transit.url, token=bao_transit.root_token)
    mount = PKI_MOUNT
    client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": _TEN_YEARS})
    root = client.adapter.post(
        f"/v1/{mount}/root/generate/internal",
        json={"common_name": "certreconcile test root", "ttl": _TEN_YEARS, "key_type": "ec", "key_bits": 256},
    )
    directory = tmp_path_factory.mktemp("bao-pki")
    ca_pem_path = directory / "root.pem"
    ca_pem_path.write_text(root["data"]["certificate"].strip() + "\n")

    client.adapter.post(
        f"/v1/{mount}/roles/{PKI_ROLE}",
        json={
            "allowed_domains": [PKI_DOMAIN],
            "allow_subdomains": True,
            "allow_wildcard_certificates": True,
            "allow_bare_domains": True,
            "key_type": "any",
            "max_ttl": "2160h",
            "ttl": "720h",
            "no_store": False,
        },
    )
    # ACME: where the mount is reachable, and which headers the protocol needs through the mount.
    cluster_path = f"{bao_transit.url}/v1/{mount}"
    client.adapter.post(f"/v1/{mount}/config/cluster", json={"path": cluster_path, "aia_path": cluster_path})
    client.adapter.post(
        f"/v1/{mount}/config/urls",
        json={
            "enable_templating": True,
            "issuing_certificates": ["{{cluster_aia_path}}/issuer/{{issuer_id}}/der"],
            "crl_distribution_points": ["{{cluster_aia_path}}/issuer/{{issuer_id}}/crl/der"],
        },
    )
    client.adapter.post(
        f"/v1/sys/mounts/{mount}/tune",
        json={
            "allowed_response_headers": ["Last-Modified", "Location", "Replay-Nonce", "Link", "Retry-After"],
            "passthrough_request_headers": ["If-Modified-Since"],
        },
    )
    client.adapter.post(
        f"/v1/{mount}/config/acme",
        json={
            "enabled": True,
            "allowed_roles": [PKI_ROLE],
            "default_directory_policy": f"role:{PKI_ROLE}",
            "eab_policy": "not-required",
        },
    )
    return BaoPki(
        url=bao_transit.url,
        token=bao_transit.root_token,
        mount=mount,
        role=PKI_ROLE,
        acme_directory_url=f"{cluster_path}/acme/directory",
        ca_pem_path=ca_pem_path,
        bao_ca_bundle=None,
    )
