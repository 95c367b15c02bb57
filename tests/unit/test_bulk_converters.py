"""The bulk writer's fast converters store exactly what SQLAlchemy's own processors store."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import JSON, String, Uuid
from sqlalchemy.dialects import postgresql, sqlite

from pqsync.db.bulk import converter_for
from pqsync.db.tables import UTCDateTime

SQLITE = sqlite.dialect()
ZONES = [UTC, ZoneInfo("America/Denver"), timezone(timedelta(hours=5, minutes=30))]


def sqlalchemy_processor(column_type: object, dialect: object) -> object:
    impl = column_type.dialect_impl(dialect)  # type: ignore[attr-defined]
    return impl.bind_processor(dialect)


@given(
    moment=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(ZONES),
)
def test_utc_datetimes_on_sqlite_match_sqlalchemy(moment: datetime, zone: object) -> None:
    value = moment.astimezone(zone)  # type: ignore[arg-type]
    ours = converter_for(UTCDateTime(), SQLITE)
    theirs = sqlalchemy_processor(UTCDateTime(), SQLITE)
    assert ours is not None and callable(theirs)
    assert ours(value) == theirs(value)


def test_a_naive_datetime_is_refused_like_sqlalchemy_refuses_it() -> None:
    ours = converter_for(UTCDateTime(), SQLITE)
    assert ours is not None
    with pytest.raises(ValueError, match="naive"):
        ours(datetime(2025, 1, 1, 12, 0))


@given(st.uuids())
def test_uuids_on_sqlite_match_sqlalchemy(value: uuid.UUID) -> None:
    ours = converter_for(Uuid(), SQLITE)
    theirs = sqlalchemy_processor(Uuid(), SQLITE)
    assert ours is not None and callable(theirs)
    assert ours(value) == theirs(value)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("dialect", [SQLITE, postgresql.psycopg.dialect()])  # type: ignore[attr-defined]
@given(value=JSON_VALUES)
def test_json_is_stored_as_text_that_reads_back_equal(dialect: object, value: object) -> None:
    ours = converter_for(JSON(), dialect)  # type: ignore[arg-type]
    assert ours is not None
    assert json.loads(ours(value)) == value
    theirs = sqlalchemy_processor(JSON(), SQLITE)
    assert callable(theirs) and json.loads(ours(value)) == json.loads(theirs(value))


def test_json_beyond_what_orjson_encodes_falls_back_to_the_standard_library() -> None:
    ours = converter_for(JSON(), SQLITE)
    assert ours is not None
    assert json.loads(ours({"big": 2**70, "small": -(2**63)})) == {"big": 2**70, "small": -(2**63)}
    assert ours({"inf": float("inf")}) == '{"inf":null}'  # JSON has no spelling for it


def test_other_types_use_sqlalchemys_own_processors() -> None:
    assert converter_for(String(10), SQLITE) is None
    pg = postgresql.psycopg.dialect()  # type: ignore[attr-defined]
    # PostgreSQL keeps aware datetimes and native UUIDs.
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    utc = converter_for(UTCDateTime(), pg)
    assert utc is not None
    assert utc(moment) == moment and utc(moment).tzinfo is not None
    native = converter_for(Uuid(), pg)
    value = uuid.UUID(int=1)
    assert (native(value) if native is not None else value) == value
