"""Sentence encoders for need/offer matching."""

from dytopo.embedders.base import Embedder, normalise
from dytopo.embedders.hashing import HashEmbedder
from dytopo.embedders.http import HttpEmbedder

__all__ = ["Embedder", "HashEmbedder", "HttpEmbedder", "normalise"]
