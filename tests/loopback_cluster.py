"""A two-node Ray cluster on 127.0.0.1, started by `ray start` in separate
processes, and what the cluster tests do with it: run `search.run` on it,
read what a search wrote, find its trial processes.

test_search.py and test_search_recovery.py each start one, side by side on
the two test workers: each cluster gets its own ports (every port Ray would
otherwise take at its default), so neither takes the other's, nor those of
the notebook test's local Ray.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ray_env(tmp_root: Path, cache: Path) -> dict:
    env = dict(os.environ)
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp_root),
                "NUCJAX_CACHE": str(cache)})
    return env


def node_ports(port: int, node: int) -> list[str]:
    """A node's fixed ports, all above PORT: its workers' range and its agents'. Ray's
    defaults (workers from 10002, the agent on 52365) are the same for every cluster."""
    workers = 20_000 + (port - 6300) * 20 + node * 100  # ports 10 apart take ranges apart, below 32768
    agents = port + 10 + node * 10
    return ["--min-worker-port", str(workers), "--max-worker-port", str(workers + 99),
            "--dashboard-agent-listen-port", str(agents), "--dashboard-agent-grpc-port", str(agents + 1),
            "--runtime-env-agent-port", str(agents + 2), "--metrics-export-port", str(agents + 3)]


@contextmanager
def loopback_cluster(port: int, cache: Path):
    """Two Ray nodes on 127.0.0.1, one CPU each, told apart by a custom resource;
    yields the address and the environment the tests' commands run in."""
    # Ray's sockets live under its temp dir, and a socket's path may not pass 107 bytes: pytest's
    # per-worker folders are too deep for it.
    tmp_root = Path(tempfile.mkdtemp(prefix="nucjax-ray-"))
    env = ray_env(tmp_root, cache)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    try:
        ray_start(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(tmp_root),
                   "--resources", '{"head_node": 1}']
                  + node_ports(port, 0) + common, env)
        ray_start(["--address", f"127.0.0.1:{port}", "--resources", '{"second_node": 1}'] + node_ports(port, 1) + common, env)
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:  # a node that failed to start must not leave the other running
        stop_cluster(tmp_root)
        shutil.rmtree(tmp_root, ignore_errors=True)


def ray_start(flags: list[str], env: dict, attempts: int = 3) -> None:
    """`ray start`, tried again when it fails: on a loaded machine (the other test
    worker compiling) a node may miss its deadline to register."""
    for _ in range(attempts):
        done = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", *flags], env=env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return
    raise AssertionError(f"ray start {' '.join(flags)} failed:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")


def stop_cluster(tmp_root: Path) -> None:
    """Stop this cluster's Ray processes only: `ray stop` would stop every Ray
    cluster of the user on the machine, a search the user runs and the other
    test worker's cluster included."""
    import psutil

    ours = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_root) in " ".join(p.info["cmdline"] or [])]
    for process in ours:
        process.terminate()
    _, alive = psutil.wait_procs(ours, timeout=3)  # some Ray processes ignore SIGTERM: do not wait long
    for process in alive:
        process.kill()


def search(cluster, storage: Path, *flags, wait: bool = True, timeout: int = 300):
    command = [sys.executable, "-m", "search.run", "--address", cluster["address"], "--storage", str(storage),
               "--verbose", "0", *flags]
    process = subprocess.Popen(command, cwd=ROOT, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return process
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def results(storage: Path) -> list[dict]:
    with open(storage / "results.csv") as handle:
        return list(csv.DictReader(handle))


def progress(trial_dir: Path) -> list[dict]:
    path = trial_dir / "progress.csv"
    if not path.is_file():
        return []
    with open(path) as handle:
        return list(csv.DictReader(handle))


def wait_for(condition, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def trial_processes(cluster) -> list:
    """This cluster's trial processes: its workers inherit RAY_TMPDIR from `ray start`
    (a search the user runs beside the tests, and the other cluster's, are left alone)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if "ray::" in line and ("ImplicitFunc" in line or "run_trial" in line):
            try:
                if process.environ().get("RAY_TMPDIR") == cluster["env"]["RAY_TMPDIR"]:
                    found.append(process)
            except psutil.Error:
                continue
    return found
