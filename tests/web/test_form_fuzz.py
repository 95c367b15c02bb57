"""Fuzzing of the HTML pages' forms and query strings (the JSON API has its own, from the
OpenAPI description): every page route the app has, found from the app itself, gets hostile
values in each of its query parameters, form fields and path parameters (NUL bytes, huge
and negative numbers, extreme and impossible dates, odd unicode, very long strings) mixed
with real ids so that the cases reach the code behind the checks. Each answer is 2xx, 3xx
or 4xx, never 5xx, and nothing is logged as an error or as input the database refused."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from web_support import PASSWORD, USERS, Seed

from pqsync.bootstrap import App
from pqsync.db.engine import make_engine
from pqsync.db.tables import PartnerUser
from pqsync.settings import load_settings
from pqsync.web.app import create_app

# Forms that end the fuzzer's own session: sent only with a wrong CSRF token.
ENDS_SESSION = {"/logout", "/logout-everywhere"}


@dataclass(frozen=True)
class PageRoute:
    method: str
    path: str
    query: tuple[str, ...]
    form: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def _params(dependant: Any, kind: str) -> list[str]:
    found = [p.alias for p in getattr(dependant, kind)]
    for sub in dependant.dependencies:
        found += _params(sub, kind)
    return found


def page_routes() -> list[PageRoute]:
    """The routes that are not in the OpenAPI description (the pages and their forms),
    read from the app: a new page is fuzzed without anyone listing it here."""
    app = App(settings=load_settings(PQSYNC_ENV="test"), engine=create_engine("sqlite://"))
    api = create_app(app)
    found: list[PageRoute] = []

    def walk(routes: Any) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                if route.include_in_schema or route.path.startswith("/docs"):
                    continue
                query = tuple(dict.fromkeys(_params(route.dependant, "query_params")))
                form = tuple(dict.fromkeys(_params(route.dependant, "body_params")))
                for method in sorted(route.methods or ()):
                    found.append(PageRoute(method, route.path, query, form))
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes)

    walk(api.routes)
    return found


ROUTES = page_routes()

HOSTILE = [
    "",
    " ",
    "\x00",
    "ann\x00",
    "%00",
    "0",
    "-1",
    "-99999999999999999999999",
    "9" * 400,
    "1e309",
    "NaN",
    "Infinity",
    "0x10",
    "9999-12-31",
    "0001-01-01",
    "0000-00-00",
    "10000-01-01",
    "2025-02-30",
    "2025-11-15T25:61:00",
    "2025-11-15%00",
    "-2025-01-01",
    "1970-01-01T00:00:00Z",
    "2025-W46",
    "\u202e\u2066evil",
    "Z\u0351\u0352\u0357\u0344a\u0300\u0301lgo",
    "\U0001f4a9" * 30,
    "\ufeff",
    "\uffff",
    "\uff21\uff22\uff23\uff11\uff12\uff13",  # full-width ABC123
    "İstanbul ß ǅ",
    "\r\nX-Injected: 1",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "../../../../etc/passwd",
    "x" * 5000,
    "true",
    "null",
    "[]",
    "{}",
]
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)


@pytest.fixture(scope="module")
def targets(module_url: str, module_runs: dict[str, uuid.UUID], seeded: tuple[str, Seed]) -> Any:
    """Real values to mix in: ids that exist, and plausible dates and choices."""
    seed = seeded[1]
    engine = make_engine(module_url)
    with Session(engine) as session:
        viewer = session.scalars(
            select(PartnerUser.id).where(PartnerUser.email == USERS["viewer"])
        ).one()
    engine.dispose()
    real = {
        "patient_id": str(seed.consenting),
        "run_id": str(module_runs["own"]),
        "user_id": str(viewer),
        "token": "no-such-token",
    }
    plausible = [
        str(seed.orgs["own"]),
        str(seed.orgs["other"]),
        str(seed.consenting),
        "first-step-house",
        "2025-11-15",
        "2025-11-01",
        "1",
        "2",
        "30",
        "success",
        "failed",
        "paused",
        "name",
        "all",
        "list",
        USERS["viewer"],
    ]
    return real, plausible


def sign_in(client: TestClient, who: str) -> str:
    """Sign in through the login form; the page's CSRF token."""
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    done = client.post(
        "/login",
        data={"email": USERS[who], "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    page = client.get("/" if who != "staff_admin" else "/staff/runs")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert csrf is not None, page.text[:500]
    return csrf.group(1)


@pytest.fixture(scope="module")
def clients(module_client: TestClient) -> Iterator[dict[str, tuple[TestClient, str]]]:
    """A signed-in browser for staff and for a partner admin, and one signed out (with the
    login form's CSRF token), all showing server errors as answers."""
    made: dict[str, tuple[TestClient, str]] = {}
    for who in ("staff_admin", "partner_admin"):
        client = TestClient(
            module_client.app, base_url="https://testserver", raise_server_exceptions=False
        )
        made[who] = (client, sign_in(client, who))
    anonymous = TestClient(
        module_client.app, base_url="https://testserver", raise_server_exceptions=False
    )
    login = re.search(r'name="csrf_token" value="([^"]+)"', anonymous.get("/login").text)
    assert login is not None
    made["anonymous"] = (anonymous, login.group(1))
    yield made
    for client, _ in made.values():
        client.close()


class Complaints(logging.Handler):
    """Log records that mean the server did not cope: errors, and values the database had
    to refuse (validation should have)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR or record.exc_info or "unstorable_input" in text:
            self.records.append(f"{record.levelname} {record.name}: {text[:800]}")


@pytest.fixture(scope="module")
def complaints() -> Iterator[Complaints]:
    handler = Complaints()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def value(plausible: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.sampled_from(plausible),
        ANY_TEXT,
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.dates().map(lambda d: d.isoformat()),
    )


@pytest.mark.parametrize("route", ROUTES, ids=[r.id for r in ROUTES])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # CI sends the same cases every run; elsewhere each run explores anew.
    derandomize=os.environ.get("CI") == "true",
)
@given(data=st.data())
def test_every_page_form_and_query_string_answers_without_a_server_error(
    route: PageRoute,
    data: st.DataObject,
    clients: dict[str, tuple[TestClient, str]],
    targets: Any,
    complaints: Complaints,
) -> None:
    real, plausible = targets
    who = data.draw(st.sampled_from(["staff_admin", "partner_admin", "anonymous"]), label="who")
    client, csrf = clients[who]

    def fill(name: str) -> str:
        if name in real:
            return data.draw(st.one_of(st.just(real[name]), value(plausible)), label=name)
        return data.draw(value(plausible), label=name)

    path = route.path
    for name in re.findall(r"{(\w+)}", route.path):
        path = path.replace("{" + name + "}", _path_segment(fill(name)))
    query = {name: fill(name) for name in route.query if data.draw(st.booleans(), label=f"?{name}")}
    form: dict[str, str] = {}
    for name in route.form:
        if name == "csrf_token":
            right = route.path not in ENDS_SESSION and data.draw(st.booleans(), label="csrf")
            form[name] = csrf if right else fill(name)
        elif data.draw(st.booleans(), label=f"form {name}"):
            form[name] = fill(name)

    complaints.records.clear()
    if route.method == "GET":
        answer = client.get(path, params=query, follow_redirects=False)
    else:
        answer = client.request(route.method, path, params=query, data=form, follow_redirects=False)

    assert answer.status_code < 500, (route.id, path, query, form, answer.text[:500])
    assert not complaints.records, complaints.records


def _path_segment(text: str) -> str:
    """A path parameter as a URL segment (a slash would be another route)."""
    return quote(text, safe="") or "x"


def test_the_fuzzing_reaches_every_kind_of_page() -> None:
    found = {r.id for r in ROUTES}
    for expected in (
        "POST /login",
        "POST /",
        "GET /",
        "GET /staff/runs",
        "GET /staff/access",
        "GET /week",
        "GET /patients/{patient_id}/attendance",
        "POST /organization/invite",
        "POST /staff/practitioners",
    ):
        assert expected in found, sorted(found)
    assert any("day" in r.query for r in ROUTES)
    assert any("page" in r.query for r in ROUTES)
    assert any("sort" in r.query for r in ROUTES)
