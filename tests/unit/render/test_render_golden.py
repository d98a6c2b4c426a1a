"""Golden files for every format and every sample plan (``UPDATE_GOLDEN=1`` regenerates them)."""

from __future__ import annotations

import json
from collections.abc import Callable

from certreconcile.plan.plan import Plan, plan_from_json
from certreconcile.render import render_json, render_markdown, render_text

Golden = Callable[[str, str], None]


def test_text_without_color_matches_golden(sample_plan: tuple[str, Plan], golden: Golden) -> None:
    name, plan = sample_plan
    golden(f"{name}.txt", render_text(plan, color=False))


def test_text_with_color_matches_golden(sample_plan: tuple[str, Plan], golden: Golden) -> None:
    name, plan = sample_plan
    golden(f"{name}.color.txt", render_text(plan, color=True))


def test_markdown_matches_golden(sample_plan: tuple[str, Plan], golden: Golden) -> None:
    name, plan = sample_plan
    golden(f"{name}.md", render_markdown(plan))


def test_json_matches_golden(sample_plan: tuple[str, Plan], golden: Golden) -> None:
    name, plan = sample_plan
    golden(f"{name}.json", render_json(plan))


def test_rendering_is_deterministic(sample_plan: tuple[str, Plan]) -> None:
    _, plan = sample_plan
    reloaded = plan_from_json(json.loads(render_json(plan)))
    for candidate in (plan, reloaded):
        assert render_json(candidate) == render_json(plan)
        assert render_text(candidate, color=False) == render_text(plan, color=False)
        assert render_text(candidate, color=True) == render_text(plan, color=True)
        assert render_markdown(candidate) == render_markdown(plan)
