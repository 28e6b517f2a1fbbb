"""The demo's SimBench data set (``market/demo_data/simbench_lv.json``) and the grid and homes built from it.

* The shipped file: three MV/LV transformers with at least four feeders each, every feeder with a
  load, its summaries consistent with its loads, feeders numbered most loaded first, 96-value
  profiles as shares (0-1) for every profile a load or PV plant names, the licence and attribution.
* The demo grid: the codes the demo's constants (and the e2e tests) use exist, and the configured
  congestion sits where the data puts the most load.
* Households: placed in proportion to SimBench's household loads, every third of each feeder
  flexible, each standing for a SimBench household load; their usual day comes from its H0 profile.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date
from importlib.resources import files

import numpy as np
import pytest

from market.demo import (
    CONGESTED_FEEDERS,
    CONGESTED_TRANSFORMER,
    DATA_CENTER_FEEDERS,
    FLEXIBLE_EVERY,
    HOUSEHOLDS,
    MORNING_FEEDER,
    PORTFOLIO_FEEDERS,
    grid_points,
    place_households,
)
from market.demo_data.simbench_lv import DATA_FILE, ISPS_PER_DAY, LvGrids, load_lv_grids
from settlement.demo import HOME_KWH_PER_YEAR, PV_KWP, household_profile


@pytest.fixture(scope="module")
def grids() -> LvGrids:
    return load_lv_grids()


def test_the_data_set_is_a_small_package_resource() -> None:
    resource = files("market.demo_data").joinpath(DATA_FILE)
    assert resource.is_file()
    assert len(resource.read_bytes()) < 64 * 1024


def test_the_header_names_source_day_licence_and_attribution(grids: LvGrids) -> None:
    about = grids.about
    assert about.grids == tuple(t.grid for t in grids.transformers)
    assert all(code.startswith("1-LV-") and code.endswith("--0-sw") for code in about.grids)
    assert about.simbench_version
    day = date.fromisoformat(about.day)
    assert (day.year, day.month) == (2016, 1)  # SimBench's profile year, a winter day
    assert day.weekday() < 5  # a weekday
    assert "Open Database License" in about.licence
    assert "ODbL" in about.licence
    assert "SimBench" in about.attribution
    assert "derive_simbench" in about.made_by


def test_three_transformers_each_with_at_least_four_feeders_with_loads(grids: LvGrids) -> None:
    assert len(grids.transformers) == 3
    for trafo in grids.transformers:
        assert trafo.rating_kva > 0
        assert len(trafo.feeders) >= 4
        utilisation = [f.peak_utilisation for f in trafo.feeders]
        assert utilisation == sorted(utilisation, reverse=True)  # F1 is the most loaded
        for feeder in trafo.feeders:
            assert feeder.load_count >= 1
            assert feeder.load_count == len(feeder.loads)
            assert Counter(load.profile for load in feeder.loads) == feeder.loads_by_profile
            assert feeder.rated_load_kw == pytest.approx(sum(load.rated_kw for load in feeder.loads), abs=0.1)
            assert feeder.pv_kwp == pytest.approx(sum(p.kwp for p in feeder.pv), abs=0.1)
            # √3 × U × I: a 4x150 cable (270 A) at 0.4 kV carries 187 kW at cos φ = 1.
            assert feeder.thermal_limit_kw == pytest.approx(math.sqrt(3) * feeder.vn_kv * feeder.max_i_ka * 1000, 0.001)
            assert feeder.peak_utilisation == pytest.approx(feeder.peak_kw / feeder.thermal_limit_kw, abs=0.001)
            assert 0 < feeder.day_peak_kw <= feeder.peak_kw
        names = [load.name for feeder in trafo.feeders for load in feeder.loads]
        assert len(names) == len(set(names))  # each load on exactly one feeder


def test_profiles_are_96_normalised_values_for_every_profile_used(grids: LvGrids) -> None:
    used_loads = {load.profile for t in grids.transformers for f in t.feeders for load in f.loads}
    used_pv = {p.profile for t in grids.transformers for f in t.feeders for p in f.pv}
    assert used_loads <= set(grids.profiles.load)
    assert used_pv <= set(grids.profiles.pv)
    assert {p for p in used_loads if p.startswith("H0")} == {"H0-A", "H0-B", "H0-C", "H0-G", "H0-L"}
    assert any(p.startswith("G") for p in used_loads)  # commercial loads too
    for profile in [*grids.profiles.load.values(), *grids.profiles.pv.values()]:
        assert len(profile.day) == ISPS_PER_DAY
        assert all(0 <= v <= 1 for v in profile.day)  # shares of rated kW (kWp): SimBench's yearly maximum is 1
        assert 0 < profile.full_load_hours < 8784  # hours in 2016
    for profile in grids.profiles.load.values():
        assert max(profile.day) > 0
    # A winter day: PV only around noon, and some sun in every PV profile.
    for profile in grids.profiles.pv.values():
        assert profile.day[:28] == (0,) * 28  # nothing before 07:00
        assert max(profile.day) > 0


def test_the_demo_codes_exist_and_congestion_sits_where_the_data_has_most_load(grids: LvGrids) -> None:
    points = {code: (trafo, feeder) for code, trafo, feeder in grid_points(grids)}
    assert [c for c in points if "-F" not in c] == ["TR-1", "TR-2", "TR-3"]
    for t, trafo in enumerate(grids.transformers, start=1):
        assert [c for c in points if c.startswith(f"TR-{t}-")] == [
            f"TR-{t}-F{f}" for f in range(1, len(trafo.feeders) + 1)
        ]
    used = {*CONGESTED_FEEDERS, CONGESTED_TRANSFORMER[0], MORNING_FEEDER[0], *PORTFOLIO_FEEDERS, *DATA_CENTER_FEEDERS}
    assert used <= set(points)
    feeders = {code: feeder for code, (_, feeder) in points.items() if feeder is not None}
    most_loaded = sorted(feeders, key=lambda c: -feeders[c].peak_utilisation)[: len(CONGESTED_FEEDERS)]
    assert set(most_loaded) == set(CONGESTED_FEEDERS)
    assert max(grids.transformers, key=lambda t: t.peak_utilisation) is points[CONGESTED_TRANSFORMER[0]][0]
    assert not feeders["TR-1-F4"].households  # the data center "where no congestion is": a commercial feeder


@pytest.mark.parametrize("households", [0, 1, 12, 36, 60, HOUSEHOLDS, 700])
def test_households_are_placed_in_proportion_to_simbench_household_loads(grids: LvGrids, households: int) -> None:
    placed = place_households(grids, households)
    assert len(placed) == households
    assert placed == place_households(grids, households)  # deterministic
    weights = {code: len(f.households) for code, _, f in grid_points(grids) if f is not None}
    total = sum(weights.values())
    seats = Counter(p.code for p in placed)
    for code, weight in weights.items():
        assert abs(seats[code] - households * weight / total) <= 1
        flexible = sum(1 for p in placed if p.code == code and p.flexible)
        assert abs(flexible - seats[code] / FLEXIBLE_EVERY) < 1  # every third household of each feeder
    for p in placed:
        assert p.home.load.is_household
        assert p.home.load in {load for t in grids.transformers for f in t.feeders for load in f.loads}
        assert p.home.pv_profile in grids.profiles.pv
    if households <= total:  # each household stands for a load of its own
        assert len({p.home.load.name for p in placed}) == households


def test_every_placed_load_lies_on_its_feeder(grids: LvGrids) -> None:
    feeders = {code: f for code, _, f in grid_points(grids) if f is not None}
    for p in place_households(grids, HOUSEHOLDS):
        assert p.home.load in feeders[p.code].households


def test_a_home_follows_its_simbench_profile_scaled_to_one_home(grids: LvGrids) -> None:
    homes = {p.home.load.name: p.home for p in place_households(grids, 307)}
    for home in homes.values():
        profile = grids.profiles.load[home.load.profile]
        plain = household_profile([], home)
        annual_kwh = home.load.rated_kw * profile.full_load_hours
        low, high = HOME_KWH_PER_YEAR
        expected = home.load.rated_kw * np.asarray(profile.day) * min(max(annual_kwh, low), high) / annual_kwh
        np.testing.assert_allclose(plain, expected)
    home = next(iter(homes.values()))
    with_pv = household_profile(["pv"], home)
    np.testing.assert_allclose(
        household_profile([], home) - with_pv, PV_KWP * np.asarray(grids.profiles.pv[home.pv_profile].day)
    )
    ev = household_profile(["ev"], home) - household_profile([], home)
    assert ev[17 * 4 : 21 * 4].min() == pytest.approx(3.7)  # EV charging 17:00-21:00, as the offers assume
    assert ev[: 17 * 4].max() == pytest.approx(0)
