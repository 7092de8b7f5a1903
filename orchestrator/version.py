"""The version reported by GetOrchestratorVersion: the package version and the source revision."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path


def _version() -> str:
    try:
        return metadata.version("vr2gather-orchestrator")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _revision() -> str:
    """The git commit this code was started from, when run from a checkout; else the version."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=2, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "release"


VERSION = _version()
REVISION = _revision()
