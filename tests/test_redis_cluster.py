"""Tracker state and embedding caches on a real Redis Cluster (3 masters, 3 replicas) and a real Sentinel set
(a master, a replica, 3 sentinels), started by the tests from Debian's redis-server: many concurrent tracks
through two harnesses, results equal to a single Redis, keys of one track in one slot, and faults (a master
killed, frozen, full; a Sentinel failover) counted by status: no 500, no dead worker, no wrong state."""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import pytest

from tests.conftest import ROOT, function_url, http
from tests.redis_server import RedisServer
from tools import redis_server

FUNCTIONS = ROOT / "functions"
NANOTRACK = FUNCTIONS / "onnx" / "honglinchu" / "nanotrack" / "nuclio"
SIAMMASK = FUNCTIONS / "pytorch" / "foolwood" / "siammask" / "nuclio"
SAM2_TRACKER = FUNCTIONS / "pytorch" / "facebookresearch" / "sam2-tracker" / "nuclio"
SAM = FUNCTIONS / "pytorch" / "facebookresearch" / "sam" / "nuclio"
# concurrent tracks per tracker: 50 for NanoTrack; SiamMask and the SAM 2 tracker take 0.1-1 s a step on the
# 2-core CI machine, so fewer there (CLUSTER_TRACKS sets one count for all, e.g. 50 on a bigger machine)
TRACKS = {"nanotrack": 50, "siammask": 6, "sam2-tracker": 6}
if os.environ.get("CLUSTER_TRACKS"):
    TRACKS = dict.fromkeys(TRACKS, int(os.environ["CLUSTER_TRACKS"]))
STEPS = 10


def started(server):
    try:
        return server.start()
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.fail(f"could not start {type(server).__name__}: {exc}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    server = started(redis_server.RedisCluster(tmp_path_factory.mktemp("cluster")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def frames(data_dir) -> list[str]:
    files = sorted((data_dir / "video" / "tennis").iterdir())[:STEPS + 1]
    return [base64.b64encode(f.read_bytes()).decode() for f in files]


@contextmanager
def harnesses(folder, env: dict[str, str], count: int = 2):
    """``count`` harnesses over one function folder (replicas of one deployment), their function URLs."""
    from tools.config import find_configs
    from tools.harness import serving

    with pytest.MonkeyPatch.context() as patch:
        for name in ("CVAT_FUNCTIONS_REDIS_HOST", "CVAT_FUNCTIONS_REDIS_CLUSTER", "CVAT_FUNCTIONS_REDIS_SENTINELS"):
            patch.delenv(name, raising=False)
        for name, value in {"TRACKER_CACHE_BYTES": "0", "TORCH_DEVICE": "cpu", **env}.items():
            patch.setenv(name, value)
        with ExitStack() as stack:
            yield [function_url(stack.enter_context(serving(find_configs([folder]), 300))) for _ in range(count)]


class Run:
    """Tracks driven concurrently over replicas: each step of each track goes to the next URL in turn. A 503
    is retried after a pause; a 410 ends that track; every answer is counted by status."""

    def __init__(self, urls: list[str], frames: list[str], tracks: int, retry_for: float = 30.0, pause=None):
        self.urls, self.frames, self.retry_for, self.pause = urls, frames, retry_for, pause
        self.statuses: Counter = Counter()
        self.unavailable: list[float] = []  # times of the 503s
        self.lock = threading.Lock()
        boxes = [[250.0 + 2 * (i % 10), 160.0 + 2 * (i // 10), 420.0, 330.0] for i in range(tracks)]
        with ThreadPoolExecutor(8) as pool:
            self.shapes = list(pool.map(self.track, range(tracks), boxes))

    def call(self, n: int, body: dict) -> tuple[int, dict]:
        deadline = time.monotonic() + self.retry_for
        while True:
            code, _, reply = http("POST", self.urls[n % len(self.urls)], body, timeout=60)
            with self.lock:
                self.statuses[code] += 1
                if code == 503:
                    self.unavailable.append(time.monotonic())
            if code != 503 or time.monotonic() > deadline:
                return code, reply
            time.sleep(0.1)

    def track(self, i: int, box: list[float]) -> list | None:
        """The track's shapes, frame by frame; None when it had to end (410)."""
        code, reply = self.call(i, {"image": self.frames[0], "shapes": [{"type": "rectangle", "points": box}],
                                    "states": []})
        assert code in (200, 410), reply
        shapes = [reply["shapes"][0]] if code == 200 else None
        state = reply["states"][0] if code == 200 else None
        for step in range(1, len(self.frames)):
            if shapes is None:
                return None
            if self.pause:
                self.pause(i, step)
            code, reply = self.call(i + step, {"image": self.frames[step], "shapes": [None], "states": [state]})
            assert code in (200, 410), reply  # never a 500, never any other status
            if code == 410:
                return None
            shapes.append(reply["shapes"][0])
            state = reply["states"][0]
        return shapes

    @property
    def window(self) -> float:
        return (max(self.unavailable) - min(self.unavailable)) if self.unavailable else 0.0


def assert_same_tracks(run: Run, reference: Run) -> None:
    for got, expected in zip(run.shapes, reference.shapes):
        if got is not None:  # a track that had to restart has nothing to compare
            assert got == expected  # the same state every step: never another track's, never a stale one


@pytest.fixture(scope="module")
def siammask_weights(reference_dir, tmp_path_factory):
    import importlib.util

    import torch

    folder = reference_dir / "siammask"
    spec = importlib.util.spec_from_file_location("siammask_make_weights", folder / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    path = tmp_path_factory.mktemp("siammask") / "SiamMask_DAVIS.pth"
    torch.save(make_weights.siammask_state_dict(), path)
    return {"MODEL_PATH": str(path)}


@pytest.fixture(scope="module")
def sam2_weights(tmp_path_factory):
    from tools.replies import random_weights

    return random_weights(SAM2_TRACKER, tmp_path_factory.mktemp("sam2"))


@pytest.mark.parametrize("folder", [NANOTRACK, SIAMMASK, SAM2_TRACKER], ids=["nanotrack", "siammask", "sam2-tracker"])
def test_concurrent_tracks_on_the_cluster_equal_a_single_redis(folder, cluster, frames, models_dir, request):
    weights = {SIAMMASK: "siammask_weights", SAM2_TRACKER: "sam2_weights"}.get(folder)
    env = request.getfixturevalue(weights) if weights else {}
    tracks = TRACKS[request.node.callspec.id]
    single = RedisServer().start()
    try:
        with harnesses(folder, {**env, **single.env()}) as urls:
            reference = Run(urls, frames, tracks)
    finally:
        single.stop()
    with harnesses(folder, {**env, **cluster.env()}) as urls:
        started_at = time.monotonic()
        run = Run(urls, frames, tracks)
        print(f"\n{request.node.callspec.id}: {tracks} tracks x {STEPS} steps on the cluster in "
              f"{time.monotonic() - started_at:.1f} s")
    assert run.statuses == reference.statuses == Counter({200: tracks * (STEPS + 1)})
    assert_same_tracks(run, reference)
    assert all(shapes is not None for shapes in run.shapes)


def test_the_keys_of_one_track_share_a_slot(cluster, frames, sam2_weights):
    """SAM 2's tracks (a prompt-frame memory, memory entries and a step state per step): every key of a track
    carries its tag, so all of them sit on one master; the tracks spread over the masters."""
    import redis

    for port in cluster.masters():  # only this test's tracks
        redis.Redis(port=port).flushall()
    with harnesses(SAM2_TRACKER, {**sam2_weights, **cluster.env()}, count=1) as urls:
        Run(urls, frames[:4], 12)
    found: dict[str, set[int]] = {}
    keys = 0
    for port in cluster.masters():
        for key in redis.Redis(port=port).scan_iter(match=b"cvat-functions:state:pth-facebookresearch-sam2-tracker:*"):
            tag = key.split(b"{")[1].split(b"}")[0]
            found.setdefault(tag.decode(), set()).add(port)
            keys += 1
    assert len(found) == 12 and keys >= 12 * 4  # memory entries and step states per track
    assert all(len(ports) == 1 for ports in found.values()), found
    assert len({port for ports in found.values() for port in ports}) > 1  # spread over the masters


def test_sams_embedding_computed_by_one_replica_is_a_hit_at_the_other(cluster, data_dir, tmp_path):
    from tools.replies import random_weights

    image = base64.b64encode((data_dir / "images" / "dog.jpg").read_bytes()).decode()
    with harnesses(SAM, {**random_weights(SAM, tmp_path), **cluster.env()}) as (first, second):
        status, headers, reply = http("POST", first, {"image": image})  # a precompute waits for the upload
        assert status == 200 and headers["X-Embedding-Cache"] == "miss", reply
        status, headers, reply = http("POST", second, {"image": image, "pos_points": [[300, 350]], "neg_points": []})
        assert status == 200 and headers["X-Embedding-Cache"] == "hit", reply


# ---------------------------------------------------------------- faults

@pytest.fixture
def fresh_cluster(tmp_path):
    server = started(redis_server.RedisCluster(tmp_path))
    yield server
    server.stop()


def faulted_run(urls, frames, when, fault, tracks: int = 20, retry_for: float = 30.0) -> Run:
    """Tracks over the replicas, ``fault()`` run once when the first track reaches step ``when``; a 503 is
    retried for ``retry_for`` seconds."""
    done = threading.Event()

    def pause(i: int, step: int) -> None:
        if step == when and not done.is_set():
            with threading.Lock():
                if not done.is_set():
                    done.set()
                    fault()

    return Run(urls, frames, tracks, retry_for=retry_for, pause=pause)


def report(name: str, run: Run, tracks: int) -> None:
    survived = sum(shapes is not None for shapes in run.shapes)
    print(f"\n{name}: answers {dict(run.statuses)}, {survived}/{tracks} tracks survived, "
          f"503 window {run.window:.2f} s")


def test_a_master_killed_mid_track(fresh_cluster, frames, models_dir):
    with harnesses(NANOTRACK, {**fresh_cluster.env(), "CVAT_FUNCTIONS_REDIS_TIMEOUT": "0.5"}) as urls:
        reference = Run(urls, frames, 20)
        victim = fresh_cluster.masters()[0]
        run = faulted_run(urls, frames, 3, lambda: fresh_cluster.processes[victim].send_signal(signal.SIGKILL))
        fresh_cluster.wait_ok()
        after = Run(urls, frames, 5)  # the failover is over: new tracks run as before
    report("SIGKILL of a master", run, 20)
    assert set(run.statuses) <= {200, 503, 410} and 500 not in run.statuses
    assert victim not in fresh_cluster.masters()
    assert_same_tracks(run, reference)
    assert sum(s is not None for s in run.shapes) > 0
    assert after.statuses == Counter({200: 5 * (STEPS + 1)})


def test_a_master_frozen_past_the_timeout(fresh_cluster, frames, models_dir):
    with harnesses(NANOTRACK, {**fresh_cluster.env(), "CVAT_FUNCTIONS_REDIS_TIMEOUT": "0.5"}) as urls:
        reference = Run(urls, frames, 20)
        victim = fresh_cluster.masters()[1]
        process = fresh_cluster.processes[victim]

        def freeze():
            process.send_signal(signal.SIGSTOP)
            threading.Timer(4.0, process.send_signal, [signal.SIGCONT]).start()

        run = faulted_run(urls, frames, 3, freeze)
        time.sleep(1)
        fresh_cluster.wait_ok()
        after = Run(urls, frames, 5)
    report("SIGSTOP of a master for 4 s", run, 20)
    assert set(run.statuses) <= {200, 503, 410} and 503 in run.statuses
    assert_same_tracks(run, reference)
    assert after.statuses == Counter({200: 5 * (STEPS + 1)})


def test_a_full_master_is_a_clear_503(fresh_cluster, frames, models_dir):
    import redis

    with harnesses(NANOTRACK, fresh_cluster.env(), count=1) as (url,):
        for port in fresh_cluster.masters():
            redis.Redis(port=port).config_set("maxmemory-policy", "noeviction")
            redis.Redis(port=port).config_set("maxmemory", "1")  # full at once
        code, _, reply = http("POST", url, {"image": frames[0], "shapes": [{"type": "rectangle",
                                                                             "points": [250, 160, 420, 330]}],
                                            "states": []})
        for port in fresh_cluster.masters():
            redis.Redis(port=port).config_set("maxmemory", "0")
        assert code == 503 and "maxmemory" in reply["error"] and "full" in reply["error"], reply
        code, _, reply = http("POST", url, {"image": frames[0], "shapes": [{"type": "rectangle",
                                                                             "points": [250, 160, 420, 330]}],
                                            "states": []})
        assert code == 200, reply  # the same worker, alive, once there is room


def test_an_evicted_state_is_410(fresh_cluster, frames, models_dir):
    import redis

    with harnesses(NANOTRACK, fresh_cluster.env(), count=1) as (url,):
        code, _, reply = http("POST", url, {"image": frames[0], "shapes": [{"type": "rectangle",
                                                                             "points": [250, 160, 420, 330]}],
                                            "states": []})
        assert code == 200
        for port in fresh_cluster.masters():  # what an eviction policy does to a state under memory pressure
            client = redis.Redis(port=port)
            for key in client.scan_iter(match=b"cvat-functions:state:*"):
                client.delete(key)
        code, _, gone = http("POST", url, {"image": frames[1], "shapes": [None], "states": reply["states"]})
    assert code == 410 and "start the track again" in gone["error"]


def test_a_sentinel_failover(tmp_path, frames, models_dir):
    sentinels = started(redis_server.RedisSentinels(tmp_path))
    try:
        with harnesses(NANOTRACK, {**sentinels.env(), "CVAT_FUNCTIONS_REDIS_TIMEOUT": "0.5"}) as urls:
            reference = Run(urls, frames, 20)
            old = sentinels.current_master()
            # a failover once took over 30 s and, before the set waited for its sentinels to know the replica,
            # sometimes never came ("no good slave"); a slow one (Sentinel's TILT mode, which a sentinel starved
            # of CPU enters for 30 s) gets 503s meanwhile, retried for up to 90 s here
            run = faulted_run(urls, frames, 3, lambda: sentinels.processes[old].send_signal(signal.SIGKILL),
                              tracks=20, retry_for=90.0)
            redis_server.wait_for(lambda: sentinels.current_master() != old, 90, "the failover")
            after = Run(urls, frames, 5)
        report("Sentinel failover (master SIGKILLed)", run, 20)
        assert set(run.statuses) <= {200, 503, 410}
        assert_same_tracks(run, reference)
        assert after.statuses == Counter({200: 5 * (STEPS + 1)})
    finally:
        sentinels.stop()


def test_configuration_errors_name_the_variable():
    from common.runtime import redis_client

    with pytest.raises(ValueError, match="only one of"):
        redis_client.from_env({"CVAT_FUNCTIONS_REDIS_HOST": "a", "CVAT_FUNCTIONS_REDIS_CLUSTER": "b:1"})
    with pytest.raises(ValueError, match="CVAT_FUNCTIONS_REDIS_CLUSTER: 'b' is not host:port"):
        redis_client.from_env({"CVAT_FUNCTIONS_REDIS_CLUSTER": "b"})
    with pytest.raises(ValueError, match="database 0 only"):
        redis_client.from_env({"CVAT_FUNCTIONS_REDIS_CLUSTER": "127.0.0.1:1", "CVAT_FUNCTIONS_REDIS_DB": "2"})
    unreachable = redis_client.from_env({"CVAT_FUNCTIONS_REDIS_CLUSTER": "127.0.0.1:1",
                                         "CVAT_FUNCTIONS_REDIS_TIMEOUT": "0.2"})  # made on first use
    with pytest.raises(redis_client.ClusterUnreachable, match="cannot be reached"):
        unreachable.get("key")


def test_a_tracker_starts_before_its_cluster_and_serves_once_it_is_up(tmp_path, frames, models_dir):
    """Pods start in any order: a worker whose cluster is not up yet starts, answers 503, then serves."""
    server = redis_server.RedisCluster(tmp_path)
    body = {"image": frames[0], "shapes": [{"type": "rectangle", "points": [250, 160, 420, 330]}], "states": []}
    with harnesses(NANOTRACK, {**server.env(), "CVAT_FUNCTIONS_REDIS_TIMEOUT": "0.3"}, count=1) as (url,):
        code, _, reply = http("POST", url, body)
        assert code == 503 and "unreachable" in reply["error"], reply
        started(server)
        try:
            code, _, reply = http("POST", url, body)
        finally:
            server.stop()
    assert code == 200, reply
