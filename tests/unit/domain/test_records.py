"""The generated constructors and replacers build the same frozen records as the dataclass itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from certreconcile.domain.records import slot_constructor, slot_replacer


@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int
    tags: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Unslotted:
    x: int


@dataclass(frozen=True, slots=True)
class Checked:
    x: int

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError(self.x)


def test_a_constructed_record_equals_the_dataclass_one() -> None:
    built = slot_constructor(Point)(1, 2, ("a",))
    assert built == Point(1, 2, ("a",)) and hash(built) == hash(Point(1, 2, ("a",)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.x = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["x", "y", "tags"])
def test_a_replacer_matches_dataclasses_replace_and_leaves_the_original(name: str) -> None:
    original = Point(1, 2, ("a",))
    value: object = ("b", "c") if name == "tags" else 9
    replaced = slot_replacer(Point, name)(original, value)
    assert replaced == dataclasses.replace(original, **{name: value})
    assert original == Point(1, 2, ("a",)) and replaced is not original
    with pytest.raises(dataclasses.FrozenInstanceError):
        replaced.y = 3  # type: ignore[misc]


def test_classes_the_fast_paths_cannot_serve_are_refused() -> None:
    replacer: Callable[[type[Any]], object] = lambda cls: slot_replacer(cls, "x")  # noqa: E731
    for make in (slot_constructor, replacer):
        with pytest.raises(TypeError, match="not a slotted dataclass"):
            make(Unslotted)
        with pytest.raises(TypeError, match="__post_init__"):
            make(Checked)
    with pytest.raises(TypeError, match="no field 'z'"):
        slot_replacer(Point, "z")
