"""`pqsync` processes against an in-test simulator: their environment."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine

from intakeq_sim import SimulatorServer, demo_directory
from pqsync.services.directory import DirectoryFile, import_directory


def process_env(
    sim: SimulatorServer, engine: Engine, database_url: str, home: Path, **settings: str
) -> dict[str, str]:
    """The demo directory imported, and the environment a `pqsync` process needs to sync
    it from `sim` (none of this machine's PQSYNC_/INTAKEQ_ settings leak in)."""
    import_directory(engine, DirectoryFile.model_validate(demo_directory(sim.dataset)))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    return {
        **inherited,
        "PQSYNC_DATABASE_URL": database_url,
        "INTAKEQ_BASE_URL": sim.base_url,
        "HOME": str(home),
        **settings,
    }
