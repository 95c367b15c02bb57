"""Run Alembic migrations programmatically (`pqsync db upgrade`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or migrate the schema to `revision`."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


@cache
def head_revision() -> str:
    """This version's newest migration."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


@cache
def _known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions())


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: no schema at all
    head: str

    @property
    def ahead(self) -> bool:
        """A revision this version does not know: a newer pqsync migrated the database."""
        return self.current is not None and self.current not in _known_revisions()

    @property
    def behind(self) -> bool:
        return self.current is not None and not self.ahead and self.current != self.head


def schema_state(engine: Engine) -> SchemaState:
    """Where the database's schema is, against this version's head."""
    current: str | None = None
    with engine.connect() as conn:
        if inspect(conn).has_table("alembic_version"):
            current = MigrationContext.configure(conn).get_current_revision()
    return SchemaState(current=current, head=head_revision())
