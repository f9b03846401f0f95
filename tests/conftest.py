pytest_plugins = ["tests.local_fixtures"]
