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
