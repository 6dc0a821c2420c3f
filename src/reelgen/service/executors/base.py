"""The one interface between the API and whatever runs the jobs."""

from __future__ import annotations

from typing import Protocol


class Executor(Protocol):
    """Claims queued jobs from the job store and runs them; the store is the only channel to the API."""

    def start(self) -> None:
        """Begin claiming jobs."""
        ...

    def wake(self) -> None:
        """A job was just queued: look now rather than at the next poll."""
        ...

    def stop(self, grace_seconds: float) -> None:
        """Stop claiming; running jobs get `grace_seconds` to finish, then go back to the queue."""
        ...


class WorkerProcesses:
    """`reelgen serve --workers 0`: `reelgen worker` processes claim the jobs; this process only queues them."""

    def start(self) -> None:
        pass

    def wake(self) -> None:
        pass  # the workers are other processes: they find a new job at their next poll (poll_seconds)

    def stop(self, grace_seconds: float) -> None:
        pass  # each worker process gives its running jobs back on its own SIGTERM
