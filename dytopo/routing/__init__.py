"""Routing: the topology's `routing:` settings and each round's communication graph from them."""

from dytopo.routing.config import Mode, RoutingConfig
from dytopo.routing.router import Edge, Routing, route, tiers

__all__ = ["Edge", "Mode", "Routing", "RoutingConfig", "route", "tiers"]
