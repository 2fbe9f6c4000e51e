"""The operator's HTTP client never lets hundreds of requests queue in httpcore's pool (whose
every finished request rescans the whole queue): each origin has a few turns at a time."""

from __future__ import annotations

import asyncio

import httpx

from lockgate.outbound.http import BoundedClient


def test_requests_to_one_origin_take_turns_and_other_origins_do_not_wait() -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        inside: dict[str, int] = {}
        most: dict[str, int] = {}
        release = asyncio.Event()

        async def answer(request: httpx.Request) -> httpx.Response:
            host = request.url.host
            inside[host] = inside.get(host, 0) + 1
            most[host] = max(most.get(host, 0), inside[host])
            if host == "traefik":
                await release.wait()
            inside[host] -= 1
            return httpx.Response(200)

        async with BoundedClient(per_origin=3, transport=httpx.MockTransport(answer)) as http:
            crowd = [asyncio.create_task(http.get("http://traefik/api")) for _ in range(20)]
            other = await http.get("http://prometheus/api")  # not behind Traefik's queue
            for _ in range(10):
                await asyncio.sleep(0)
            waiting = most.get("traefik", 0)
            release.set()
            codes = [r.status_code for r in await asyncio.gather(*crowd)]
            assert other.status_code == 200
        return waiting, most["traefik"], codes

    waiting, most, codes = asyncio.run(scenario())
    assert (waiting, most) == (3, 3)
    assert codes == [200] * 20
