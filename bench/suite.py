"""`make bench`: the issue's figures in one run. The floor (``bare_pipeline.py``: the bare durable work
of a top-up, on this machine, see its README) is measured first, then this project, back to back, so
that the two are compared within one run (the machine's own speed drifts a lot from day to day).
One table is printed and one JSON result kept in ``bench/results/bench-<UTC time>.json``.

    python -m bench.suite --floor-python .venv-floor/bin/python --floor-dir ../shared/floor
    python -m bench.suite --quick          # a smoke run: every size small, the figures meaningless

In this order: the floor's burst (``--floor-n`` top-ups, unpaced) and its steady load
(``--steady-topups`` at ``--steady-rate``/s); then the project's burst (``--topups`` webhooks, 500
users; its order phase gives orders/s, its end each service's resident memory), the same steady
load, the same burst with few and with many users, over ``--preload-rows`` top-ups of history, and
with two replicas of each service. The project's runs share one stack (databases and vhost), emptied
before each, each run with service processes of its own. A spread of two throughputs is
(higher - lower) / lower; the project's CPU figures are of its webhook phase (topup_bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from bench.topup_bench import Load, bench_stack, measure, reset, save_result
from tests.harness import REPO


@dataclass(frozen=True)
class Sizes:
    topups: int = 5000
    steady_rate: float = 200.0
    steady_topups: int = 3000
    preload_rows: int = 1_000_000
    floor_n: int = 20_000
    few_users: int = 10
    many_users: int = 10_000


QUICK = Sizes(topups=200, steady_rate=100.0, steady_topups=300, preload_rows=2000, floor_n=1000, many_users=1000)

# The targets.
BURST_RATIO = 0.5
STEADY_P99_MS = 50
STEADY_ANSWER_P99_MS = 10
ORDERS_PER_S = 500
RSS_MB = 100
FLAT_SPREAD_PCT = 10
REPLICAS_RATIO = 1.0

# The floor's process doing a service's part of the work: A takes the webhook and relays it, B
# credits it, C is the load generator (as this benchmark's own process is).
FLOOR_PROCESS = {
    "payments": "proc_A_ingress_relay_cpu_s",
    "crediting": "proc_B_consumer_cpu_s",
    "bench": "proc_C_loadgen_cpu_s",
}


@dataclass(frozen=True)
class Figure:
    figure: str
    target: str
    project: float | None
    floor: float | None = None
    met: bool | None = None  # None: no target, for information
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.project is None or not self.floor else round(self.project / self.floor, 2)


def run_floor(python: str, floor_dir: Path, *args: str) -> dict[str, Any]:
    """One run of the floor with ``args``: its JSON result (its own report is passed on)."""
    print(f"== floor: {' '.join(args)}", flush=True)
    completed = subprocess.run(
        [python, str(floor_dir / "bare_pipeline.py"), *args, "--runs", "1", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    print("\n".join(line for line in completed.stdout.splitlines() if not line.startswith("JSON ")), flush=True)
    if completed.returncode != 0:
        sys.exit(f"the floor failed (exit code {completed.returncode})")
    (result,) = (json.loads(line[5:]) for line in completed.stdout.splitlines() if line.startswith("JSON "))
    assert isinstance(result, dict)
    return result


async def run_project(sizes: Sizes) -> dict[str, dict[str, Any]]:
    burst = Load(sizes.topups)
    loads = {
        "burst": burst,
        "steady": Load(sizes.steady_topups, rate_per_s=sizes.steady_rate),
        "few_users": replace(burst, users=sizes.few_users),
        "many_users": replace(burst, users=sizes.many_users),
        "preloaded": replace(burst, preload_rows=sizes.preload_rows),
        "replicas": replace(burst, replicas=2),
    }
    results = {}
    async with bench_stack() as stack:
        for name, load in loads.items():
            print(f"== project: {name} {asdict(load)}", flush=True)
            await reset(stack)
            results[name] = await measure(stack, load)
    return results


async def server_versions() -> dict[str, Any]:
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        postgres = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    async with await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/") as amqp:
        assert amqp.transport is not None
        rabbitmq = amqp.transport.connection.server_properties.get("version")
    return {"postgresql": postgres, "rabbitmq": str(rabbitmq, "utf-8") if isinstance(rabbitmq, bytes) else rabbitmq}


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None),
        "python": platform.python_version(),
        **asyncio.run(server_versions()),
    }


def spread_pct(a: float, b: float) -> float:
    return round(100 * (max(a, b) - min(a, b)) / min(a, b), 1)


def figures(sizes: Sizes, floor: dict[str, dict[str, Any]], project: dict[str, dict[str, Any]]) -> list[Figure]:
    burst, steady = project["burst"], project["steady"]
    floor_burst, floor_steady = floor["burst"], floor["steady"]
    credits = burst["credits_per_s"]
    few, many = project["few_users"]["credits_per_s"], project["many_users"]["credits_per_s"]
    preloaded, replicated = project["preloaded"]["credits_per_s"], project["replicas"]["credits_per_s"]
    users_spread, rows_spread = spread_pct(few, many), spread_pct(credits, preloaded)
    steady_p99, answer_p99 = steady["time_to_credit_ms_p99"], steady["webhook_answer_ms_p99"]
    money_ok = all(result["money_ok"] for result in project.values())
    floor_ok = all(result["correct"] for result in floor.values())
    return [
        Figure(
            "burst credits/s",
            f">= {BURST_RATIO} x floor",
            credits,
            floor_burst["topups_per_s"],
            credits >= BURST_RATIO * floor_burst["topups_per_s"],
        ),
        Figure("burst webhooks answered/s", "", burst["webhooks_accepted_per_s"], floor_burst["http_accepts_per_s"]),
        Figure(
            "steady p99 time to credit, ms",
            f"<= {STEADY_P99_MS}",
            steady_p99,
            floor_steady["e2e_latency_ms"]["p99"],
            steady_p99 <= STEADY_P99_MS,
        ),
        Figure(
            "steady p99 webhook answered, ms",
            f"<= {STEADY_ANSWER_P99_MS}",
            answer_p99,
            floor_steady["http_latency_ms"]["p99"],
            answer_p99 <= STEADY_ANSWER_P99_MS,
        ),
        Figure(
            "orders with checkout/s",
            f">= {ORDERS_PER_S}",
            burst["orders_created_per_s"],
            met=burst["orders_created_per_s"] >= ORDERS_PER_S,
        ),
        *(
            Figure(f"RSS after burst, MB: {label}", f"<= {RSS_MB}", mb, met=mb <= RSS_MB)
            for label, mb in burst["rss_mb"].items()
        ),
        Figure(
            f"credits/s spread, {sizes.few_users} vs {sizes.many_users} users, %",
            f"<= {FLAT_SPREAD_PCT}",
            users_spread,
            met=users_spread <= FLAT_SPREAD_PCT,
            detail=f"{few} vs {many}",
        ),
        Figure(
            f"credits/s spread, empty vs {sizes.preload_rows} rows, %",
            f"<= {FLAT_SPREAD_PCT}",
            rows_spread,
            met=rows_spread <= FLAT_SPREAD_PCT,
            detail=f"{credits} vs {preloaded}",
        ),
        Figure(
            "credits/s, 2 replicas / 1",
            f">= {REPLICAS_RATIO}",
            round(replicated / credits, 2),
            met=replicated / credits >= REPLICAS_RATIO,
            detail=f"{replicated} vs {credits}",
        ),
        *(
            Figure(
                f"burst CPU-ms per top-up: {label}",
                "",
                ms,
                floor_cpu_ms(floor_burst, label),
            )
            for label, ms in burst["cpu_ms_per_topup"].items()
        ),
        Figure(
            "money adds up in every run",
            "yes",
            None,
            met=money_ok and floor_ok,
            detail=f"project {'yes' if money_ok else 'NO'}, floor {'yes' if floor_ok else 'NO'}",
        ),
    ]


def floor_cpu_ms(floor_burst: dict[str, Any], label: str) -> float | None:
    cpu = floor_burst["cpu"]
    if label == "machine":
        return float(cpu["machine_busy_cpu_ms_per_topup"])
    if label in FLOOR_PROCESS:
        return round(1000 * float(cpu[FLOOR_PROCESS[label]]) / int(floor_burst["n"]), 3)
    return None


def number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def table(rows: list[Figure]) -> str:
    cells = [("figure", "target", "project", "floor", "ratio", "met")]
    for row in rows:
        project = number(row.project)
        if row.detail:
            project = f"{project} ({row.detail})" if project else row.detail
        met = "" if row.met is None else "yes" if row.met else "no"
        cells.append((row.figure, row.target, project, number(row.floor), number(row.ratio), met))
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floor-python", default=str(REPO / ".venv-floor" / "bin" / "python"))
    parser.add_argument("--floor-dir", type=Path, default=REPO.parent / "shared" / "floor")
    parser.add_argument("--quick", action="store_true", help="every size small: a smoke run")
    for field in fields(Sizes):
        if field.name not in ("few_users", "many_users"):
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default))
    args = parser.parse_args()
    given = {field.name: getattr(args, field.name, None) for field in fields(Sizes)}
    sizes = replace(QUICK if args.quick else Sizes(), **{k: v for k, v in given.items() if v is not None})

    floor = {
        "burst": run_floor(args.floor_python, args.floor_dir, "--n", str(sizes.floor_n)),
        "steady": run_floor(
            args.floor_python, args.floor_dir, "--rate", f"{sizes.steady_rate:g}", "--n", str(sizes.steady_topups)
        ),
    }
    project = asyncio.run(run_project(sizes))
    rows = figures(sizes, floor, project)
    targets = [row.met for row in rows if row.met is not None]
    result = {
        "benchmark": "suite",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "sizes": asdict(sizes),
        "figures": [{**asdict(row), "ratio": row.ratio} for row in rows],
        "targets_met": sum(targets),
        "targets": len(targets),
        "floor": floor,
        "project": project,
    }
    print()
    print(table(rows))
    print(f"\ntargets met: {sum(targets)} of {len(targets)}")
    print(f"written to {save_result('bench', result)}")
    if not all(run["money_ok"] for run in project.values()):
        sys.exit("the project's money does not add up")


if __name__ == "__main__":
    main()
