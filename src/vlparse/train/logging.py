"""Run logging: JSONL metrics, TensorBoard scalars, a tqdm progress bar, a text log, plots, and
the window of steps that one log line sums up.

Only rank 0 builds a :class:`RunLogger` with ``enabled=True``; other ranks pass
``enabled=False`` and every method does nothing. Files are opened on first use (in append mode,
so a resumed run keeps what was written before), not in the constructor. A resumed run first cuts
``log.jsonl`` back to its checkpoint's step (:func:`truncate_jsonl`) and hides later TensorBoard
events (``purge_step``), so the log never holds two versions of a step.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vlparse.io.files import atomic_write_text

__all__ = ["RunLogger", "LogWindow", "read_jsonl", "truncate_jsonl", "plot_curves"]

LOG_JSONL = "log.jsonl"
TRAIN_LOG = "train.log"


def _to_float(value: Any) -> Any:
    """Tensors and numpy scalars to python numbers; other values unchanged."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


class RunLogger:
    """Logs one run to ``run_dir``: ``log.jsonl`` (one JSON object per :meth:`log` call),
    TensorBoard event files under ``run_dir/tb``, ``train.log`` (messages), a progress bar.

    Args:
        run_dir: the run folder (created on first write).
        enabled: ``False`` on non-main ranks: every method is a no-op.
        tensorboard: also write TensorBoard scalars when ``tensorboard`` is installed.
        progress_total: total steps of the bar (``None``: unknown).
        progress_initial: steps already done (after a resume).
        desc: the bar's label.
        progress: show the bar at all.
        purge_step: TensorBoard hides events of this step and later written before (a resume
            from step ``purge_step - 1``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = True,
        progress_total: int | None = None,
        progress_initial: int = 0,
        desc: str = "pretrain",
        progress: bool = True,
        purge_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.use_tensorboard = tensorboard
        self.progress_total = progress_total
        self.progress_initial = progress_initial
        self.desc = desc
        self.show_progress = progress
        self.purge_step = purge_step
        self._jsonl = None
        self._text = None
        self._writer = None
        self._tb_failed = False
        self._bar = None

    # ----------------------------------------------------------------- lazily opened sinks
    def _open(self, name: str):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return open(self.run_dir / name, "a", encoding="utf-8")

    def _tb(self):
        if self._writer is None and self.use_tensorboard and not self._tb_failed:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                self._tb_failed = True
                self.warning(f"TensorBoard unavailable ({e}); logging to {LOG_JSONL} only. "
                             "Install it with: pip install tensorboard")
                return None
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"),
                                         purge_step=self.purge_step)
        return self._writer

    # ----------------------------------------------------------------- public API
    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append ``{"step": step, "time": unix seconds, **metrics}`` to ``log.jsonl`` and write
        numeric metrics as TensorBoard scalars named by their keys."""
        if not self.enabled:
            return
        values = {k: _to_float(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": round(time.time(), 3), **values}
        if self._jsonl is None:
            self._jsonl = self._open(LOG_JSONL)
        self._jsonl.write(json.dumps(record, default=str) + "\n")
        self._jsonl.flush()
        writer = self._tb()
        if writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    writer.add_scalar(k, v, int(step))
            writer.flush()

    def progress(self, n: int = 1, postfix: dict[str, Any] | None = None) -> None:
        """Advance the bar by ``n`` steps; ``postfix`` (losses, ``img/s``...) is shown beside it."""
        if not (self.enabled and self.show_progress):
            return
        if self._bar is None:
            self._bar = tqdm(total=self.progress_total, initial=self.progress_initial,
                             desc=self.desc, dynamic_ncols=True, file=sys.stderr)
        if postfix:
            shown = {}
            for k, v in postfix.items():
                v = _to_float(v)
                shown[k] = f"{v:.4g}" if isinstance(v, float) else v
            self._bar.set_postfix(shown, refresh=False)
        self._bar.update(n)

    def _message(self, level: str, msg: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp} {level} {msg}"
        tqdm.write(msg if level == "INFO" else f"{level}: {msg}",
                   file=sys.stdout if level == "INFO" else sys.stderr)
        if self._text is None:
            self._text = self._open(TRAIN_LOG)
        self._text.write(line + "\n")
        self._text.flush()

    def info(self, msg: str) -> None:
        """Print ``msg`` (without breaking the bar) and append it to ``train.log``."""
        self._message("INFO", msg)

    def warning(self, msg: str) -> None:
        """Like :meth:`info`, marked as a warning and printed to stderr."""
        self._message("WARNING", msg)

    def close(self) -> None:
        """Close the bar, the TensorBoard writer and the files. Safe to call twice."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for attr in ("_jsonl", "_text"):
            f = getattr(self, attr)
            if f is not None:
                f.close()
                setattr(self, attr, None)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogWindow:
    """What one log line says about the micro-batches since the last one: each scalar averaged
    over the micro-batches that reported it (a loss term that starts mid-window is not diluted),
    ``*_correct`` / ``*_total`` counts summed into ``*_acc`` accuracies, and images per second.

    Scalars and counts may be Python numbers or 0-dim tensors on the device: tensors are summed
    where they are and read back together once, when :meth:`metrics` is called, so that a
    training step never waits for the device to report a number."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window now."""
        self._sums: dict[str, list] = {}  # key -> [sum, micro-batches that reported it]
        self._counts: dict[str, Any] = {}
        self._images = 0
        self._t0 = time.perf_counter()

    def add(self, scalars: dict[str, Any], counts: dict[str, Any], images: int) -> None:
        """One micro-batch's scalars and counts (numbers or 0-dim tensors), and the images it
        held (over all processes)."""
        for k, v in scalars.items():
            v = v.detach() if isinstance(v, Tensor) else float(v)
            acc = self._sums.get(k)
            if acc is None:
                self._sums[k] = [v, 1]
            else:
                acc[0] = acc[0] + v
                acc[1] += 1
        for k, v in counts.items():
            v = v.detach() if isinstance(v, Tensor) else int(v)
            self._counts[k] = self._counts[k] + v if k in self._counts else v
        self._images += images

    def mean(self, key: str) -> float | None:
        """The window's mean of ``key``, ``None`` when nothing reported it (reads a tensor back:
        a host synchronisation)."""
        acc = self._sums.get(key)
        return _host([acc[0]])[0] / acc[1] if acc else None

    def metrics(self) -> dict[str, float]:
        """The means, the accuracies and ``images_per_s`` (one read-back of every tensor)."""
        keys = list(self._sums)
        count_keys = list(self._counts)
        values = _host([self._sums[k][0] for k in keys] + [self._counts[k] for k in count_keys])
        out = {k: v / self._sums[k][1] for k, v in zip(keys, values, strict=False)}
        counts = dict(zip(count_keys, values[len(keys):], strict=True))
        for key in [k for k in counts if k.endswith("_total")]:
            name = key[: -len("_total")]
            if counts[key]:
                out[f"{name}_acc"] = counts.get(f"{name}_correct", 0) / counts[key]
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        out["images_per_s"] = self._images / elapsed
        return out


def _host(values: list) -> list[float]:
    """Numbers and 0-dim tensors as Python floats, the tensors of each device read back in one
    transfer."""
    out = [v if not isinstance(v, Tensor) else None for v in values]
    by_device: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, Tensor):
            by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        read = torch.stack([values[i].double() for i in idx]).tolist()
        for i, x in zip(idx, read, strict=True):
            out[i] = x
    return [float(v) for v in out]


def truncate_jsonl(path: str | Path, last_step: int) -> int:
    """Keep the records of ``path`` up to ``last_step`` (inclusive; a truncated line goes too),
    rewritten atomically; returns how many records were dropped. A missing file is left alone."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += bool(line.strip())
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL file. A truncated last line (a crash mid-write) is skipped with a
    warning; a bad line elsewhere raises ``ValueError`` naming the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):
                warnings.warn(f"{path}:{i}: skipping truncated last line", stacklevel=2)
                continue
            raise ValueError(f"{path}:{i}: invalid JSON ({e.msg} at column {e.colno})") from None
    return out


_NOT_CURVES = {"step", "time", "epoch"}
_PREFERRED = ["total", "loss", "mlm", "itm", "vla", "mfr", "lr"]


def _order(key: str) -> tuple[int, str]:
    base = key.split("/")[-1]
    for i, p in enumerate(_PREFERRED):
        if base == p or base.startswith(p):
            return (i, key)
    return (len(_PREFERRED), key)


def plot_curves(
    log_jsonl: str | Path,
    out_png: str | Path,
    keys: list[str] | None = None,
    title: str = "training curves",
) -> Path:
    """Plot each metric of a ``log.jsonl`` against the step, one subplot per key, into a PNG.

    ``keys`` defaults to every numeric key but ``step``, ``time`` and ``epoch``. When steps were
    logged twice (a resume from an earlier checkpoint) the later value wins.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    records = read_jsonl(log_jsonl)
    if keys is None:
        found = {k for r in records for k, v in r.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        keys = sorted(found - _NOT_CURVES, key=_order)
    if not keys:
        raise ValueError(f"{log_jsonl}: no numeric metrics to plot")
    series: dict[str, dict[int, float]] = {k: {} for k in keys}
    for r in records:
        for k in keys:
            v = r.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "step" in r:
                series[k][int(r["step"])] = float(v)
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        points = sorted(series[key].items())
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate" if key.split("/")[-1].startswith("lr") else key)
        ax.grid(True, alpha=0.3)
        if key.split("/")[-1].startswith("lr"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        if not xs:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png
