"""The operator process: kopf alone, or kopf behind a leader election (--leader-elect).

With leader election the process is a standby until it holds the Lease: imports done, the
Kubernetes client configured, the CRDs checked, the metrics served (`lockgate_leader` 0) and
the liveness endpoint answering, but none of kopf's handlers running, so it writes nothing.
Once it holds the Lease it runs kopf, renews every retry period (a missed renew deadline
ends the process at once, status 1), and on SIGTERM or SIGINT it stops kopf through kopf's
stop flag, waits for kopf and for the API calls still in flight, and then releases the
Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import urllib.parse
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import kopf

from lockgate.kube import load_config

from . import metrics
from .leader import ElectionConfig, Elector, LeaseApi, Watchdog, exit_now
from .runtime import Settings

log = logging.getLogger("lockgate.operator")

DRAIN_SECONDS = 5.0  # at most this long for API calls in flight before the lease is released


@dataclass
class OperatorOptions:
    clusterwide: bool
    namespaces: list[str]
    liveness: str
    settings: kopf.OperatorSettings
    election: ElectionConfig | None = None
    check_crds: Callable[[], None] | None = None
    """Blocking: returns once the API serves lockgate's CRDs."""


def run(options: OperatorOptions) -> int:
    if options.election is None:
        metrics.LEADER.set(1)
        if options.check_crds is not None:
            options.check_crds()
        kopf.run(
            clusterwide=options.clusterwide,
            namespaces=options.namespaces,
            settings=options.settings,
            liveness_endpoint=options.liveness,
            standalone=True,
        )
        return 0
    return asyncio.run(_elected(options, options.election))


async def serve_standby_liveness(endpoint: str, status: Callable[[], dict[str, Any]]) -> Any:
    """Answer 200 on kopf's liveness endpoint while kopf does not run (its own server runs
    only with kopf): a standby is alive, and the chart's probes must not restart it."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http":
        raise ValueError(f"unsupported liveness endpoint {endpoint}")

    async def health(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text=json.dumps(status()), content_type="application/json")

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(parts.path or "/", health)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80).start()
    return runner


def _on_signals(loop: asyncio.AbstractEventLoop, stopping: asyncio.Event) -> None:
    def stop(sig: signal.Signals) -> None:
        log.info("%s received: stopping", sig.name)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)


async def _elected(
    options: OperatorOptions, election: ElectionConfig, stopping: asyncio.Event | None = None
) -> int:
    """Standby until the Lease is ours, then kopf until `stopping` (SIGTERM, SIGINT), then
    the release. Returns the exit status."""
    loop = asyncio.get_running_loop()
    stopping = stopping or asyncio.Event()
    _on_signals(loop, stopping)
    metrics.LEADER.set(0)
    metrics.serve(Settings.from_env().metrics_port)
    elector = Elector(LeaseApi(load_config(), election.namespace, election.name), election)
    liveness = await serve_standby_liveness(
        options.liveness,
        lambda: {"leader": False, "lease": election.lease, "identity": election.identity},
    )
    try:
        if options.check_crds is not None:
            await asyncio.to_thread(options.check_crds)
        log.info(
            "standby as %s: waiting for the Lease %s (duration %gs, renew deadline %gs, "
            "retry period %gs)",
            election.identity,
            election.lease,
            election.timing.lease_duration,
            election.timing.renew_deadline,
            election.timing.retry_period,
        )
        if not await elector.acquire(stopping):
            log.info("stopped while a standby")
            return 0
    finally:
        await liveness.cleanup()

    watchdog = Watchdog(
        lambda: exit_now(
            f"lost the Lease {election.lease}: not renewed within the renew deadline "
            f"({election.timing.renew_deadline:g}s); exiting"
        ),
        elector.clock,
    )
    keeper = asyncio.create_task(elector.keep(watchdog), name="lease renewal")

    def lost(task: asyncio.Task[str]) -> None:
        if not task.cancelled():
            reason = task.exception() or task.result()
            exit_now(f"lost the Lease {election.lease}: {reason}; exiting")

    keeper.add_done_callback(lost)
    metrics.LEADER.set(1)
    try:
        await _run_kopf(options, election.identity, stopping, loop)
    finally:
        # kopf has stopped its handlers; what they sent to the API may still be in flight in
        # the default executor's threads. Let it land, then step down.
        await _drain_default_executor(loop)
        keeper.remove_done_callback(lost)
        keeper.cancel()
        watchdog.disarm()
        metrics.LEADER.set(0)
        await elector.release()
        elector.close()
    return 0


async def _run_kopf(
    options: OperatorOptions,
    identity: str,
    stopping: asyncio.Event,
    loop: asyncio.AbstractEventLoop,
) -> None:
    existing: Collection[asyncio.Task[Any]] = asyncio.all_tasks()
    tasks = await kopf.spawn_tasks(
        clusterwide=options.clusterwide,
        namespaces=options.namespaces,
        settings=options.settings,
        liveness_endpoint=options.liveness,
        standalone=True,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        stop_flag=stopping,
    )
    # kopf installs its own SIGTERM/SIGINT handlers; ours stop it through the stop flag, so
    # that the release of the lease follows kopf's exit.
    _on_signals(loop, stopping)
    await kopf.run_tasks(tasks, ignored=existing)


async def _drain_default_executor(loop: asyncio.AbstractEventLoop) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(loop.shutdown_default_executor()), DRAIN_SECONDS)
