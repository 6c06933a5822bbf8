"""asyncio adapters over the sans-IO core: the only place that opens sockets and reads the loop clock."""
