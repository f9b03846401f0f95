"""Inter-pod affinity as the scheduler's InterPodAffinity plugin applies it (filter and score).

A term selects pods (labelSelector, in the term's namespaces or the incoming pod's) and names a
topology key: two nodes are in one domain when they carry the same value of that label
(`kubernetes.io/hostname`: each node its own domain).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]
AFFINITY_MISMATCH = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY_MISMATCH = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions); a missing selector matches nothing."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, op = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _selects(term: Obj, pod: Obj, owner_namespace: str) -> bool:
    namespaces = term.get("namespaces") or [owner_namespace]
    meta = pod["metadata"]
    return meta.get("namespace") in namespaces and selector_matches(
        term.get("labelSelector"), meta.get("labels") or {}
    )


def _domain(node: Obj | None, key: str) -> str | None:
    if node is None:
        return None
    return (node["metadata"].get("labels") or {}).get(key)


def _same_domain(node: Obj, other: Obj | None, key: str) -> bool:
    value = _domain(node, key)
    return value is not None and value == _domain(other, key)


def _terms(pod: Obj, kind: str, when: str) -> list[Obj]:
    return ((pod["spec"].get("affinity") or {}).get(kind) or {}).get(when) or []


def filter_reason(pod: Obj, node: Obj, placed: Iterable[tuple[Obj, Obj | None]]) -> str | None:
    """Why ``pod`` may not go to ``node`` given the bound pods (each with its node), or None."""
    placed = list(placed)
    namespace = pod["metadata"].get("namespace", "")
    for term in _terms(pod, "podAffinity", REQUIRED):
        key = term["topologyKey"]
        matching = [(p, n) for p, n in placed if _selects(term, p, namespace)]
        if matching:
            if not any(_same_domain(node, n, key) for _, n in matching):
                return AFFINITY_MISMATCH
        elif not _selects(term, pod, namespace):
            # The first pod of a group may go anywhere only if it matches its own term.
            return AFFINITY_MISMATCH
    for term in _terms(pod, "podAntiAffinity", REQUIRED):
        key = term["topologyKey"]
        if any(_same_domain(node, n, key) and _selects(term, p, namespace) for p, n in placed):
            return ANTI_AFFINITY_MISMATCH
    for other, other_node in placed:
        owner_ns = other["metadata"].get("namespace", "")
        for term in _terms(other, "podAntiAffinity", REQUIRED):
            if _same_domain(node, other_node, term["topologyKey"]) and _selects(
                term, pod, owner_ns
            ):
                return EXISTING_ANTI_AFFINITY
    return None


def preference_score(pod: Obj, node: Obj, placed: Iterable[tuple[Obj, Obj | None]]) -> int:
    """Sum of the weights of preferred terms the node satisfies (anti-affinity subtracts)."""
    placed = list(placed)
    namespace = pod["metadata"].get("namespace", "")
    score = 0
    for kind, sign in (("podAffinity", 1), ("podAntiAffinity", -1)):
        for weighted in _terms(pod, kind, PREFERRED):
            term = weighted["podAffinityTerm"]
            key = term["topologyKey"]
            hits = sum(
                1 for p, n in placed if _same_domain(node, n, key) and _selects(term, p, namespace)
            )
            score += sign * int(weighted.get("weight", 1)) * hits
    return score
