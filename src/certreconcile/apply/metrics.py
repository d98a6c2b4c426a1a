"""Prometheus metrics of ``certreconcile run``, on a registry of their own (never the global one).

Two kinds:

* state gauges, rebuilt from the stored state after every cycle and served from that one
  snapshot (a scrape never sees half of an update, and a retired name disappears at once):
  ``certreconcile_certificate_expiration_timestamp_seconds``, ``..._not_before_timestamp_seconds``,
  ``..._renewal_timestamp_seconds`` (labels ``name``, ``issuer``, ``issuer_kind``),
  ``..._ready_status`` (the same and ``condition``: one series each for ``True``, ``False`` and
  ``Unknown``, 1 on the current condition, as cert-manager's) and
  ``certreconcile_target_verified_status`` (``name``, ``target``);
* event counters and histograms, fed from apply results and the ACME client:
  ``certreconcile_issuance_total`` (``issuer``, ``reason``: why it was issued),
  ``certreconcile_issuance_failures_total`` (``issuer``, ``reason``: the error code),
  ``certreconcile_apply_duration_seconds``, ``certreconcile_acme_requests_total`` and
  ``certreconcile_acme_request_duration_seconds`` (``endpoint``, ``status``), plus the loop's own
  ``certreconcile_reconcile_cycles_total`` (``outcome``; every outcome exported from the start, at
  0, so the first error shows as an increase), ``certreconcile_last_reconcile_timestamp_seconds``
  and ``certreconcile_declaration_changes_pending``;
* ``certreconcile_build_info`` (``version``, ``python_version``): always 1, the running release;
* prometheus-client's process (``process_*``), platform (``python_info``) and garbage-collector
  (``python_gc_*``) collectors, on this registry too.

Label values are bounded: names and targets come from the declarations, reasons and error
codes are fixed kebab-case sets, endpoints are ACME resource names. Never a URL, never a secret.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from certreconcile import __version__
from certreconcile.actual.model import ActualCertificate, ActualState
from certreconcile.apply.executor import ApplyResult, ChangeResult
from certreconcile.desired.model import DesiredState
from certreconcile.domain.status import CertStatus
from certreconcile.plan.plan import Action
from certreconcile.plan.policies import renewal_time

__all__ = [
    "CONDITIONS",
    "CYCLE_OUTCOMES",
    "METRIC_NAMES",
    "CertificateSample",
    "ReconcilerMetrics",
    "certificate_samples",
    "failure_reason",
    "is_ready",
    "ready_condition",
]

#: Every metric family this module exports (the alert rules may use only these).
METRIC_NAMES = frozenset(
    {
        "certreconcile_certificate_expiration_timestamp_seconds",
        "certreconcile_certificate_not_before_timestamp_seconds",
        "certreconcile_certificate_renewal_timestamp_seconds",
        "certreconcile_certificate_ready_status",
        "certreconcile_target_verified_status",
        "certreconcile_issuance_total",
        "certreconcile_issuance_failures_total",
        "certreconcile_apply_duration_seconds",
        "certreconcile_acme_requests_total",
        "certreconcile_reconcile_cycles_total",
        "certreconcile_last_reconcile_timestamp_seconds",
        "certreconcile_declaration_changes_pending",
        "certreconcile_acme_request_duration_seconds",
        "certreconcile_build_info",
        # prometheus-client's process, platform and garbage-collector collectors
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "python_info",
        "python_gc_objects_collected_total",
        "python_gc_objects_uncollectable_total",
        "python_gc_collections_total",
    }
)

#: The values of the ``condition`` label of ``certreconcile_certificate_ready_status`` (cert-manager's).
CONDITIONS = ("True", "False", "Unknown")
#: The outcomes of a reconcile cycle (``certreconcile.reconciler.CycleResult.outcome``).
CYCLE_OUTCOMES = ("success", "noop", "partial", "error")

_APPLY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_ACME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class CertificateSample:
    name: str
    issuer: str
    not_before: float  # Unix seconds
    not_after: float
    renewal: float | None  # None: the name is no longer declared (no renewal is planned)
    ready: bool
    targets: Mapping[str, bool]  # declared (or, undeclared, distributed) target → verified serving it
    issuer_kind: str = "unknown"  # the issuer's plugin kind (acme, local_ca, vault...); unknown: not declared
    condition: str = "False"  # the Ready condition: True, False or Unknown (see ready_condition)


_IN_SERVICE = frozenset({CertStatus.ACTIVE, CertStatus.EXPIRING_SOON})


def is_ready(current: ActualCertificate, targets: tuple[str, ...]) -> bool:
    """In service (active, or expiring_soon: due for renewal but valid) and proven served by each of ``targets``."""
    return current.status in _IN_SERVICE and all(_verified(current, target) for target in targets)


def ready_condition(current: ActualCertificate, targets: tuple[str, ...]) -> str:
    """cert-manager's Ready condition of a name: ``True`` (ready, see :func:`is_ready`); ``Unknown`` while a
    new certificate (status ``issued``) is being deployed with no target failed yet; else ``False``."""
    if is_ready(current, targets):
        return "True"
    if current.status is CertStatus.ISSUED and not any(
        (d := current.distributions.get(target)) is not None and d.last_error for target in targets
    ):
        return "Unknown"
    return "False"


def _verified(current: ActualCertificate, target: str) -> bool:
    distribution = current.distributions.get(target)
    return (
        distribution is not None
        and distribution.verified_at is not None
        and distribution.fingerprint == current.fingerprint
    )


def certificate_samples(desired: DesiredState | None, actual: ActualState) -> tuple[CertificateSample, ...]:
    """The gauge values of every managed certificate; without ``desired``, from the stored state alone."""
    samples = []
    for name, current in sorted(actual.certificates.items()):
        spec = desired.certificates.get(name) if desired is not None else None
        targets = spec.targets if spec is not None else tuple(sorted(current.distributions))
        issuer_spec = desired.issuers.get(current.issuer) if desired is not None else None
        samples.append(
            CertificateSample(
                name=name,
                issuer=current.issuer,
                not_before=current.not_before.timestamp(),
                not_after=current.not_after.timestamp(),
                renewal=renewal_time(spec, current).timestamp() if spec is not None else None,
                ready=is_ready(current, targets),
                targets={target: _verified(current, target) for target in targets},
                issuer_kind=issuer_spec.kind if issuer_spec is not None else "unknown",
                condition=ready_condition(current, targets),
            )
        )
    return tuple(samples)


def failure_reason(result: ChangeResult) -> str:
    """The stable code of a failed change: its error code, or ``target-not-verified``."""
    if result.error_code:
        return result.error_code
    if result.failed_targets:
        return "target-not-verified"
    return "unknown"


class _CertificateCollector(Collector):
    """Serves the latest snapshot of the state gauges; replaced whole, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: tuple[CertificateSample, ...] = ()

    def update(self, samples: tuple[CertificateSample, ...]) -> None:
        with self._lock:
            self._samples = samples

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            samples = self._samples
        labels = ["name", "issuer", "issuer_kind"]
        expiration = GaugeMetricFamily(
            "certreconcile_certificate_expiration_timestamp_seconds",
            "When the current certificate of a name expires (not_after), as a Unix time.",
            labels=labels,
        )
        not_before = GaugeMetricFamily(
            "certreconcile_certificate_not_before_timestamp_seconds",
            "When the current certificate of a name became valid (not_before), as a Unix time.",
            labels=labels,
        )
        renewal = GaugeMetricFamily(
            "certreconcile_certificate_renewal_timestamp_seconds",
            "When the current certificate of a name falls due for renewal (renew_before, jitter, ARI).",
            labels=labels,
        )
        ready = GaugeMetricFamily(
            "certreconcile_certificate_ready_status",
            "The Ready condition of a name, one series per condition (True: active and verified on every "
            "declared target; Unknown: a new certificate being deployed; False: otherwise): 1 on the current one.",
            labels=[*labels, "condition"],
        )
        verified = GaugeMetricFamily(
            "certreconcile_target_verified_status",
            "1 when the target was proven (handshake or read-back) to serve the current certificate, else 0.",
            labels=["name", "target"],
        )
        for sample in samples:
            key = [sample.name, sample.issuer, sample.issuer_kind]
            expiration.add_metric(key, sample.not_after)
            not_before.add_metric(key, sample.not_before)
            if sample.renewal is not None:
                renewal.add_metric(key, sample.renewal)
            for condition in CONDITIONS:
                ready.add_metric([*key, condition], 1.0 if sample.condition == condition else 0.0)
            for target, ok in sorted(sample.targets.items()):
                verified.add_metric([sample.name, target], 1.0 if ok else 0.0)
        yield from (expiration, not_before, renewal, ready, verified)


def _register_process_metrics(registry: CollectorRegistry, *, collectors: bool) -> None:
    """``certreconcile_build_info``; with ``collectors``, the process, platform and GC collectors too
    (a registry passed in, such as the global one that has them already, is the caller's to equip)."""
    build_info = Gauge(
        "certreconcile_build_info",
        "Always 1: the certreconcile version and the Python version of this process.",
        ["version", "python_version"],
        registry=registry,
    )
    build_info.labels(version=__version__, python_version=platform.python_version()).set(1)
    if collectors:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)


class ReconcilerMetrics:
    """The metrics of one reconciler process. Thread-safe (prometheus-client's own locking)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._certificates = _CertificateCollector()
        self.registry.register(self._certificates)
        self.issuance = Counter(
            "certreconcile_issuance",
            "Certificates issued (new names and renewals), by issuer and the change's first reason.",
            ["issuer", "reason"],
            registry=self.registry,
        )
        self.issuance_failures = Counter(
            "certreconcile_issuance_failures",
            "Issuances and renewals that failed (the CA, the key store or a target), by issuer and error code.",
            ["issuer", "reason"],
            registry=self.registry,
        )
        self.apply_duration = Histogram(
            "certreconcile_apply_duration_seconds",
            "Wall time of one apply of a reconcile cycle (its renewals, or its declaration changes).",
            buckets=_APPLY_BUCKETS,
            registry=self.registry,
        )
        self.acme_requests = Counter(
            "certreconcile_acme_requests",
            "HTTP requests to ACME CAs, by resource (newOrder, finalize, ...) and response status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.acme_request_duration = Histogram(
            "certreconcile_acme_request_duration_seconds",
            "Time from sending an HTTP request to an ACME CA to reading its answer, by resource and status.",
            ["endpoint", "status"],
            buckets=_ACME_BUCKETS,
            registry=self.registry,
        )
        self.cycles = Counter(
            "certreconcile_reconcile_cycles",
            "Reconcile cycles, by outcome: success, noop (nothing to do), partial (a change failed) "
            "or error (the cycle could not run).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in CYCLE_OUTCOMES:  # exported at 0 from the start: the first error is an increase
            self.cycles.labels(outcome=outcome)
        self.last_cycle = Gauge(
            "certreconcile_last_reconcile_timestamp_seconds",
            "When the last reconcile cycle finished, as a Unix time.",
            registry=self.registry,
        )
        self.pending_declaration_changes = Gauge(
            "certreconcile_declaration_changes_pending",
            "Declaration changes the last cycle left alone (run without --apply-changes).",
            registry=self.registry,
        )
        _register_process_metrics(self.registry, collectors=registry is None)

    def observe_state(self, desired: DesiredState | None, actual: ActualState) -> None:
        self._certificates.update(certificate_samples(desired, actual))

    def observe_apply(self, result: ApplyResult, seconds: float) -> None:
        self.apply_duration.observe(seconds)
        for change_result in result.results:
            change = change_result.change
            if change.action not in (Action.ISSUE, Action.ROTATE) or change_result.outcome == "skipped":
                continue
            issuer = change.issuer or "unknown"
            if change_result.cert_id is not None:  # a certificate was issued (its deployment may have failed)
                reason = change.reasons[0].code.value if change.reasons else "unknown"
                self.issuance.labels(issuer=issuer, reason=reason).inc()
            if change_result.outcome == "failed":
                self.issuance_failures.labels(issuer=issuer, reason=failure_reason(change_result)).inc()

    def observe_acme_request(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        self.acme_requests.labels(endpoint=endpoint, status=str(status)).inc()
        if seconds is not None:
            self.acme_request_duration.labels(endpoint=endpoint, status=str(status)).observe(max(0.0, seconds))

    def observe_cycle(self, outcome: str, finished_at: float, pending_declaration_changes: int) -> None:
        self.cycles.labels(outcome=outcome).inc()
        self.last_cycle.set(finished_at)
        self.pending_declaration_changes.set(pending_declaration_changes)
