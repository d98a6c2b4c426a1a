"""The composition root: settings → concrete adapters. Used alike by the CLI, the manager and ``run``."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from certreconcile.actual.store import KeyRefUsage, StateStore
from certreconcile.clock import Clock
from certreconcile.desired.git_probe import may_be_in_git_repository
from certreconcile.desired.model import AGENT_TARGET_KIND, DesiredState, KmsSpec
from certreconcile.errors import ConfigError
from certreconcile.plan.destroy import DEFAULT_MAX_COUNT, DEFAULT_MAX_PERCENT, DestroyThreshold
from certreconcile.plugins.ports import Issuer, Kms, Target
from certreconcile.plugins.registry import (
    PluginContext,
    create_dns_provider,
    create_issuer,
    create_kms,
    create_target,
    declared_key_id,
)

if TYPE_CHECKING:  # the executor (cryptography, the issuance machinery) is imported by build_environment only
    from certreconcile.apply.executor import ApplyEnvironment
    from certreconcile.fleet.ca import FleetCa

__all__ = [
    "ProcessWiring",
    "RewrapKms",
    "Settings",
    "actor_for",
    "build_environment",
    "build_rewrap_kms",
    "build_targets",
    "kms_drift_warnings",
    "open_store",
    "with_git_origin",
]


@dataclass(frozen=True, slots=True)
class Settings:
    desired_dir: Path
    data_dir: Path
    database_url: str | None  # None: the embedded PostgreSQL under data_dir
    env: Mapping[str, str]

    @staticmethod
    def from_env(desired_dir: Path, env: Mapping[str, str] | None = None) -> Settings:
        environ = dict(os.environ if env is None else env)
        desired_dir = desired_dir.resolve()
        data_dir = Path(environ.get("CERTRECONCILE_DATA_DIR") or desired_dir / ".certreconcile")
        return Settings(
            desired_dir=desired_dir,
            data_dir=data_dir,
            database_url=environ.get("CERTRECONCILE_DATABASE_URL") or None,
            env=environ,
        )

    @property
    def plugin_context(self) -> PluginContext:
        return PluginContext(desired_dir=self.desired_dir, data_dir=self.data_dir, env=self.env)

    @property
    def destroy_threshold(self) -> DestroyThreshold:
        """``CERTRECONCILE_DESTROY_MAX_COUNT`` (default 1) and ``CERTRECONCILE_DESTROY_MAX_PERCENT`` (default 10).

        The operator's setting, deliberately not the desired state's: a pull request edits the
        declarations, and must not be able to raise the limit on what it may destroy.
        """
        return DestroyThreshold(
            max_count=_env_int(self.env, "CERTRECONCILE_DESTROY_MAX_COUNT", DEFAULT_MAX_COUNT, maximum=None),
            max_percent=_env_int(self.env, "CERTRECONCILE_DESTROY_MAX_PERCENT", DEFAULT_MAX_PERCENT, maximum=100),
        )


def _env_int(env: Mapping[str, str], variable: str, default: int, *, maximum: int | None) -> int:
    text = env.get(variable, "").strip().removesuffix("%")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or (maximum is not None and value > maximum):
        bound = f"0 to {maximum}" if maximum is not None else "0 or more"
        raise ConfigError(
            f"{variable}={env[variable]!r} is not a whole number from {bound}",
            code="config-invalid",
            hint=f"set {variable} to e.g. {default}, or unset it for the default",
        )
    return value


def open_store(settings: Settings, *, migrate: bool = True, keep_idle: int = 0) -> StateStore:
    """The PostgreSQL store: ``CERTRECONCILE_DATABASE_URL``, else the embedded server (started or reused).

    ``keep_idle``: connections kept between sessions (``run``: it opens several per cycle and per order).
    """
    from certreconcile.actual.embedded import resolve_database_url
    from certreconcile.actual.repository import PostgresStore

    url = settings.database_url or resolve_database_url(settings.desired_dir, settings.env)
    store = PostgresStore(url, keep_idle=keep_idle)
    if migrate:
        store.upgrade()
    return store


def with_git_origin(desired: DesiredState, directory: Path) -> DesiredState:
    """Record HEAD's commit and author when ``directory`` is a clean git checkout.

    A work tree with uncommitted changes under ``directory`` is not a commit: it keeps no
    git origin, and its actor is the user.
    """
    if desired.git_commit is not None or not may_be_in_git_repository(directory):
        return desired
    try:
        import git
    except ImportError:  # pragma: no cover - GitPython is a dependency
        return desired
    try:
        repo = git.Repo(directory, search_parent_directories=True)
        if not repo.head.is_valid():  # no commit yet
            return desired
        relative = str(directory.resolve().relative_to(Path(repo.working_tree_dir or ".").resolve()))
        if repo.is_dirty(untracked_files=True, path=relative):
            return desired
        commit = repo.head.commit
        return replace(desired, git_commit=commit.hexsha, git_author_email=commit.author.email or None)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError, ValueError):
        return desired


def actor_for(desired: DesiredState, env: Mapping[str, str]) -> str:
    """``git:<sha> <email>`` when the declarations come from a commit, else ``user:<login>``."""
    if desired.git_commit:
        actor = f"git:{desired.git_commit}"
        if desired.git_author_email:
            actor += f" {desired.git_author_email}"
        return actor
    login = env.get("USER") or env.get("LOGNAME")
    if not login:
        try:
            login = getpass.getuser()
        except (KeyError, OSError):
            login = "unknown"
    return f"user:{login}"


def build_targets(
    desired: DesiredState,
    settings: Settings,
    store: StateStore | None = None,
    clock: Clock | None = None,
    kms: Kms | None = None,
    actor: str | None = None,
) -> dict[str, Target]:
    """The declared targets; ``agent/target`` references become agent targets (:mod:`certreconcile.fleet`).

    The agent targets share one applier identity, minted on first use from the fleet CA (read from
    ``store``, opened by ``kms``, else the declared KMS). When it cannot be made (no store, no fleet
    CA, no KMS access: ``plan --refresh`` from a pull request), they answer unreachable with the reason.
    """
    targets: dict[str, Target] = {
        name: create_target(spec, settings.plugin_context)
        for name, spec in desired.targets.items()
        if spec.kind != AGENT_TARGET_KIND
    }
    agent_specs = {name: spec for name, spec in desired.targets.items() if spec.kind == AGENT_TARGET_KIND}
    if agent_specs:
        from certreconcile.clock import SystemClock
        from certreconcile.fleet.applier import Fleet

        the_clock = clock or SystemClock()
        fleet = Fleet(_fleet_ca_opener(desired, settings, store, the_clock, kms, actor), the_clock)
        targets.update(fleet.targets(agent_specs))
    return targets


def _fleet_ca_opener(
    desired: DesiredState, settings: Settings, store: StateStore | None, clock: Clock, kms: Kms | None,
    actor: str | None,
) -> Callable[[], FleetCa]:
    from certreconcile.fleet.ca import FleetCa, fleet_ca_missing

    def open_ca() -> FleetCa:
        if store is None:
            raise fleet_ca_missing()
        the_kms = kms if kms is not None else create_kms(desired.kms, settings.plugin_context)
        return FleetCa.open(store, the_kms, clock.now(), actor or actor_for(desired, settings.env), create=False)

    return open_ca


def build_environment(
    desired: DesiredState, settings: Settings, store: StateStore, clock: Clock, actor: str | None = None
) -> ApplyEnvironment:
    from certreconcile.apply.executor import ApplyEnvironment

    kms: Kms = create_kms(desired.kms, settings.plugin_context)
    dns_providers = {
        name: create_dns_provider(spec, settings.plugin_context) for name, spec in desired.dns_providers.items()
    }
    context = replace(settings.plugin_context, dns_providers=dns_providers)
    issuers: dict[str, Issuer] = {
        name: create_issuer(spec, context, store, kms) for name, spec in desired.issuers.items()
    }
    return ApplyEnvironment(
        store=store,
        kms=kms,
        issuers=issuers,
        targets=build_targets(desired, settings, store, clock, kms, actor),
        clock=clock,
        actor=actor or actor_for(desired, settings.env),
    )


@dataclass(frozen=True, slots=True)
class RewrapKms:
    target: Kms  # the KMS every data key moves to
    sources: tuple[Kms, ...]  # the KMS that may have wrapped them, tried in this order


def _kms_from_file(path: Path, settings: Settings) -> Kms:
    """The KMS of a ``kms:``-only YAML file; its relative paths are relative to the file's directory.

    A ``local.key_file`` declared there wins over ``CERTRECONCILE_LOCAL_KMS_KEY_FILE`` (which
    names the current key, not the one to move to or from).
    """
    from certreconcile.desired.kms_file import load_kms_file

    spec = load_kms_file(path)
    env = dict(settings.env)
    if spec.kind == "local" and getattr(spec.config, "key_file", None):
        env.pop("CERTRECONCILE_LOCAL_KMS_KEY_FILE", None)
    context = PluginContext(desired_dir=path.resolve().parent, data_dir=settings.data_dir, env=env)
    return create_kms(replace(spec, cache=None), context)


def build_rewrap_kms(
    desired: DesiredState, settings: Settings, to_file: Path | None, from_file: Path | None
) -> RewrapKms:
    """Target: ``--to`` (else the declared KMS). Sources: ``--from`` first, then the declared KMS."""
    declared = create_kms(replace(desired.kms, cache=None), settings.plugin_context)
    target = _kms_from_file(to_file, settings) if to_file is not None else declared
    sources = (_kms_from_file(from_file, settings), declared) if from_file is not None else (declared,)
    return RewrapKms(target=target, sources=sources)


def _declared_key_id(spec: KmsSpec, settings: Settings) -> str | None:
    """The master key id envelopes made by this KMS record, when known without any KMS call."""
    return declared_key_id(spec, settings.plugin_context)  # the KMS kind's own hook


def kms_drift_warnings(desired: DesiredState, settings: Settings, usage: Sequence[KeyRefUsage]) -> tuple[str, ...]:
    """A plan warning when stored keys are wrapped by another KMS or master key than the declared one."""
    declared_key = _declared_key_id(desired.kms, settings)
    others = [
        use for use in usage if use.kms != desired.kms.kind or (declared_key is not None and use.key_id != declared_key)
    ]
    if not others:
        return ()
    total = sum(use.count for use in others)
    where = ", ".join(f"{use.count} by {use.kms} {use.key_id}" for use in others)
    return (
        f"{total} stored key(s) are wrapped by another KMS or master key than the declared {desired.kms.kind} KMS "
        f"({where}): apply cannot unwrap them until `certreconcile kms rewrap` moves them, "
        "or the declaration names their KMS again",
    )


@dataclass(frozen=True, slots=True)
class ProcessWiring:
    """How a worker process of ``apply --workers N`` builds its environment: as the parent built its own.

    It crosses to the worker (pickled): the settings the parent read (the environment variables the
    KMS, the issuers and the store need), the clock and the actor of the apply. Never a key: each worker
    asks the KMS itself. The store is opened again (the embedded server is found running, not started).
    """

    settings: Settings
    clock: Clock
    actor: str
    target_concurrency: int | None = None  # ``apply --target-concurrency``: in each worker

    def build(self, desired: DesiredState) -> ApplyEnvironment:
        store = open_store(self.settings, migrate=False)  # the parent migrated it
        env = build_environment(desired, self.settings, store, self.clock, self.actor)
        return replace(env, target_concurrency=self.target_concurrency)

    def finish(self, env: ApplyEnvironment) -> None:
        """Record when the agents this worker deployed to last answered (the parent's fleet saw none of it)."""
        from certreconcile.fleet.applier import fleet_of

        fleet = fleet_of(env.targets.values())
        if fleet is not None:
            fleet.record_contacts(env.store)
