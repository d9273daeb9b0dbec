"""Analysis: work over many fits of one dataset, choosing k and comparing algorithms."""

from __future__ import annotations

from typing import Any

from service.domain.analysis import comparison, selection
from service.domain.datasets.service import Datasets
from service.domain.jobs.service import Jobs, Started, Waiting
from service.domain.training.service import Training
from service.schemas.data import DataSpec
from service.schemas.selection import Grid


class Analysis:
    """Model selection and comparisons, fitted through ``training``."""

    def __init__(self, training: Training, datasets: Datasets, jobs: Jobs) -> None:
        self._training = training
        self._datasets = datasets
        self._jobs = jobs

    def select(
        self,
        *,
        data: DataSpec,
        grid: Grid,
        criterion: str,
        params: dict[str, Any],
        waiting: Waiting,
        store_best: bool = False,
        name: str | None = None,
    ) -> Started:
        """See ``selection.select``."""
        return selection.select(
            self._training,
            self._datasets,
            self._jobs,
            data=data,
            grid=grid,
            criterion=criterion,
            params=params,
            waiting=waiting,
            store_best=store_best,
            name=name,
        )

    def compare(
        self,
        *,
        data: DataSpec,
        algorithms: list[tuple[str, dict[str, Any]]],
        true_labels: list[int] | None,
        sample_size: int | None,
        random_state: int | None,
        waiting: Waiting,
    ) -> Started:
        """See ``comparison.compare``."""
        return comparison.compare(
            self._training,
            self._datasets,
            self._jobs,
            data=data,
            algorithms=algorithms,
            true_labels=true_labels,
            sample_size=sample_size,
            random_state=random_state,
            waiting=waiting,
        )
