"""Custom (extended) resources: names and quantities as Kubernetes accepts them, checked early.

The same rules hold for ``InvokeOptions(custom_resources=...)``, ``yr.Config(resources=...)``
and the YRInstance schema, so a request that would be refused on a cluster is refused locally.
"""

from __future__ import annotations

import re
from typing import Any

# Kubernetes extended resources: a domain-prefixed name (prefix a DNS subdomain outside
# kubernetes.io), whole non-negative quantities.
EXTENDED_RESOURCE_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_NAME = re.compile(EXTENDED_RESOURCE_NAME)
MAX_QUANTITY = 1_000_000


def check_resource_map(owner: str, field: str, value: Any) -> None:
    """A dict of extended-resource name to whole non-negative quantity, or a named error."""
    if not isinstance(value, dict):
        raise TypeError(f"{owner}.{field} must be a dict of resource name to count, got {value!r}")
    for name, amount in value.items():
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > 253:
            raise ValueError(
                f"{owner}.{field}: {name!r} is not an extended resource name; use a "
                "domain-prefixed name such as 'nvidia.com/gpu' or 'example.com/fpga'"
            )
        if name.split("/", 1)[0].endswith("kubernetes.io"):
            raise ValueError(
                f"{owner}.{field}: {name!r} is in the kubernetes.io domain, which Kubernetes "
                "reserves; cpu and memory have their own options"
            )
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(f"{owner}.{field}[{name!r}] must be a number, got {amount!r}")
        if amount < 0 or amount != int(amount) or amount > MAX_QUANTITY:
            raise ValueError(
                f"{owner}.{field}[{name!r}] must be a whole number between 0 and "
                f"{MAX_QUANTITY} (extended resources are counted, not divided), got {amount!r}"
            )
