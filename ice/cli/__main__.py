"""``python -m ice.cli``: what the tests, the benchmarks and the lab's isolation re-exec run."""

from ice.cli import main

raise SystemExit(main())
