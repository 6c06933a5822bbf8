"""The in-memory simulation tier: NATs from the same NatBehaviour data as the kernel lab, a virtual clock, no root."""
