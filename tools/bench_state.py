"""``tools/fn bench-state [FOLDER ...]``: what tracker states and embedding caches cost in Redis, to size it.

For each tracker it starts one track on the test video (``TEST_DATA_DIR/video/tennis``) through the CVAT door,
steps it ``--steps`` times, and reads Redis's own ``MEMORY USAGE`` of every key each request wrote: the bytes
of a track's start (template or prompt-frame memory, first state), of each step, and of the whole track, all of
which stay until ``TRACKER_STATE_TTL`` after their last use. For each interactor with an embedding cache (SAM,
SAM 2) it reads the bytes of one image's embedding. ``--cluster-latency`` measures instead one tracking step
with the state on a Redis Cluster next to a single Redis, alternated. A private redis-server holds it all;
the models load as
the functions do (``MODELS_DIR``, ``MODEL_PATH``; ``--random-weights`` for SAM, SAM 2 and the SAM 2 tracker
builds the configured architecture with random weights, whose state sizes are the real ones).
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
from pathlib import Path

from .config import find_configs
from .redis_server import RedisServer

STATE_KEYS = b"cvat-functions:state:*"
EMBEDDING_KEYS = b"cvat-functions:embedding:*"


def key_bytes(client, pattern: bytes) -> dict[bytes, int]:
    """Every key matching ``pattern`` and Redis's own count of the memory it takes (a single node: SCAN is fine)."""
    return {key: int(client.memory_usage(key, samples=0) or 0) for key in client.scan_iter(match=pattern)}


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.2f} MiB"


def measure_tracker(folder: Path, env: dict[str, str], frames: list[Path], steps: int) -> dict[str, float]:
    from common.doors.cvat.door import door_for
    from common.models.folder import load_model

    server = RedisServer().start()
    try:
        model = load_model(folder, env={**os.environ, **env, **server.env(), "TRACKER_CACHE_BYTES": "0"})
        door, client = door_for(model), server.client()
        encoded = [base64.b64encode(f.read_bytes()).decode() for f in frames[:steps + 1]]
        reply = door({"image": encoded[0], "shapes": [{"type": "rectangle", "points": [280, 160, 420, 330]}],
                      "states": []}).payload
        start = sum(key_bytes(client, STATE_KEYS).values())
        seen, per_step = start, []
        for image in encoded[1:]:
            reply = door({"image": image, "shapes": [None], "states": reply["states"]}).payload
            total = sum(key_bytes(client, STATE_KEYS).values())
            per_step.append(total - seen)
            seen = total
        return {"start": start, "step": sum(per_step) / max(len(per_step), 1), "track": seen, "steps": len(per_step)}
    finally:
        server.stop()


def measure_embedding(folder: Path, env: dict[str, str], image: Path) -> int | None:
    from common.core.image import Image
    from common.models.folder import load_model

    server = RedisServer().start()
    try:
        model = load_model(folder, env={**os.environ, **env, **server.env()})
        if model.prepare(Image.from_bytes(image.read_bytes()), shared=True) is None:
            return None  # nothing to cache (GrabCut)
        return sum(key_bytes(server.client(), EMBEDDING_KEYS).values())
    finally:
        server.stop()


def cluster_latency(folder: Path, env: dict[str, str], frames: list[Path], steps: int) -> dict[str, list[float]]:
    """Seconds of one tracking step with the state on a single Redis and on a Redis Cluster (3 masters, 3
    replicas), the two alternating step by step on the same frames (``steps`` rounds after a warm-up)."""
    import time

    from common.doors.cvat.door import door_for
    from common.models.folder import load_model

    from .redis_server import RedisCluster

    single, cluster = RedisServer().start(), RedisCluster(Path(tempfile.mkdtemp(prefix="bench-cluster-"))).start()
    try:
        doors = {name: door_for(load_model(folder, env={**os.environ, **env, **where, "TRACKER_CACHE_BYTES": "0"}))
                 for name, where in (("single Redis", single.env()), ("Redis Cluster", cluster.env()))}
        encoded = [base64.b64encode(f.read_bytes()).decode() for f in frames[:steps + 4]]
        states = {name: door({"image": encoded[0], "shapes": [{"type": "rectangle", "points": [280, 160, 420, 330]}],
                              "states": []}).payload["states"] for name, door in doors.items()}
        seconds: dict[str, list[float]] = {name: [] for name in doors}
        for n, image in enumerate(encoded[1:]):
            for name, door in doors.items():
                started = time.perf_counter()
                states[name] = door({"image": image, "shapes": [None], "states": states[name]}).payload["states"]
                if n >= 3:  # a warm-up first
                    seconds[name].append(time.perf_counter() - started)
        return seconds
    finally:
        single.stop()
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/fn bench-state", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="function folders (default: every tracker and interactor)")
    parser.add_argument("--steps", type=int, default=10, help="tracking steps after the start (10)")
    parser.add_argument("--random-weights", action="store_true",
                        help="random weights of the configured architecture for SAM, SAM 2, the SAM 2 tracker")
    parser.add_argument("--siammask-weights", help="a SiamMask checkpoint (MODEL_PATH of that function)")
    parser.add_argument("--cluster-latency", action="store_true",
                        help="instead: a tracker step with its state on a Redis Cluster next to a single Redis, "
                             "alternated, and their ratio")
    args = parser.parse_args(argv)
    data = Path(os.environ.get("TEST_DATA_DIR", "")) if os.environ.get("TEST_DATA_DIR") else None
    if data is None or not (data / "video" / "tennis").is_dir():
        parser.error("TEST_DATA_DIR must point at the test data (video/tennis, images/dog.jpg)")
    frames = sorted((data / "video" / "tennis").iterdir())
    configs = [c for c in find_configs(args.paths or None) if c.kind in ("tracker", "interactor")]
    scratch = Path(tempfile.mkdtemp(prefix="bench-state-"))
    if args.cluster_latency:
        print(f"one object's step, {args.steps} rounds after 3 warm-up steps, single Redis and Redis Cluster "
              "alternated (TRACKER_CACHE_BYTES=0)")
    else:
        print(f"Redis MEMORY USAGE per key, {args.steps} steps, one object per track (TRACKER_CACHE_BYTES=0)")
    for config in configs:
        folder = config.path.parent
        env: dict[str, str] = {}
        if args.random_weights and "facebookresearch/sam" in folder.as_posix():
            from .replies import random_weights

            env = random_weights(folder, scratch)
        if args.siammask_weights and "siammask" in folder.as_posix():
            env = {"MODEL_PATH": args.siammask_weights}
        try:
            if args.cluster_latency:
                if config.kind == "tracker":
                    import statistics

                    seconds = cluster_latency(folder, env, frames, args.steps)
                    medians = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
                    print(f"{config.name:36} step median: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in
                                                                         medians.items())
                          + f"; cluster / single = {medians['Redis Cluster'] / medians['single Redis']:.2f}")
            elif config.kind == "tracker":
                found = measure_tracker(folder, env, frames, args.steps)
                print(f"{config.name:36} tracker     start {kib(found['start']):>12}  per step {kib(found['step']):>12}"
                      f"  track of {found['steps']} steps {kib(found['track']):>12}")
            else:
                found = measure_embedding(folder, env, data / "images" / "dog.jpg")
                if found is not None:
                    print(f"{config.name:36} interactor  embedding per image {kib(found):>12}")
        except Exception as exc:  # a function whose weights are missing here: say so, measure the others
            print(f"{config.name:36} not measured: {type(exc).__name__}: {str(exc)[:150]}")
    return 0
