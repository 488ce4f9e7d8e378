"""The example plugin packages under examples/, as the tests use them: installed with pip.

CI installs them (``.ci/run``); a developer runs the same command once. A test that needs one
fails, with that command, if it is missing: these tests never skip.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

import pytest

INSTALL = "pip install -e ./examples/consistent-hash -e ./examples/delayed-message"


def require(package: str) -> None:
    """Fail the test unless the distribution ``package`` is installed."""
    try:
        distribution(package)
    except PackageNotFoundError:
        pytest.fail(f"the example plugin {package} is not installed; run: {INSTALL}")
