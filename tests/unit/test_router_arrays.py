"""Routing on arrays: embedders hand the router `Embeddings` (their rows plus one float64
array), and the router reads the array. Each gives exactly what the loop reference in
test_router_reference.py gives."""

from __future__ import annotations

import json
import random

import httpx
import numpy as np
import pytest
from test_router_reference import (
    CONFIGS,
    Fixed,
    exact,
    grid_vectors,
    new_route,
    reference_route,
    topic_vectors,
)

from dytopo.embedders import Embeddings, HashEmbedder, HttpEmbedder, normalise, normalise_rows
from dytopo.errors import BackendError
from dytopo.routing.config import RoutingConfig
from dytopo.routing.router import route


class FixedArray(Fixed):
    """Hands out given vectors as built-in embedders do: `Embeddings` with their array."""

    async def embed(self, texts: object) -> Embeddings:
        return Embeddings(np.array(self.vectors, dtype=np.float64).reshape(len(self.vectors), -1))


# -- embedders -------------------------------------------------------------------------------


def test_normalise_rows_equals_normalise_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    for rows, dim in ((1, 1), (3, 2), (17, 384), (40, 600)):
        raw = (rng.standard_normal((rows, dim)) * rng.uniform(1e-3, 1e3, (rows, 1))).tolist()
        raw[0] = [0.0] * dim  # a zero vector stays zero
        unit = normalise_rows(raw)
        assert json.dumps(unit) == json.dumps([normalise(v) for v in raw])
        assert json.dumps(unit.array.tolist()) == json.dumps(unit)
        assert unit.array.shape == (rows, dim)
        assert not unit.array.flags.writeable


def test_normalise_rows_refuses_vectors_of_different_lengths() -> None:
    assert normalise_rows([], 8).array.shape == (0, 8)
    ragged: list[list[float]] = [[1.0, 2.0], [1.0]]
    nested: list[list[list[float]]] = [[[1.0, 2.0]], [[3.0, 4.0]]]
    for bad in (ragged, nested):
        with pytest.raises(ValueError, match=r"inhomogeneous|one length"):
            normalise_rows(bad)  # type: ignore[arg-type]


async def test_http_embedder_names_the_url_when_vectors_are_not_flat() -> None:
    def handle(req: httpx.Request) -> httpx.Response:
        data = [{"index": 0, "embedding": [[1.0, 2.0]]}, {"index": 1, "embedding": [[3.0]]}]
        return httpx.Response(200, json={"data": data})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    embedder = HttpEmbedder("http://127.0.0.1:9", client=client)
    with pytest.raises(BackendError, match="/v1/embeddings returned vectors that are not flat"):
        await embedder.embed(["a", "b"])
    await client.aclose()


async def test_hash_embedder_gives_the_vectors_it_gave_as_lists() -> None:
    texts = ["sourced facts about cache eviction", "", "a draft on eviction and facts"]
    vectors = await HashEmbedder(dim=64).embed(texts)
    assert isinstance(vectors, Embeddings)
    counts = [HashEmbedder(dim=64)._counts(t) for t in texts]
    assert json.dumps(vectors) == json.dumps([normalise(c) for c in counts])
    assert (await HashEmbedder().embed([])).array.shape == (0, 256)


# -- route on arrays -------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.tau}")
async def test_route_on_embedder_arrays_equals_the_loop_router(cfg: RoutingConfig) -> None:
    rng = random.Random(8)
    for n in (1, 2, 5, 12, 33):
        agents = [f"a{k}" for k in range(n)]
        vectors = grid_vectors(n, rng, max(2, n // 4))
        seed = rng.randrange(1000)
        old = reference_route(agents, vectors, cfg, rng=random.Random(seed))
        new = await route(
            agents, ["q"] * n, ["k"] * n, FixedArray(vectors), cfg, rng=random.Random(seed)
        )
        assert exact(new) == exact(old)


async def test_route_reads_the_embedders_array_not_its_lists() -> None:
    # The lists are what `embed` promises; the router takes the array beside them, so 2n * dim
    # floats are not converted again. Blank the lists: the routing must not change.
    n = 40
    agents = [f"a{k}" for k in range(n)]
    vectors = topic_vectors(n, 384, np.random.default_rng(2), 10)
    embeddings = Embeddings(np.array(vectors))
    embeddings[:] = [[] for _ in embeddings]

    class Given(Fixed):
        async def embed(self, texts: object) -> Embeddings:
            return embeddings

    cfg = RoutingConfig(tau=0.35)
    new = await route(agents, ["q"] * n, ["k"] * n, Given(vectors), cfg, rng=random.Random(0))
    assert len(new.edges) > n
    assert exact(new) == exact(await new_route(agents, vectors, cfg, 0))  # from the lists
