"""Scoring service benchmark: featurelib REST and gRPC vs Feast's feature server + the model in
the client vs a one-process floor, end to end (features from Redis + XGBoost).

Set-up (untimed; cached under `benchmarks/.data/serving/`): a copy of `feature_repo/`
(definitions.py, feature_store.yaml, _feast_objects.py) with generated demo data
(`featurelib demo-data`), its training set, `feast apply`, and the demo model trained and
registered by `featurelib train` (XGBoost champion, scikit-learn challenger; routing sends every
request to the champion). Every run starts one throwaway Redis (`RedisProcess`) and
materializes the demo data up to READ_AT = 2013-12-31T12:20Z (untimed, ~7 s); both servers read
at that time (featurelib: `serve --now`; Feast: the plugin's `read_at`). Requests are real spine
rows (flights with prediction time 2013-12-31 11:00-23:00 UTC): keys carrier, origin, dest,
tailnum and request fields scheduled_departure, distance; service `flight_delay`, 63 features
(aggregation windows, plain views with TTL, on-demand features).

Engines (servers are real processes; each client runs in its own process):
1. `rest`: featurelib `POST /v2/models/flight_delay/infer` (Open Inference Protocol, JSON),
2. `grpc`: featurelib `ModelInfer` (same server process, default config: feature logging of
   every request, metrics, 16 gRPC threads),
3. `feast`: `feast serve` (Feast's defaults: 1 worker; access log off, as featurelib's) on the
   same repo and Redis (featurelib's Feast online store plugin), `POST /get-online-features`
   for the service, then the client runs the same model (`TrainedModel.predict`) on the
   returned values: what users build today,
4. `floor`: one process, no server: a redis-py pipeline with exactly the commands featurelib's
   read sends, msgpack decoding of every reply and `inplace_predict` on a float32 matrix
   prepared once (see `serving_engines.Floor` for what it does not do).

Load: closed loop, `c` clients each with at most one request in flight (c = 1 and 8), a fixed
number of requests per engine and case, run in lock-step rounds with the engine order
rotating, so that drift on the shared 2-core machine hits every engine alike. p50/p99 are over
all requests of all rounds; requests/s = requests / summed wall time of the engine's slices;
server CPU ms per request from /proc (featurelib: its process; Feast: gunicorn and its worker).
Predictions of rest, grpc and the Feast pipeline are compared before timing.

Usage:
    python benchmarks/serving.py              # default run (~6 min)
    BENCH_SERVE_CONFIG=serve.yaml python benchmarks/serving.py --quick   # featurelib settings
    python benchmarks/serving.py --quick      # smoke run (< 2 min)
    python benchmarks/serving.py --quick | tail -n 1 | python -m json.tool > /dev/null

The last line of the output is a JSON object with the figures, ratios and target verdicts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# This file's name shadows the `serving` package while its directory is on sys.path: import
# the package first (the spawned client processes run this again), then put the directory
# back for the sibling modules.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
importlib.import_module("serving.registry")
sys.path.append(_HERE)

from offline_pit import code_version, machine_info  # noqa: E402
from pit_engines import verdict_lines, verdicts  # noqa: E402
from serving_engines import (  # noqa: E402
    READ_AT,
    engine_worker,
    ensure_repo,
    process_tree_cpu_s,
    request_rows,
    start_feast,
    start_featurelib,
    wait_http,
)

HERE = Path(__file__).resolve().parent
ENGINES = ("rest", "grpc", "feast", "floor")
TARGETS = {
    "p99_ms_c8_1entity": ("<=", 5.0),
    "throughput_vs_feast_c8": (">=", 5.0),
    "p99_ratio_vs_feast_c8": ("<=", 0.2),
    "p50_ratio_vs_floor_c1": ("<=", 2.0),
}


def say(message: str) -> None:
    print(message, flush=True)


class Worker:
    """An engine's client process (serving_engines.engine_worker) and its pipe."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.name = name
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=engine_worker, args=(name, params, child), daemon=True)
        self.process.start()
        self.error: str | None = None
        self._expect("ready")

    def _expect(self, kind: str, timeout: float = 300.0) -> Any:
        if not self.conn.poll(timeout):
            self.error = f"no answer within {timeout:.0f}s"
            return None
        msg = self.conn.recv()
        if msg[0] == "error":
            self.error = msg[1]
            return None
        assert msg[0] == kind, msg
        return msg[1] if len(msg) > 1 else None

    def ask(self, kind: str, *args: Any, timeout: float = 300.0) -> Any:
        if self.error:
            return None
        self.conn.send((kind, *args))
        return self._expect({"case": "ok", "run": "res", "answers": "answers"}[kind], timeout)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("quit",))
                self.process.join(10)
            except (OSError, BrokenPipeError):
                pass
        if self.process.is_alive():
            self.process.kill()


def percentiles(lat_ns: list[int]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(lat_ns, dtype=np.float64) / 1e6
    p = np.percentile(ms, [50, 90, 99, 99.9])
    return {
        "p50_ms": round(float(p[0]), 3),
        "p90_ms": round(float(p[1]), 3),
        "p99_ms": round(float(p[2]), 3),
        "p999_ms": round(float(p[3]), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def run_case(
    workers: dict[str, Worker],
    servers: dict[str, int],
    size: int,
    concurrency: int,
    total: int,
    rounds: int,
) -> dict[str, Any]:
    """All engines on one case, in lock-step rounds with rotating order."""
    live = {n: w for n, w in workers.items() if not w.error}
    for name, w in live.items():
        w.ask("case", size, total, concurrency)
        if w.error:
            say(f"  {name}: FAILED preparing: {w.error[-800:]}")
    live = {n: w for n, w in live.items() if not w.error}
    per = max(1, total // rounds)
    acc: dict[str, dict[str, Any]] = {
        n: {"lat": [], "failures": 0, "wall_s": 0.0, "cpu_s": 0.0, "p50s": []} for n in live
    }
    order = list(live)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            pid = servers.get(name)
            cpu0 = process_tree_cpu_s(pid) if pid else 0.0
            res = live[name].ask("run", concurrency, r * per, (r + 1) * per)
            if res is None:
                say(f"  {name}: FAILED: {(live[name].error or '')[-800:]}")
                continue
            a = acc[name]
            a["cpu_s"] += (process_tree_cpu_s(pid) - cpu0) if pid else 0.0
            a["lat"] += res["lat"]
            a["failures"] += res["failures"]
            a["errors"] = (a.get("errors") or []) + res.get("errors", [])
            a["wall_s"] += res["wall_s"]
            a["p50s"].append(statistics.median(res["lat"]) / 1e6 if res["lat"] else None)
    out: dict[str, Any] = {}
    for name, a in acc.items():
        if not a["lat"]:
            out[name] = {"error": live[name].error or "no requests"}
            continue
        n = len(a["lat"])
        out[name] = {
            **percentiles(a["lat"]),
            "requests": n,
            "failures": a["failures"],
            "requests_per_s": round(n / a["wall_s"], 1),
            # None when a server process was replaced meanwhile (a restarted Feast worker's
            # CPU time leaves the process tree).
            "server_cpu_ms_per_request": (
                round(a["cpu_s"] * 1000 / n, 3) if servers.get(name) and a["cpu_s"] > 0 else None
            ),
            "round_p50_ms": [round(x, 3) for x in a["p50s"] if x is not None],
            "error_samples": sorted(set(a.get("errors") or []))[:3],
        }
    return out


def check_answers(workers: dict[str, Worker], count: int) -> dict[str, Any]:
    """Predictions of the first `count` one-row requests: rest vs grpc vs the Feast pipeline."""
    answers = {}
    for name in ("rest", "grpc", "feast"):
        w = workers.get(name)
        if w is None or w.error:
            continue
        w.ask("case", 1, count, 1)
        got = w.ask("answers", count)
        if got is not None:
            answers[name] = got
    out: dict[str, Any] = {"requests": count}
    ref = answers.get("rest")
    for name, values in answers.items():
        if name == "rest" or ref is None:
            continue
        diff = max((abs(a - b) for a, b in zip(ref, values, strict=True)), default=0.0)
        out[f"rest_vs_{name}_max_abs_diff"] = round(diff, 9)
        out[f"rest_vs_{name}_equal"] = diff <= 1e-6
    return out


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def figures_of(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    f: dict[str, Any] = {}
    for case, per in results.items():
        for engine, s in per.items():
            if "error" in s:
                continue
            f[f"p50_ms_{engine}_{case}"] = s["p50_ms"]
            f[f"p99_ms_{engine}_{case}"] = s["p99_ms"]
            f[f"rps_{engine}_{case}"] = s["requests_per_s"]

    def get(case: str, engine: str, key: str) -> float | None:
        value = results.get(case, {}).get(engine, {}).get(key)
        return None if value is None else float(value)

    f["p99_ms_c8_1entity"] = get("1x_c8", "rest", "p99_ms")
    f["p99_ms_c8_1entity_grpc"] = get("1x_c8", "grpc", "p99_ms")
    f["throughput_vs_feast_c8"] = div(
        get("1x_c8", "rest", "requests_per_s"), get("1x_c8", "feast", "requests_per_s")
    )
    f["throughput_vs_feast_c8_grpc"] = div(
        get("1x_c8", "grpc", "requests_per_s"), get("1x_c8", "feast", "requests_per_s")
    )
    f["p99_ratio_vs_feast_c8"] = div(
        get("1x_c8", "rest", "p99_ms"), get("1x_c8", "feast", "p99_ms")
    )
    f["p99_ratio_vs_feast_c8_grpc"] = div(
        get("1x_c8", "grpc", "p99_ms"), get("1x_c8", "feast", "p99_ms")
    )
    f["p50_ratio_vs_floor_c1"] = div(
        get("1x_c1", "rest", "p50_ms"), get("1x_c1", "floor", "p50_ms")
    )
    f["p50_ratio_vs_floor_c1_grpc"] = div(
        get("1x_c1", "grpc", "p50_ms"), get("1x_c1", "floor", "p50_ms")
    )
    f["p50_ratio_vs_feast_c1"] = div(
        get("1x_c1", "rest", "p50_ms"), get("1x_c1", "feast", "p50_ms")
    )
    for case in ("100x_c1", "100x_c8"):
        f[f"p50_ratio_vs_feast_{case}"] = div(
            get(case, "rest", "p50_ms"), get(case, "feast", "p50_ms")
        )
        f[f"p50_ratio_vs_floor_{case}"] = div(
            get(case, "rest", "p50_ms"), get(case, "floor", "p50_ms")
        )
    return {k: v for k, v in f.items() if v is not None}


def report(results: dict[str, dict[str, Any]], figures: dict[str, Any]) -> None:
    say("\n== latency per request (ms) and throughput, all rounds ==")
    for case, per in results.items():
        for engine, s in per.items():
            if "error" in s:
                say(f"{case:<8} {engine:<6} FAILED: {s['error'][-300:]}")
                continue
            cpu = s["server_cpu_ms_per_request"]
            say(
                f"{case:<8} {engine:<6} p50 {s['p50_ms']:7.3f}  p90 {s['p90_ms']:7.3f}  p99 "
                f"{s['p99_ms']:7.3f}  max {s['max_ms']:8.3f}  {s['requests_per_s']:8.1f} req/s  "
                f"failed {s['failures']}/{s['requests']}"
                + (f"  server CPU {cpu:.3f} ms/req" if cpu is not None else "")
            )
    say("\n== ratios ==")
    for key, value in figures.items():
        if "ratio" in key or "throughput" in key:
            say(f"{key:<36} {value}")
    for line in verdict_lines(figures, TARGETS):
        say(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 2 min)")
    parser.add_argument("--requests-c1", type=int, default=None, help="per engine, 1 client")
    parser.add_argument("--requests-c8", type=int, default=None, help="per engine, 8 clients")
    parser.add_argument("--rounds", type=int, default=None, help="lock-step rounds per case")
    parser.add_argument("--no-100", action="store_true", help="skip the 100-entity cases")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    parser.add_argument("--data-root", default=str(HERE / ".data" / "serving"))
    args = parser.parse_args()
    n1 = args.requests_c1 or (300 if args.quick else 2000)
    n8 = args.requests_c8 or (800 if args.quick else 4000)
    rounds = args.rounds or (3 if args.quick else 8)
    engines = [e for e in args.engines.split(",") if e in ENGINES]
    cases = [("1x_c1", 1, 1, n1), ("1x_c8", 1, 8, n8)]
    if not args.no_100:
        cases += [("100x_c1", 100, 1, max(40, n1 // 10)), ("100x_c8", 100, 8, max(80, n8 // 10))]

    from featurelib.online.server import free_port
    from featurelib.online.testing import RedisProcess

    started = time.perf_counter()
    load_before, version_before = os.getloadavg(), code_version()
    root = Path(args.data_root).resolve()
    logs = root / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    procs: list[Any] = []
    workers: dict[str, Worker] = {}
    try:
        with RedisProcess() as redis_server:
            setup = ensure_repo(HERE.parent / "feature_repo", root, redis_server.url, say)
            repo = setup["repo"]
            ports = {"http_port": free_port(), "grpc_port": free_port(), "feast_port": free_port()}
            servers: dict[str, int] = {}
            if "rest" in engines or "grpc" in engines:
                say("starting featurelib serve (REST + gRPC)")
                fl = start_featurelib(
                    repo, redis_server.url, ports["http_port"], ports["grpc_port"],
                    logs / "featurelib_serve.log",
                )  # fmt: skip
                procs.append(fl)
                wait_http(ports["http_port"], "/v2/health/ready", fl, logs / "featurelib_serve.log")
                servers["rest"] = servers["grpc"] = fl.pid
            if "feast" in engines:
                say("starting feast serve")
                fe = start_feast(repo, ports["feast_port"], logs / "feast_serve.log")
                procs.append(fe)
                wait_http(ports["feast_port"], "/health", fe, logs / "feast_serve.log")
                servers["feast"] = fe.pid
            rows = request_rows(repo)
            params = {"repo": str(repo), "rows": rows, "redis_url": redis_server.url, **ports}
            say(f"{len(rows)} request rows; engines {engines}; starting client processes")
            for name in engines:
                workers[name] = Worker(name, params)
                if workers[name].error:
                    say(f"  {name}: FAILED to start: {workers[name].error[-800:]}")
            checks = check_answers(workers, 50)
            say(f"result check: {checks}")
            results: dict[str, dict[str, Any]] = {}
            for case, size, concurrency, total in cases:
                say(
                    f"case {case}: {size} entities/request, {concurrency} clients, {total} "
                    f"requests per engine in {rounds} rounds"
                )
                t0 = time.perf_counter()
                results[case] = run_case(workers, servers, size, concurrency, total, rounds)
                for engine, s in results[case].items():
                    if "error" not in s:
                        say(
                            f"  {engine:<6} p50 {s['p50_ms']:7.3f} ms  p99 {s['p99_ms']:7.3f} ms"
                            f"  {s['requests_per_s']:8.1f} req/s  failed {s['failures']}"
                        )
                say(f"  ({time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.2f})")
    finally:
        for w in workers.values():
            w.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except Exception:
                    p.kill()
    figures = figures_of(results)
    report(results, figures)
    summary = {
        "benchmark": "serving",
        "quick": args.quick,
        **{k: figures.get(k) for k in TARGETS},
        "targets": verdicts(figures, TARGETS),
        "figures": figures,
        "results": {
            case: {e: {k: v for k, v in s.items() if k != "round_p50_ms"} for e, s in per.items()}
            for case, per in results.items()
        },
        "checks": checks,
        "setup": {**{k: v for k, v in setup.items() if k != "repo"}, "repo": str(repo)},
        "read_at": READ_AT.isoformat(),
        "requests": {"c1": n1, "c8": n8, "rounds": rounds, "rows_pool": len(rows)},
        "wall_s": round(time.perf_counter() - started, 1),
        "code": {"before": version_before, "after": code_version()},
        "machine": {
            **machine_info(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(json.dumps(summary, separators=(",", ":"), default=str))


if __name__ == "__main__":
    sys.exit(main())
