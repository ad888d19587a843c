"""helm-values/prometheus-rules.yaml is valid (`promtool check rules`) and its recording and
alerting rules do what they say (`promtool test rules` on prometheus-rules-test.yaml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.prometheus import RULES

HERE = Path(__file__).resolve().parent


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (./dev installs Debian's prometheus package)")
    return subprocess.run(
        [binary, *args], cwd=HERE, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_are_valid():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_the_rules_pass_their_unit_tests():
    result = promtool("test", "rules", "prometheus-rules-test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
