"""Tap benchmark: what ``lifeguard tap`` adds to an OpenAI-compatible server, measured against
the same upstream reached directly, in the same run, rounds interleaved (direct, tap, ...).

The upstream is a minimal OpenAI-compatible stub started by this script (``--stub``): it
answers each chat completion by streaming ``--tokens`` one-token chunks ``--token-ms`` apart
(a usage chunk last when asked), or the same text in one JSON body when not streamed — the
pacing of a GPU server's decode without its compute, so the tap's own cost is what shows. The
tap writes every event to a real local broker (tansu), as in production. Half the requests
stream, half do not; ``--clients`` run concurrently in each phase.

    .venv/bin/python bench/tap.py [--seconds 6] [--rounds 3] [--clients 16] [--token-ms 10]

Overhead is the tap's latency percentile minus the direct one (end of answer, client side);
throughput ratio is completed requests per second through the tap over direct.
Last line: ``tap overhead p50 X ms p99 Y ms, throughput ratio R vs direct``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DO_NOT_TRACK", "1")

from daemon.ingest.broker import LocalBroker, ensure_topics, free_port  # noqa: E402

MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "How was the battery life of the new laptop?"}]


def stub_app(tokens: int, token_s: float):  # type: ignore[no-untyped-def]
    """The OpenAI-compatible stub upstream (chat completions only)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        body = await request.json()
        head = {"id": "chatcmpl-stub", "created": int(time.time()), "model": body["model"]}
        usage = {"prompt_tokens": 24, "completion_tokens": tokens, "total_tokens": 24 + tokens}
        if not body.get("stream"):
            await asyncio.sleep(token_s * tokens)
            return JSONResponse({**head, "object": "chat.completion", "usage": usage,
                                 "choices": [{"index": 0, "finish_reason": "length",
                                              "message": {"role": "assistant",
                                                          "content": " tok" * tokens}}]})
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list[object], last_usage: object = None) -> bytes:
            payload = {**head, "object": "chat.completion.chunk", "choices": choices}
            if with_usage:
                payload["usage"] = last_usage
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
            for _ in range(tokens):
                await asyncio.sleep(token_s)
                yield chunk([{"index": 0, "delta": {"content": " tok"}}])
            yield chunk([{"index": 0, "delta": {}, "finish_reason": "length"}])
            if with_usage:
                yield chunk([], usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def serve_stub(port: int, tokens: int, token_s: float) -> None:
    import uvicorn

    uvicorn.run(stub_app(tokens, token_s), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def start(args: list[str], health: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        process = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{args[:4]} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(health, timeout=1).status_code < 500:
                return process
        time.sleep(0.1)
    raise TimeoutError(f"{args[:4]} not up")


async def phase(url: str, seconds: float, clients: int) -> tuple[list[float], int]:
    """``clients`` loops sending requests for ``seconds``; latencies (s) and failures."""
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def loop(index: int) -> None:
            nonlocal failures
            n = index
            while time.perf_counter() < stop_at:
                n += 1
                body = {"model": "stub", "messages": MESSAGES, "max_tokens": 16,
                        "stream": n % 2 == 0}
                began = time.perf_counter()
                try:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                        async for _ in r.aiter_raw():
                            pass
                        ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    failures += 1

        await asyncio.gather(*(loop(i) for i in range(clients)))
    return latencies, failures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--token-ms", type=float, default=10.0)
    parser.add_argument("--no-kafka", action="store_true", help="tap without a broker")
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)  # child mode: serve stub
    args = parser.parse_args()
    if args.stub:
        serve_stub(args.stub, args.tokens, args.token_ms / 1000)
        return
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    stub_port, tap_port = free_port(), free_port()
    stub_url, tap_url = f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{tap_port}"
    processes: list[subprocess.Popen[bytes]] = []
    with LocalBroker() as broker:
        ensure_topics(broker.bootstrap, {"inference": 1})
        try:
            processes.append(start([sys.executable, __file__, "--stub", str(stub_port),
                                    "--tokens", str(args.tokens), "--token-ms",
                                    str(args.token_ms)], stub_url + "/", log_dir / "stub.log"))
            processes.append(start([sys.executable, "-m", "daemon.cli", "tap", "--upstream",
                                    stub_url, "--port", str(tap_port)]
                                   + ([] if args.no_kafka else ["--kafka", broker.bootstrap]),
                                   tap_url + "/healthz",
                                   log_dir / "tap.log"))
            asyncio.run(phase(tap_url, 1.0, args.clients))  # warm both paths
            asyncio.run(phase(stub_url, 1.0, args.clients))
            direct: list[float] = []
            tapped: list[float] = []
            failed, tap_cpu = 0, 0.0
            for _ in range(args.rounds):
                for url, into in ((stub_url, direct), (tap_url, tapped)):
                    before = cpu_seconds(processes[1].pid)
                    latencies, failures = asyncio.run(phase(url, args.seconds, args.clients))
                    tap_cpu += cpu_seconds(processes[1].pid) - before
                    into.extend(latencies)
                    failed += failures
            sent = httpx.get(tap_url + "/metrics").text
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    lost = next((line.split()[-1] for line in sent.splitlines()
                 if line.startswith("lifeguard_tap_events_lost_total")), "?")
    d50, d99 = np.percentile(direct, [50, 99]) * 1000
    t50, t99 = np.percentile(tapped, [50, 99]) * 1000
    ratio = len(tapped) / len(direct)
    print(f"direct {len(direct) / (args.rounds * args.seconds):.1f} req/s p50 {d50:.2f} ms "
          f"p99 {d99:.2f} ms; tap {len(tapped) / (args.rounds * args.seconds):.1f} req/s "
          f"p50 {t50:.2f} ms p99 {t99:.2f} ms; {args.clients} clients, failed {failed}, "
          f"events lost {lost}; tap CPU {tap_cpu / len(tapped) * 1000:.2f} ms per request",
          flush=True)
    print(f"tap overhead p50 {t50 - d50:.2f} ms p99 {t99 - d99:.2f} ms, "
          f"throughput ratio {ratio:.2f} vs direct")


if __name__ == "__main__":
    main()
