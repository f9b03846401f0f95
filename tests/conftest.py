pytest_plugins = ["tests.local_fixtures", "tests.cluster.fixtures"]
