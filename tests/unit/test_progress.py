"""`stratus prefetch`'s progress bar: drawn on a terminal, silent otherwise."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from adapters.cli import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_bytes_and_speed(capsys):
    terminal = Terminal()
    bar = ProgressBar(terminal)
    bar.start("smollm2", 4 * 1024 * 1024)
    for _ in range(4):
        bar.advance(1024 * 1024)
    bar.finish("smollm2", Path("/cache/x"))
    drawn = terminal.getvalue()
    assert "smollm2" in drawn and "100%" in drawn and "4.00M/4.00M" in drawn and "B/s" in drawn
    assert capsys.readouterr().out == "smollm2: fetched to /cache/x\n"


def test_a_pipe_or_log_file_gets_the_final_line_only(capsys):
    pipe = io.StringIO()
    bar = ProgressBar(pipe)
    bar.start("smollm2", 1024)
    bar.advance(1024)
    bar.finish("smollm2", Path("/cache/x"))
    assert pipe.getvalue() == ""
    assert capsys.readouterr().out == "smollm2: fetched to /cache/x\n"


def test_a_local_model_is_only_named():
    out = io.StringIO()
    bar = ProgressBar(out)
    with contextlib.redirect_stdout(out):
        bar.finish("piper", Path("/pkg/voice"))
    assert out.getvalue() == "piper: available at /pkg/voice\n"
