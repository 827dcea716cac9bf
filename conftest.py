"""Root conftest: puts the checkout on sys.path and loads, for every run, the test-VM plugin
and the Ceph fixtures."""

pytest_plugins = ["tests.vm.plugin", "tests.ceph.fixtures"]
