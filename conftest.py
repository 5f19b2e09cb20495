pytest_plugins = ["tickwatch_devstack.pytest_plugin"]
