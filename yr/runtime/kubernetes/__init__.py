"""The Kubernetes backend: instances as YRInstance objects that the operator turns into pods."""
