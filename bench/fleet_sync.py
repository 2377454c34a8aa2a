"""Benchmark: what a fleet's sync costs its Git host, registry and store, at 50, 200 and 500 real agents.

Every agent is the site's own agent code (serving/agent.py): the desired state fetched with
dulwich over SSH from one sshd (the Git host, one key per site in its authorized_keys, as
gitolite keeps them), bundles pulled by digest from one OCI registry (Debian's docker-registry)
and verified, sample windows uploaded over SFTP to a second sshd (the store, one chrooted
account per site). Agents share worker processes (threads) and load no ONNX Runtime session:
the bundle is verified as a site does and not served. Two ways of syncing run side by side:

- `fetch`: today's agent before the change hint: a Git fetch (SSH handshake and negotiation)
  every interval, the interval exact;
- `hint`: the agent asks the change hint's digest (one HTTP HEAD on a kept-alive connection) and
  fetches only when it moved or its full sync is due; intervals ±20 %.

For each size and way: an idle window (nothing changes: the servers' CPU per sync, the agents'
CPU per sync, bytes their sockets sent and received per sync and per window shipped, errors), then
the waves of the example rollout policy one commit each (a canary of one, half the rest, the rest:
the time until each site of the wave applied it), then a rollback of every site in one commit (the
worst case: the whole fleet at once, from the sites' caches). Sync errors are counted by phase
(warm-up, idle, rollout waves, rollback of all). Written to bench/results/fleet_sync.json.

    .venv/bin/python -m bench.fleet_sync [--sizes 50 200 500] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "fleet_sync.json"
MODES = ("fetch", "hint")
WINDOW_BYTES = 16_384  # one sample window: a few hundred rows of sensor readings as Parquet
# sshd's default 10:30:100 drops new connections at random once ten are unauthenticated: with 500 agents
# fetching every 10 s it refused 970 connections in a minute (the controller's pushes too). A Git host or
# SFTP store for a fleet raises it (README, "Scaling")
SSHD_MAX_STARTUPS = "200:30:1000"
AGENT_NICE = 10  # without CPU groups, the agents' worker processes yield these cores to the servers (worker())


# -- what the servers spend --------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU ticks of the process and of its reaped children) from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[1]), sum(float(f) for f in fields[11:15])


def tree(root: int) -> dict[int, float]:
    """The process `root` and all its live descendants, with their CPU ticks (theirs and their reaped children's)."""
    procs = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in procs and pid not in found:
            found[pid] = procs[pid][1]
            frontier += [child for child, (parent, _) in procs.items() if parent == pid]
    return found


def cpu_seconds(root: int) -> float:
    """CPU a server has spent so far, its connection handlers and their git, shell and SFTP processes included:
    a process that ended was reaped by its parent, whose children's time counts it."""
    return sum(tree(root).values()) / os.sysconf("SC_CLK_TCK")


CGROUPS = Path("/sys/fs/cgroup/cpuacct")  # cgroup v1 accounting, writable here as root
CPU_GROUPS = Path("/sys/fs/cgroup/cpu")  # cgroup v1 CPU weights (cpu.shares)


def join_group(hierarchy: Path, name: str, pid: int) -> Path | None:
    """A cgroup of its own for `pid` (and every process it starts from now on) in `hierarchy`; None where
    this machine does not let us make one."""
    group = hierarchy / f"edgewave-bench-{name}-{os.getpid()}"
    try:
        group.mkdir(exist_ok=True)
        (group / "cgroup.procs").write_text(str(pid))
        return group
    except OSError:
        leave_group(group)
        return None


def leave_group(group: Path | None) -> None:
    """Move what still runs in `group` back to its hierarchy's root and remove the group."""
    if group is None or not group.exists():
        return
    for pid in (group / "cgroup.procs").read_text().split():
        try:
            (group.parent / "cgroup.procs").write_text(pid)
        except OSError:
            pass  # ended meanwhile
    try:
        group.rmdir()
    except OSError:
        pass  # a process still in it (it ends with its server)


class CpuMeter:
    """CPU a server has spent, every process it started included. In a cgroup of its own (cpuacct) when
    this machine lets us make one: exact, whatever lived and died in it. Else from its process tree in
    /proc, which misses a child that ended while its parent had not yet waited for it.

    Each server also gets a CPU group of its own at the default weight, as systemd gives every service
    (CPUWeight=100): sharing one run queue, the Git host's sshd sessions of a rollback of every site at
    once (180 runnable processes) starved the registry for over 15 s, and hint HEADs and the controller's
    hint pushes timed out, a cost of three servers on two cores that servers on their own hosts (or in
    their own systemd units) do not pay."""

    def __init__(self, name: str, pid: int) -> None:
        self.pid = pid
        self.group = join_group(CGROUPS, name, pid)
        self.weight = join_group(CPU_GROUPS, name, pid)

    @property
    def how(self) -> str:
        return "cgroup cpuacct" if self.group else "process tree"

    def seconds(self) -> float:
        if self.group is not None:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        return cpu_seconds(self.pid)

    def close(self) -> None:
        leave_group(self.group)
        leave_group(self.weight)


def pss_mb(root: int) -> float:
    """Proportional memory of a server's process tree (shared pages split, unlike RSS)."""
    total = 0
    for pid in tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- the agents' side (worker processes) ------------------------------------------------------------
class VerifyingSlot:
    """A site's model slot without ONNX Runtime: the bundle is verified (signature, hashes) as a site
    does before it swaps, and nothing is loaded."""

    def __init__(self) -> None:
        self.current = None

    def swap(self, folder: Path, trusted):
        from edgewave.serving.bundle import verify_bundle

        manifest = verify_bundle(folder, trusted)
        self.current = SimpleNamespace(version=manifest.version, sha256=manifest.model.sha256)
        return self.current


class Windows:
    """Stands in for the sampler: a finished window of WINDOW_BYTES every `seconds`, the first one
    after a random part of it (sites do not start their windows together)."""

    def __init__(self, folder: Path, seconds: float, offset: float) -> None:
        self.folder, self.seconds = folder, seconds
        self.next = time.time() + offset
        folder.mkdir(parents=True, exist_ok=True)

    def windows(self) -> list[Path]:
        now = time.time()
        if now >= self.next:
            (self.folder / f"{int(now * 1000)}.parquet").write_bytes(os.urandom(WINDOW_BYTES))
            self.next += self.seconds
        return sorted(self.folder.glob("*.parquet"))


def count_socket_bytes() -> dict[int, int]:
    """Count what this process's sockets send and receive from now on, by the server's port (payload
    both ways: paramiko, dulwich and requests all go through these methods)."""
    import socket
    import weakref

    by_port: dict[int, int] = {}
    ports: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def counted(method, size):
        def wrapper(self, *args, **kwargs):
            result = method(self, *args, **kwargs)
            port = ports.get(self)
            if port is None:
                try:
                    port = ports.setdefault(self, self.getpeername()[1])
                except (OSError, IndexError, TypeError):
                    port = 0
            with lock:
                by_port[port] = by_port.get(port, 0) + size(args, result)
            return result
        return wrapper

    def sent(args, result) -> int:
        return result if isinstance(result, int) else len(args[0])  # sendall answers None

    socket.socket.send = counted(socket.socket.send, sent)
    socket.socket.sendall = counted(socket.socket.sendall, sent)
    socket.socket.recv = counted(socket.socket.recv, lambda args, result: len(result))
    socket.socket.recv_into = counted(socket.socket.recv_into, lambda args, result: result)
    return by_port


def worker(spec_path: Path) -> None:
    """Run the agents of one worker process until told to stop; answer `snapshot` with its counters."""
    import logging
    import random

    from edgewave.serving import agent as agent_module
    from edgewave.serving.access import RemoteAccess
    from edgewave.serving.bundle import parse_public_keys
    from edgewave.serving.metrics import SiteMetrics
    from edgewave.serving.model import BundleCache
    from edgewave.serving.oci import HintWatcher

    spec = json.loads(spec_path.read_text())
    # The agents stand in for hundreds of other machines. At nice 0 and in the servers' run queue their
    # threads (125 per worker, each a runnable thread to the scheduler) took the servers' share of these
    # two cores: the registry answered hint HEADs after more than 15 s during the start. Where the bench
    # can make CPU groups, the agents' own group ("sites") weighs them against the servers and this nice
    # no longer does (nice weighs threads within one group); it is what keeps the servers first where no
    # group can be made.
    os.nice(AGENT_NICE)
    traffic = count_socket_bytes()
    logging.basicConfig(filename=spec["log"], level=logging.WARNING, format="%(asctime)s %(threadName)s %(message)s")
    if spec["mode"] == "fetch":
        agent_module.HEALTHY_JITTER = 0.0  # the agent before the change: every interval exactly
    trusted = parse_public_keys(spec["trusted"])
    agents = []
    for site in spec["sites"]:
        folder = Path(site["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        access = RemoteAccess(ssh_key=Path(site["key"]), known_hosts=Path(spec["known_hosts"]))
        hint = HintWatcher(spec["hint"], site["id"], access) if spec["mode"] == "hint" else None
        agent = agent_module.Agent(
            site["id"], folder, spec["remote"], site["store"], VerifyingSlot(), BundleCache(folder / "bundles"),
            trusted, SiteMetrics(site["id"]), Windows(folder / "windows", spec["window_seconds"],
                                                       random.uniform(0, spec["window_seconds"])),
            spec["interval"], access, hint=hint)
        agent.thread_name = f"agent-{site['id']}"
        agents.append((site["start_at"], agent))

    def start_in_turn() -> None:  # spread at --start-rate agents a second
        for start_at, agent in sorted(agents, key=lambda pair: pair[0]):
            time.sleep(max(0.0, start_at - time.time()))
            agent.start()

    threading.Thread(target=start_in_turn, daemon=True).start()

    def snapshot() -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        syncs = {"fetched": 0.0, "unchanged": 0.0}
        errors: dict[str, float] = {}
        for _, agent in agents:
            for kind in syncs:
                syncs[kind] += agent.metrics.agent_syncs.labels(kind)._value.get()
            for metric in agent.metrics.agent_errors.collect():
                for sample in metric.samples:
                    if sample.name.endswith("_total") and sample.value:
                        errors[sample.labels["kind"]] = errors.get(sample.labels["kind"], 0) + sample.value
        ports = spec["ports"]
        traffic_now = {name: traffic.get(port, 0) for name, port in ports.items()}
        return {"cpu_s": usage.ru_utime + usage.ru_stime, "bytes": traffic_now, "syncs": syncs, "errors": errors,
                "windows": sum(a.metrics.windows_shipped._value.get() for _, a in agents)}

    for line in sys.stdin:
        if line.strip() == "stop":
            for _, agent in agents:
                agent._stop.set()
            for _, agent in agents:
                agent.stop()
        print(json.dumps(snapshot()), flush=True)
        if line.strip() == "stop":
            return


class Workers:
    """The worker processes of one run, asked for counters all at once."""

    def __init__(self, specs: list[Path]) -> None:
        self.processes = [subprocess.Popen([sys.executable, "-m", "bench.fleet_sync", "--worker", str(spec)],
                                           cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                           start_new_session=True) for spec in specs]
        # the sites stand in for other machines: one CPU group for them all beside each server's (CpuMeter)
        self.groups = {join_group(CPU_GROUPS, "sites", process.pid) for process in self.processes}

    def ask(self, command: str = "snapshot") -> dict:
        answers = []
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(command + "\n")
            process.stdin.flush()
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {process.pid} exited ({process.poll()}); see its log")
            answers.append(json.loads(line))
        total = {"cpu_s": sum(a["cpu_s"] for a in answers), "windows": sum(a["windows"] for a in answers),
                 "bytes": {k: sum(a["bytes"][k] for a in answers) for k in answers[0]["bytes"]},
                 "syncs": {k: sum(a["syncs"][k] for a in answers) for k in ("fetched", "unchanged")}, "errors": {}}
        for answer in answers:
            for kind, n in answer["errors"].items():
                total["errors"][kind] = total["errors"].get(kind, 0) + n
        return total

    def stop(self) -> dict:
        try:
            return self.ask("stop")
        finally:
            for process in self.processes:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    process.wait(10)
            for group in self.groups:
                leave_group(group)


# -- one run ---------------------------------------------------------------------------------------
def applied(site_dir: Path, version: int) -> float | None:
    """When the site's agent applied `version` (its own record), None if it has not."""
    try:
        record = json.loads((site_dir / "applied.json").read_text())
    except (OSError, ValueError):
        return None
    return float(record["applied_at"]) if record.get("version") == version else None


def wait_until(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        time.sleep(0.5)
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def push_through(controller, states, message: str, attempts: int = 10) -> int:
    """Commit and push as the rollout does, retrying when the Git host refuses the connection (an sshd
    over its MaxStartups drops new connections at random, the controller's too: the rollout's task
    retries do the same); returns the attempts it took."""
    from edgewave.tasks.rollout.gitops import GitError

    for attempt in range(1, attempts + 1):
        try:
            controller.commit(states, message)
            return attempt
        except GitError:
            if attempt == attempts:
                raise
            time.sleep(attempt)
    return attempts


def policy_waves(sites: list[str]) -> list[tuple[str, list[str]]]:
    """The waves the example rollout policy (deployments/fleet.yaml: a canary of one, half the rest, the
    rest) makes of these sites, planned by the controller's own planner."""
    from edgewave.tasks.platform.fleetfile import Fleet, load_fleet_file, plan_waves

    policy = load_fleet_file(ROOT / "deployments" / "fleet.yaml").rollout
    fleet = Fleet.model_validate({"sites": [{"id": site, "kind": "agent", "metrics_url": f"http://127.0.0.1:9/{site}"}
                                            for site in sites]})
    return plan_waves(fleet, policy)


def wave_times(name: str, wave: list[str], version: int, committed: float, attempts: int, work: Path,
               interval: float) -> dict:
    """How long after its commit each site of a wave applied `version` (p50, p99, max)."""
    times = [t - committed for s in wave if (t := applied(work / "sites" / s, version)) is not None]
    p99 = percentile(times, 99) if times else None
    return {"wave": name, "sites": len(wave), "applied": len(times),
            "p50_s": round(percentile(times, 50), 2) if times else None,
            "p99_s": round(p99, 2) if p99 is not None else None, "max_s": round(max(times), 2) if times else None,
            "within_two_intervals": len(times) == len(wave) and p99 is not None and p99 <= 2 * interval,
            "controller_commit_attempts": attempts}


def servers_cpu(env: SimpleNamespace) -> tuple[float, float, float]:
    """CPU seconds so far of the Git host, the store and the registry."""
    return env.meters["git"].seconds(), env.meters["store"].seconds(), env.meters["registry"].seconds()


def errors_between(earlier: dict, later: dict) -> dict[str, int]:
    return {k: int(v - earlier.get(k, 0)) for k, v in later.items() if v - earlier.get(k, 0)}


def one_run(n: int, mode: str, env: SimpleNamespace, args) -> dict:
    from edgewave.serving.access import RemoteAccess
    from edgewave.serving.desired import DesiredState
    from edgewave.tasks.rollout.gitops import DesiredStateRepo

    work = env.work / f"{mode}-{n}"
    sites = env.sites[:n]
    hint = f"oci://{env.registry}/edgewave/desired-state:{mode}-{n}"
    controller = DesiredStateRepo(env.git.git_url(), work / "controller", RemoteAccess(
        ssh_key=env.git.controller.key, known_hosts=env.known_hosts), hint=hint if mode == "hint" else None).ensure()

    def states(version: int, chosen: list[str], rollback: bool = False) -> list[DesiredState]:
        return [DesiredState(site=site, model="machine-failure", version=version, bundle_url=env.bundle_urls[version],
                             sha256=env.sha, rollout_id=f"bench-{mode}-{n}-v{version}", rollback=rollback)
                for site in chosen]

    push_through(controller, states(1, sites), f"bench {mode} {n}: every site on v1")
    workers_n = min(args.workers, n)
    start_over = max(args.interval, n / args.start_rate)
    began = time.time() + 2
    specs = []
    for w in range(workers_n):
        spec = work / f"worker-{w}.json"
        spec.write_text(json.dumps({
            "mode": mode, "remote": env.git.git_url(), "hint": hint, "interval": args.interval,
            "ports": {"git": env.git.port, "store": env.store.port, "registry": int(env.registry.rsplit(":", 1)[1])},
            "window_seconds": args.window_seconds, "known_hosts": str(env.known_hosts), "trusted": env.trusted,
            "log": str(work / f"worker-{w}.log"),
            "sites": [{"id": site, "dir": str(work / "sites" / site), "key": str(env.git.sites[site].key),
                       "store": env.store.store_url(env.store.sites[site]),
                       "start_at": began + start_over * k / n} for k, site in enumerate(sites) if k % workers_n == w],
        }))
        specs.append(spec)
    workers = Workers(specs)
    try:
        warm = wait_until(lambda: all(applied(work / "sites" / s, 1) for s in sites), 60 + n * 0.5,
                          f"{n} agents on v1 ({mode})")
        time.sleep(args.interval)  # every agent past its first cycles: what follows is the steady state
        before = (workers.ask(), *servers_cpu(env), time.monotonic())
        time.sleep(args.idle_seconds)
        after = (workers.ask(), *servers_cpu(env), time.monotonic())
        memory = {"git_host_pss_mb": round(pss_mb(env.git.process.pid), 1),
                  "store_pss_mb": round(pss_mb(env.store.process.pid), 1)}
        idle = idle_costs(before, after)

        # the rollout's waves one after another (v2), then a rollback of every site at once (v1, from the cache)
        steps = [(name, wave, 2, False) for name, wave in policy_waves(sites)] + [("rollback of all", sites, 1, True)]
        waves = []
        before_rollback = after[0]
        for name, wave, version, rollback in steps:
            if rollback:
                before_rollback = workers.ask()
            committed = time.time()
            attempts = push_through(controller, states(version, wave, rollback), f"bench {mode} {n}: {name} on v{version}")
            try:
                wait_until(lambda wave=wave, version=version: all(applied(work / "sites" / s, version) for s in wave),
                           args.interval * 6,
                           f"{name}: {len(wave)} agents on v{version} ({mode})")
            except TimeoutError:
                pass  # reported as sites that did not apply it
            waves.append(wave_times(name, wave, version, committed, attempts, work, args.interval))
        final = workers.stop()
    except BaseException:
        for process in workers.processes:
            if process.poll() is None:
                os.killpg(process.pid, 9)
        raise
    errors = {"warm_up": errors_between({}, before[0]["errors"]), "idle": idle["errors"],
              "rollout_waves": errors_between(after[0]["errors"], before_rollback["errors"]),
              "rollback_of_all": errors_between(before_rollback["errors"], final["errors"])}
    return {"sites": n, "mode": mode, "started_over_s": start_over, "warm_up_s": round(warm, 1), "idle": idle,
            "server_cpu_measured_by": env.meters["git"].how, "waves": waves,
            "rollout_waves_within_two_intervals": all(w["within_two_intervals"] for w in waves[:-1]),
            "errors_by_phase": errors,
            "sync_errors_in_operation": sum(sum(errors[k].values()) for k in ("warm_up", "idle", "rollout_waves")),
            "windows_shipped": int(final["windows"]), **memory}


def idle_costs(before: tuple, after: tuple) -> dict:
    (w0, git0, store0, reg0, t0), (w1, git1, store1, reg1, t1) = before, after
    fetched = w1["syncs"]["fetched"] - w0["syncs"]["fetched"]
    unchanged = w1["syncs"]["unchanged"] - w0["syncs"]["unchanged"]
    syncs = fetched + unchanged
    windows = w1["windows"] - w0["windows"]
    errors = errors_between(w0["errors"], w1["errors"])
    per = (lambda x: round(1000 * x / syncs, 3)) if syncs else (lambda x: None)
    return {
        "seconds": round(t1 - t0, 1), "syncs": int(syncs), "fetched": int(fetched), "unchanged": int(unchanged),
        "syncs_per_s": round(syncs / (t1 - t0), 1), "errors": errors, "sync_errors": sum(errors.values()),
        "git_host_cpu_ms_per_sync": per(git1 - git0), "registry_cpu_ms_per_sync": per(reg1 - reg0),
        "server_cpu_ms_per_sync": per(git1 - git0 + reg1 - reg0),  # the desired state's path: Git host + registry
        "store_cpu_ms_per_window": round(1000 * (store1 - store0) / windows, 3) if windows else None,
        "client_cpu_ms_per_sync": per(w1["cpu_s"] - w0["cpu_s"]),
        "bytes_per_sync": round(sum(w1["bytes"][k] - w0["bytes"][k] for k in ("git", "registry")) / syncs)
        if syncs else None,  # the desired state's check and fetch: Git host and registry
        "store_bytes_per_window": round((w1["bytes"]["store"] - w0["bytes"]["store"]) / windows) if windows else None,
        "git_host_cores": round((git1 - git0) / (t1 - t0), 3),
        "windows_shipped": int(windows),
    }


# -- the servers -----------------------------------------------------------------------------------
@contextmanager
def servers(work: Path, n: int, max_startups: str) -> Iterator[SimpleNamespace]:
    """One Git host and one store (each an sshd of its own with MaxStartups `max_startups`, the same key
    per site on both), one registry holding a signed bundle as v1 and v2, each in a CPU meter of its own;
    all stopped by pid at the end, however it ends."""
    from bench.common import signed_sklearn_bundles
    from edgewave.serving.access import RemoteAccess
    from edgewave.serving.oci import push_bundle
    from edgewave.tasks.platform import engine
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release.bundle import load_or_create_signing_key, public_pem
    from tests import sshd
    from tests.helpers import free_port

    sites = [f"fs{i:04d}" for i in range(n)]
    print(f"setting up: {n} site accounts and keys, a Git host, a store and a registry", flush=True)
    with ExitStack() as stack:
        git = sshd.start(sites, max_startups=max_startups)
        stack.callback(git.stop)
        store = sshd.start(sites, keys_from=git, max_startups=max_startups)
        stack.callback(store.stop)  # runs first: its site keys are the Git host's files
        stack.callback(engine.stop_registry, work / "registry")
        registry = engine.start_registry(work / "registry", free_port())
        registry_pid = int(json.loads((work / "registry" / "registry.json").read_text())["pid"])
        meters = {"git": CpuMeter("git", git.process.pid), "store": CpuMeter("store", store.process.pid),
                  "registry": CpuMeter("registry", registry_pid)}
        for meter in meters.values():
            stack.callback(meter.close)
        known_hosts = work / "known_hosts"
        known_hosts.write_text(git.known_hosts.read_text() + store.known_hosts.read_text())
        settings = Settings(home=work / "control-plane")
        folders = signed_sklearn_bundles(settings, [1, 2])
        urls, sha = {}, json.loads((folders[0] / "bundle.json").read_text())["model"]["sha256"]
        for version, folder in zip((1, 2), folders):
            urls[version] = push_bundle(folder, f"oci://{registry}/edgewave-bundles/machine-failure", f"v{version}",
                                        RemoteAccess(), {"name": "machine-failure", "version": version, "sha256": sha})
        trusted = public_pem(load_or_create_signing_key(settings.signing_key))
        yield SimpleNamespace(work=work, sites=sites, git=git, store=store, known_hosts=known_hosts, registry=registry,
                              meters=meters, bundle_urls=urls, sha=sha, trusted=trusted)


def summary(rows: list[dict], interval: float) -> dict:
    """Side by side per size: how much cheaper an idle sync is with the hint, for the servers, blending in
    the hint's full syncs (one Git fetch per full-sync period) at the fetch mode's measured cost."""
    from edgewave.serving.settings import EdgeSettings

    full_share = interval / EdgeSettings.model_fields["desired_state_full_sync_seconds"].default
    out = []
    for n in sorted({r["sites"] for r in rows}):
        by = {r["mode"]: r for r in rows if r["sites"] == n}
        if set(by) != set(MODES):
            continue
        fetch, hint = by["fetch"]["idle"], by["hint"]["idle"]
        if not fetch["server_cpu_ms_per_sync"] or hint["server_cpu_ms_per_sync"] is None:
            continue
        blended = full_share * fetch["server_cpu_ms_per_sync"] + (1 - full_share) * hint["server_cpu_ms_per_sync"]
        out.append({"sites": n, "fetch_server_cpu_ms_per_sync": fetch["server_cpu_ms_per_sync"],
                    "hint_server_cpu_ms_per_sync": hint["server_cpu_ms_per_sync"],
                    "hint_server_cpu_ms_per_sync_with_full_syncs": round(blended, 3),
                    "server_cpu_lower_by": round(fetch["server_cpu_ms_per_sync"] / blended, 1) if blended else None,
                    "client_cpu_lower_by": round(fetch["client_cpu_ms_per_sync"] / hint["client_cpu_ms_per_sync"], 1)
                    if hint["client_cpu_ms_per_sync"] else None,
                    "bytes_lower_by": round(fetch["bytes_per_sync"] / hint["bytes_per_sync"], 1)
                    if hint["bytes_per_sync"] else None})
    return {"full_sync_share_of_idle_syncs": round(full_share, 4), "by_size": out,
            "cost_model": cost_model(rows)}


def cost_model(rows: list[dict], fleets=(500, 5_000, 50_000), intervals=(10.0, 30.0, 60.0)) -> list[dict]:
    """What one Git host, one registry and one store must carry, in cores, for a fleet of a given size
    and interval, from the per-operation costs measured at the largest size: a Git fetch (fetch mode),
    a hint HEAD (hint mode), a window upload. Without the hint every sync is a fetch; with it, a site
    fetches once per full-sync period, and once per wave that changes it: a burst, not steady load, sized here
    for a wave of half the fleet (the example policy's largest) fetching within one interval."""
    from edgewave.serving.settings import EdgeSettings

    largest = max(r["sites"] for r in rows)
    by = {r["mode"]: r["idle"] for r in rows if r["sites"] == largest}
    if set(by) != set(MODES):
        return []
    fetch_ms = by["fetch"]["git_host_cpu_ms_per_sync"]
    head_ms = by["hint"]["registry_cpu_ms_per_sync"]
    window_ms = by["fetch"]["store_cpu_ms_per_window"]
    full_sync = EdgeSettings.model_fields["desired_state_full_sync_seconds"].default
    window = EdgeSettings.model_fields["sample_window_seconds"].default
    out = []
    for n in fleets:
        for every in intervals:
            out.append({"sites": n, "interval_s": every,
                        "git_host_cores_fetch_every_interval": round(n / every * fetch_ms / 1000, 2),
                        "git_host_cores_with_hint": round(n / full_sync * fetch_ms / 1000, 2),
                        # a wave of half the fleet learns of its commit within one interval and fetches
                        "git_host_cores_during_a_half_fleet_wave": round(n / 2 / every * fetch_ms / 1000, 2),
                        "registry_cores_with_hint": round(n / every * head_ms / 1000, 2),
                        "store_cores": round(n / window * window_ms / 1000, 2) if window_ms else None})
    return [{"measured_at_sites": largest, "git_fetch_ms": fetch_ms, "hint_head_ms": head_ms,
             "window_upload_ms": window_ms, "full_sync_s": full_sync, "window_s": window}, *out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--interval", type=float, default=10.0, help="sync interval (the agent's default)")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--window-seconds", type=float, default=60.0, help="sample window length (the default)")
    parser.add_argument("--workers", type=int, default=4, help="processes the agents share")
    parser.add_argument("--sshd-max-startups", default=SSHD_MAX_STARTUPS,
                        help="MaxStartups of the Git host's and the store's sshd (sshd's own default: 10:30:100)")
    parser.add_argument("--start-rate", type=float, default=10.0,
                        help="agents started per second (over one interval at least): each begins with a full clone")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    work = Path(tempfile.mkdtemp(prefix="edgewave-bench-fleet-sync-"))
    rows = []
    with servers(work, max(args.sizes), args.sshd_max_startups) as env:
        for n in args.sizes:
            for mode in args.modes:
                row = one_run(n, mode, env, args)
                rows.append(row)
                idle = row["idle"]
                waves = "; ".join(f"{w['wave']} ({w['sites']}): p50 {w['p50_s']} s, p99 {w['p99_s']} s, max {w['max_s']} s"
                                  + ("" if w["applied"] == w["sites"] else f" ({w['applied']}/{w['sites']} applied)")
                                  for w in row["waves"])
                print(f"{n:>4} agents, {mode:>5}: {idle['syncs_per_s']} syncs/s; per sync: Git host "
                      f"{idle['git_host_cpu_ms_per_sync']} ms, registry {idle['registry_cpu_ms_per_sync']} ms CPU, "
                      f"agents {idle['client_cpu_ms_per_sync']} ms; store {idle['store_cpu_ms_per_window']} ms per window; "
                      f"{idle['bytes_per_sync']} B; sync errors {row['errors_by_phase']}; waves: {waves}", flush=True)
    compared = summary(rows, args.interval)
    largest = max(args.sizes)
    at_largest = next((r for r in rows if r["sites"] == largest and r["mode"] == "hint"), None)
    lower = next((c["server_cpu_lower_by"] for c in compared["by_size"] if c["sites"] == largest), None)
    from bench.common import write_results

    write_results(RESULTS, {
        "benchmark": "desired-state sync of real agents over SSH, OCI and SFTP: fetch every interval vs change hint",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": "python -m bench.fleet_sync " + " ".join(sys.argv[1:]),
        "interval_s": args.interval, "idle_window_s": args.idle_seconds, "window_seconds": args.window_seconds,
        "workers": args.workers, "sshd_max_startups": args.sshd_max_startups,
        "agents_started_per_s": args.start_rate, "runs": rows, "compared": compared,
        "targets": {
            f"{largest} agents with the hint: zero sync errors (start, idle, the rollout's waves)":
                bool(at_largest and not at_largest["sync_errors_in_operation"]),
            f"{largest} agents with the hint: every site of each rollout wave applies it within two intervals (p99)":
                bool(at_largest and at_largest["rollout_waves_within_two_intervals"]),
            f"server CPU per idle sync at {largest} agents at least 5x lower": bool(lower and lower >= 5),
        },
    })


if __name__ == "__main__":
    main()
