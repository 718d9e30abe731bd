"""Training progress: a rich bar on a terminal, one plain line per log interval otherwise."""

import io

import pytest

from relujax._src.training.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(stream=out)
    assert not p.bar
    p.update(1, 5, 50, 157, 0.69314, 0.5, 3200)
    p.line("epoch 1/5 done")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/5 batch 50/157 loss 0.6931 acc 0.5000 ")
    assert lines[0].endswith(" img/s") and lines[1] == "epoch 1/5 done"


def test_bar_false_gives_plain_lines_on_a_terminal():
    out = _Terminal()
    Progress(bar=False, stream=out).update(2, 3, 10, 20, 1.0, 0.25, 640)
    assert out.getvalue().startswith("epoch 2/3 batch 10/20 loss 1.0000 acc 0.2500")


def test_rich_bar_on_a_terminal(monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = _Terminal()
    p = Progress(stream=out)
    assert p.bar
    p.update(1, 5, 50, 157, 0.69314, 0.5, 3200)
    p.update(1, 5, 100, 157, 0.6, 0.625, 6400)
    drawn = out.getvalue()
    for text in ("epoch 1/5", "100/157", "loss 0.6000", "acc 0.6250", "img/s", "ETA"):
        assert text in drawn, text
    p.line("epoch 1/5 train_loss 0.5")
    assert out.getvalue().rstrip().endswith("epoch 1/5 train_loss 0.5")
    assert p._live is None  # the bar ended with the epoch's line
