"""Root conftest: puts the checkout on sys.path and loads the test-VM plugin for every run."""

pytest_plugins = ["tests.vm.plugin"]
