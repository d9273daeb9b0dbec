"""A rich progress bar for a job: EM iterations, inits or grid cells, and the bound.

rich comes with the ``[cli]`` extra; without it, ``progress=True`` says how to get it
instead of failing somewhere inside a fit.
"""

from __future__ import annotations

from typing import Any

try:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "progress bars need rich: pip install 'gmm-client[cli]' (or pass a callable)"
    ) from exc


class JobBar:
    """One bar that follows one job's ``progress`` (``done``/``total`` ``unit``)."""

    def __init__(self, *, transient: bool = False, console: Any = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[bound]}"),
            TimeElapsedColumn(),
            transient=transient,
            console=console,
        )
        self._task: TaskID | None = None
        self._progress.start()

    def update(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        total = progress.get("total") or None
        fields = {"unit": progress.get("unit", ""), "bound": _detail(progress)}
        description = f"{job.get('kind', 'job')} {job.get('status', '')}"
        if self._task is None:
            self._task = self._progress.add_task(description, total=total, **fields)
        self._progress.update(
            self._task,
            completed=progress.get("done", 0),
            total=total,
            description=description,
            **fields,
        )

    def close(self) -> None:
        self._progress.stop()


def _detail(progress: dict[str, Any]) -> str:
    """Where a fit is, beyond its count (which jumps when an init converges early): the
    init, the stage, the EM iteration, the lower bound and its change against tol."""
    parts = []
    n_init = progress.get("n_init")
    if n_init is not None and n_init > 1:
        parts.append(f"init {progress.get('init')}/{n_init}")
    stage, iteration = progress.get("stage"), progress.get("iteration")
    if stage == "initializing":
        parts.append("computing the starting point")
    elif iteration is not None and progress.get("unit") == "iterations":
        parts.append(("after " if stage == "finished" else "") + f"EM iteration {iteration}")
    bound = progress.get("lower_bound")
    if bound is not None:
        parts.append(f"lower bound {bound:.6g}")
    change, tol = progress.get("change"), progress.get("tol")
    if change is not None and tol is not None and stage == "iterating":
        parts.append(f"change {change:.2g} (tol {tol:.2g})")
    return ", ".join(parts)
