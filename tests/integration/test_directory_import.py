import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from pqsync.db.tables import (
    Affiliation,
    Organization,
    PartnerUser,
    Patient,
    Provider,
    ProviderIntakeQSettings,
    Service,
)
from pqsync.services.directory import DirectoryError, import_directory_file
from pqsync.services.passwords import verify_password


def directory() -> dict[str, Any]:
    return {
        "organizations": [
            {"slug": "first-step-house", "name": "First Step House", "timezone": "America/Denver"}
        ],
        "providers": [
            {
                "email": "Dr.Sweeney@trymoonlit.com",
                "name": "Dr. C. Rufus Sweeney",
                "intakeq_practitioner_id": "xyz789",
            }
        ],
        "services": [{"name": "Follow-up", "intakeq_service_id": "service-123"}],
        "patients": [
            {
                "id": "3adb45a7-c87a-404d-b52d-18281339723f",
                "first_name": "Austin",
                "last_name": "Schneider",
                "email": "BWhipkey@firststephouse.org",
                "date_of_birth": "1990-01-15",
                "intakeq_client_id": 5521,
            },
            {"first_name": "Jo", "last_name": "Ann", "email": "joann@firststephouse.org"},
        ],
        "affiliations": [
            {
                "patient": "bwhipkey@firststephouse.org",
                "organization": "first-step-house",
                "roi_consent": {"status": "active", "expires_on": "2026-12-31"},
            },
            {"patient": "joann@firststephouse.org", "organization": "first-step-house"},
        ],
        "partner_users": [
            {
                "email": "beth@firststephouse.org",
                "name": "Beth Rodriguez",
                "organization": "first-step-house",
                "role": "case_manager",
                "password": "correct horse battery",
            },
            {
                "email": "ops@clinic.example",
                "name": "Clinic Ops",
                "role": "staff_admin",
                "password": "staff password 1",
            },
        ],
    }


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(data))
    return path


def row_counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (
                Organization,
                Provider,
                ProviderIntakeQSettings,
                Service,
                Patient,
                Affiliation,
                PartnerUser,
            )
        }


def test_it_imports_a_directory(engine: Engine, tmp_path: Path) -> None:
    counts = import_directory_file(engine, write(tmp_path, directory()))
    assert counts.created["patients"] == 2
    with Session(engine) as session:
        austin = session.scalars(
            select(Patient).filter_by(email="bwhipkey@firststephouse.org")
        ).one()
        assert str(austin.id) == "3adb45a7-c87a-404d-b52d-18281339723f"
        assert austin.intakeq_client_id == 5521
        beth = session.scalars(select(PartnerUser).filter_by(email="beth@firststephouse.org")).one()
        assert beth.role == "case_manager"
        assert verify_password(beth.password_hash, "correct horse battery")
        assert beth.password_hash != "correct horse battery"
        affiliation = session.scalars(select(Affiliation).filter_by(patient_id=austin.id)).one()
        assert affiliation.roi_consent_status == "active"


def test_importing_the_same_file_twice_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, directory())
    import_directory_file(engine, path)
    before = row_counts(engine)
    again = import_directory_file(engine, path)
    assert again.total_changed() == 0
    assert row_counts(engine) == before


def test_a_changed_entry_is_updated_in_place(engine: Engine, tmp_path: Path) -> None:
    import_directory_file(engine, write(tmp_path, directory()))
    data = directory()
    data["affiliations"][0]["roi_consent"] = {"status": "revoked"}
    counts = import_directory_file(engine, write(tmp_path, data))
    assert counts.updated == {"affiliations": 1}
    with Session(engine) as session:
        statuses = sorted(session.scalars(select(Affiliation.roi_consent_status)))
    assert statuses == ["missing", "revoked"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["patients"][1].update(date_of_birth="1990-02-30"),
            "patients[1].date_of_birth",
        ),
        (lambda d: d["patients"][1].update(email="not-an-email"), "patients[1].email"),
        (lambda d: d["partner_users"][0].update(role="owner"), "partner_users[0].role"),
        (
            lambda d: d["affiliations"][1].update(organization="nowhere"),
            "affiliations[1].organization: no such organization",
        ),
        (
            lambda d: d["affiliations"][1].update(patient="ghost@x.org"),
            "affiliations[1].patient: no such patient",
        ),
        (
            lambda d: d["organizations"][0].update(timezone="Mars/Olympus"),
            "organizations[0].timezone",
        ),
        (lambda d: d["patients"].append(dict(d["patients"][1])), "patients[2]: duplicate"),
        (lambda d: d.update(surprise=[]), "surprise"),
    ],
)
def test_an_invalid_file_names_the_bad_entry_and_writes_nothing(
    engine: Engine, tmp_path: Path, mutate: Any, message: str
) -> None:
    data = directory()
    mutate(data)
    with pytest.raises(DirectoryError) as caught:
        import_directory_file(engine, write(tmp_path, data))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert sum(row_counts(engine).values()) == 0


def test_an_error_late_in_the_file_rolls_back_everything(engine: Engine, tmp_path: Path) -> None:
    data = directory()
    data["partner_users"][0]["organization"] = "no-such-org"
    with pytest.raises(DirectoryError):
        import_directory_file(engine, write(tmp_path, data))
    assert sum(row_counts(engine).values()) == 0


def test_errors_do_not_echo_patient_emails(engine: Engine, tmp_path: Path) -> None:
    data = directory()
    data["affiliations"][1]["patient"] = "secret.person@example.org"
    with pytest.raises(DirectoryError) as caught:
        import_directory_file(engine, write(tmp_path, data))
    assert "secret.person" not in str(caught.value)


def test_it_rejects_a_file_that_is_not_json(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(DirectoryError, match="not valid JSON"):
        import_directory_file(engine, path)


def test_a_consent_change_is_recorded_with_who_when_and_old_to_new(
    engine: Engine, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from pqsync.db.tables import PatientActivity
    from pqsync.services.directory import import_directory, parse_directory

    data = directory()
    import_directory(engine, parse_directory(json.dumps(data)))
    data["affiliations"][0]["roi_consent"] = {"status": "revoked"}
    when = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)

    import_directory(engine, parse_directory(json.dumps(data)), now=when, by="ops@clinic")
    import_directory(engine, parse_directory(json.dumps(data)), now=when, by="ops@clinic")

    with Session(engine) as session:
        changes = session.scalars(
            select(PatientActivity).filter_by(activity_type="consent_changed")
        ).all()
        assert len(changes) == 1  # the second, identical import changed nothing
        change = changes[0]
        assert change.created_at == when
        assert change.changes["by"] == "ops@clinic"
        assert change.changes["roi_consent_status"] == {"old": "active", "new": "revoked"}
        assert change.changes["roi_consent_expires_on"] == {"old": "2026-12-31", "new": None}
        assert "from active (expires 2026-12-31) to revoked" in change.description
