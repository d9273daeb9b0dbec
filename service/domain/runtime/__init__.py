"""Where fits run: this process's threads, killable worker processes, a Dask cluster."""
