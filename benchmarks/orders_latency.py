"""Single-offer ``POST /api/v1/flex-offers`` latency under sustained, closed-loop load.

``flexmarket serve --workers W`` runs as a subprocess on a free loopback port against a fresh
PostgreSQL database. A separate load-generator process (multiprocessing, spawn) runs C threads,
each with its own keep-alive ``http.client`` connection, POSTing one pre-encoded offer after another
for the households it acts for in turn (client n for households n, n + C, n + 2C...): a warm-up,
then a timed window whose requests are recorded. Every combination of the ``--workers`` and
``--concurrency`` lists is measured. Run from the repository root::

    .venv/bin/python -m benchmarks.orders_latency
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CONNECTION_ERRORS,
    DEFAULT_ADMIN_URL,
    OFFERS_PATH,
    ApiServer,
    KeepAliveConnection,
    OfferGenerator,
    World,
    build_world,
    contamination_note,
    count_offers,
    cpu_sample,
    cpu_used,
    environment,
    environment_markdown,
    percentile,
    say,
    scratch_database,
    write_results,
)
from market.markets.calendar import MarketClock
from market.participants.models import Role

MODULE = "benchmarks.orders_latency"
MAX_ERROR_SAMPLES = 3
SAMPLE_CHARS = 1_500


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=_int_list, default=[4, 16, 32], help="client threads, e.g. 4,16,32")
    parser.add_argument("--workers", type=_int_list, default=[1, 2], help="server worker processes, e.g. 1,2")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unrecorded load before each window")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of recorded load per combination")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap on requests per combination")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    parser.add_argument(
        "--households", type=int, default=200, help="household sellers (own key each), shared out among the clients"
    )
    parser.add_argument("--sites", type=int, default=1_000, help="sites, shared round-robin by the sellers")
    parser.add_argument("--feeders", type=int, default=10, help="feeders under the one root congestion point")
    parser.add_argument("--bodies-per-client", type=int, default=200, help="distinct offers each client cycles")
    parser.add_argument("--days-ahead", type=int, default=3, help="delivery day, days from today (>= 2)")
    parser.add_argument("--seed", type=int, default=20_260_202)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="PostgreSQL URL used to create the DB")
    args = parser.parse_args()
    if args.days_ahead < 2:  # noqa: PLR2004 - the day-ahead gate closes at 12:00 the day before
        parser.error("--days-ahead must be at least 2 so the gate is open")
    if not args.concurrency or min(args.concurrency) < 1 or not args.workers or min(args.workers) < 1:
        parser.error("--concurrency and --workers need positive integers")
    return args


# -- the load generator (runs in its own process) -----------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    database_url: str
    server_pid: int
    clients: int
    tokens: tuple[str, ...]
    site_ids: tuple[tuple[uuid.UUID, ...], ...]
    clock: MarketClock
    day: date
    seed: int
    warmup_s: float
    duration_s: float
    max_requests: int
    timeout_s: float
    bodies_per_client: int


@dataclass
class ClientLog:
    """What one client thread saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    created_total: int = 0
    """201s including warm-up and after the window: every offer that should now be stored."""
    samples: dict[str, list[dict[str, str]]] = field(default_factory=dict)


@dataclass
class Window:
    start: float = 0.0
    measure: float = 0.0
    end: float = 0.0


def _requests(spec: LoadSpec, client: int) -> list[tuple[str, bytes]]:
    """(Authorization, body) of each request client ``client`` cycles through: its households in turn,
    each offering for its own sites. Many participants, each far inside its rate limit, as a market's
    load is: with one household per client, a 2-worker server passed one household's 3,000 requests a
    minute (1,123 answers of 429 in one run at 670c8c5)."""
    generator = OfferGenerator(spec.clock, spec.day, spec.seed + client)
    households = range(client % len(spec.tokens), len(spec.tokens), spec.clients)
    requests = []
    for i in range(spec.bodies_per_client):
        home = households[i % len(households)]
        sites = spec.site_ids[home]
        offer = generator.offer(sites[(i // len(households)) % len(sites)])
        requests.append((f"Bearer {spec.tokens[home]}", json.dumps(offer).encode()))
    return requests


def _client_loop(spec: LoadSpec, client: int, window: Window, barrier: threading.Barrier, log: ClientLog) -> None:
    requests = _requests(spec, client)
    cap = max(1, spec.max_requests // spec.clients)
    server = KeepAliveConnection(spec.base_url, {"Content-Type": "application/json"}, timeout_s=spec.timeout_s)
    try:
        barrier.wait()
        sent = 0
        while sent < cap:
            started = time.perf_counter()
            if started >= window.end:
                break
            server.headers["Authorization"], body = requests[sent % len(requests)]
            sent += 1
            try:
                status, text = server.request("POST", OFFERS_PATH, body)
            except CONNECTION_ERRORS as exc:
                status, text = type(exc).__name__, str(exc)
            elapsed = time.perf_counter() - started
            if status == "201":
                log.created_total += 1
            elif len(log.samples.setdefault(status, [])) < MAX_ERROR_SAMPLES:
                log.samples[status].append({"request": body.decode()[:SAMPLE_CHARS], "response": text[:SAMPLE_CHARS]})
            if started >= window.measure:
                log.latencies.append(elapsed)
                log.statuses[status] += 1
    finally:
        server.close()


def run_load(spec: LoadSpec) -> dict[str, Any]:
    """Drive the server with ``spec.clients`` threads; summarise the recorded window."""
    logs = [ClientLog() for _ in range(spec.clients)]
    window = Window()
    barrier = threading.Barrier(spec.clients + 1)
    threads = [
        threading.Thread(target=_client_loop, args=(spec, i, window, barrier, logs[i]), daemon=True)
        for i in range(spec.clients)
    ]
    for thread in threads:
        thread.start()
    window.start = time.perf_counter()
    window.measure = window.start + spec.warmup_s
    window.end = window.measure + spec.duration_s
    barrier.wait()
    time.sleep(max(0.0, window.measure - time.perf_counter()))
    before = cpu_sample(spec.server_pid, spec.database_url)
    time.sleep(max(0.0, window.end - time.perf_counter()))
    after = cpu_sample(spec.server_pid, spec.database_url)
    for thread in threads:
        thread.join(timeout=spec.timeout_s + 5)
    summary = _summary(spec, logs, cpu_used(before, after))
    summary["postgres_processes_started_in_window"] = len(after["postgres"].keys() - before["postgres"].keys())
    return summary


def _summary(spec: LoadSpec, logs: list[ClientLog], cpu: dict[str, float]) -> dict[str, Any]:
    latencies = sorted(latency for log in logs for latency in log.latencies)
    statuses: Counter[str] = Counter()
    samples: dict[str, list[dict[str, str]]] = {}
    for log in logs:
        statuses.update(log.statuses)
        for status, items in log.samples.items():
            samples.setdefault(status, []).extend(items[: MAX_ERROR_SAMPLES - len(samples.get(status, []))])
    ms = [1000 * x for x in latencies]
    return {
        "requests": len(latencies),
        "throughput_rps": round(len(latencies) / spec.duration_s, 1),
        "ok_rps": round(statuses["201"] / spec.duration_s, 1),
        "errors": len(latencies) - statuses["201"],
        "statuses": dict(statuses),
        "latency_ms": {
            "p50": round(percentile(ms, 0.50), 2),
            "p90": round(percentile(ms, 0.90), 2),
            "p99": round(percentile(ms, 0.99), 2),
            "max": round(ms[-1], 2) if ms else None,
            "mean": round(statistics.fmean(ms), 2) if ms else None,
        },
        "created_total": sum(log.created_total for log in logs),
        "cpu_s": cpu,
        "cores_busy": {who: round(seconds / spec.duration_s, 2) for who, seconds in cpu.items()},
        "cpu_ms_per_request": {
            who: round(1000 * cpu[who] / len(latencies), 2) if latencies else None
            for who in ("client", "server", "postgres")
        },
        "error_samples": samples,
    }


# -- the run ------------------------------------------------------------------------------------


def spec_for(args: argparse.Namespace, world: World, server: ApiServer, clients: int) -> LoadSpec:
    return LoadSpec(
        base_url=server.base_url,
        database_url=world.database_url,
        server_pid=server.pid,
        clients=clients,
        tokens=tuple(s.token for s in world.sellers),
        site_ids=tuple(s.site_ids for s in world.sellers),
        clock=world.clock,
        day=world.delivery_day,
        seed=args.seed + 1_000 * clients,
        warmup_s=args.warmup,
        duration_s=args.duration,
        max_requests=args.max_requests,
        timeout_s=args.timeout,
        bodies_per_client=args.bodies_per_client,
    )


def measure(args: argparse.Namespace, world: World, log_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (workers, concurrency) run, and what each server logged besides INFO lines."""
    runs: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    with multiprocessing.get_context("spawn").Pool(1) as load_generator:
        for workers in args.workers:
            with ApiServer(
                world.database_url, world.pepper, log_dir / f"server-w{workers}.log", workers=workers
            ) as api:
                say(f"server with {workers} worker(s) up at {api.base_url}")
                for clients in args.concurrency:
                    rows_before = count_offers(world.database_url)
                    result = load_generator.apply(run_load, (spec_for(args, world, api, clients),))
                    stored = count_offers(world.database_url) - rows_before
                    result.update(workers=workers, concurrency=clients, rows_stored=stored)
                    result["rows_match_201s"] = stored == result["created_total"]
                    runs.append(result)
                    lat = result["latency_ms"]
                    say(
                        f"  workers={workers} clients={clients:>2}: {result['throughput_rps']:7.1f} req/s  "
                        f"p50 {lat['p50']} ms  p99 {lat['p99']} ms  max {lat['max']} ms  errors {result['errors']}"
                    )
                servers.append({"workers": workers, "command": api.command, "log_problems": api.log_problems()})
    return runs, servers


def markdown(env: dict[str, Any], args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    lines = [
        "# Single-offer POST latency under load (PostgreSQL)",
        "",
        *environment_markdown(env),
        f"- closed loop: each client thread POSTs its next offer when the previous answer arrives; "
        f"{args.warmup} s warm-up, then {args.duration} s recorded; {result['households']} household sellers "
        "(own key each), client n acting for households n, n + C, n + 2C... in turn; "
        f"{args.sites} sites over {args.feeders} feeders; delivery day {result['delivery_day']}",
        "- load generator: a separate process on the same machine as the server and PostgreSQL, so they compete "
        "for its cores; 'cores busy' is CPU seconds / window seconds during the window for the load generator, "
        "the API server, PostgreSQL (our database's backends and background processes) and all other processes "
        "('other' also holds the CPU of our backends that ended inside the window: see 'new PG backends')",
        "- 'rows = 201s': the rows the run added to flex_offer equal its 201 responses (warm-up included)",
        "",
        "| workers | clients | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | statuses | cores busy: "
        "load gen / server / postgres / other | CPU ms per request: server / postgres | new PG backends | "
        "rows = 201s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        lat, busy, per = run["latency_ms"], run["cores_busy"], run["cpu_ms_per_request"]
        lines.append(
            f"| {run['workers']} | {run['concurrency']} | {run['throughput_rps']:.1f} | {lat['p50']} | {lat['p90']} | "
            f"{lat['p99']} | {lat['max']} | {run['errors']} | {run['statuses']} | "
            f"{busy['client']} / {busy['server']} / {busy['postgres']} / {busy['other']} | "
            f"{per['server']} / {per['postgres']} | "
            f"{run['postgres_processes_started_in_window']} | {run['rows_match_201s']} |"
        )
    samples = {f"w{r['workers']} c{r['concurrency']}": r["error_samples"] for r in result["runs"] if r["error_samples"]}
    lines += ["", f"Rows in flex_offer at the end: {result['final_rows']:,}.", ""]
    lines += contamination_note(
        {f"workers={r['workers']} clients={r['concurrency']}": r["cores_busy"]["other"] for r in result["runs"]}
    )
    if samples:
        lines += [
            "",
            "Error samples (request and response, truncated):",
            "",
            "```",
            json.dumps(samples, indent=1),
            "```",
        ]
    for server in result["servers"]:
        problems = server["log_problems"]
        lines += ["", f"Server with {server['workers']} worker(s): {problems['count']} log lines other than INFO."]
        lines += [f"    {line}" for line in problems["first"][:10]]
    return lines


def main() -> None:
    args = parse_args()
    with scratch_database(args.admin_url, "flex_bench_latency") as url:
        env = environment(url, MODULE)
        sellers = max(args.households, *args.concurrency)
        say(f"database ready; building the market, grid, {sellers} households and {args.sites} sites")
        world = build_world(
            url,
            sellers=sellers,
            seller_role=Role.HOUSEHOLD,
            sites=max(args.sites, sellers),
            feeders=args.feeders,
            days_ahead=args.days_ahead,
        )
        with tempfile.TemporaryDirectory() as tmp:
            runs, servers = measure(args, world, Path(tmp))
        final_rows = count_offers(url)
    result = {
        "environment": env,
        "parameters": vars(args),
        "delivery_day": world.delivery_day.isoformat(),
        "households": sellers,
        "runs": runs,
        "servers": servers,
        "final_rows": final_rows,
    }
    json_path, md_path = write_results("orders_latency", result, markdown(env, args, result))
    say(md_path.read_text())
    say(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
