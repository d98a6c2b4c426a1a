"""The state store under contract: the in-memory fake and PostgreSQL, each test run against both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certreconcile.actual.store import StateSession, StateStore
from certreconcile.testing.fake_repository import InMemoryStore


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> StateStore:
    if request.param == "memory":
        return InMemoryStore()
    postgres: StateStore = request.getfixturevalue("postgres_store")
    return postgres


@pytest.fixture
def session(store: StateStore) -> Iterator[StateSession]:
    with store.session() as opened:
        yield opened
