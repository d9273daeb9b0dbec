"""Long work: queued, run, followed, cancelled and waited for a bounded time."""
