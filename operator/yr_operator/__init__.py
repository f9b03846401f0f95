"""The yr operator: turns each YRInstance into a Pod and keeps its status true (kopf)."""

try:
    import aiohttp  # noqa: F401
    import kopf  # noqa: F401
except ImportError as error:
    raise ImportError(
        "the yr operator needs kopf and aiohttp: pip install 'yr[operator]'"
    ) from error
