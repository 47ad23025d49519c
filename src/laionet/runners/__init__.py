"""Runners execute a stage over the shards of an input plan: `local` (threads) or `ray` (Ray Data)."""

from __future__ import annotations

from laionet.errors import LaionetError
from laionet.runners.base import Stage, StageResult, run_stage

RUNNERS = ("local", "ray")


def check_runner(name: str) -> str:
    if name not in RUNNERS:
        raise LaionetError(f"unknown runner {name!r}; choose one of: {', '.join(RUNNERS)}")
    return name


__all__ = ["RUNNERS", "Stage", "StageResult", "check_runner", "run_stage"]
