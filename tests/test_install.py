"""The install route lifts torchattacks' pinned requests (and its urllib3, idna) to fixed releases."""
from importlib.metadata import version

import pytest
from packaging.version import Version


@pytest.mark.parametrize("package, floor", [("requests", "2.32.4"), ("urllib3", "2.5.0"), ("idna", "3.7")])
def test_no_known_vulnerable_versions(package, floor):
    assert Version(version(package)) >= Version(floor), f"{package} {version(package)} < {floor}"


def test_torchattacks_is_the_pinned_release():
    assert version("torchattacks") == "3.5.1"
