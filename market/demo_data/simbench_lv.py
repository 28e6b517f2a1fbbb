"""The demo's grid data: three SimBench LV grids and one winter day of their profiles.

``simbench_lv.json`` is derived from SimBench (https://simbench.de) by
:mod:`market.demo_data.derive_simbench`, which says exactly what it keeps and how. Its ``about``
header carries the source grids, the simbench version, the day, the licence (ODbL v1.0: the file is
a derived database of SimBench, so it stays under the ODbL, unlike the project's code) and the
attribution. This module only reads it, into typed, validated structs (msgspec), once per process;
unknown fields are refused, so the file and this reader change together.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Annotated

import msgspec

DATA_FILE = "simbench_lv.json"
ISPS_PER_DAY = 96
HOUSEHOLD_PROFILE_PREFIX = "H0"
"""SimBench's household load profiles are H0-A, H0-B, H0-C, H0-G and H0-L; G* are commercial."""

DayValues = Annotated[tuple[float, ...], msgspec.Meta(min_length=ISPS_PER_DAY, max_length=ISPS_PER_DAY)]


class Load(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """A SimBench load: its name, profile type and rated kW (the profile's yearly maximum is 1)."""

    name: str
    profile: str
    rated_kw: float

    @property
    def is_household(self) -> bool:
        return self.profile.startswith(HOUSEHOLD_PROFILE_PREFIX)


class PvPlant(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    name: str
    profile: str
    kwp: float


class Feeder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An LV feeder: the subtree behind one line leaving the transformer's LV busbar."""

    head_line: str
    cable: str
    max_i_ka: float
    vn_kv: float
    thermal_limit_kw: float
    """√3 × U × I_max of the head cable, at cos φ = 1."""
    peak_kw: float
    """The year's maximum of the feeder's coincident net load (Σ loads − Σ PV)."""
    peak_utilisation: float
    day_peak_kw: float
    load_count: int
    loads_by_profile: dict[str, int]
    rated_load_kw: float
    annual_load_mwh: float
    pv_kwp: float
    loads: tuple[Load, ...]
    pv: tuple[PvPlant, ...]

    @property
    def households(self) -> tuple[Load, ...]:
        """The feeder's household loads (H0 profiles), in SimBench order."""
        return tuple(load for load in self.loads if load.is_household)


class Transformer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A grid's MV/LV transformer with its feeders, most loaded feeder first."""

    grid: str
    """The SimBench code of the grid, e.g. ``1-LV-rural3--0-sw``."""
    name: str
    std_type: str
    rating_kva: float
    peak_kw: float
    peak_utilisation: float
    day_peak_kw: float
    feeders: tuple[Feeder, ...]

    @property
    def main_pv_profile(self) -> str:
        """The PV profile of the grid's largest PV capacity (Σ kWp per profile)."""
        kwp: dict[str, float] = {}
        for feeder in self.feeders:
            for plant in feeder.pv:
                kwp[plant.profile] = kwp.get(plant.profile, 0.0) + plant.kwp
        return max(sorted(kwp), key=lambda p: kwp[p])


class Profile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    day: DayValues
    """The day's 96 quarter-hours, as a share of rated kW (loads) or of kWp (PV)."""
    full_load_hours: float
    """Annual kWh per rated kW (per kWp for PV)."""


class Profiles(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    load: dict[str, Profile]
    pv: dict[str, Profile]


class About(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: str
    simbench_version: str
    grids: tuple[str, ...]
    day: str
    day_note: str
    licence: str
    attribution: str
    made_by: str
    units: dict[str, str]


class LvGrids(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    about: About
    transformers: tuple[Transformer, ...]
    profiles: Profiles


def pv_profile_of(transformer: Transformer, feeder: Feeder) -> str:
    """The PV profile a roof on ``feeder`` follows: that of the feeder's largest PV plant, or else the
    grid's main one."""
    if feeder.pv:
        return max(feeder.pv, key=lambda plant: plant.kwp).profile
    return transformer.main_pv_profile


@cache
def load_lv_grids() -> LvGrids:
    """The shipped data set (a package resource, so editable and wheel installs both find it)."""
    raw = files("market.demo_data").joinpath(DATA_FILE).read_bytes()
    return msgspec.json.decode(raw, type=LvGrids)
