"""RunLogger files (JSONL append on resume, train.log), disabled ranks, plot_curves."""

from __future__ import annotations

import json

import pytest
import torch

from vlparse.train.logging import RunLogger, plot_curves, read_jsonl


def test_jsonl_lines_append_across_loggers(tmp_path):
    with RunLogger(tmp_path, tensorboard=False, progress=False) as log:
        log.log(1, {"mlm": 2.5, "itm": torch.tensor(0.7), "lr": 1e-5})
        log.log(2, {"mlm": 2.0, "itm": 0.6, "lr": 2e-5})
        # flushed line by line: readable before close
        assert len(read_jsonl(tmp_path / "log.jsonl")) == 2
    with RunLogger(tmp_path, tensorboard=False, progress=False) as log:  # a resume
        log.log(3, {"mlm": 1.5})
    records = read_jsonl(tmp_path / "log.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[0]["itm"] == pytest.approx(0.7)
    assert records[1]["lr"] == 2e-5
    assert all("time" in r for r in records)
    for line in (tmp_path / "log.jsonl").read_text().splitlines():
        json.loads(line)


def test_info_warning_progress_and_disabled(tmp_path, capsys):
    log = RunLogger(tmp_path / "run", tensorboard=False, progress_total=5, desc="t")
    log.progress(2, {"loss": 1.23456, "img/s": 100.0})
    log.info("hello")
    log.warning("careful")
    log.close()
    log.close()
    text = (tmp_path / "run" / "train.log").read_text()
    assert "INFO hello" in text and "WARNING careful" in text
    captured = capsys.readouterr()
    assert "hello" in captured.out and "careful" in captured.err

    off = RunLogger(tmp_path / "off", enabled=False)
    off.log(1, {"a": 1.0})
    off.progress(1, {"a": 1.0})
    off.info("x")
    off.close()
    assert not (tmp_path / "off").exists()


def test_tensorboard_events_written(tmp_path):
    pytest.importorskip("tensorboard")
    with RunLogger(tmp_path, progress=False) as log:
        log.log(1, {"total": 3.0, "note": "text is skipped"})
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_read_jsonl_truncated_last_line_and_bad_line(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"step": 1, "a": 1}\n{"step": 2, "a"')
    with pytest.warns(UserWarning, match="truncated"):
        assert read_jsonl(p) == [{"step": 1, "a": 1}]
    p.write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:1"):
        read_jsonl(p)


def test_plot_curves_writes_png(tmp_path):
    with RunLogger(tmp_path, tensorboard=False, progress=False) as log:
        for s in range(1, 21):
            log.log(s, {"total": 5 / s, "mlm": 4 / s, "itm": 0.7 - s / 100, "vla": 0.1,
                        "mfr": 1 / s, "lr": 5e-5 * min(1, s / 5), "epoch": s // 10})
    out = plot_curves(tmp_path / "log.jsonl", tmp_path / "plots" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(ValueError, match="no numeric metrics"):
        plot_curves(tmp_path / "log.jsonl", tmp_path / "x.png", keys=[])
