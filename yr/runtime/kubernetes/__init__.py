"""The Kubernetes backend: instances as YRInstance objects that the operator turns into pods."""

try:
    import kubernetes  # noqa: F401
except ImportError as error:  # the local runtime does not need it: it is an extra
    raise ImportError(
        "yr's Kubernetes backend needs the kubernetes client: pip install 'yr[kubernetes]'"
    ) from error
