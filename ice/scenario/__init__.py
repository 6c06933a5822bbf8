"""Scenarios as data (``scenarios/``), their expected outcomes, two back-ends (sim, lab) and reports."""
