# -*- coding: utf-8 -*-
"""Fixtures for the simulated host's own tests."""
import pytest

from sim import SimHost


@pytest.fixture
def host(tmp_path):
    h = SimHost(str(tmp_path / "host"))
    h.set_fault("time_scale", 0.01)
    return h
