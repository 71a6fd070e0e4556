import pytest

from tests.reliability import plugin


@pytest.fixture(scope="module")
def rel_stages():
    """Register the test-only stages for one test module, and take them out again afterwards."""
    plugin.register()
    yield plugin.NOISE_KIND
    plugin.unregister()
