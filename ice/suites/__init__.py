"""Scenario suites shipped with icelab (data: ``default.toml`` and its pins ``default.expected.json``)."""
