"""data_too_deep: the cross-check of the parsed data's nesting, at the exact limit and past it."""

from __future__ import annotations

import pytest

from certreconcile.desired.yaml_limits import MAX_DEPTH, data_too_deep


def nested(levels: int, *, leaf: object = "x") -> object:
    """``levels`` collections inside each other, alternating maps and lists, beside plain values."""
    node = leaf
    for level in range(levels):
        node = {"k": node, "plain": 1} if level % 2 else ["a", node, 2]
    return node


@pytest.mark.parametrize("levels", [0, 1, 2, MAX_DEPTH - 1, MAX_DEPTH])
def test_nesting_up_to_the_limit_passes(levels: int) -> None:
    assert not data_too_deep(nested(levels))


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, MAX_DEPTH + 2, 10 * MAX_DEPTH])
def test_nesting_past_the_limit_is_too_deep(levels: int) -> None:
    assert data_too_deep(nested(levels))


def test_the_deepest_branch_counts_not_the_first() -> None:
    wide = {"shallow": [1, 2, {"a": 1}], "list": [[], {}, (), nested(MAX_DEPTH)]}
    assert data_too_deep(wide)  # root + list + the nested chain: MAX_DEPTH + 2 levels
    assert not data_too_deep({"shallow": [1], "list": [[], {}, (), nested(MAX_DEPTH - 2)]})


def test_tuples_and_empty_collections_count_as_levels() -> None:
    chain: object = ()
    for _ in range(MAX_DEPTH):
        chain = (chain,)
    assert data_too_deep(chain)  # MAX_DEPTH + 1 tuples
    assert not data_too_deep(chain[0])  # type: ignore[index]
