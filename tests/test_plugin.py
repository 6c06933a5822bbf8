"""The pytest plugin, used the way a downstream project would use it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest


def test_plugin_is_registered(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("icelab")
    markers = "\n".join(pytestconfig.getini("markers"))
    assert "lab:" in markers and "sim:" in markers


@pytest.mark.lab
def test_nat_pair_fixture_builds_a_working_lab(nat_pair: Callable[[str, str], Any]) -> None:
    from ice.lab.punch import punch

    lab = nat_pair("full-cone", "symmetric")
    assert {"a", "b", "nat-a", "nat-b", "stun"} <= set(lab.nodes)
    assert asyncio.run(punch(lab, port=43000)).direct  # full cone admits the symmetric side's new port


@pytest.mark.lab
def test_lab_factory_takes_any_topology_module(lab_factory: Callable[..., Any]) -> None:
    lab = lab_factory("same_nat", "eim-adf")
    assert lab.behaviour("nat").name == "eim-adf"
