"""Pure logic: whose record an IntakeQ appointment is (the identity rules), and how many
pages a query may take."""

from __future__ import annotations

import uuid

import pytest

from pqsync.intakeq.client import IntakeQPagingError
from pqsync.services.sync.identity import ClientBook, ClientIdChange, Identities, PatientIdentity
from pqsync.services.sync.plan import UNKNOWN_PRACTICE_PAGES, bounded, page_limit


def identity(email: str, client_id: int | None = None) -> PatientIdentity:
    return PatientIdentity(uuid.uuid4(), email, client_id)


def identities(
    *patients: PatientIdentity, carriers: dict[str, set[int]] | None = None
) -> Identities:
    """Every patient in the run's scope; IntakeQ's client list answers from `carriers`."""
    asked = carriers or {}
    return Identities(
        list(patients),
        scope={p.id for p in patients},
        lookup=lambda email: asked.get(email, set()),
        lookups_left=10,
        follow_lookups_left=10,
    )


def resolve(
    ids: Identities, client_id: int, email: str, stored_for: uuid.UUID | None = None
) -> PatientIdentity | None:
    ids.prepare(client_id, email)
    return ids.resolve(client_id, email, stored_for)


def test_an_email_carried_by_one_client_teaches_the_client_id_once() -> None:
    austin = identity("casemanager+austin@fsh.org")
    ids = identities(austin, carriers={"casemanager+austin@fsh.org": {5501}})
    assert resolve(ids, 5501, "CaseManager+Austin@FSH.org") is austin
    assert ids.take_changes() == [ClientIdChange(austin.id, None, 5501)]
    assert ids.take_changes() == []
    # From now on the ClientId decides, whatever the email says.
    assert resolve(ids, 5501, "new.address@mail.example") is austin


def test_two_clients_on_one_email_teach_nothing_and_flag_the_patient() -> None:
    marcus = identity("marcus@fsh.org")
    ids = identities(marcus, carriers={"marcus@fsh.org": {5505, 7001}})
    assert resolve(ids, 5505, "marcus@fsh.org") is None
    assert resolve(ids, 7001, "marcus@fsh.org") is None
    assert ids.take_changes() == []
    assert ids.shared == {marcus.id: 2}


def test_a_plus_address_and_a_substring_are_other_people() -> None:
    ann = identity("ann@fsh.org")
    ids = identities(ann, carriers={"ann@fsh.org": {5503}})
    assert resolve(ids, 1001, "suzann@fsh.org") is None
    assert resolve(ids, 1002, "ann+1@fsh.org") is None


def test_our_email_on_another_client_is_someone_else_unless_a_stored_appointment_moved() -> None:
    ann = identity("ann@fsh.org", client_id=5503)
    ids = identities(ann, carriers={"ann@fsh.org": {5503, 9999}})
    assert ids.owner_of(9999, "ann@fsh.org") is None
    assert resolve(ids, 9999, "ann@fsh.org") is None  # a family member's booking
    assert ids.take_changes() == []
    # IntakeQ lists an appointment we store for Ann under 9999: her ClientId follows.
    assert resolve(ids, 9999, "ann@fsh.org", stored_for=ann.id) is ann
    assert ids.take_changes() == [ClientIdChange(ann.id, 5503, 9999)]
    assert ann.client_id == 9999


def test_a_client_id_held_by_another_patient_is_never_learned_twice() -> None:
    rosa = identity("rosa@fsh.org", client_id=5502)
    twin = identity("rosa.d@second.example")
    ids = Identities([rosa, twin], scope={twin.id}, lookup=lambda _: {5502}, lookups_left=1)
    owner = resolve(ids, 5502, "rosa.d@second.example")
    assert owner is rosa
    assert ids.refused_for(5502, "rosa.d@second.example", owner) == twin.id
    assert ids.refused_for(5502, "rosa.d@second.example", owner) is None  # said once
    assert twin.client_id is None and ids.take_changes() == []


def test_without_questions_left_nothing_is_learned() -> None:
    nora = identity("nora@fsh.org")
    ids = Identities([nora], scope={nora.id}, lookup=lambda _: {5510}, lookups_left=0)
    assert resolve(ids, 5510, "nora@fsh.org") is None
    assert ids.unconfirmed == {nora.id}


def test_pages_past_the_limit_stop_the_query() -> None:
    assert list(bounded(iter([[1], [2]]), 2)) == [[1], [2]]
    with pytest.raises(IntakeQPagingError, match="more than 2 pages"):
        list(bounded(iter([[1], [2], [3]]), 2))


def test_an_estimated_size_gets_a_wider_limit_than_a_measured_one() -> None:
    assert page_limit(5) == 20
    assert page_limit(5, measured=False) == UNKNOWN_PRACTICE_PAGES
    assert page_limit(100, measured=False) == 1010


def test_the_client_book_reads_a_short_client_list_once_for_many_questions() -> None:
    asked: list[str | None] = []
    everyone = [(5500 + n, f"p{n}@fsh.org") for n in range(150)] + [(7001, "P3@fsh.org")]

    def clients(search: str | None) -> list[tuple[int, str | None]]:
        asked.append(search)
        return [c for c in everyone if search is None or search in (c[1] or "")]

    book = ClientBook(clients, list_pages=3)  # the list's 151 clients take 2 pages
    assert book("p3@fsh.org") == {5503, 7001}
    assert book("p7@fsh.org") == {5507}
    assert asked == [None]


def test_the_client_book_searches_by_email_when_the_list_is_too_long() -> None:
    everyone = [(5500 + n, f"p{n}@fsh.org") for n in range(250)]
    asked: list[str | None] = []

    def clients(search: str | None) -> list[tuple[int, str | None]]:
        asked.append(search)
        return [c for c in everyone if search is None or search == c[1]]

    book = ClientBook(clients, list_pages=2)  # 250 clients: more than 2 pages
    assert book("p3@fsh.org") == {5503}
    assert asked == [None, "p3@fsh.org"]
