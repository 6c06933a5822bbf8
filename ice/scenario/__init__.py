"""Scenario cells as data (scenario files, the default suite in ``ice/suites/``), their expected outcomes, two
back-ends (sim, lab) and the worker pool; reports are in :mod:`ice.report`."""
