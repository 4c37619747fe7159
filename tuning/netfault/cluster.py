"""Three (or N) real brokers, each in its own network namespace, and network faults between
them.

Topology (block 0 shown: 10.77.0.0/26; blocks 1..3 are the next /26 of 10.77.0.0/24, so up to
four clusters with different prefixes and blocks can run at once; needs root and `ip` only):

    root namespace (clients)          router namespace <prefix>-r           broker namespaces
    10.77.0.1 on <prefix>-c  <--veth-->  rc: 10.77.0.62                       <prefix>-1: 10.77.0.11
                                         r1: 10.77.0.62   <--veth-->  eth0   <prefix>-2: 10.77.0.12
                                         r2: 10.77.0.62   <--veth-->  eth0   <prefix>-3: 10.77.0.13
                                         r3: ...

Every packet between two nodes (a broker, or the clients in the root namespace) is forwarded by
the router namespace (IP forwarding is enabled there only, never in the root namespace). A fault
is a policy-routing rule in the router, `ip rule add from SRC to DST blackhole`: packets from
SRC to DST are dropped silently (no ICMP, no RST), as on a cut link; packets the other way are
untouched. The brokers and the clients see nothing but silence: connects time out, established
connections stall until someone's timeout fires.

Faults (directed drops; a node is a broker id 1..N or CLIENT = 0, the root namespace):
- `partition(a, b)`: a -> b and b -> a dropped.
- `isolate(a)`: a partitioned from every other broker; clients still reach it (the "leader cut
  off from the controller and its followers but still reachable by producers" case).
- `one_way(src, dst)`: only src -> dst dropped. What this means for TCP: no connection between
  them can be established in either direction (a SYN or its SYN-ACK crosses the cut); on a
  connection already open, bytes dst sends reach src's kernel and application, but src's ACKs and
  replies never arrive, so dst retransmits and its request times out. At the application level:
  dst's requests reach src (and src acts on them), nothing src sends reaches dst.
- `heal()`: all rules removed.

Broker i listens for Kafka on 10.77.0.(10+i):9092 (advertised so), for the controller on :9093
and admin on :9094; every broker is a controller voter. Clients bootstrap from all N.

With `proxies=True` each broker namespace also runs a `tuning/netproxy.py` in front of its
broker: the proxy listens on 10.77.0.(10+i):9092 and :9093 (the advertised Kafka address and
the voter address, so clients and peers connect to it) and forwards to the broker, which
listens on 127.0.0.1:19092 and 127.0.0.1:19093 inside its namespace. The proxy knows the
other brokers' addresses and applies its faults (delay, jitter, bandwidth, stall, reset) only
to connections coming from them: a client's connection (from 10.77.0.1) is forwarded untouched.
Every connection between two brokers passes exactly one proxy (the one of the broker it was
made to), so `link(a, b, ...)` sets the rule on both ends' proxies. The router rules above still
work unchanged in this layout (the proxy listens on the broker's address).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUNING = HERE.parent
REPO = TUNING.parent
sys.path.insert(0, str(TUNING))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import kwire  # noqa: E402
from fault_common import BrokerProc  # noqa: E402
from netproxy import ProxyControl  # noqa: E402

CLIENT = 0
NET = "10.77.0"
BLOCKS = 4  # 10.77.0.0/24 split into four /26: clusters with different blocks can run at once
KAFKA_PORT, CONTROLLER_PORT, ADMIN_PORT = 9092, 9093, 9094
# Where the broker listens inside its namespace when a proxy fronts it.
INNER_KAFKA, INNER_CONTROLLER = "127.0.0.1:19092", "127.0.0.1:19093"
NETPROXY = TUNING / "netproxy.py"
RULE_PRIO = 100
DEFAULT_BIN = os.environ.get("SHARDLOG_BIN") or str(REPO / "target" / "release" / "shardlog")


class NetError(RuntimeError):
    pass


def ip_of(node: int, block: int = 0) -> str:
    """Node `node`'s address in address block `block` (0..3): CLIENT is .1 of the block,
    broker i is .(10+i), the router .62."""
    return f"{NET}.{64 * block + (1 if node == CLIENT else 10 + node)}"


def router_ip(block: int) -> str:
    return f"{NET}.{64 * block + 62}"


def subnet(block: int) -> str:
    return f"{NET}.{64 * block}/26"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def namespaces_available() -> str | None:
    """None when this process can create network namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"slnf-probe-{os.getpid()}"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


def metadata_v7(conn: kwire.Conn, topics: list[str] | None = None) -> dict:
    """Metadata v7 (no auto-creation): brokers, controller id, partitions with leader/ISR."""
    names = None if topics is None else [kwire.string(t) for t in topics]
    r = conn.request(kwire.METADATA, 7, kwire.array(names) + kwire.i8(0))
    r.i32()
    brokers = r.array(lambda r: {"node_id": r.i32(), "host": r.string(), "port": r.i32(),
                                 "rack": r.string()})
    r.string()
    controller_id = r.i32()

    def partition(r) -> dict:
        return {"error_code": r.i16(), "partition": r.i32(), "leader": r.i32(),
                "leader_epoch": r.i32(), "replicas": r.array(kwire.Reader.i32),
                "isr": r.array(kwire.Reader.i32), "offline": r.array(kwire.Reader.i32)}

    out = r.array(lambda r: {"error_code": r.i16(), "name": r.string(), "internal": r.i8() != 0,
                             "partitions": r.array(partition)})
    return {"brokers": brokers, "controller_id": controller_id,
            "topics": {t["name"]: t for t in out}}


def _broker_preexec() -> None:
    """Own session; locked-memory limit raised as far as allowed (glommio locks memory)."""
    os.setsid()
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK,
                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass  # not permitted here (e.g. in a container): the brokers run with the current limit


class NsBroker(BrokerProc):
    """One broker process in namespace `<prefix>-<id>`; restartable on the same data dir.
    `alive`, `stop` and `panicked` are `BrokerProc`'s; the addressing, the start in the
    namespace and `kill9` (a no-op on a dead broker) are its own."""

    def __init__(self, cluster: "NetCluster", node_id: int, data_dir: Path):
        self.cluster = cluster
        self.node_id = node_id
        self.ns = f"{cluster.prefix}-{node_id}"
        self.ip = ip_of(node_id, cluster.block)
        self.data_dir = data_dir
        self.log_path = cluster.workdir / f"broker-{node_id}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"{self.ip}:{KAFKA_PORT}"

    def argv(self) -> list[str]:
        c = self.cluster
        listen, ctl = ((INNER_KAFKA, INNER_CONTROLLER) if c.proxies
                       else (self.bootstrap, f"{self.ip}:{CONTROLLER_PORT}"))
        return ["ip", "netns", "exec", self.ns, c.binary, "start", "--node-id", str(self.node_id),
                "--listen", listen, "--advertised", self.bootstrap,
                "--controller-listen", ctl, "--voters", c.voters,
                "--admin-listen", f"{self.ip}:{ADMIN_PORT}", "--data-dir", str(self.data_dir),
                "--cores", str(c.cores), *c.extra_args]

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
        env.update({f"SHARDLOG_{k.upper()}": str(v) for k, v in self.cluster.settings.items()})
        env.setdefault("NO_COLOR", "1")
        env.setdefault("RUST_BACKTRACE", "1")
        with open(self.log_path, "ab", buffering=0) as logf:
            logf.write(f"\n===== start at {time.strftime('%H:%M:%S')}\n".encode())
            # `ip netns exec` execs the broker: the Popen pid is the broker's.
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=_broker_preexec)
        self.starts += 1

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class NsProxy:
    """The netproxy in front of one broker (proxies=True layout)."""

    def __init__(self, cluster: "NetCluster", node_id: int):
        self.cluster = cluster
        self.node_id = node_id
        self.ns = f"{cluster.prefix}-{node_id}"
        self.ip = ip_of(node_id, cluster.block)
        self.log_path = cluster.workdir / f"proxy-{node_id}.log"
        sock = cluster.workdir / f"proxy-{node_id}.sock"
        if len(str(sock)) > 100:  # AF_UNIX paths are at most 107 bytes
            sock = Path("/tmp") / f"{cluster.prefix}-proxy-{node_id}.sock"
        self.control_path = sock
        self.ctl = ProxyControl(str(sock))
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        c = self.cluster
        peers = ",".join(c.ip_of(i) for i in c.ids if i != self.node_id)
        return ["ip", "netns", "exec", self.ns, sys.executable, str(NETPROXY), "serve",
                "--listen", f"kafka={self.ip}:{KAFKA_PORT}={INNER_KAFKA}",
                "--listen", f"controller={self.ip}:{CONTROLLER_PORT}={INNER_CONTROLLER}",
                "--peers", peers, "--control", str(self.control_path),
                "--seed", str(self.node_id)]

    def start(self, timeout: float = 15.0) -> None:
        self.control_path.unlink(missing_ok=True)
        with open(self.log_path, "ab", buffering=0) as logf:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=logf,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise NetError(f"proxy {self.node_id} exited ({self.proc.returncode}); "
                               f"see {self.log_path}")
            if self.control_path.exists():
                try:
                    self.ctl.call("status")
                    return
                except (OSError, RuntimeError):
                    pass
            if time.monotonic() > deadline:
                raise NetError(f"proxy {self.node_id} not ready after {timeout}s")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def call(self, cmd: str, **kw) -> dict:
        return self.ctl.call(cmd, **kw)


class NetCluster:
    """N brokers in namespaces `<prefix>-1..N`, a router `<prefix>-r`, clients in the root
    namespace. Use as a context manager (tears the network down and stops the brokers)."""

    def __init__(self, workdir: Path, brokers: int = 3, cores: int = 1,
                 settings: dict[str, str] | None = None, extra_args: list[str] | None = None,
                 prefix: str = "slnf", binary: str = DEFAULT_BIN,
                 data_dirs: dict[int, Path] | None = None, block: int = 0,
                 proxies: bool = False):
        if not 1 <= brokers <= 50:
            raise ValueError("brokers must be 1..50")
        if not 0 <= block < BLOCKS:
            raise ValueError(f"block must be 0..{BLOCKS - 1}")
        self.block = block
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.router = f"{prefix}-r"
        self.cores = cores
        self.settings = settings or {}
        self.extra_args = extra_args or []
        self.binary = binary
        self.voters = ",".join(f"{i}@{ip_of(i, block)}:{CONTROLLER_PORT}"
                               for i in range(1, brokers + 1))
        dirs = data_dirs or {}
        self.brokers = [NsBroker(self, i, dirs.get(i, workdir / f"data-{i}"))
                        for i in range(1, brokers + 1)]
        self.blocked: set[tuple[int, int]] = set()
        self.net_up = False
        self.proxies = proxies
        self.proxy_list = [NsProxy(self, i) for i in self.ids] if proxies else []
        # proxy rules in force: (the proxy's broker, peer ip or "*", listener) -> rule
        self.proxy_rules: dict[tuple[int, str, str], dict] = {}

    def ip_of(self, node: int) -> str:
        return ip_of(node, self.block)

    def __getitem__(self, node_id: int) -> NsBroker:
        if not 1 <= node_id <= len(self.brokers):
            raise KeyError(f"no broker {node_id}")
        return self.brokers[node_id - 1]

    @property
    def ids(self) -> list[int]:
        return [b.node_id for b in self.brokers]

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    # -- network ---------------------------------------------------------------------------
    def teardown_network(self) -> None:
        """Removes the namespaces and the root-side veth (also leftovers of an earlier run
        with the same prefix)."""
        for ns in [self.router] + [f"{self.prefix}-{i}" for i in self.ids]:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", f"{self.prefix}-c", check=False)
        sh("ip", "route", "del", subnet(self.block), check=False)
        self.net_up = False
        self.blocked.clear()

    def setup_network(self) -> None:
        self.teardown_network()
        r = self.router
        sh("ip", "netns", "add", r)
        sh("ip", "-n", r, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0")
        # clients: root namespace <-> router
        c = f"{self.prefix}-c"
        sh("ip", "link", "add", c, "type", "veth", "peer", "name", "rc", "netns", r)
        rip = router_ip(self.block)
        sh("ip", "addr", "add", f"{ip_of(CLIENT, self.block)}/32", "dev", c)
        sh("ip", "link", "set", c, "up")
        sh("ip", "route", "add", rip, "dev", c)
        sh("ip", "route", "add", subnet(self.block), "via", rip, "dev", c)
        self._router_side("rc", CLIENT)
        for b in self.brokers:
            sh("ip", "netns", "add", b.ns)
            sh("ip", "-n", b.ns, "link", "set", "lo", "up")
            sh("ip", "-n", r, "link", "add", f"r{b.node_id}", "type", "veth", "peer", "name",
               "eth0", "netns", b.ns)
            sh("ip", "-n", b.ns, "addr", "add", f"{b.ip}/32", "dev", "eth0")
            sh("ip", "-n", b.ns, "link", "set", "eth0", "up")
            sh("ip", "-n", b.ns, "route", "add", rip, "dev", "eth0")
            sh("ip", "-n", b.ns, "route", "add", subnet(self.block), "via", rip, "dev", "eth0")
            self._router_side(f"r{b.node_id}", b.node_id)
        self.net_up = True

    def _router_side(self, dev: str, node: int) -> None:
        r = self.router
        sh("ip", "-n", r, "addr", "add", f"{router_ip(self.block)}/32", "dev", dev)
        sh("ip", "-n", r, "link", "set", dev, "up")
        sh("ip", "netns", "exec", r, "sysctl", "-qw", f"net.ipv4.conf.{dev}.rp_filter=0")
        sh("ip", "-n", r, "route", "add", f"{self.ip_of(node)}/32", "dev", dev)

    def _block(self, src: int, dst: int) -> None:
        if (src, dst) in self.blocked:
            return
        sh("ip", "-n", self.router, "rule", "add", "prio", str(RULE_PRIO), "from",
           self.ip_of(src), "to", self.ip_of(dst), "blackhole")
        self.blocked.add((src, dst))

    def one_way(self, src: int, dst: int) -> None:
        """Drops packets src -> dst only (see the module docs for what that does to TCP)."""
        self._block(src, dst)

    def partition(self, a: int, b: int) -> None:
        self._block(a, b)
        self._block(b, a)

    def isolate(self, a: int, from_clients: bool = False) -> None:
        """Cuts broker a off from every other broker (and from clients too if asked)."""
        for o in self.ids:
            if o != a:
                self.partition(a, o)
        if from_clients:
            self.partition(a, CLIENT)

    def heal(self) -> None:
        """Removes every router rule and every proxy rule."""
        for src, dst in sorted(self.blocked):
            sh("ip", "-n", self.router, "rule", "del", "prio", str(RULE_PRIO), "from",
               self.ip_of(src), "to", self.ip_of(dst), "blackhole", check=False)
        self.blocked.clear()
        if self.proxy_rules:
            self.proxy_heal()

    def rules(self) -> str:
        return sh("ip", "-n", self.router, "rule", "list").stdout

    # -- proxy faults (proxies=True): between brokers only ---------------------------------
    def proxy(self, node_id: int) -> NsProxy:
        if not self.proxies:
            raise NetError("this cluster runs without proxies (NetCluster(proxies=True))")
        return self.proxy_list[node_id - 1]

    def _proxy_set(self, at: int, peer: int | None, listener: str, rule: dict) -> None:
        peer_ip = "*" if peer is None else self.ip_of(peer)
        self.proxy(at).call("set", peer=peer_ip, listener=listener, **rule)
        self.proxy_rules[(at, peer_ip, listener)] = dict(rule)

    def link(self, a: int, b: int, listener: str = "*", **rule) -> None:
        """Faults on the link between brokers a and b, both directions, every connection
        (a's connections to b pass b's proxy, b's to a pass a's): `delay_ms`, `jitter_ms`,
        `bandwidth_bps`, `blackhole` (see tuning/netproxy.py). `listener`: "kafka"
        (replication), "controller" (raft and controller calls) or "*"."""
        self._proxy_set(b, a, listener, rule)
        self._proxy_set(a, b, listener, rule)

    def all_links(self, listener: str = "*", **rule) -> None:
        """The same rule on every link between two brokers."""
        for i in self.ids:
            self._proxy_set(i, None, listener, rule)

    def node_links(self, x: int, listener: str = "*", **rule) -> None:
        """The rule on every link between broker x and another broker."""
        self._proxy_set(x, None, listener, rule)
        for o in self.ids:
            if o != x:
                self._proxy_set(o, x, listener, rule)

    def reset_link(self, a: int, b: int, listener: str = "*") -> int:
        """Closes the open connections between brokers a and b with a TCP RST, now."""
        return (self.proxy(b).call("reset", peer=self.ip_of(a), listener=listener)["reset"]
                + self.proxy(a).call("reset", peer=self.ip_of(b), listener=listener)["reset"])

    def proxy_heal(self) -> None:
        for p in self.proxy_list:
            if p.alive():
                p.call("clear")
        self.proxy_rules.clear()

    def proxy_status(self) -> dict[int, dict]:
        return {p.node_id: p.call("status") for p in self.proxy_list if p.alive()}

    # -- brokers ---------------------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float = 90.0) -> None:
        if not self.net_up:
            self.setup_network()
        for p in self.proxy_list:
            if not p.alive():
                p.start()
        for b in self.brokers:
            b.start()
        if wait:
            self.wait_formed(timeout)

    def stop_all(self) -> None:
        for b in self.brokers:
            b.stop()
        for p in self.proxy_list:
            p.stop()

    def __enter__(self) -> "NetCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.heal()
        self.stop_all()
        self.teardown_network()

    def metadata(self, topics: list[str] | None = None, via: int | None = None,
                 timeout: float = 3.0) -> dict:
        order = [self[via]] if via is not None else [b for b in self.brokers if b.alive()]
        last: Exception | None = None
        for b in order:
            try:
                with kwire.Conn(b.ip, KAFKA_PORT, timeout=timeout) as c:
                    return metadata_v7(c, topics)
            except Exception as e:  # noqa: BLE001 - try the next broker
                last = e
        raise NetError(f"no broker answered Metadata (last error: {last!r})")

    def partition_state(self, topic: str, partition: int, via: int | None = None) -> dict | None:
        t = self.metadata([topic], via=via)["topics"].get(topic)
        if t is None or t["error_code"] != 0:
            return None
        for p in t["partitions"]:
            if p["partition"] == partition:
                return p
        return None

    def leader_of(self, topic: str, partition: int, via: int | None = None) -> int | None:
        p = self.partition_state(topic, partition, via)
        if p is None or p["error_code"] != 0 or p["leader"] < 0:
            return None
        return p["leader"]

    def controller(self, via: int | None = None) -> int | None:
        c = self.metadata(via=via)["controller_id"]
        return c if c >= 0 else None

    def wait_until(self, pred, timeout: float, what: str, interval: float = 0.2):
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
                raise NetError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
            time.sleep(interval)

    def wait_formed(self, timeout: float = 90.0) -> None:
        """Every live broker lists every live broker and knows a controller."""
        def formed() -> bool:
            want = {b.node_id for b in self.brokers if b.alive()}
            for b in self.brokers:
                if not b.alive():
                    continue
                md = self.metadata(via=b.node_id)
                if {x["node_id"] for x in md["brokers"]} != want or md["controller_id"] < 0:
                    return False
            return True
        self.wait_until(formed, timeout, "the cluster to form")

    def wait_isr_full(self, topic: str, partitions: int, timeout: float = 120.0) -> None:
        """Every partition has a leader and all replicas in its ISR (as its leader says)."""
        def full() -> bool:
            for p in range(partitions):
                st = self.partition_state(topic, p)
                if st is None or st["leader"] < 0:
                    return False
                st = self.partition_state(topic, p, via=st["leader"])
                if st is None or sorted(st["isr"]) != sorted(st["replicas"]):
                    return False
            return True
        self.wait_until(full, timeout, f"every ISR of {topic} to be full")


def create_topic(bootstrap: str, name: str, partitions: int, rf: int,
                 config: dict[str, str] | None = None, timeout: float = 60.0) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    deadline = time.monotonic() + timeout
    while True:
        futs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf,
                                         config=config or {})], operation_timeout=30)
        try:
            futs[name].result(30)
            return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            if "TOPIC_ALREADY_EXISTS" in str(e):
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
