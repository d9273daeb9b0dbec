"""The test package. Imported before any conftest, so before numpy and scipy load: the
tests run with one BLAS/OpenMP thread per process, in themselves and in every server,
worker and command they start (those inherit the environment).

``pytest -n 2`` already keeps both cores busy, and the fits here are small: OpenBLAS'
second thread only adds a wake-up per call, which on a loaded machine waits for a free
core (a 2x2 ``solve_triangular`` took 10 ms instead of 10 us, and sklearn's own suite
over HTTP ran twice as long). A variable already set is left as it is.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
