"""Checks every trace must pass, shared by unit and integration tests."""

from __future__ import annotations

from typing import Any


def check_routing_invariants(events: list[dict[str, Any]]) -> int:
    """Per routing event: an N x N matrix, sigma a permutation, in dynamic mode (no extension)
    exactly the pairs above tau as edges, and deliveries matching the edges. Returns the count."""
    checked = 0
    for r in (e for e in events if e["event"] == "routing"):
        n = len(r["agents"])
        assert len(r["similarity"]) == n
        assert all(len(row) == n for row in r["similarity"])
        assert sorted(r["order"]) == sorted(r["agents"])
        edges = {(e["source"], e["target"]) for e in r["edges"]}
        if r["mode"] == "dynamic":
            assert all(e["score"] > r["tau"] for e in r["edges"])
            expected = {
                (r["agents"][j], r["agents"][i])
                for i in range(n)
                for j in range(n)
                if i != j and r["similarity"][i][j] > r["tau"]
            }
            assert edges == expected
        delivered = {
            (d["from"], d["to"])
            for d in events
            if d["event"] == "delivery" and d["round"] == r["round"]
        }
        assert delivered == edges
        checked += 1
    return checked
