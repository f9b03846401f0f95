"""A local Kubernetes cluster for tests: emulated API server, GC, scheduler and a process node.

See tests/cluster/README.md. Test suites use it through the `local_cluster` fixture
(tests/cluster/fixtures.py); people use `python -m tests.cluster.apiserver` and
`python -m tests.cluster.node`.
"""
