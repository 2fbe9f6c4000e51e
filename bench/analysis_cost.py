"""What one analysis run costs: Traefik's own /metrics scrape against a PromQL query.

Needs the local environment (hack/traefik up, hack/prometheus up). Puts N canaries in
flight in Traefik through a file-provider config (`bench-<i>-stable` / `bench-<i>-canary`
weighted 90/10 in front of one local HTTP backend), sends traffic through each, waits until
Prometheus has their series, then measures each provider's `window()`:

- one run alone: the median wall time of a single call, many times over;
- N runs at once (as N Deployments analysing in one interval): wall time of the batch, and
  CPU per run, of this process (the operator's side) and of the server answering (Traefik
  or Prometheus, from /proc), each the median over rounds.

Usage: python -m bench.analysis_cost [--analyses N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from lockgate.engine.model import Role
from lockgate.probes.metrics import MetricsProvider
from lockgate.probes.prometheus import PrometheusMetrics
from lockgate.probes.traefik_metrics import History, TraefikMetrics

RUN = Path(os.environ.get("LOCKGATE_RUN", "/tmp/lockgate-run"))
WEB = os.environ.get("LOCKGATE_TRAEFIK_WEB_URL", "http://127.0.0.1:18080")
METRICS = os.environ.get("LOCKGATE_TRAEFIK_METRICS_URL", "http://127.0.0.1:18082/metrics")
PROMETHEUS = os.environ.get("LOCKGATE_PROMETHEUS_URL", "http://127.0.0.1:19090")
DYNAMIC = Path(os.environ.get("LOCKGATE_TRAEFIK_DYNAMIC_DIR", RUN / "traefik" / "dynamic"))
TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(component: str) -> float:
    pid = (RUN / component / f"{component}.pid").read_text().split()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def file_config(count: int, backend: str) -> str:
    lines = ["http:", "  routers:"]
    for i in range(count):
        lines += [
            f"    bench-{i}:",
            f"      rule: Host(`bench-{i}.local`)",
            "      entryPoints: [web]",
            f"      service: bench-{i}",
        ]
    lines.append("  services:")
    for i in range(count):
        lines += [
            f"    bench-{i}:",
            "      weighted:",
            "        services:",
            f"          - {{name: bench-{i}-stable, weight: 90}}",
            f"          - {{name: bench-{i}-canary, weight: 10}}",
        ]
        for role in ("stable", "canary"):
            lines += [
                f"    bench-{i}-{role}:",
                "      loadBalancer:",
                f"        servers: [{{url: '{backend}'}}]",
            ]
    return "\n".join(lines) + "\n"


async def send_traffic(count: int, per_app: int) -> None:
    async with httpx.AsyncClient(base_url=WEB, timeout=10) as http:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await http.get("/", headers={"Host": f"bench-{i}.local"})

        await asyncio.gather(*(one(i) for i in range(count) for _ in range(per_app)))


async def wait_for_series(count: int) -> None:
    query = 'count(traefik_service_requests_total{service=~"bench-.*-(stable|canary)@file"})'
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            answer = (await http.get(f"{PROMETHEUS}/api/v1/query", params={"query": query})).json()
            result = answer["data"]["result"]
            # each leaf reports one series per code/method; both roles of all apps present
            if result and float(result[0]["value"][1]) >= 2 * count:
                return
            await asyncio.sleep(0.5)


def sources(i: int) -> dict[Role, str]:
    return {"canary": f"bench-{i}-canary", "stable": f"bench-{i}-stable"}


async def measure(
    provider: MetricsProvider, start: datetime, component: str, count: int, rounds: int
) -> dict[str, float]:
    singles = []
    for _ in range(max(20, rounds * 4)):
        t = time.perf_counter()
        sample = await provider.window(sources(0), start, datetime.now(UTC))
        singles.append(time.perf_counter() - t)
        assert sample.error is None and sample.canary and sample.canary.requests, sample
    batch_wall, own_cpu, server_cpu, failed = [], [], [], []
    for _ in range(rounds):
        at = datetime.now(UTC)
        cpu0, srv0, t0 = time.process_time(), server_cpu_seconds(component), time.perf_counter()
        samples = await asyncio.gather(
            *(provider.window(sources(i), start, at) for i in range(count))
        )
        batch_wall.append(time.perf_counter() - t0)
        own_cpu.append((time.process_time() - cpu0) / count)
        server_cpu.append((server_cpu_seconds(component) - srv0) / count)
        errors = [s.error for s in samples if s.error]
        failed.append(len(errors))
        if errors:
            print(f"  {component}: {len(errors)} of {count} runs without figures: {errors[0]!r}")
    return {
        "one run alone, ms": statistics.median(singles) * 1000,
        f"{count} runs at once, wall ms": statistics.median(batch_wall) * 1000,
        "operator CPU per run, ms": statistics.median(own_cpu) * 1000,
        f"{component} CPU per run, ms": statistics.median(server_cpu) * 1000,
        "runs without figures per round": statistics.median(failed),
    }


async def run(count: int, rounds: int) -> None:
    backend_dir = Path(tempfile.mkdtemp(prefix="lg-bench-"))
    (backend_dir / "index.html").write_text("ok\n")
    port = 18990
    backend = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=backend_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = DYNAMIC / "bench-analysis-cost.yml"
    try:
        config.write_text(file_config(count, f"http://127.0.0.1:{port}"))
        async with httpx.AsyncClient(base_url=WEB, timeout=5) as http:
            last = {"Host": f"bench-{count - 1}.local"}
            # Traefik picks the file up after its providers' throttle
            while (await http.get("/", headers=last)).status_code != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as http:
            start = datetime.now(UTC)
            traefik = TraefikMetrics(http, METRICS, History())
            await traefik.keep(start)  # its baseline, before the window's traffic
            # Prometheus sees a counter's first value as its start, so the series must
            # exist before the traffic measured: a first request each, then the rest.
            await send_traffic(count, 10)
            await wait_for_series(count)
            await asyncio.sleep(2)
            await send_traffic(count, 40)
            await asyncio.sleep(2)  # one more Prometheus scrape (every 1 s) after it
            results = {
                "traefik scrape": await measure(traefik, start, "traefik", count, rounds),
                "prometheus query": await measure(
                    PrometheusMetrics(http, PROMETHEUS), start, "prometheus", count, rounds
                ),
            }
            size = len((await http.get(METRICS)).text)
    finally:
        config.unlink(missing_ok=True)
        backend.terminate()
        await backend.wait()
        shutil.rmtree(backend_dir, ignore_errors=True)
    print(f"canaries in flight: {count}; Traefik /metrics: {size / 1024:.0f} KiB; rounds: {rounds}")
    for provider, figures in results.items():
        print(provider)
        for what, value in figures.items():
            print(f"  {what:<32} {value:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--analyses", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.analyses, args.rounds))


if __name__ == "__main__":
    main()
