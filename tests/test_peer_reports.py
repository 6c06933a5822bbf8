"""``icelab peer``'s report lines: one write per loop callback, ``selected`` at once, order kept."""

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


def test_an_urgent_line_goes_at_once_with_the_lines_before_it() -> None:
    stream = CountingStream()
    out = Reports(stream)

    async def main() -> None:
        out("state checking")
        out("selected 1 1 udp 1 127.0.0.1 1 typ host | 2 1 udp 1 127.0.0.1 2 typ host", urgent=True)
        assert stream.getvalue().splitlines() == ["state checking", stream.getvalue().splitlines()[1]]
        assert stream.writes == 1
        out("state connected")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.getvalue().splitlines()[-1] == "state connected" and stream.writes == 2

    asyncio.run(main())


def test_outside_a_loop_every_line_is_written_at_once() -> None:
    stream = CountingStream()
    out = Reports(stream)
    out("hello icelab-agent/1 icelab 0")
    assert stream.getvalue() == "hello icelab-agent/1 icelab 0\n"
