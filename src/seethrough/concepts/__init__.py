"""Concepts held by directions rather than single units: Net2Vec and TCAV.

Kept apart from ``seethrough.dissect`` (which asks what single units detect): these methods
learn directions in a layer's space, and TCAV needs gradients of the classes.

Example:
    >>> from seethrough.concepts import net2vec, tcav   # doctest: +SKIP
"""
from seethrough.concepts.net2vec import Net2VecResult, net2vec
from seethrough.concepts.tcav import TCAVResult, concept_activation_vector, tcav

__all__ = ["Net2VecResult", "TCAVResult", "concept_activation_vector", "net2vec", "tcav"]
