"""mesh-worker: the control plane's background jobs (Celery, Redis broker)."""
