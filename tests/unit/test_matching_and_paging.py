"""Pure logic: whose record an IntakeQ appointment is, and how many pages a query may take."""

from __future__ import annotations

import uuid

import pytest

from pqsync.domain.matching import PatientIdentity, PatientMatcher
from pqsync.intakeq.client import IntakeQPagingError
from pqsync.services.sync.plan import UNKNOWN_PRACTICE_PAGES, bounded, page_limit


def identity(email: str, client_id: int | None = None) -> PatientIdentity:
    return PatientIdentity(uuid.uuid4(), email, client_id)


def test_an_email_match_teaches_the_client_id_once() -> None:
    austin = identity("casemanager+austin@fsh.org")
    matcher = PatientMatcher([austin])
    assert matcher.match(5501, "CaseManager+Austin@FSH.org") is austin
    assert matcher.take_learned() == {austin.id: 5501}
    assert matcher.take_learned() == {}
    # From now on the ClientId decides, whatever the email says.
    assert matcher.match(5501, "new.address@mail.example") is austin


def test_a_plus_address_and_a_substring_are_other_people() -> None:
    ann = identity("ann@fsh.org")
    matcher = PatientMatcher([ann])
    assert matcher.match(1001, "suzann@fsh.org") is None
    assert matcher.match(1002, "ann+1@fsh.org") is None


def test_our_email_on_another_client_is_not_our_patient() -> None:
    ann = identity("ann@fsh.org", client_id=5503)
    matcher = PatientMatcher([ann])
    assert matcher.owner_of(9999, "ann@fsh.org") is None
    assert matcher.match(9999, "ann@fsh.org") is None
    assert matcher.take_learned() == {}


def test_pages_past_the_limit_stop_the_query() -> None:
    assert list(bounded(iter([[1], [2]]), 2)) == [[1], [2]]
    with pytest.raises(IntakeQPagingError, match="more than 2 pages"):
        list(bounded(iter([[1], [2], [3]]), 2))


def test_an_estimated_size_gets_a_wider_limit_than_a_measured_one() -> None:
    assert page_limit(5) == 20
    assert page_limit(5, measured=False) == UNKNOWN_PRACTICE_PAGES
    assert page_limit(100, measured=False) == 1010
