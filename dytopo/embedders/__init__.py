"""Sentence encoders for need/offer matching."""

from dytopo.embedders.base import Embedder, Embeddings, normalise, normalise_rows
from dytopo.embedders.hashing import HashEmbedder
from dytopo.embedders.http import HttpEmbedder

__all__ = [
    "Embedder",
    "Embeddings",
    "HashEmbedder",
    "HttpEmbedder",
    "normalise",
    "normalise_rows",
]
