"""Property-based API tests with Schemathesis against the app's own OpenAPI document (issue 7).

Every operation of ``/schema/openapi.json`` gets ``EXAMPLES`` generated requests, positive (valid by
the schema) and negative (breaking it), sent through the ASGI app authenticated with an API key, and
each response is checked:

* ``not_a_server_error``: no 5xx;
* ``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``: the
  response is documented, with its media type and body schema;
* ``negative_data_rejection``: a request that breaks the schema is refused with a 4xx;
* ``ignored_auth``: an operation that declares the API key refuses requests without it or with a bad one;
* ``use_after_free``: nothing deleted is served again. It is on for every call, but it only sees a
  DELETE and a later read within one recorded scenario, i.e. in Schemathesis' stateful (links) mode.
  That mode is not run here: its Hypothesis state machine picks rules by what earlier responses
  returned, so against a live database a replay draws differently (``FlakyStrategyDefinition``) even
  when derandomized. The one DELETE (a portfolio member) is covered by the per-operation runs.

The world is one cleared, metered and settled day (``settlement_world.build``) with a statement and
a meter file, built once for the module; path and body ids are drawn from it most of the time
(Schemathesis dictionaries), so requests reach the services instead of stopping at 404. Generation
is derandomized, so CI sees the same requests on every run. The module truncates the tables when done.

Schemathesis' own pytest loader (``schemathesis.pytest.from_fixture``) reads ``Node._nodeid``, which
pytest 9 no longer has, so the operations are parametrized here and each runs its own Hypothesis test
over ``operation.as_strategy()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from market.core.app import create_app
from market.core.config import DatabaseSettings, Settings
from market.core.db import Base
from market.orders.models import FlexOffer, FlexRequest
from tests.integration.orders_world import iso, local
from tests.integration.settlement_world import build

pytestmark = pytest.mark.integration

SCHEMA_PATH = "/schema/openapi.json"
EXAMPLES = 10
CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    use_after_free,
]
# Generated data, not the suite's pace, is under test: no deadline, no example database, and the
# health checks about slow or filtered generation do not apply to a bounded, derandomized run.
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)

# The operations, read from the app's document at collection time (no database is touched).
_DOCUMENT = create_app(Settings(database=DatabaseSettings(url="sqlite://"))).openapi_schema.to_schema()
OPERATIONS = [result.ok().label for result in schemathesis.openapi.from_dict(_DOCUMENT).get_all_operations()]
# A household's reads of objects by id: the access rules' 403/404 paths, fuzzed with another caller.
HOUSEHOLD_OPERATIONS = [label for label in OPERATIONS if label.startswith("GET ") and label.endswith("}")]


# Meter files go up as text/csv (and Parquet as bytes); a generated string is sent as it is.
schemathesis.serializer.alias("text/csv", "text/plain")
schemathesis.serializer.alias("application/vnd.apache.parquet", "application/octet-stream")


class Api:
    """The loaded schema per caller, and the world's ids."""

    def __init__(self, app: Litestar, tokens: dict[str, str], ids: dict[str, list[str]]) -> None:
        dictionaries = {name: {"values": values} for name, values in ids.items()}
        # A known id 80% of the time; the rest is generated, so unknown ids (404) are covered too.
        parameters: dict[str, Any] = {f"path.{name}": {"dictionary": name, "probability": 0.8} for name in PATH_IDS}
        parameters.update({f"body.{path}": {"dictionary": name, "probability": 0.8} for path, name in BODY_IDS.items()})
        self.tokens = tokens
        self.ids = ids
        self.schemas: dict[str, OpenApiSchema] = {}
        for who, token in tokens.items():
            config = schemathesis.Config.from_dict(
                {
                    "headers": {"Authorization": f"Bearer {token}"},
                    "dictionaries": dictionaries,
                    "parameters": parameters,
                }
            )
            self.schemas[who] = schemathesis.openapi.from_asgi(SCHEMA_PATH, app, config=config)


PATH_IDS = [
    "market_id",
    "site_id",
    "portfolio_id",
    "point_id",
    "participant_id",
    "api_key_id",
    "request_id",
    "offer_id",
    "run_id",
    "file_id",
    "statement_id",
    "day",
]
BODY_IDS = {
    "site_id": "site_id",
    "portfolio_id": "portfolio_id",
    "congestion_point_id": "point_id",
    "market_id": "market_id",
    "utility_id": "participant_id",
    "day": "day",
    "period_start": "day",
    "period_end": "day",
    "isps[*].start": "isp",
}


def _truncate(engine: Engine) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def api(app: Litestar, engine: Engine, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    try:
        with TestClient(app=app) as client, session_factory() as db:
            sw = build(client, db)
            w = sw.w
            market = f"/api/v1/markets/{w.market.id}"
            run = _ok(
                client.post(
                    f"{market}/settlements",
                    headers=w.operator.headers,
                    json={"day": sw.day.isoformat(), "kind": "initial"},
                )
            )
            period = {
                "market_id": str(w.market.id),
                "period_start": sw.day.isoformat(),
                "period_end": sw.day.isoformat(),
            }
            statement = _ok(
                client.post(
                    f"/api/v1/participants/{w.data_center.id}/statements", headers=w.data_center.headers, json=period
                )
            )
            meter_file = _ok(
                client.post(
                    f"{market}/meter-files",
                    params={"format": "csv"},
                    content=f"meter,isp_start,import_kwh,export_kwh\n{sw.site_a.meter_code},{sw.isp.isoformat()},5,0\n",
                    headers={**w.operator.headers, "Content-Type": "text/csv"},
                )
            )
            # A spare key of the utility's, for the revoke operation to find without locking anyone out.
            spare = _ok(
                client.post(
                    f"/api/v1/participants/{w.utility.id}/api-keys",
                    headers=w.operator.headers,
                    json={"name": "spare", "scopes": ["trade"]},
                )
            )
            offers = [str(i) for i in db.scalars(select(FlexOffer.id))]
            requests = [str(i) for i in db.scalars(select(FlexRequest.id))]
            # An open day's ISPs (gate open), so generated orders can pass the time rules.
            isps = [iso(local(w.open_day, 17) + timedelta(minutes=15 * k)) for k in range(4)]
            ids = {
                "market_id": [str(w.market.id)],
                "site_id": [str(w.site.id), str(sw.dc_site.id), str(sw.site_a.id)],
                "portfolio_id": [str(w.portfolio.id)],
                "point_id": [str(w.feeder.id), str(w.root.id)],
                "participant_id": [str(w.operator.id), str(w.household.id), str(w.utility.id), str(w.data_center.id)],
                "api_key_id": [spare["key"]["id"]],
                "request_id": requests,
                "offer_id": offers,
                "run_id": [sw.clearing_id, run["id"]],
                "file_id": [meter_file["id"]],
                "statement_id": [statement["id"]],
                "day": [sw.day.isoformat(), w.open_day.isoformat()],
                "isp": [*isps, sw.isp.astimezone(UTC).isoformat()],
            }
            tokens = {"operator": w.operator.token, "household": w.household.token}
        yield Api(app, tokens, ids)
    finally:
        _truncate(engine)


def _run(schema: OpenApiSchema, label: str) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @hypothesis.given(case=cases)
    @SETTINGS
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    check()


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_as_operator(api: Api, label: str) -> None:
    _run(api.schemas["operator"], label)


@pytest.mark.parametrize("label", HOUSEHOLD_OPERATIONS)
def test_read_as_household(api: Api, label: str) -> None:
    _run(api.schemas["household"], label)


def test_unknown_ids_are_not_found(api: Api) -> None:
    """A sanity check on the dictionaries: an id that is not in the world is a 404, not a 5xx."""
    schema = api.schemas["operator"]
    operation = schema.find_operation_by_label("GET /api/v1/markets/{market_id}")
    assert operation is not None
    case = operation.Case(path_parameters={"market_id": str(uuid.uuid4())})
    headers = {"Authorization": f"Bearer {api.tokens['operator']}"}
    assert case.call_and_validate(headers=headers, checks=CHECKS).status_code == 404


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
def test_days_at_the_ends_of_the_calendar_are_refused(api: Api, day: str) -> None:
    """Found by fuzzing: the first and last representable days overflowed the calendar (a 500)."""
    operation = api.schemas["operator"].find_operation_by_label("GET /api/v1/markets/{market_id}/delivery-days/{day}")
    assert operation is not None
    case = operation.Case(path_parameters={"market_id": api.ids["market_id"][0], "day": day})
    response = case.call_and_validate(headers={"Authorization": f"Bearer {api.tokens['operator']}"}, checks=CHECKS)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "day"
