"""Where each service's time goes during a benchmark: py-spy attached to every service process for
the webhook phase (``python -m bench.topup_bench --profile DIR``), its raw samples kept in
``DIR/<process>.txt`` (folded stacks: open them in speedscope or flamegraph.pl), and a summary by
library and by our own functions.

py-spy counts a sample whenever the thread is not idle, including while it is runnable but waiting
for a core; on a saturated machine the leaf where a process was preempted (a socket write) is
over-counted, so the summary leaves those leaves out."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# The leaf frames where a saturated process waits for a core rather than works.
WAITING_LEAVES = ("_SelectorSocketTransport.write (asyncio/selector_events.py", "EpollSelector.select (")
LIBRARIES = {
    "asyncpg": "asyncpg",
    "aiormq": "amqp",
    "aio_pika": "amqp",
    "pamqp": "amqp",
    "aiohttp": "aiohttp",
    "pydantic": "pydantic",
    "structlog": "logging",
    "prometheus_client": "metrics",
    "json": "json",
    "hmac": "hmac",
}
OUR_CODE = re.compile(r"\((?:/\S*/)?(?:services|shared)/")


@contextlib.contextmanager
def profiling(pids: dict[str, int], out_dir: Path) -> Iterator[None]:
    """py-spy on each of ``pids`` (label: pid) while the block runs; its samples in ``out_dir``."""
    # The virtualenv's own (a dev dependency) when its bin/ is not on PATH.
    py_spy = shutil.which(
        "py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    assert py_spy is not None, "py-spy is not installed (pip install py-spy)"
    out_dir.mkdir(parents=True, exist_ok=True)
    recorders = []
    for label, pid in pids.items():
        output = str(out_dir / f"{label}.txt")
        command = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "--nonblocking"]
        recorders.append(
            subprocess.Popen([*command, "--output", output], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for recorder in recorders:
            recorder.wait(30)


def summarize(samples_file: Path, top: int = 12) -> dict[str, object]:
    """Shares (%) of a process's working samples: by library (the innermost one on the stack) and,
    inclusively, by our own functions."""
    libraries: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in samples_file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or frames[-1].startswith(WAITING_LEAVES):
            continue
        n = int(count)
        total += n
        libraries[_library(frames)] += n
        for function in {re.sub(r":\d+\)$", ")", f) for f in frames if OUR_CODE.search(f)}:
            functions[function] += n

    def shares(counter: Counter[str], limit: int | None = None) -> dict[str, float]:
        return {key: round(100 * n / total, 1) for key, n in counter.most_common(limit)}

    return {"samples": total, "by_library": shares(libraries), "our_functions": shares(functions, top)} if total else {}


def _library(frames: list[str]) -> str:
    for frame in reversed(frames):
        for module, library in LIBRARIES.items():
            if f"{module}/" in frame or f"({module}.py" in frame:
                return library
    return "event loop and the rest"
