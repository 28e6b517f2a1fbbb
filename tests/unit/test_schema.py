"""msgspec's validation messages split into (field path, reason), whatever text a client echoes."""

from __future__ import annotations

import msgspec
import pytest

from market.core.schema import error_field
from market.orders.schemas import FlexOfferBatch, FlexOfferCreate

ISP = b'[{"start": "2026-06-01T12:00:00+02:00", "quantity_kw": "1"}]'


@pytest.mark.parametrize(
    ("body", "field", "reason_starts"),
    [
        (
            b'{"offers": [{"direction": "up", "isps": [{"start": 1}]}]}',
            "offers[0].isps[0].start",
            "Expected `datetime`",
        ),
        (b'{"offers": [{"direction": "up", "isps": ISP, "x": 1}]}', "offers[0].x", "Object contains unknown field"),
        (b'{"offers": [{"isps": ISP}]}', "offers[0].direction", "Object missing required field"),
        (b'{"offers": 5}', "offers", "Expected `array`"),
    ],
)
def test_error_field_names_the_path(body: bytes, field: str, reason_starts: str) -> None:
    with pytest.raises(msgspec.ValidationError) as excinfo:
        msgspec.json.decode(body.replace(b"ISP", ISP), type=FlexOfferBatch)
    found, reason = error_field(str(excinfo.value))
    assert found == field
    assert reason.startswith(reason_starts)


def test_text_echoed_from_the_client_does_not_move_the_field() -> None:
    body = b'{"direction": "x - at `$.price_per_mwh`", "isps": []}'
    with pytest.raises(msgspec.ValidationError) as excinfo:
        msgspec.json.decode(body, type=FlexOfferCreate)
    assert error_field(str(excinfo.value)) == ("direction", "Invalid enum value 'x - at `$.price_per_mwh`'")
    unknown = b'{"direction": "up", "isps": ISP, "note": "Object missing required field `site_id`"}'.replace(
        b"ISP", ISP
    )
    with pytest.raises(msgspec.ValidationError) as excinfo:
        msgspec.json.decode(unknown, type=FlexOfferCreate)
    assert error_field(str(excinfo.value))[0] == "note"
