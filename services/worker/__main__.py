"""`mesh-worker`: runs the control plane's background jobs from the Redis broker."""

from __future__ import annotations

from mesh import logs
from mesh.settings import parse_settings

from .app import make_celery
from .settings import WorkerSettings


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(WorkerSettings, "mesh-worker", "The mesh's background jobs (Celery worker).", argv)
    logs.setup(settings.log_level)
    app = make_celery(settings)
    # One job at a time in the main process: the jobs are short API calls, and a solo pool keeps
    # SIGTERM handling and logging simple.
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            f"--loglevel={settings.log_level.upper()}",
            "-Q",
            settings.queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            "mesh-worker@%h",
        ]
    )


if __name__ == "__main__":
    main()
