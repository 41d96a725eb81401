"""A private ``redis-server`` on a free loopback port: ``tools/fn serve``'s embedded store, and the tests' Redis.

It keeps nothing on disk (no RDB snapshots, no AOF) and is killed with the process that started it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None, maxmemory: str | None = None):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise FileNotFoundError("redis-server is not installed (tools/fn installs the Debian package "
                                    "redis-server; install it by hand where that is not possible)")
        self.port = port or free_port()
        self.maxmemory = maxmemory
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> "RedisServer":
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.maxmemory:
            command += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "volatile-lru"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def env(self) -> dict[str, str]:
        return {"CVAT_FUNCTIONS_REDIS_HOST": "127.0.0.1", "CVAT_FUNCTIONS_REDIS_PORT": str(self.port)}


class Servers:
    """Redis processes on loopback by port, killed together."""

    def __init__(self):
        self.processes: dict[int, subprocess.Popen] = {}

    def spawn(self, port: int, command: list[str]) -> None:
        self.processes[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()


class RedisCluster(Servers):
    """A real Redis Cluster on loopback: ``masters`` masters with ``replicas`` replicas each, made by
    ``redis-cli --cluster create``, in ``folder`` (its nodes' cluster files). ``node_timeout`` (ms) is how long a
    master may be silent before its replica takes over."""

    def __init__(self, folder, masters: int = 3, replicas: int = 1, node_timeout: int = 1000,
                 maxmemory: str | None = None):
        super().__init__()
        self.folder, self.node_timeout, self.maxmemory = folder, node_timeout, maxmemory
        self.ports = [cluster_port() for _ in range(masters * (1 + replicas))]
        self.replicas = replicas
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise FileNotFoundError("redis-server and redis-cli are not installed (tools/fn installs the Debian "
                                    "package redis-server)")

    def start_node(self, port: int) -> None:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                   "--cluster-node-timeout", str(self.node_timeout), "--dir", str(self.folder), *REPLICATION]
        if self.maxmemory:
            command += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
        self.spawn(port, command)

    def start(self, timeout: float = 60) -> "RedisCluster":
        for port in self.ports:
            self.start_node(port)
        for port in self.ports:
            wait_for(lambda: redis.Redis(port=port, socket_timeout=1).ping(), timeout, f"cluster node {port}")
        created = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                                  "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                                 capture_output=True, text=True, timeout=timeout)
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-500:]}{created.stderr[-500:]}")
        self.wait_ok(timeout)
        wait_for(lambda: all(replica_synced(p) for p in self.ports if role(p) != "master"), timeout,
                 "the replicas' first sync")
        return self

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every live node says the cluster is ok and the nodes agree on which are the masters."""
        def ok() -> bool:
            live = [p for p, process in self.processes.items() if process.poll() is None]
            states = [redis.Redis(port=p, socket_timeout=1).cluster("info") for p in live]
            return all(s["cluster_state"] == "ok" for s in states) and len(self.masters()) == len(self.ports) // (
                1 + self.replicas)
        wait_for(ok, timeout, "the cluster")

    def masters(self) -> list[int]:
        """Ports of the live masters that hold slots, as the live nodes see them."""
        found = set()
        for port, process in self.processes.items():
            if process.poll() is not None:
                continue
            try:
                nodes = redis.Redis(port=port, socket_timeout=1).cluster("nodes")
            except redis.RedisError:
                continue
            for address, node in nodes.items():
                flags = node.get("flags", "")
                if "master" in flags and "fail" not in flags and node.get("slots"):
                    found.add(int(address.split(":")[1].split("@")[0]))
        return sorted(p for p in found if self.processes[p].poll() is None)

    def master_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot."""
        from redis.cluster import RedisCluster as Client

        return int(Client(host="127.0.0.1", port=self.masters()[0]).get_node_from_key(key).port)

    def env(self) -> dict[str, str]:
        return {"CVAT_FUNCTIONS_REDIS_CLUSTER": ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])}



class RedisSentinels(Servers):
    """A real Sentinel set on loopback: a master, a replica and ``sentinels`` sentinels watching them (service
    ``mymaster``, quorum 2); a master silent for ``down_after`` ms is failed over. The sentinels log to
    ``folder``."""

    def __init__(self, folder, sentinels: int = 3, down_after: int = 1000):
        super().__init__()
        self.folder, self.down_after = folder, down_after
        self.master, self.replica = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(sentinels)]

    def start(self, timeout: float = 60) -> "RedisSentinels":
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.folder), *REPLICATION]
        self.spawn(self.master, ["redis-server", "--port", str(self.master), *base])
        self.spawn(self.replica, ["redis-server", "--port", str(self.replica), *base,
                                  "--replicaof", "127.0.0.1", str(self.master)])
        for port in (self.master, self.replica):
            wait_for(lambda: redis.Redis(port=port, socket_timeout=1).ping(), timeout, f"redis {port}")
        for port in self.sentinel_ports:
            config = self.folder / f"sentinel-{port}.conf"
            config.write_text(f"port {port}\nbind 127.0.0.1\nlogfile {self.folder / f'sentinel-{port}.log'}\n"
                              f"sentinel monitor mymaster 127.0.0.1 {self.master} 2\n"
                              f"sentinel down-after-milliseconds mymaster {self.down_after}\n"
                              "sentinel failover-timeout mymaster 5000\nsentinel parallel-syncs mymaster 1\n")
            self.spawn(port, ["redis-server", str(config), "--sentinel"])
        wait_for(lambda: all(redis.Redis(port=p, socket_timeout=1).sentinel_master("mymaster")["num-other-sentinels"]
                             == len(self.sentinel_ports) - 1 for p in self.sentinel_ports), timeout, "the sentinels")
        wait_for(lambda: replica_synced(self.replica), timeout, "the replica's first sync")
        # a sentinel learns of the replica from the master's INFO (every 10 s): one that has not yet finds "no good
        # slave" when the master dies, and never fails over
        wait_for(lambda: all(redis.Redis(port=p, socket_timeout=1).sentinel_master("mymaster")["num-slaves"] >= 1
                             for p in self.sentinel_ports), timeout, "the sentinels' discovery of the replica")
        return self

    def current_master(self) -> int:
        return int(redis.Redis(port=self.sentinel_ports[0], socket_timeout=1)
                   .sentinel_get_master_addr_by_name("mymaster")[1])

    def env(self) -> dict[str, str]:
        return {"CVAT_FUNCTIONS_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
                "CVAT_FUNCTIONS_REDIS_SENTINEL_SERVICE": "mymaster"}



# a replica takes over only once it has synced with its master: a master lost before its replica's first sync
# (which Redis delays 5 s by default, to serve several replicas at once) is never failed over
REPLICATION = ["--repl-diskless-sync-delay", "0"]


def role(port: int) -> str:
    return redis.Redis(port=port, socket_timeout=1).info("replication")["role"]


def replica_synced(port: int) -> bool:
    """Whether the replica on ``port`` has finished its sync with its master (so that it can take over)."""
    return redis.Redis(port=port, socket_timeout=1).info("replication").get("master_link_status") == "up"


def cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000, which must exist too) is free as well."""
    import random

    while True:
        port = random.randint(20000, 50000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue


def wait_for(check, timeout: float, what: str) -> None:
    """Until ``check()`` is true (Redis errors count as not yet); a RuntimeError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError, KeyError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:g} s")
