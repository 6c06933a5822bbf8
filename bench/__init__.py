"""Benchmarks run by ``icelab bench``: peers side by side in one run, ratios reported, never timed assertions."""
