"""HTTP load test: a real `serve_onnx.py http` process on loopback, 32 concurrent clients.

    python bench/http_load.py                                   # serves bench/inference.py's export
    python bench/http_load.py --export-dir outputs/onnx --requests 2000 --clients 32

Phase "clean": every client sends one-text /v1/predict requests back to back until --requests have
been sent; reports throughput, p50/p99 latency and errors (anything but 200). Phase "mixed": the
same load with every --bad-every'th request malformed (broken JSON, wrong types, empty or unknown
fields, too many inputs, an oversized body, a too long text with truncate=false, a blank text, an
unpaired surrogate): every malformed request must get a 4xx, every good one a 200, and /health
must still answer 200 afterwards. Phase "sigterm": the same clients again, SIGTERM after
--sigterm-after-s: every request must get a 200 or a 503 "draining" (or find the socket closed once
the drain is over), and the server must exit 0.
Also reports the server's resident memory. Prints one JSON object; progress goes to stderr.
The clients run on the same machine as the server, so on a small VM they take CPU from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[http_load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def malformed_requests(max_inputs: int, max_body: int) -> list[tuple[str, dict]]:
    """(name, httpx request kwargs) of client mistakes the server must answer with a 4xx."""
    return [
        ("broken_json", {"content": b'{"inputs": ["abc"'}),
        ("not_an_object", {"json": ["text"]}),
        ("wrong_type", {"json": {"inputs": 12}}),
        ("list_with_number", {"json": {"inputs": ["ok", 3]}}),
        ("empty_inputs", {"json": {"inputs": []}}),
        ("empty_text", {"json": {"inputs": [""]}}),
        ("unknown_field", {"json": {"text": "abc"}}),
        ("bad_top_k", {"json": {"inputs": "abc", "top_k": -1}}),
        ("too_many_inputs", {"json": {"inputs": ["犬"] * (max_inputs + 1)}}),
        ("oversized_body", {"content": b'{"inputs": ["' + b"a" * max_body + b'"]}'}),
        ("too_long_no_truncate", {"json": {"inputs": ["この商品はとても良いです。" * 200], "truncate": False}}),
        ("invalid_utf8", {"content": b'{"inputs": ["\xff\xfe"]}'}),
        ("blank_text", {"json": {"inputs": ["\u3000 \u200b"]}}),
        ("lone_surrogate", {"content": b'{"inputs": ["ok\\ud800"]}'}),
        ("deep_nesting", {"content": b"[" * 50_000 + b"]" * 50_000}),
        ("huge_integer", {"content": b'{"inputs": "ok", "top_k": ' + b"9" * 5000 + b"}"}),
    ]


class RawHTTPClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams.

    httpx costs about a millisecond of Python per request; with 32 clients in one process on a
    2-core machine the load generator, not the server, would set the pace.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Send one POST and return (status, body); reconnects when the server closed the connection."""
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                self.writer.write(head + body)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("connection closed")
                status = int(status_line.split()[1])
                length, close = 0, False
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "connection" and value.strip().lower() == "close":
                        close = True
                payload = await self.reader.readexactly(length)
                if close:
                    await self.close()
                return status, payload
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    async def close(self) -> None:
        """Close the connection (if open)."""
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass
        self.reader = self.writer = None


def encode_request(kwargs: dict) -> bytes:
    """Request body bytes from ("json" | "content") kwargs."""
    if "content" in kwargs:
        return kwargs["content"]
    return json.dumps(kwargs["json"], ensure_ascii=False).encode()


async def run_phase(port: int, texts: list[str], requests: int, clients: int, bad_every: int | None, bad: list) -> dict:
    """Send `requests` requests from `clients` concurrent clients; collect statuses and latencies."""
    counter = iter(range(requests))
    good_latencies: list[float] = []
    good_status: dict[int, int] = {}
    bad_status: dict[str, dict[int, int]] = {}
    failures: list[str] = []
    bad_bodies = [(name, encode_request(kwargs)) for name, kwargs in bad]

    async def client() -> None:
        http = RawHTTPClient("127.0.0.1", port)
        try:
            for index in counter:
                is_bad = bad_every is not None and index % bad_every == bad_every - 1
                if is_bad:
                    name, body = bad_bodies[(index // bad_every) % len(bad_bodies)]
                else:
                    body = json.dumps({"inputs": [texts[index % len(texts)]]}, ensure_ascii=False).encode()
                started = time.perf_counter()
                try:
                    status, payload = await http.post("/v1/predict", body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    failures.append(f"{type(err).__name__}: {err}")
                    continue
                elapsed = time.perf_counter() - started
                if is_bad:
                    bad_status.setdefault(name, {}).setdefault(status, 0)
                    bad_status[name][status] += 1
                else:
                    good_status[status] = good_status.get(status, 0) + 1
                    if status == 200 and json.loads(payload)[0].get("label") is not None:
                        good_latencies.append(elapsed)
        finally:
            await http.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    good = sum(good_status.values())
    errors = sum(count for status, count in good_status.items() if status != 200) + len(failures) \
        + (good_status.get(200, 0) - len(good_latencies))
    latencies = sorted(good_latencies)
    result = {
        "requests": requests,
        "clients": clients,
        "seconds": round(seconds, 2),
        "good_requests": good,
        "throughput_requests_per_s": round(requests / seconds, 1),
        "throughput_texts_per_s": round(len(latencies) / seconds, 1),
        "latency_ms": {
            "p50": round(1000 * statistics.quantiles(latencies, n=100)[49], 1) if len(latencies) > 1 else None,
            "p99": round(1000 * statistics.quantiles(latencies, n=100)[98], 1) if len(latencies) > 1 else None,
            "max": round(1000 * latencies[-1], 1) if latencies else None,
        },
        "errors": errors,
        "good_status_counts": {str(k): v for k, v in sorted(good_status.items())},
    }
    if failures:
        result["connection_failures"] = failures[:5]
    if bad_every is not None:
        malformed = sum(sum(v.values()) for v in bad_status.values())
        all_4xx = all(400 <= status < 500 for v in bad_status.values() for status in v)
        result["malformed_requests"] = malformed
        result["malformed_all_4xx"] = all_4xx
        result["malformed_status_by_kind"] = {name: {str(k): v for k, v in statuses.items()} for name, statuses in sorted(bad_status.items())}
    return result


async def run_sigterm_phase(port: int, server: subprocess.Popen, texts: list[str], clients: int,
                            signal_after_s: float, max_requests: int = 100_000) -> dict:
    """Load from `clients` clients, SIGTERM to the server mid-way; what every request got, and the exit."""
    statuses: dict[str, int] = {}
    outcomes = {"refused_connection": 0, "closed_without_answer": 0}
    counter = iter(range(max_requests))  # bounded even if the server never stops
    signalled = asyncio.Event()

    async def client() -> None:
        http = RawHTTPClient("127.0.0.1", port)
        try:
            for index in counter:
                body = json.dumps({"inputs": [texts[index % len(texts)]]}, ensure_ascii=False).encode()
                try:
                    status, payload = await http.post("/v1/predict", body)
                except ConnectionRefusedError:
                    outcomes["refused_connection"] += 1  # the drain is over and the socket closed
                    return
                except (OSError, asyncio.IncompleteReadError):
                    outcomes["closed_without_answer"] += 1
                    if signalled.is_set():
                        return
                    continue
                key = str(status)
                if status == 503:
                    key += " " + json.loads(payload).get("error_type", "?")
                statuses[key] = statuses.get(key, 0) + 1
        finally:
            await http.close()

    async def signal_later() -> float:
        await asyncio.sleep(signal_after_s)
        server.send_signal(signal.SIGTERM)
        signalled.set()
        return time.perf_counter()

    signal_task = asyncio.create_task(signal_later())
    await asyncio.gather(*(client() for _ in range(clients)))
    signalled_at = await signal_task
    exit_code = await asyncio.to_thread(server.wait, 60)
    exit_seconds = time.perf_counter() - signalled_at
    allowed = {"200", "503 draining"}
    return {
        "clients": clients,
        "signal_after_s": signal_after_s,
        "status_counts": dict(sorted(statuses.items())),
        **outcomes,
        "unexpected_statuses": sum(n for key, n in statuses.items() if key not in allowed),
        "exit_code": exit_code,
        "seconds_signal_to_exit": round(exit_seconds, 2),
    }


def resident_memory_mb(pid: int) -> dict:
    """VmRSS (now) and VmHWM (peak) of a process, in MiB (Linux)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return {"rss_mib": values.get("VmRSS"), "peak_rss_mib": values.get("VmHWM")}


def main(argv=None) -> None:
    """Start the server, run the clean and mixed phases, stop it, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-dir", default="/tmp/jbert-bench-inference/export",
                        help="export directory to serve (default: the one bench/inference.py builds)")
    parser.add_argument("--model", default="int8", help="fp32, optimized, int8 or default (default int8)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per phase (default 1000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--bad-every", type=int, default=4, help="in the mixed phase, every Nth request is malformed (default 4)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="server --max-wait-ms (default 5)")
    parser.add_argument("--sigterm-after-s", type=float, default=1.0, help="in the sigterm phase, seconds of load before SIGTERM (default 1)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for serve_onnx.py http, e.g. --server-arg=--ort-spinning")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)

    from inference import load_texts

    export_dir = Path(args.export_dir)
    if not (export_dir / "manifest.json").is_file():
        sys.exit(f"error: {export_dir} is not an export directory; run python bench/inference.py first or pass --export-dir")
    texts, source = load_texts()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    max_inputs, max_body = 64, 256 * 1024
    command = [sys.executable, str(REPO_ROOT / "serve_onnx.py"), "http", str(export_dir), "--port", str(port),
               "--model", args.model, "--log-level", "warning", "--max-wait-ms", str(args.max_wait_ms),
               "--max-client-batch-size", str(max_inputs), "--max-body-bytes", str(max_body), *args.server_arg]
    log("starting " + " ".join(command[1:]))
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                sys.exit("error: the server exited:\n" + server.stdout.read())
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit("error: the server did not answer /health within 120 s")
            time.sleep(0.2)
        idle_memory = resident_memory_mb(server.pid)
        # Warm-up (not measured): first calls allocate onnxruntime's buffers.
        for text in texts[:16]:
            httpx.post(f"{base}/v1/predict", json={"inputs": [text]}, timeout=60)
        log(f"clean phase: {args.requests} requests from {args.clients} clients")
        clean = asyncio.run(run_phase(port, texts, args.requests, args.clients, None, []))
        log(f"clean: {clean['throughput_requests_per_s']} req/s, p50 {clean['latency_ms']['p50']} ms, p99 {clean['latency_ms']['p99']} ms, errors {clean['errors']}")
        bad = malformed_requests(max_inputs, max_body)
        log(f"mixed phase: every {args.bad_every}th request malformed")
        mixed = asyncio.run(run_phase(port, texts, args.requests, args.clients, args.bad_every, bad))
        log(f"mixed: {mixed['throughput_requests_per_s']} req/s, malformed all 4xx: {mixed['malformed_all_4xx']}, errors {mixed['errors']}")
        health = httpx.get(f"{base}/health", timeout=10)
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        loaded_memory = resident_memory_mb(server.pid)
        def metric(prefix: str) -> float | None:
            return next((float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix)), None)

        batch_count, batch_sum = metric("jbert_batch_size_count"), metric("jbert_batch_size_sum")
        log(f"sigterm phase: {args.clients} clients, SIGTERM after {args.sigterm_after_s} s")
        sigterm = asyncio.run(run_sigterm_phase(port, server, texts, args.clients, args.sigterm_after_s))
        log(f"sigterm: {sigterm['status_counts']}, exit {sigterm['exit_code']} after {sigterm['seconds_signal_to_exit']} s")
        server_side = {
            "model_calls": batch_count,
            "inference_seconds_total": metric("jbert_inference_duration_seconds_sum"),
            "tokenization_seconds_total": metric("jbert_tokenization_duration_seconds_sum"),
            "predict_mean_latency_ms": round(1000 * metric('jbert_request_duration_seconds_sum{path="/v1/predict"}')
                                             / metric('jbert_request_duration_seconds_count{path="/v1/predict"}'), 1),
        }
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    report = {
        "benchmark": "http_load",
        "machine": {"logical_cpus": os.cpu_count(), "note": "clients and server share the machine"},
        "server": {"export_dir": str(export_dir), "model": args.model, "max_wait_ms": args.max_wait_ms, "extra_args": args.server_arg,
                   "memory_idle": idle_memory, "memory_after_load": loaded_memory,
                   "mean_texts_per_model_call": round(batch_sum / batch_count, 2) if batch_count else None,
                   "server_side": server_side},
        "data": source,
        "clean": clean,
        "mixed": mixed,
        "sigterm": sigterm,
        "healthy_after_mixed": health.status_code == 200,
        "passed": clean["errors"] == 0 and mixed["errors"] == 0 and mixed["malformed_all_4xx"] and health.status_code == 200
        and sigterm["unexpected_statuses"] == 0 and sigterm["exit_code"] == 0,
    }
    print(json.dumps(report, ensure_ascii=False, indent=2))
    write_json_out(args.json_out, "http_load", report, argv)


if __name__ == "__main__":
    main()
