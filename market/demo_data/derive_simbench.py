"""Derive ``simbench_lv.json``, the demo's grid and load profiles, from three SimBench LV grids.

SimBench (https://simbench.de) publishes German benchmark grids with a year of 15-minute profiles.
The ``simbench`` package pulls pandapower and pandas (hundreds of MB), far more than the demo needs,
so the demo ships this small derived file instead, and this script regenerates it::

    pip install -e '.[simbench]'
    python -m market.demo_data.derive_simbench            # rewrites market/demo_data/simbench_lv.json

For each grid (:data:`GRIDS`, in the demo's order TR-1, TR-2, TR-3) it keeps:

* the MV/LV transformer: name, standard type, rating (kVA), and its annual peak net load (kW);
* its LV feeders: the lines leaving the transformer's LV busbar, each feeder being the subtree
  reached from that line (graph traversal over in-service lines, the busbar removed). Per feeder:
  the head line and cable, its thermal limit ``√3 × U × I_max`` (kW at cos φ = 1), every load
  (SimBench name, profile type, rated kW), every PV plant (name, profile, kWp), the feeder's annual
  peak net load (Σ loads − Σ PV, kW, the year's maximum of the coincident 15-minute sum) and its
  peak on :data:`DAY`. Feeders are numbered by annual peak net load over thermal limit, most loaded
  first (so ``TR-t-F1`` is the grid's most loaded feeder);
* the 96 values of :data:`DAY` of every load and PV profile the three grids use, as SimBench
  normalises them (load: share of the load's rated power, the year's maximum being 1; PV: share of
  the installed kWp), and each profile's full-load hours over the year (annual kWh per rated kW).

SimBench time stamps are a regular 15-minute grid over 2016 without clock changes; :data:`DAY` is
a January day, so the stamps are local time (CET) either way.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import simbench as sb

GRIDS = ("1-LV-semiurb5--0-sw", "1-LV-rural3--0-sw", "1-LV-urban6--0-sw")
"""A semi-urban, a rural and an urban LV grid of today's scenario (0), with switches (sw). Each has
at least four feeders; the rural one's transformer is the most loaded (the demo's congested TR-2)."""
DAY = date(2016, 1, 14)
"""A Thursday in mid-January of the SimBench year. The mid-January Tuesdays (12th, 19th) have almost
no PV in any SimBench PV profile, which would leave the demo's PV households without sun."""
ISPS_PER_DAY = 96
ISP_HOURS = 0.25
DECIMALS = 4
OUT = Path(__file__).with_name("simbench_lv.json")
LICENCE = (
    "SimBench data: Open Database License (ODbL) v1.0, http://opendatacommons.org/licenses/odbl/1.0/; "
    "individual contents: Database Contents License (DbCL) v1.0, http://opendatacommons.org/licenses/dbcl/1.0/. "
    "This file is a derived database of SimBench and is offered under the same ODbL v1.0 (not the project's "
    "Apache-2.0, which covers the code)."
)
ATTRIBUTION = (
    "Contains data from SimBench (https://simbench.de), copyright (c) 2019-2026 University of Kassel, TU Dortmund, "
    "RWTH Aachen University and Fraunhofer IEE Kassel and contributors. Meinecke, S. et al.: SimBench - A "
    "Benchmark Dataset of Electric Power Systems to Compare Innovative Solutions Based on Power Flow Analysis. "
    "Energies 13(12), 3290 (2020), doi:10.3390/en13123290."
)


def _round(value: float, decimals: int = DECIMALS) -> float:
    return round(float(value), decimals)


def _day_slice(times: Any) -> slice:
    """The 96 rows of :data:`DAY` in SimBench's ``time`` column (``dd.mm.yyyy HH:MM``)."""
    first = f"{DAY:%d.%m.%Y} 00:00"
    hits = np.flatnonzero(np.asarray(times) == first)
    if len(hits) != 1:
        raise ValueError(f"{first} occurs {len(hits)} times in the SimBench time column")
    start = int(hits[0])
    if str(times.iloc[start + ISPS_PER_DAY - 1]) != f"{DAY:%d.%m.%Y} 23:45":
        raise ValueError(f"{DAY} is not 96 consecutive 15-minute rows")
    return slice(start, start + ISPS_PER_DAY)


def _feeders(net: Any, lv_bus: int) -> list[tuple[Any, set[int]]]:
    """(head line, buses of its subtree) for each in-service line leaving the LV busbar."""
    open_lines = set(net.switch[(net.switch.et == "l") & ~net.switch.closed].element)
    lines = net.line[net.line.in_service & ~net.line.index.isin(open_lines)]
    graph = nx.Graph()
    graph.add_edges_from(zip(lines.from_bus, lines.to_bus, strict=True))
    if nx.cycle_basis(graph):
        raise ValueError("the grid is meshed; feeders are defined for radial grids only")
    heads = lines[(lines.from_bus == lv_bus) | (lines.to_bus == lv_bus)]
    graph.remove_node(lv_bus)
    feeders = []
    for _, head in heads.iterrows():
        first = head.to_bus if head.from_bus == lv_bus else head.from_bus
        feeders.append((head, set(nx.node_connected_component(graph, first))))
    return feeders


def _grid(code: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A transformer with its feeders, and the grid's load and PV profiles (day values, full-load hours)."""
    net = sb.get_simbench_net(code)
    if len(net.trafo) != 1:
        raise ValueError(f"{code} has {len(net.trafo)} transformers; expected one MV/LV transformer")
    trafo = net.trafo.iloc[0]
    lv_bus = int(trafo.lv_bus)
    absolute = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    load_kw = absolute[("load", "p_mw")] * 1000
    pv_kw = absolute[("sgen", "p_mw")] * 1000
    day = _day_slice(net.profiles["load"]["time"])
    feeders: list[dict[str, Any]] = []
    covered_loads: set[int] = set()
    covered_pv: set[int] = set()
    for head, buses in _feeders(net, lv_bus):
        loads = net.load[net.load.bus.isin(buses) & net.load.in_service].sort_index()
        pvs = net.sgen[net.sgen.bus.isin(buses) & net.sgen.in_service].sort_index()
        covered_loads |= set(loads.index)
        covered_pv |= set(pvs.index)
        net_kw = load_kw[loads.index].sum(axis=1) - pv_kw[pvs.index].sum(axis=1)
        vn_kv = float(net.bus.vn_kv[lv_bus])
        limit_kw = math.sqrt(3) * vn_kv * float(head.max_i_ka) * 1000
        by_profile: dict[str, int] = {}
        for profile in loads.profile:
            by_profile[str(profile)] = by_profile.get(str(profile), 0) + 1
        feeders.append(
            {
                "head_line": str(head["name"]),
                "cable": str(head.std_type),
                "max_i_ka": _round(head.max_i_ka, 3),
                "vn_kv": _round(vn_kv, 3),
                "thermal_limit_kw": _round(limit_kw, 1),
                "peak_kw": _round(net_kw.max(), 1),
                "peak_utilisation": _round(net_kw.max() / limit_kw, 3),
                "day_peak_kw": _round(net_kw.iloc[day].max(), 1),
                "load_count": len(loads),
                "loads_by_profile": dict(sorted(by_profile.items())),
                "rated_load_kw": _round(loads.p_mw.sum() * 1000, 1),
                "annual_load_mwh": _round(load_kw[loads.index].to_numpy().sum() * ISP_HOURS / 1000, 1),
                "pv_kwp": _round(pvs.p_mw.sum() * 1000, 1),
                "loads": [
                    [str(n), str(p), _round(kw * 1000, 2)]
                    for n, p, kw in zip(loads.name, loads.profile, loads.p_mw, strict=True)
                ],
                "pv": [
                    [str(n), str(p), _round(kw * 1000, 2)]
                    for n, p, kw in zip(pvs.name, pvs.profile, pvs.p_mw, strict=True)
                ],
            }
        )
    missing = (set(net.load.index[net.load.in_service]) - covered_loads) | (
        set(net.sgen.index[net.sgen.in_service]) - covered_pv
    )
    if missing:
        raise ValueError(f"{code}: {len(missing)} loads or PV plants lie on no feeder")
    feeders.sort(key=lambda f: (-f["peak_utilisation"], f["head_line"]))
    total = load_kw.sum(axis=1) - pv_kw.sum(axis=1)
    rating_kva = float(trafo.sn_mva) * 1000
    transformer = {
        "grid": code,
        "name": str(trafo["name"]),
        "std_type": str(trafo.std_type),
        "rating_kva": _round(rating_kva, 1),
        "peak_kw": _round(total.max(), 1),
        "peak_utilisation": _round(total.max() / rating_kva, 3),
        "day_peak_kw": _round(total.iloc[day].max(), 1),
        "feeders": feeders,
    }
    load_table = net.profiles["load"]
    load_profiles = {
        str(p): load_table[f"{p}_pload"].to_numpy(dtype=float)
        for p in sorted(set(net.load.profile[net.load.in_service]))
    }
    renewables = net.profiles["renewables"]
    pv_profiles = {
        str(p): renewables[p].to_numpy(dtype=float) for p in sorted(set(net.sgen.profile[net.sgen.in_service]))
    }
    day_of = {
        kind: {
            p: {"day": [_round(v) for v in year[day]], "full_load_hours": _round(year.sum() * ISP_HOURS, 1)}
            for p, year in profiles.items()
        }
        for kind, profiles in (("load", load_profiles), ("pv", pv_profiles))
    }
    return transformer, day_of["load"], day_of["pv"]


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    """SimBench profiles are shared by all grids: the same name must carry the same values."""
    for name, profile in more.items():
        if name in into and into[name] != profile:
            raise ValueError(f"profile {name} differs between grids")
        into[name] = profile


def derive() -> dict[str, Any]:
    version = metadata.version("simbench")
    stated = " ".join((metadata.metadata("simbench")["License"] or "").split())
    if "Open Database License" not in stated or "Database Contents License" not in stated:
        raise ValueError(f"simbench {version} no longer states the ODbL: check its licence and update LICENCE")
    transformers: list[dict[str, Any]] = []
    load_profiles: dict[str, Any] = {}
    pv_profiles: dict[str, Any] = {}
    for code in GRIDS:
        transformer, loads, pvs = _grid(code)
        transformers.append(transformer)
        _merge(load_profiles, loads)
        _merge(pv_profiles, pvs)
    return {
        "about": {
            "source": "SimBench benchmark grids, https://simbench.de, read with the simbench Python package",
            "simbench_version": version,
            "grids": list(GRIDS),
            "day": DAY.isoformat(),
            "day_note": f"a {DAY:%A} in mid-January of the SimBench profile year, with some sun in every PV profile "
            "(the mid-January Tuesdays have almost none); SimBench time stamps are CET, without clock changes",
            "licence": LICENCE,
            "attribution": ATTRIBUTION,
            "made_by": "python -m market.demo_data.derive_simbench (market/demo_data/derive_simbench.py)",
            "units": {
                "rating_kva": "transformer rating",
                "thermal_limit_kw": "feeder head cable: sqrt(3) x vn_kv x max_i_ka x 1000, at cos phi = 1",
                "peak_kw": "the year's maximum of the coincident 15-minute net load (loads - PV)",
                "day_peak_kw": "the same maximum on the day",
                "loads": "[SimBench name, profile, rated kW]",
                "pv": "[SimBench name, profile, kWp]",
                "profiles.load.*.day": "96 quarter-hours of the day as a share of the load's rated kW (yearly max 1)",
                "profiles.pv.*.day": "96 quarter-hours of the day as a share of the installed kWp",
                "full_load_hours": "annual kWh per rated kW (per kWp for PV)",
            },
        },
        "transformers": transformers,
        "profiles": {"load": dict(sorted(load_profiles.items())), "pv": dict(sorted(pv_profiles.items()))},
    }


def dump(value: Any, indent: int = 0) -> str:
    """JSON with one line per list of scalars (a profile, a load), so the file reads and diffs well."""
    pad = " " * indent
    flat = json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict) and not any(isinstance(v, dict | list) for v in value.values()) and len(flat) < 160:  # noqa: PLR2004 - short enough for one line
        return pad + flat
    if isinstance(value, dict) and value:
        items = [f"{pad} {json.dumps(k)}: {dump(v, indent + 1).lstrip()}" for k, v in value.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        if all(isinstance(v, list) and not any(isinstance(x, dict | list) for x in v) for v in value):
            return (
                pad
                + "[\n"
                + ",\n".join(pad + " " + json.dumps(v, ensure_ascii=False) for v in value)
                + "\n"
                + pad
                + "]"
            )
        return pad + "[\n" + ",\n".join(dump(v, indent + 1) for v in value) + "\n" + pad + "]"
    return pad + flat


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default: {OUT})")
    args = parser.parse_args(argv)
    text = dump(derive()) + "\n"
    args.out.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {args.out} ({len(text.encode()):,} bytes)\n")


if __name__ == "__main__":
    main()
