"""``icelab peer``'s report lines: one write per loop callback, order kept."""

from __future__ import annotations

import asyncio
import io

from ice.aio.peer import Reports


class CountingStream(io.StringIO):
    writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def test_lines_of_one_callback_go_out_in_one_write_after_it() -> None:
    stream = CountingStream()
    out = Reports(stream)

    async def main() -> None:
        out("state connected")
        out("state completed")
        assert stream.getvalue() == ""  # not before the end of this callback
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.getvalue() == "state connected\nstate completed\n" and stream.writes == 1
        out("recv ping")  # a later callback schedules its own write
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.getvalue().endswith("recv ping\n") and stream.writes == 2

    asyncio.run(main())


def test_outside_a_loop_every_line_is_written_at_once() -> None:
    stream = CountingStream()
    out = Reports(stream)
    out("hello icelab-agent/1 icelab 0")
    assert stream.getvalue() == "hello icelab-agent/1 icelab 0\n"
