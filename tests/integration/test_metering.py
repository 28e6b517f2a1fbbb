"""Meter data end to end on PostgreSQL (tasks in-process through the ``client`` fixture), and the
embedded SQLite mode: upload → validation report → versioned readings → re-settlement marks."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from polars.testing import assert_frame_equal
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from market.core.app import create_app
from market.core.config import DatabaseSettings, JobSettings, SecuritySettings, Settings
from market.core.db import make_engine, make_session_factory
from market.core.migrate import upgrade
from market.grid.models import CongestionPoint
from market.markets.models import Market
from market.participants.models import Role, Site
from settlement.metering import service, storage, tasks
from settlement.metering.models import MeterFile, MeterFileFormat, MeterFileStatus, MeterReading, ResettlementMark
from tests import factories
from tests.factories import Actor

API = "/api/v1"
# 2026-06-01 is a summer day in Amsterdam: local midnight is 22:00 UTC the day before.
DAY = date(2026, 6, 1)
MIDNIGHT = datetime(2026, 5, 31, 22, tzinfo=UTC)


def isp(k: int) -> datetime:
    return MIDNIGHT + timedelta(minutes=15 * k)


@dataclass
class World:
    operator: Actor
    utility: Actor
    other_utility: Actor
    household: Actor
    other_household: Actor
    market: Market
    point: CongestionPoint
    other_point: CongestionPoint
    site: Site
    other_site: Site


@pytest.fixture
def w(db: Session) -> World:
    operator = factories.actor(db, Role.OPERATOR)
    utility = factories.actor(db, Role.UTILITY)
    other_utility = factories.actor(db, Role.UTILITY)
    household = factories.actor(db, Role.HOUSEHOLD)
    other_household = factories.actor(db, Role.HOUSEHOLD)
    market = factories.market(db, operator)
    point = factories.congestion_point(db, operator, market, utility)
    other_point = factories.congestion_point(db, operator, market, other_utility)
    site = factories.site(db, household, point)
    other_site = factories.site(db, other_household, other_point)
    return World(
        operator, utility, other_utility, household, other_household, market, point, other_point, site, other_site
    )


def csv_body(rows: list[tuple[str, datetime | str, str, str]]) -> bytes:
    lines = ["meter,isp_start,import_kwh,export_kwh"]
    lines += [f"{m},{t.isoformat() if isinstance(t, datetime) else t},{i},{e}" for m, t, i, e in rows]
    return ("\n".join(lines) + "\n").encode()


def upload(
    client: TestClient[Litestar], who: Actor, market: Market, body: bytes, file_format: str = "csv", **headers: str
) -> Any:
    media = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "json": "application/json"}
    return client.post(
        f"{API}/markets/{market.id}/meter-files",
        params={"format": file_format, "filename": f"readings.{file_format}"},
        content=body,
        headers={**who.headers, "Content-Type": media[file_format], **headers},
    )


def readings_in_db(db: Session) -> list[tuple[uuid.UUID, datetime, int, Decimal, Decimal]]:
    db.expire_all()
    rows = db.execute(
        select(
            MeterReading.site_id,
            MeterReading.isp_start,
            MeterReading.version,
            MeterReading.import_kwh,
            MeterReading.export_kwh,
        ).order_by(MeterReading.site_id, MeterReading.isp_start, MeterReading.version)
    )
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def test_csv_upload_is_validated_and_stored_with_a_report(client: TestClient[Litestar], w: World, db: Session) -> None:
    meter = w.site.meter_code
    body = csv_body(
        [
            (meter, isp(0), "1.25", "0"),
            (meter, isp(1), "0.5", "0.125"),
            (meter, isp(1), "0.5", "0.125"),  # identical repeat: stored once
            (meter, isp(4), "-1", "0"),  # negative: rejected; ISPs 2..3 and 4 missing → gap warnings
            (meter, "2026-06-01T00:20:00+02:00", "1", "0"),  # off the 15-minute grid
            ("NOT-A-METER", isp(5), "1", "0"),
        ]
    )
    made = upload(client, w.operator, w.market, body)
    assert made.status_code == 201, made.text
    file = made.json()
    assert file["status"] == "done"
    report = file["report"]
    assert {k: report[k] for k in ("rows", "stored", "corrected", "unchanged", "rejected", "duplicates")} == {
        "rows": 6,
        "stored": 2,
        "corrected": 0,
        "unchanged": 0,
        "rejected": 3,
        "duplicates": 1,
    }
    assert report["issue_counts"] == {
        "duplicate": 1,
        "gap": 1,
        "misaligned_timestamp": 1,
        "negative_value": 1,
        "unknown_meter": 1,
    }
    # ISP 4 (negative) still counts as read for gaps: ISPs 2 and 3 are missing.
    assert report["missing_isps"] == 2
    errors = [(i["row"], i["kind"]) for i in report["issues"] if i["severity"] == "error"]
    assert errors == [(4, "negative_value"), (5, "misaligned_timestamp"), (6, "unknown_meter")]
    assert readings_in_db(db) == [
        (w.site.id, isp(0), 1, Decimal("1.25"), Decimal(0)),
        (w.site.id, isp(1), 1, Decimal("0.5"), Decimal("0.125")),
    ]
    read = client.get(f"{API}/markets/{w.market.id}/meter-files/{file['id']}", headers=w.operator.headers)
    assert read.json()["report"] == report


def test_parquet_and_json_uploads_by_the_utility(client: TestClient[Litestar], w: World, db: Session) -> None:
    frame = pl.DataFrame(
        {
            "meter": [w.site.meter_code] * 2,
            "isp_start": [isp(0), isp(1)],
            "import_kwh": [Decimal("1.5"), Decimal("2.000001")],
            "export_kwh": [Decimal(0), Decimal(0)],
        },
        schema={
            "meter": pl.String,
            "isp_start": pl.Datetime("us", "Europe/Amsterdam"),
            "import_kwh": pl.Decimal(20, 6),
            "export_kwh": pl.Decimal(20, 6),
        },
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    made = upload(client, w.utility, w.market, buffer.getvalue(), "parquet")
    assert made.status_code == 201, made.text
    assert made.json()["report"]["stored"] == 2
    document = {
        "readings": [
            {
                "meter": w.site.meter_code,
                "isp_start": "2026-06-01T00:30:00+02:00",
                "import_kwh": 0.1,
                "export_kwh": "0",
            },
            {"meter": w.site.meter_code, "isp_start": "2026-05-31T22:45:00Z", "import_kwh": 3, "export_kwh": 1.25},
        ]
    }
    made = upload(client, w.utility, w.market, json.dumps(document).encode(), "json")
    assert made.status_code == 201, made.text
    assert made.json()["report"]["stored"] == 2
    assert [(r[1], r[3], r[4]) for r in readings_in_db(db)] == [
        (isp(0), Decimal("1.5"), Decimal(0)),
        (isp(1), Decimal("2.000001"), Decimal(0)),
        (isp(2), Decimal("0.1"), Decimal(0)),
        (isp(3), Decimal(3), Decimal("1.25")),
    ]
    # Octet-stream is accepted for Parquet; a mismatched content type is refused.
    octet = upload(
        client, w.utility, w.market, buffer.getvalue(), "parquet", **{"Content-Type": "application/octet-stream"}
    )
    assert octet.status_code == 200  # the same content as before: the first file again
    wrong = upload(client, w.utility, w.market, b"{}", "json", **{"Content-Type": "text/csv"})
    assert wrong.status_code == 415


def test_the_same_file_twice_is_one_file(client: TestClient[Litestar], w: World, db: Session) -> None:
    body = csv_body([(w.site.meter_code, isp(0), "1", "0")])
    first = upload(client, w.operator, w.market, body)
    again = upload(client, w.operator, w.market, body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert db.scalar(select(func.count()).select_from(MeterFile)) == 1
    assert len(readings_in_db(db)) == 1
    listed = client.get(f"{API}/markets/{w.market.id}/meter-files", headers=w.operator.headers).json()
    assert [f["id"] for f in listed["items"]] == [first.json()["id"]]
    assert client.get(f"{API}/markets/{w.market.id}/meter-files", headers=w.utility.headers).json()["total"] == 0


def test_a_resent_reading_is_a_no_op_and_a_changed_one_a_correction(
    client: TestClient[Litestar], w: World, db: Session
) -> None:
    meter = w.site.meter_code
    first = upload(client, w.utility, w.market, csv_body([(meter, isp(0), "1", "0"), (meter, isp(1), "2", "0")]))
    assert first.json()["report"]["stored"] == 2
    # ISP 0 again with the same value (written differently), ISP 1 changed, ISP 2 new.
    second = upload(
        client,
        w.utility,
        w.market,
        csv_body([(meter, isp(0), "1.000", "0"), (meter, isp(1), "2.5", "0"), (meter, isp(2), "3", "0")]),
    )
    report = second.json()["report"]
    assert (report["stored"], report["corrected"], report["unchanged"], report["marked_days"]) == (1, 1, 1, 1)
    # A third correction of the same ISP is version 3; the earlier versions stay.
    third = upload(client, w.utility, w.market, csv_body([(meter, isp(1), "2.75", "0")]))
    assert third.json()["report"]["corrected"] == 1
    assert readings_in_db(db) == [
        (w.site.id, isp(0), 1, Decimal(1), Decimal(0)),
        (w.site.id, isp(1), 1, Decimal(2), Decimal(0)),
        (w.site.id, isp(1), 2, Decimal("2.5"), Decimal(0)),
        (w.site.id, isp(1), 3, Decimal("2.75"), Decimal(0)),
        (w.site.id, isp(2), 1, Decimal(3), Decimal(0)),
    ]
    marks = db.execute(select(ResettlementMark.site_id, ResettlementMark.delivery_day, ResettlementMark.file_id)).all()
    assert sorted((m[0], m[1], str(m[2])) for m in marks) == sorted(
        [(w.site.id, DAY, second.json()["id"]), (w.site.id, DAY, third.json()["id"])]
    )
    assert service.pending_marks(db, w.market.id) == [(w.site.id, DAY)]
    run_id = uuid.uuid4()
    assert service.consume_marks(db, w.market.id, DAY, run_id) == 2
    db.commit()
    assert service.pending_marks(db, w.market.id) == []

    current = service.current_readings(db, [w.site.id, w.other_site.id], isp(0), isp(96))
    expected = pl.DataFrame(
        {
            "site_id": [str(w.site.id)] * 3,
            "isp_start": [isp(0), isp(1), isp(2)],
            "import_kwh": [Decimal(1), Decimal("2.75"), Decimal(3)],
            "export_kwh": [Decimal(0)] * 3,
        },
        schema=service.CURRENT_READINGS_SCHEMA,
    )
    assert_frame_equal(current, expected)
    assert service.current_readings(db, [w.site.id], isp(3), isp(96)).is_empty()

    params = {"start": isp(0).isoformat(), "end": isp(96).isoformat()}
    mine = client.get(f"{API}/sites/{w.site.id}/readings", params=params, headers=w.household.headers)
    assert mine.status_code == 200, mine.text
    assert [(r["version"], r["import_kwh"]) for r in mine.json()["items"]] == [(1, "1"), (3, "2.75"), (1, "3")]
    history = client.get(
        f"{API}/sites/{w.site.id}/readings", params={**params, "all_versions": "true"}, headers=w.utility.headers
    )
    assert [r["version"] for r in history.json()["items"]] == [1, 1, 2, 3, 1]


def test_who_may_upload_and_read(client: TestClient[Litestar], w: World, db: Session) -> None:
    body = csv_body([(w.site.meter_code, isp(0), "1", "0"), (w.other_site.meter_code, isp(0), "1", "0")])
    assert upload(client, w.household, w.market, body).status_code == 403
    # A utility sends readings for its own congestion points only: the other utility's meter is unknown to it.
    made = upload(client, w.utility, w.market, body)
    assert made.status_code == 201, made.text
    report = made.json()["report"]
    assert (report["stored"], report["rejected"], report["issue_counts"]) == (1, 1, {"unknown_meter": 1})
    assert [r[0] for r in readings_in_db(db)] == [w.site.id]
    # The other utility cannot see the file.
    hidden = client.get(f"{API}/markets/{w.market.id}/meter-files/{made.json()['id']}", headers=w.other_utility.headers)
    assert hidden.status_code == 404

    params = {"start": isp(0).isoformat(), "end": isp(4).isoformat()}
    own = client.get(f"{API}/sites/{w.site.id}/readings", params=params, headers=w.household.headers)
    assert (own.status_code, own.json()["total"]) == (200, 1)
    assert (
        client.get(f"{API}/sites/{w.other_site.id}/readings", params=params, headers=w.household.headers).status_code
        == 404
    )
    assert (
        client.get(f"{API}/sites/{w.site.id}/readings", params=params, headers=w.other_utility.headers).status_code
        == 404
    )
    assert (
        client.get(f"{API}/sites/{w.site.id}/readings", params=params, headers=w.operator.headers).json()["total"] == 1
    )
    naive = client.get(
        f"{API}/sites/{w.site.id}/readings",
        params={"start": "2026-06-01T00:00:00", "end": "2026-06-02T00:00:00"},
        headers=w.household.headers,
    )
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["field"] == "query.start"


def test_an_unreadable_file_is_rejected_with_the_reason(client: TestClient[Litestar], w: World, db: Session) -> None:
    made = upload(client, w.operator, w.market, b"meter,isp_start,import_kwh\nA,2026-06-01T00:00:00Z,1\n")
    assert made.status_code == 201, made.text
    file = made.json()
    assert file["status"] == "rejected"
    assert file["reason"].startswith("export_kwh: column missing")
    assert file["report"] is None
    assert readings_in_db(db) == []


def test_a_crash_mid_file_stores_nothing_and_redelivery_finishes_it(
    w: World, db: Session, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker dying after the COPY: the transaction rolls back, the file stays pending, nothing is
    stored; the redelivered task then processes it once."""
    meter = w.site.meter_code
    # One reading exists, so the file takes the temp-table path (COPY, then classification).
    first, _ = service.upload_file(
        db,
        w.operator.principal,
        w.market.id,
        MeterFileFormat.CSV,
        "a.csv",
        csv_body([(meter, isp(0), "1", "0")]),
        datetime.now(UTC),
    )
    db.commit()
    assert tasks.process_in_own_transaction(session_factory, first.id) == "done"
    file, _ = service.upload_file(
        db,
        w.operator.principal,
        w.market.id,
        MeterFileFormat.CSV,
        "b.csv",
        csv_body([(meter, isp(0), "2", "0"), (meter, isp(1), "1", "0")]),
        datetime.now(UTC),
    )
    db.commit()
    real_copy = storage._copy

    def copy_then_die(*args: Any, **kwargs: Any) -> int:
        real_copy(*args, **kwargs)
        raise RuntimeError("worker killed after COPY")

    monkeypatch.setattr(storage, "_copy", copy_then_die)
    with pytest.raises(RuntimeError, match="worker killed"):
        tasks.process_in_own_transaction(session_factory, file.id)
    db.expire_all()
    assert db.get(MeterFile, file.id).status is MeterFileStatus.PENDING  # type: ignore[union-attr]
    assert readings_in_db(db) == [(w.site.id, isp(0), 1, Decimal(1), Decimal(0))]
    assert db.scalar(select(func.count()).select_from(ResettlementMark)) == 0

    monkeypatch.setattr(storage, "_copy", real_copy)
    assert tasks.process_in_own_transaction(session_factory, file.id) == "done"
    assert tasks.process_in_own_transaction(session_factory, file.id) == "done"  # a duplicate delivery: no-op
    assert readings_in_db(db) == [
        (w.site.id, isp(0), 1, Decimal(1), Decimal(0)),
        (w.site.id, isp(0), 2, Decimal(2), Decimal(0)),
        (w.site.id, isp(1), 1, Decimal(1), Decimal(0)),
    ]
    assert db.scalar(select(func.count()).select_from(ResettlementMark)) == 1


def test_readings_are_append_only(w: World, db: Session, session_factory: sessionmaker[Session]) -> None:
    file, _ = service.upload_file(
        db,
        w.operator.principal,
        w.market.id,
        MeterFileFormat.CSV,
        "a.csv",
        csv_body([(w.site.meter_code, isp(0), "1", "0")]),
        datetime.now(UTC),
    )
    db.commit()
    tasks.process_in_own_transaction(session_factory, file.id)
    for statement in ("UPDATE meter_reading SET import_kwh = 5", "DELETE FROM meter_reading"):
        with session_factory() as session, pytest.raises(DBAPIError, match="meter_reading is append-only"):
            session.execute(text(statement))
    assert len(readings_in_db(db)) == 1


def test_resend_finds_files_left_pending(w: World, db: Session) -> None:
    file, _ = service.upload_file(
        db,
        w.operator.principal,
        w.market.id,
        MeterFileFormat.CSV,
        "a.csv",
        csv_body([(w.site.meter_code, isp(0), "1", "0")]),
        datetime.now(UTC) - timedelta(hours=1),
    )
    db.commit()
    settings = service.metering_settings()
    assert service.stale_pending_files(db, datetime.now(UTC), settings) == [file.id]
    db.commit()
    # Just resent: not due again until resend_after_minutes have passed.
    assert service.stale_pending_files(db, datetime.now(UTC), settings) == []
    db.refresh(file)
    assert file.resends == 1


# -- embedded mode --------------------------------------------------------------------------------


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[TestClient[Litestar], sessionmaker[Session]]]:
    url = f"sqlite:///{tmp_path / 'flex.db'}"
    upgrade(url)
    settings = Settings(
        database=DatabaseSettings(url=url),
        jobs=JobSettings(broker_url="in-process"),
        security=SecuritySettings(api_key_pepper=factories.PEPPER),
    )
    engine = make_engine(url)
    with TestClient(app=create_app(settings)) as client:
        yield client, make_session_factory(engine)
    engine.dispose()


def test_embedded_sqlite_mode_stores_versions_the_same_way(
    embedded: tuple[TestClient[Litestar], sessionmaker[Session]],
) -> None:
    client, factory = embedded
    with factory() as db:
        operator = factories.actor(db, Role.OPERATOR)
        utility = factories.actor(db, Role.UTILITY)
        household = factories.actor(db, Role.HOUSEHOLD)
        market = factories.market(db, operator)
        site = factories.site(db, household, factories.congestion_point(db, operator, market, utility))
        meter = site.meter_code
        first = upload(client, utility, market, csv_body([(meter, isp(0), "1", "0"), (meter, isp(1), "2", "0")]))
        assert first.status_code == 201, first.text
        assert first.json()["report"]["stored"] == 2
        second = upload(
            client, utility, market, csv_body([(meter, isp(0), "1", "0"), (meter, isp(1), "2.5", "0.000001")])
        )
        report = second.json()["report"]
        assert (report["stored"], report["corrected"], report["unchanged"], report["marked_days"]) == (0, 1, 1, 1)
        assert readings_in_db(db) == [
            (site.id, isp(0), 1, Decimal(1), Decimal(0)),
            (site.id, isp(1), 1, Decimal(2), Decimal(0)),
            (site.id, isp(1), 2, Decimal("2.5"), Decimal("0.000001")),
        ]
        assert service.pending_marks(db, market.id) == [(site.id, DAY)]
        current = service.current_readings(db, [site.id], isp(0), isp(96))
        assert current.get_column("import_kwh").to_list() == [Decimal(1), Decimal("2.5")]
        params = {"start": isp(0).isoformat(), "end": isp(96).isoformat()}
        read = client.get(f"{API}/sites/{site.id}/readings", params=params, headers=household.headers)
        assert [r["import_kwh"] for r in read.json()["items"]] == ["1", "2.5"]
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(text("DELETE FROM meter_reading"))


# -- versioning, as a property (SQLite: the same SQL, fast to set up) -----------------------------


@dataclass
class SqliteWorld:
    factory: sessionmaker[Session]
    operator: Actor
    household: Actor
    market: Market
    point: CongestionPoint


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteWorld]:
    url = f"sqlite:///{tmp_path_factory.mktemp('metering') / 'flex.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as db:
        operator = factories.actor(db, Role.OPERATOR)
        utility = factories.actor(db, Role.UTILITY)
        household = factories.actor(db, Role.HOUSEHOLD)
        market = factories.market(db, operator)
        point = factories.congestion_point(db, operator, market, utility)
    yield SqliteWorld(factory, operator, household, market, point)
    engine.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.dictionaries(st.integers(0, 3), st.integers(0, 2), min_size=1, max_size=4), max_size=5))
def test_each_change_is_one_new_version_and_each_resend_a_no_op(
    sqlite_world: SqliteWorld, files: list[dict[int, int]]
) -> None:
    """Model: per ISP the list of distinct consecutive values sent. Stored versions must equal it,
    and every file's counts must follow from it."""
    with sqlite_world.factory() as db:
        site = factories.site(db, sqlite_world.household, sqlite_world.point)
        history: dict[int, list[int]] = {}
        seen: set[bytes] = set()
        for values in files:
            body = csv_body([(site.meter_code, isp(k), str(v), "0") for k, v in sorted(values.items())])
            file, created = service.upload_file(
                db,
                sqlite_world.operator.principal,
                sqlite_world.market.id,
                MeterFileFormat.CSV,
                "f.csv",
                body,
                datetime.now(UTC),
            )
            assert created == (body not in seen)
            if not created:
                continue
            seen.add(body)
            report = service.process_file(db, file.id).report or {}
            db.commit()
            new = [k for k in values if k not in history]
            same = [k for k in values if k in history and history[k][-1] == values[k]]
            changed = [k for k in values if k in history and history[k][-1] != values[k]]
            assert (report["stored"], report["unchanged"], report["corrected"]) == (len(new), len(same), len(changed))
            for k in new + changed:
                history.setdefault(k, []).append(values[k])
        stored = db.execute(
            select(MeterReading.isp_start, MeterReading.version, MeterReading.import_kwh)
            .where(MeterReading.site_id == site.id)
            .order_by(MeterReading.isp_start, MeterReading.version)
        ).all()
        expected = [(isp(k), n + 1, Decimal(v)) for k in sorted(history) for n, v in enumerate(history[k])]
        assert [(r[0], r[1], r[2]) for r in stored] == expected
