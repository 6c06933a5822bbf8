"""``icelab peer``'s standard streams: report lines one write per loop callback, command lines as they complete."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

from ice.agent import Candidate, CandidateType
from ice.agent.events import SelectedPairChanged
from ice.aio.peer import Reports, _Lines, _Peer


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


def test_the_peer_writes_selected_at_once_after_what_waited_before_it() -> None:
    """``selected`` is what the harness times: it leaves in the callback that selected the pair, with the lines
    before it; the state lines after it wait for the end of the callback as usual."""
    stream = CountingStream()
    out = Reports(stream)
    peer = SimpleNamespace(out=out)
    a = Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 5000, CandidateType.HOST)
    b = Candidate("2", 1, "udp", 2130706431, "127.0.0.1", 6000, CandidateType.HOST)

    async def main() -> None:
        out("state checking")
        _Peer._selected(peer, SelectedPairChanged(a, b, a.address))  # type: ignore[arg-type]
        assert stream.getvalue() == f"state checking\nselected {a.to_sdp()} | {b.to_sdp()}\n"
        assert stream.writes == 1
        out("state connected")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.getvalue().endswith("\nstate connected\n") and stream.writes == 2

    asyncio.run(main())


def test_outside_a_loop_every_line_is_written_at_once() -> None:
    stream = CountingStream()
    out = Reports(stream)
    out("hello icelab-agent/1 icelab 0")
    assert stream.getvalue() == "hello icelab-agent/1 icelab 0\n"


def _lines(limit: int = 1 << 20) -> tuple[list[str], _Lines, asyncio.Future[None], io.StringIO]:
    seen: list[str] = []
    loop = asyncio.new_event_loop()
    done: asyncio.Future[None] = loop.create_future()
    stream = io.StringIO()

    def handle(line: str) -> bool:
        if line.strip() == "boom":
            raise RuntimeError("a bug")
        seen.append(line)
        return line.strip() != "quit"

    lines = _Lines(handle, done, Reports(stream), limit=limit)
    loop.close()
    return seen, lines, done, stream


def test_command_lines_are_handled_as_they_complete_across_reads() -> None:
    seen, lines, done, _ = _lines()
    lines.data_received(b"set role contr")
    assert seen == []
    lines.data_received(b"olling\nstart\nremote-cred")
    assert seen == ["set role controlling\n", "start\n"]
    lines.data_received(b"entials u p\n")
    assert seen[-1] == "remote-credentials u p\n" and not done.done()


def test_quit_ends_the_input_and_later_lines_are_not_handled() -> None:
    seen, lines, done, _ = _lines()
    lines.data_received(b"start\nquit\nsend late\n")
    assert seen == ["start\n", "quit\n"] and done.done() and done.result() is None
    lines.data_received(b"send later\n")
    assert len(seen) == 2


def test_end_of_input_hands_over_a_last_line_without_its_newline() -> None:
    seen, lines, done, _ = _lines()
    lines.data_received(b"start\nsend x")
    lines.eof_received()
    assert seen == ["start\n", "send x"] and done.done()


def test_a_command_that_raises_ends_the_peer_with_its_exception() -> None:
    _, lines, done, _ = _lines()
    lines.data_received(b"boom\n")
    assert isinstance(done.exception(), RuntimeError)


def test_an_endless_line_is_dropped_with_an_error() -> None:
    seen, lines, done, stream = _lines(limit=16)
    lines.data_received(b"x" * 40)
    assert seen == [] and not done.done() and stream.getvalue().startswith("error a line over 16 bytes")
    lines.data_received(b"\nstart\n")
    assert seen == ["\n", "start\n"]
