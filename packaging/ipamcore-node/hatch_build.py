"""Build hook: the regular wheel of ipamcore-node takes `adapters` and `backends` from the
repository root; the editable wheel leaves them where they are (dev-mode-dirs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGES = ("adapters", "backends")


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds the node's packages to a regular (not editable) wheel."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        for package in PACKAGES:
            build_data["force_include"][str(REPOSITORY / package)] = package
