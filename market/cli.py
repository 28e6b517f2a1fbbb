"""The ``flexmarket`` command line: serve, worker, beat, migrate, bootstrap-operator, demo."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from market.core.config import get_settings

app = typer.Typer(help="flexmarket: a local flexibility market and settlement system.", no_args_is_help=True)


@app.callback()
def main(
    database_url: Annotated[str | None, typer.Option(help="Overrides FLEX_DATABASE_URL.")] = None,
    broker_url: Annotated[
        str | None, typer.Option(help="Overrides FLEX_BROKER_URL ('in-process' runs tasks here).")
    ] = None,
) -> None:
    if database_url:
        os.environ["FLEX_DATABASE_URL"] = database_url
    if broker_url:
        os.environ["FLEX_BROKER_URL"] = broker_url
    get_settings.cache_clear()


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from market.core.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database.url)
    typer.echo(f"database at {_redacted(settings.database.url)} is at the latest schema")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (FLEX_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FLEX_API_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Log a line per request. Off by default: it cost 5 % of the server's CPU under load, every "
            "change is in the audit log with its request id, and a reverse proxy usually logs requests."
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (OpenAPI at /schema)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "market.core.app:create_served_app",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        workers=workers,
        log_level="info",
        access_log=access_log,
    )


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues to consume.")] = None,
) -> None:
    """Run a Celery worker on FLEX_BROKER_URL."""
    from market.core.jobs import celery_app

    _require_broker()
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}"]
    if queues:
        argv.append(f"--queues={queues}")
    celery_app.worker_main(argv)


@app.command()
def beat() -> None:
    """Run Celery beat, which wakes the database-driven schedulers."""
    from market.core.jobs import celery_app

    _require_broker()
    celery_app.start(["beat", "--loglevel=INFO"])


@app.command("bootstrap-operator")
def bootstrap_operator(name: Annotated[str, typer.Option(help="The operator's name.")] = "Market operator") -> None:
    """Create the market operator and print its first API key (shown once)."""
    from market.auth.service import bootstrap_operator as bootstrap
    from market.core.db import make_engine, make_session_factory, unit_of_work
    from market.core.errors import Conflict

    settings = get_settings()
    factory = make_session_factory(make_engine(settings.database.url))
    try:
        with unit_of_work(factory) as session:
            operator, token = bootstrap(session, name, settings.security.api_key_pepper)
    except Conflict as exc:
        typer.echo(f"refused: {exc.detail}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"operator {operator.name} ({operator.id})")
    typer.echo(f"API key (store it now, it is not shown again): {token}")


@app.command()
def demo(
    households: Annotated[
        int | None, typer.Option(min=12, help="How many households (default 300, the full day).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides FLEX_DATABASE_URL (e.g. postgresql://user@host/db).")
    ] = None,
    broker_url: Annotated[
        str | None, typer.Option(help="Overrides FLEX_BROKER_URL (redis://...: needs a running worker).")
    ] = None,
) -> None:
    """The main job: a complete market day through the API, from orders to statements, with an HTML report."""
    from market.demo import HOUSEHOLDS, run_demo

    if database_url:
        os.environ["FLEX_DATABASE_URL"] = database_url
    if broker_url:
        os.environ["FLEX_BROKER_URL"] = broker_url
    get_settings.cache_clear()
    run_demo(get_settings(), households=households or HOUSEHOLDS)


def _require_broker() -> None:
    if get_settings().jobs.in_process:
        typer.echo(
            "FLEX_BROKER_URL is 'in-process': tasks run inside the API and CLI, no worker is needed. "
            "Set it to a Redis URL (redis://127.0.0.1:6379/0) to run workers.",
            err=True,
        )
        raise typer.Exit(code=2)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
