"""The array paths of routing: embedders hand the router float64 arrays, sigma has a heap for
sparse graphs and a scan for dense ones, the product runs in tiles. Each gives exactly what the
loop reference in test_router_reference.py gives."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import httpx
import networkx as nx
import numpy as np
import numpy.typing as npt
import pytest
from test_router_reference import (
    CONFIGS,
    Fixed,
    exact,
    random_graph,
    reference_order,
    reference_route,
    reference_similarity,
    topic_vectors,
)

from dytopo.embedders import Embeddings, HashEmbedder, HttpEmbedder, normalise, normalise_rows
from dytopo.errors import BackendError
from dytopo.router import _sigma_heap, _sigma_scan, build_graph, route, similarity_matrix
from dytopo.routing import RoutingConfig


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
    rng = np.random.default_rng(8)
    for n in (1, 2, 5, 12, 33):
        agents = [f"a{k}" for k in range(n)]
        vectors = topic_vectors(n, 24, rng, max(2, n // 4))
        seed = int(rng.integers(1000))
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
    assert exact(new) == exact(reference_route(agents, vectors, cfg, rng=random.Random(0)))


def test_tiled_product_on_arrays_equals_the_loop_bit_for_bit() -> None:
    # 48 x 90 at dim 384 spans 3 x 3 tiles of 16 x 40, the last ragged; 700 x 3: one product.
    rng = np.random.default_rng(4)
    for n, m in ((48, 90), (17, 130), (700, 3)):
        q = np.asarray(topic_vectors(n, 384, rng, 9)[:n])
        k = np.asarray(topic_vectors(m, 384, rng, 9)[:m])
        expected = json.dumps(reference_similarity(q.tolist(), k.tolist()))
        assert json.dumps(similarity_matrix(q, k)) == expected


# -- sigma -----------------------------------------------------------------------------------


Sigma = Callable[[int, npt.NDArray[np.intp], npt.NDArray[np.intp]], tuple[list[int], bool]]


@pytest.mark.parametrize("sigma", [_sigma_heap, _sigma_scan])
def test_both_sigmas_equal_the_loop_on_random_graphs(sigma: Sigma) -> None:
    rng = random.Random(9)
    for n in (1, 2, 5, 13, 40):
        agents = [f"a{k}" for k in range(n)]
        for p in (0.0, 0.03, 0.1, 0.3, 0.7, 1.0):
            graph = build_graph(agents, random_graph(n, p, rng))
            src = np.array([int(u[1:]) for u, _ in graph.edges], dtype=np.intp)
            tgt = np.array([int(v[1:]) for _, v in graph.edges], dtype=np.intp)
            order, acyclic = sigma(n, src, tgt)
            assert [agents[k] for k in order] == reference_order(agents, graph)
            assert acyclic == nx.is_directed_acyclic_graph(graph)
