"""Fixtures that run a real `shardlog` process.

`$SHARDLOG_BIN start --listen 127.0.0.1:<free port> --data-dir <tmp> --cores 2`
is started as a child process; its stdout/stderr go to a log file that is
attached to the report of any failing test. A broker is "ready" when its port
accepts and both ApiVersions and Metadata answer. Teardown stops it with SIGTERM
and fails the test if it does not exit 0 in time, or if it panicked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import kwire

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

# Brokers alive right now; their log tails are attached to failing reports.
_LIVE: list["Broker"] = []


def shardlog_bin() -> str:
    return os.environ.get("SHARDLOG_BIN") or str(REPO / "target" / "release" / "shardlog")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerError(AssertionError):
    pass


class Broker:
    """One `shardlog start` process on a fixed port and data directory.

    restart()/kill9() keep the port and the data directory, so clients can
    reconnect to the same bootstrap address and the data must survive.
    """

    def __init__(self, workdir: Path, name: str = "broker", cores: int = 2,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.name = name
        self.cores = cores
        self.extra_args = extra_args or []
        self.extra_env = env or {}
        self.port = free_port()
        self.data_dir = workdir / f"{name}-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._log_file = None
        self.expected_exit = False  # set by stop()/kill9(); a broker that dies otherwise is a bug

    # -- properties ---------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [shardlog_bin(), "start", "--listen", self.bootstrap,
                "--data-dir", str(self.data_dir), "--cores", str(self.cores), *self.extra_args]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 150) -> str:
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    def describe(self) -> str:
        rc = None if self.proc is None else self.proc.poll()
        return (f"{self.name}: {' '.join(self.argv())}\n  exit status: {rc}\n  log: {self.log_path}\n"
                f"----- last lines of {self.log_path.name} -----\n{self.log_tail()}")

    # -- lifecycle ------------------------------------------------------------
    def start(self, wait: bool = True) -> "Broker":
        assert not self.alive(), "already running"
        self.starts += 1
        self.expected_exit = False
        self._log_file = open(self.log_path, "ab", buffering=0)
        self._log_file.write(f"\n===== start #{self.starts}: {' '.join(self.argv())}\n".encode())
        # The broker reads SHARDLOG_* variables as configuration; the harness's own
        # (SHARDLOG_BIN) and anything else from the caller's shell must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")  # plain log files
        env.update(self.extra_env)
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                                     start_new_session=True)
        if self not in _LIVE:
            _LIVE.append(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait until the port accepts and ApiVersions + Metadata work. Returns seconds waited."""
        t0 = time.monotonic()
        last_err: Exception | None = None
        while time.monotonic() - t0 < timeout:
            if not self.alive():
                raise BrokerError(f"shardlog exited during start-up\n{self.describe()}")
            try:
                with kwire.Conn(self.host, self.port, timeout=5) as c:
                    av = c.api_versions()
                    if av.error_code != 0:
                        raise RuntimeError(f"ApiVersions error {av.error_code}")
                    md = c.metadata(None)
                    if not md["brokers"]:
                        raise RuntimeError("Metadata lists no brokers")
                    return time.monotonic() - t0
            except Exception as e:  # noqa: BLE001 - retry until the deadline
                last_err = e
                time.sleep(0.1)
        raise BrokerError(f"shardlog not ready after {timeout}s (last error: {last_err!r})\n{self.describe()}")

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; the broker must drain and exit 0."""
        if self.proc is None:
            return 0
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self._close_log()
            raise BrokerError(f"shardlog had already exited with status {rc}\n{self.describe()}")
        self.expected_exit = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._close_log()
            raise BrokerError(f"shardlog did not exit within {timeout}s of SIGTERM\n{self.describe()}")
        self._close_log()
        if rc != 0:
            raise BrokerError(f"shardlog exited with status {rc} after SIGTERM\n{self.describe()}")
        return rc

    def kill9(self) -> None:
        assert self.alive(), f"broker not running\n{self.describe()}"
        self.expected_exit = True
        self.proc.kill()
        self.proc.wait(10)
        self._close_log()

    def restart(self, hard: bool = False) -> float:
        """Stop (SIGTERM, or kill -9 when hard) and start again on the same port and data
        directory. Returns the seconds the new process took to become ready."""
        if hard:
            self.kill9()
        else:
            self.stop()
        self.start(wait=False)
        return self.wait_ready()

    def check_log(self) -> None:
        text = self.log_text()
        if "panicked at" in text:
            raise BrokerError(f"shardlog panicked\n{self.describe()}")

    def teardown(self) -> None:
        """Used by the fixtures: stop cleanly, then look for panics in the log."""
        try:
            if self.alive():
                self.stop()
            elif self.proc is not None and not self.expected_exit:
                raise BrokerError(f"shardlog exited unexpectedly with status {self.proc.returncode}\n"
                                  f"{self.describe()}")
            self.check_log()
        finally:
            if self.alive():
                self.proc.kill()
                self.proc.wait()
            self._close_log()
            if self in _LIVE:
                _LIVE.remove(self)


def _require_binary() -> None:
    b = shardlog_bin()
    if not os.access(b, os.X_OK):
        pytest.fail(f"shardlog binary not found at {b} (set SHARDLOG_BIN or build with "
                    f"`cargo build --release -p shardlog`)", pytrace=False)


def broker_with_admin(workdir: Path, extra_args: list[str] | None = None, **kw) -> Broker:
    """A broker (not started) whose admin listener is on its own free port, kept as
    `admin_port` for /metrics and /health."""
    _require_binary()
    admin_port = free_port()
    b = Broker(workdir, extra_args=["--admin-listen", f"127.0.0.1:{admin_port}",
                                    *(extra_args or [])], **kw)
    b.admin_port = admin_port  # type: ignore[attr-defined]
    return b


@pytest.fixture
def broker(tmp_path: Path):
    """A fresh broker for one test."""
    _require_binary()
    b = Broker(tmp_path)
    b.start()
    yield b
    b.teardown()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory):
    """One broker shared by the tests of a module (they use unique topic names)."""
    _require_binary()
    b = Broker(tmp_path_factory.mktemp("shardlog"))
    b.start()
    yield b
    b.teardown()


@pytest.fixture
def make_broker(tmp_path: Path):
    """Factory for brokers with extra arguments; all are torn down after the test."""
    made: list[Broker] = []

    def make(name: str = "broker", extra_args: list[str] | None = None, start: bool = True,
             env: dict[str, str] | None = None, argv: list[str] | None = None,
             port: int | None = None) -> Broker:
        """argv replaces the whole command line after the binary (then `port` must be the
        port that command line makes the broker listen on)."""
        _require_binary()
        b = Broker(tmp_path, name=name, extra_args=extra_args, env=env)
        if argv is not None:
            b.argv = lambda: [shardlog_bin(), *argv]  # type: ignore[method-assign]
            if port is not None:
                b.port = port
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    errors = []
    for b in made:
        try:
            b.teardown()
        except BrokerError as e:
            errors.append(str(e))
    if errors:
        raise BrokerError("\n\n".join(errors))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _LIVE:
        for b in list(_LIVE):
            rep.sections.append((f"shardlog log ({b.name}, {b.log_path})", b.log_tail(200)))


# ---- A local multi-broker cluster (issue 19) -----------------------------------------------
# Each broker is its own `shardlog start` process spawned here (not through `shardlog dev
# cluster`), with the same flags and port scheme as dev cluster: broker i (node id i, 1-based)
# of base port B listens for Kafka on B+10*(i-1), for the controller on +1, for admin HTTP on
# +2, and keeps its data and its log in <tmp>/broker-<i>. So a test can kill -9, SIGSTOP,
# SIGTERM and restart any one of them on the same ports and data directory. Brokers are
# addressed by node id everywhere (`cluster.kill(2)` is node 2), the ids Metadata reports.

CLUSTER_PORT_STRIDE = 10
CLUSTER_READY_TIMEOUT_S = 60.0


def free_port_base(brokers: int, stride: int = CLUSTER_PORT_STRIDE) -> int:
    """A base port B whose blocks B+stride*(i-1)+{0,1,2} (i = 1..brokers) are all free now."""
    import random
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 60000 - stride * brokers, stride)
        socks = []
        try:
            for i in range(brokers):
                for off in range(3):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(s)
                    s.bind(("127.0.0.1", base + stride * i + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no free block of ports for {brokers} brokers")


def metadata_v7(conn: "kwire.Conn", topics: list[str] | None = None) -> dict:
    """Metadata v7 without auto-creation (kwire's v1 creates missing topics): brokers,
    controller id, and per topic its partitions with leader, leader epoch, replicas, ISR
    and offline replicas."""
    names = None if topics is None else [kwire.string(t) for t in topics]
    r = conn.request(kwire.METADATA, 7, kwire.array(names) + kwire.i8(0))
    r.i32()  # throttle
    brokers = r.array(lambda r: {"node_id": r.i32(), "host": r.string(), "port": r.i32(),
                                 "rack": r.string()})
    cluster_id = r.string()
    controller_id = r.i32()

    def partition(r) -> dict:
        return {"error_code": r.i16(), "partition": r.i32(), "leader": r.i32(),
                "leader_epoch": r.i32(), "replicas": r.array(kwire.Reader.i32),
                "isr": r.array(kwire.Reader.i32), "offline": r.array(kwire.Reader.i32)}

    out = r.array(lambda r: {"error_code": r.i16(), "name": r.string(), "internal": r.i8() != 0,
                             "partitions": r.array(partition)})
    return {"brokers": brokers, "cluster_id": cluster_id, "controller_id": controller_id,
            "topics": {t["name"]: t for t in out}}


class ClusterBroker(Broker):
    """One broker of a `Cluster`: fixed node id, ports and data directory."""

    def __init__(self, workdir: Path, node_id: int, base: int, voters: str, cores: int = 1,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        # Not Broker.__init__: the ports and directories follow the cluster's scheme.
        self.workdir = workdir
        self.node_id = node_id
        self.name = f"broker-{node_id}"
        self.cores = cores
        self.extra_args = extra_args or []
        self.extra_env = env or {}
        self.voters = voters
        self.port = base + CLUSTER_PORT_STRIDE * (node_id - 1)
        self.controller_port = self.port + 1
        self.admin_port = self.port + 2
        self.data_dir = workdir / self.name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "shardlog.log"
        self.proc = None
        self.starts = 0
        self._log_file = None
        self.expected_exit = False
        self.paused = False

    def argv(self) -> list[str]:
        return [shardlog_bin(), "start", "--node-id", str(self.node_id),
                "--listen", self.bootstrap,
                "--controller-listen", f"{self.host}:{self.controller_port}",
                "--voters", self.voters,
                "--admin-listen", f"{self.host}:{self.admin_port}",
                "--data-dir", str(self.data_dir), "--cores", str(self.cores), *self.extra_args]


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of `pid` is in the stopped state (/proc/<pid>/task/*/stat)."""
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            stat = (task / "stat").read_text()
            if stat[stat.rindex(")") + 2] not in "Tt":
                return False
    except OSError:
        return False
    return True


class Cluster:
    """N brokers, every one a controller voter. Helpers take node ids (1..N)."""

    def __init__(self, workdir: Path, brokers: int = 3, cores: int = 1,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        _require_binary()
        self.workdir = workdir
        self.base = free_port_base(brokers)
        voters = ",".join(f"{i}@127.0.0.1:{self.base + CLUSTER_PORT_STRIDE * (i - 1) + 1}"
                          for i in range(1, brokers + 1))
        self.voters = voters
        self.brokers = [ClusterBroker(workdir, i, self.base, voters, cores, extra_args, env)
                        for i in range(1, brokers + 1)]

    # -- addressing ---------------------------------------------------------------------
    def __getitem__(self, node_id: int) -> ClusterBroker:
        if not 1 <= node_id <= len(self.brokers):
            raise KeyError(f"no broker {node_id} (node ids are 1..{len(self.brokers)})")
        return self.brokers[node_id - 1]

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def alive(self) -> list[ClusterBroker]:
        return [b for b in self.brokers if b.alive() and not b.paused]

    def describe(self) -> str:
        return "\n\n".join(b.describe() for b in self.brokers)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, wait: bool = True) -> "Cluster":
        for b in self.brokers:
            b.start(wait=False)
        if wait:
            self.wait_formed()
        return self

    def wait_formed(self, timeout: float = CLUSTER_READY_TIMEOUT_S) -> None:
        """Until every live broker answers Metadata listing every live broker and a
        controller."""
        def formed() -> bool:
            want = {b.node_id for b in self.alive()}
            for b in self.alive():
                md = self.metadata(via=b.node_id)
                if {x["node_id"] for x in md["brokers"]} != want or md["controller_id"] < 0:
                    return False
            return True
        self.wait_until(formed, timeout, "the cluster to form (every broker in Metadata)")

    def kill(self, node_id: int) -> None:
        """kill -9."""
        b = self[node_id]
        if b.paused:
            self.resume(node_id)
        b.kill9()

    def stop(self, node_id: int, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM; the broker must exit 0 in time."""
        b = self[node_id]
        if b.paused:
            self.resume(node_id)
        return b.stop(timeout)

    def pause(self, node_id: int) -> None:
        """SIGSTOP: the process stays but answers nothing (a hung broker)."""
        b = self[node_id]
        assert b.alive(), f"broker {node_id} is not running\n{b.describe()}"
        b.proc.send_signal(signal.SIGSTOP)
        b.paused = True
        # The stop is asynchronous: each thread stops when it next enters the kernel's signal
        # path, which on a loaded machine can take a moment; wait until every thread is 'T'.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _all_threads_stopped(b.proc.pid):
            time.sleep(0.01)

    def resume(self, node_id: int) -> None:
        """SIGCONT after pause()."""
        b = self[node_id]
        if b.alive():
            b.proc.send_signal(signal.SIGCONT)
        b.paused = False

    def restart(self, node_id: int, hard: bool = False, wait: bool = True) -> None:
        """Start the broker again on the same ports and data directory (stopping it first
        with SIGTERM, or kill -9 when `hard`, if it runs)."""
        b = self[node_id]
        if b.alive():
            self.kill(node_id) if hard else self.stop(node_id)
        b.start(wait=False)
        if wait:
            b.wait_ready()

    def teardown(self) -> None:
        errors = []
        for b in self.brokers:
            if b.paused:
                self.resume(b.node_id)
        for b in self.brokers:
            try:
                b.teardown()
            except BrokerError as e:
                errors.append(str(e))
        if errors:
            raise BrokerError("\n\n".join(errors))

    # -- observation --------------------------------------------------------------------
    def metadata(self, topics: list[str] | None = None, via: int | None = None) -> dict:
        """Metadata ([`metadata_v7`]: no auto-creation) from broker `via`, else from the
        first live broker that answers."""
        order = [self[via]] if via is not None else self.alive()
        last: Exception | None = None
        for b in order:
            try:
                with kwire.Conn(b.host, b.port, timeout=5) as c:
                    return metadata_v7(c, topics)
            except Exception as e:  # noqa: BLE001 - try the next broker
                last = e
        raise BrokerError(f"no broker answered Metadata (last error: {last!r})")

    def leader_of(self, topic: str, partition: int, via: int | None = None) -> int | None:
        """The partition's leader per Metadata, None when it has none (or errors)."""
        md = self.metadata([topic], via=via)
        t = md["topics"].get(topic)
        if t is None or t["error_code"] != 0:
            return None
        for p in t["partitions"]:
            if p["partition"] == partition:
                return p["leader"] if p["leader"] >= 0 and p["error_code"] == 0 else None
        return None

    def controller(self, via: int | None = None) -> int | None:
        """The controller id Metadata reports (None when unknown)."""
        c = self.metadata(via=via)["controller_id"]
        return c if c >= 0 else None

    def wait_until(self, pred, timeout: float = 30.0, what: str = "the condition",
                   interval: float = 0.1):
        """Polls `pred()` until it returns a truthy value, which is returned. An exception
        from `pred` counts as not yet; on timeout the last one and the brokers' states are
        in the error (the last falsy value or exception `pred` gave)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                v = pred()
                if v:
                    return v
                last = v
            except Exception as e:  # noqa: BLE001 - not yet
                last = e
            if time.monotonic() >= deadline:
                states = ", ".join(
                    f"{b.node_id}:{'paused' if b.paused else 'up' if b.alive() else 'down'}"
                    for b in self.brokers)
                raise BrokerError(f"timed out after {timeout}s waiting for {what} "
                                  f"(brokers {states}; last outcome: {last!r})")
            time.sleep(interval)


@pytest.fixture
def cluster(tmp_path: Path):
    """Three brokers, started and formed; torn down (SIGTERM, panics checked) after the test.
    Their log tails are attached to a failing test's report."""
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.teardown()


@pytest.fixture
def make_cluster(tmp_path: Path):
    """Factory for clusters with other sizes or flags: make_cluster(brokers=3,
    extra_args=[...], start=True)."""
    made: list[Cluster] = []

    def make(brokers: int = 3, cores: int = 1, extra_args: list[str] | None = None,
             env: dict[str, str] | None = None, start: bool = True) -> Cluster:
        c = Cluster(tmp_path / f"cluster-{len(made)}", brokers, cores, extra_args, env)
        made.append(c)
        if start:
            c.start()
        return c

    yield make
    errors = []
    for c in made:
        try:
            c.teardown()
        except BrokerError as e:
            errors.append(str(e))
    if errors:
        raise BrokerError("\n\n".join(errors))
