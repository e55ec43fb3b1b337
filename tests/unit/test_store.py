"""The memory side of the store (refcounts, TTL, caps) on an injected clock; sources; errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from common.disk_cache import DiskCache
from common.errors import NotFound
from common.registry import ModelConfig, RegisteredModel, Registry
from common.s3 import S3AccessDenied, S3Unreachable, _errors
from common.sources import S3Source, local_path
from common.store import ModelStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Model:
    def __init__(self, name: str) -> None:
        self.name, self.closed = name, False

    def close(self) -> None:
        self.closed = True


def store_of(*names: str, clock: Clock, **options) -> ModelStore:
    registry = Registry(
        [
            RegisteredModel(ModelConfig(name=n, backend="llama-cpp", source=f"/{n}"), False)
            for n in names
        ]
    )
    return ModelStore(
        registry,
        lambda config, path: Model(config.name),
        lambda config: Path("/nonexistent"),
        clock=clock,
        **options,
    )


def use(store: ModelStore, name: str) -> Model:
    with store.use(name) as model:
        return model


def test_ttl_unloads_idle_models_on_time():
    clock = Clock()
    store = store_of("a", clock=clock, ttl=10)
    model = use(store, "a")
    clock.now += 9
    assert store.collect() == [] and store.loaded() == ["a"]
    clock.now += 1
    assert store.collect() == ["a"] and model.closed
    assert use(store, "a") is not model  # loaded again on demand


def test_a_model_in_use_is_never_unloaded():
    clock = Clock()
    store = store_of("a", clock=clock, ttl=1)
    with store.use("a") as model:
        clock.now += 100
        assert store.collect() == [] and not model.closed
    clock.now += 1
    assert store.collect() == ["a"]


def test_ttl_zero_unloads_when_idle_and_minus_one_never():
    clock = Clock()
    eager = store_of("a", clock=clock, ttl=0)
    assert use(eager, "a").closed and eager.loaded() == []
    keeper = store_of("a", clock=clock, ttl=-1)
    model = use(keeper, "a")
    clock.now += 10**9
    assert keeper.collect() == [] and not model.closed


def test_cap_on_loaded_models_unloads_the_least_recently_used_idle_one():
    clock = Clock()
    store = store_of("a", "b", "c", clock=clock, max_loaded=2)
    a, b = use(store, "a"), use(store, "b")
    clock.now += 1
    use(store, "a")  # a is now more recent than b
    clock.now += 1
    use(store, "c")
    assert sorted(store.loaded()) == ["a", "c"] and b.closed and not a.closed
    with store.use("a"), store.use("c"):
        use(store, "b")  # nothing idle to unload: over the cap rather than failing
        assert len(store.loaded()) == 3
    store.collect()
    assert len(store.loaded()) == 2


def test_concurrent_first_uses_load_once():
    loads = []
    gate = threading.Event()

    def slow_loader(config, path):
        loads.append(config.name)
        gate.wait(5)
        return Model(config.name)

    registry = Registry(
        [RegisteredModel(ModelConfig(name="a", backend="llama-cpp", source="/a"), False)]
    )
    store = ModelStore(registry, slow_loader, lambda config: Path("/a"))
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(use(store, "a"))) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert loads == ["a"] and len({id(m) for m in seen}) == 1 and len(seen) == 8


def test_preloading_loads_in_the_background_and_a_request_waits_for_that_load():
    from common import metering

    loads = []
    loading_a, gate = threading.Event(), threading.Event()

    def slow_loader(config, path):
        loads.append(config.name)
        if config.name == "broken":
            raise RuntimeError("no such weights")
        loading_a.set()
        gate.wait(5)
        return Model(config.name)

    registry = Registry(
        [
            RegisteredModel(ModelConfig(name=n, backend="llama-cpp", source=f"/{n}"), False)
            for n in ("a", "broken")
        ]
    )
    store = ModelStore(registry, slow_loader, lambda config: Path("/a"))
    with pytest.raises(NotFound):
        store.preload(["no-such-model"])  # a misconfiguration fails the start
    assert store.preload([]) is None
    thread = store.preload(["broken", "a"])  # a failed load is logged; the next one goes on
    assert loading_a.wait(5)
    record = metering.RequestRecord("r1", "createChatCompletion", "http")
    seen = []

    def request() -> None:
        with metering.recording(record):
            seen.append(use(store, "a"))

    waiting = threading.Thread(target=request)
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()  # waits for the preload's load, not a second one
    gate.set()
    waiting.join(10)
    thread.join(10)
    assert loads == ["broken", "a"] and store.loaded() == ["a"] and seen[0].name == "a"
    assert record.cold_start and record.spans["load"] >= 0.2


def test_readiness_says_loading_then_ready_or_which_model_failed():
    """What /health, /ping and the images' HEALTHCHECK report: loading while a preloaded
    model loads, then ready, or failed with what its requests are told (until a later
    request loads it)."""
    gate, attempts = threading.Event(), []

    def loader(config, path):
        attempts.append(config.name)
        gate.wait(5)
        if config.name == "flaky" and attempts.count("flaky") == 1:
            raise RuntimeError("the file is not there yet")
        return Model(config.name)

    registry = Registry(
        [
            RegisteredModel(ModelConfig(name=n, backend="llama-cpp", source=f"/{n}"), False)
            for n in ("a", "flaky")
        ]
    )
    store = ModelStore(registry, loader, lambda config: Path("/a"))
    assert store.readiness().state == "ready"  # nothing to preload
    thread = store.preload(["a", "flaky"])
    assert store.readiness().state == "loading" and store.readiness().loading
    gate.set()
    thread.join(10)
    readiness = store.readiness()
    assert readiness.state == "failed" and not readiness.loading
    assert readiness.failed == {"flaky": "The model 'flaky' could not be loaded."}
    assert use(store, "flaky").name == "flaky"  # a request loads it again
    assert store.readiness().state == "ready" and store.readiness().failed == {}


def test_huggingface_cache_sources(tmp_path):
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123\n")
    env = {"HF_HOME": str(tmp_path), "HOME": str(tmp_path / "home")}
    assert local_path("m", "hf://org/name", env) == repo / "snapshots" / "abc123"
    assert local_path("m", "hf://org/name@abc123", env) == repo / "snapshots" / "abc123"
    with pytest.raises(NotFound, match="Hugging Face cache"):
        local_path("m", "hf://org/name@v2", env)
    with pytest.raises(NotFound):
        local_path("m", "hf://org/other", env)


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("NoSuchKey", 404), NotFound),
        (client_error("403", 403), S3AccessDenied),
        (client_error("PreconditionFailed", 412), S3Unreachable),
        (client_error("SlowDown", 503), S3Unreachable),
        (EndpointConnectionError(endpoint_url="http://x"), S3Unreachable),
    ],
)
def test_s3_errors_become_store_errors(error, expected):
    with pytest.raises(expected) as caught:
        with _errors("my-model", S3Source("bucket", "key"), "s3:GetObject"):
            raise error
    assert "my-model" in caught.value.message
    if expected is S3AccessDenied:
        assert "s3:GetObject" in caught.value.message


def test_leftover_partial_downloads_are_cleaned(tmp_path):
    cache = DiskCache(tmp_path, None)
    (tmp_path / "partial" / "abc.123.ff").mkdir()
    (tmp_path / "partial" / "abc.123.ff" / "half.gguf").write_bytes(b"x")
    cache.clean_partials()
    assert list((tmp_path / "partial").iterdir()) == []


def test_a_failed_fill_leaves_no_entry_and_no_partial(tmp_path):
    cache = DiskCache(tmp_path, None)

    def fail(data: Path) -> None:
        (data / "half").write_bytes(b"x")
        raise S3Unreachable("m")

    with pytest.raises(S3Unreachable):
        cache.fill("k", {"source": "s3://b/k", "size": 1}, fail)
    assert cache.get("k") is None and list((tmp_path / "partial").iterdir()) == []
    entry, filled = cache.fill(
        "k", {"source": "s3://b/k", "size": 1}, lambda d: (d / "f").write_bytes(b"y")
    )
    assert filled and (entry.data / "f").read_bytes() == b"y"
    assert cache.fill("k", {}, fail) == (cache.get("k"), False)  # already there: not refilled
