"""`istiod`: the mesh's configuration store and Kubernetes-shaped API."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

import uvicorn
from prometheus_client import start_http_server

from mesh import logs
from mesh.settings import host_port, parse_settings

from .app import create_app
from .serving_tls import ensure_serving_files
from .settings import IstiodSettings

log = logging.getLogger("istiod")


def write_discovery_file(settings: IstiodSettings, ca_file: str | None) -> None:
    """`{state}/istiod.json`: how other processes on this machine find istiod."""
    host, port = host_port(settings.listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"{settings.scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
    info = {
        "url": url,
        "ca_file": ca_file,
        "admin_token_file": str(settings.state_dir / "admin-token"),
        "pid": os.getpid(),
    }
    path = settings.state_dir / "istiod.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(IstiodSettings, "istiod", "The mesh's config store and Kubernetes-shaped REST API.", argv)
    logs.setup(settings.log_level)
    try:
        settings.ensure_state_dir()
    except OSError as e:
        print(f"istiod: MESH_STATE_DIR={settings.state_dir} ({e.strerror})", file=sys.stderr)
        raise SystemExit(2) from None
    host, port = host_port(settings.listen)
    tls: dict = {}
    ca_file = None
    if not settings.insecure_http:
        files = ensure_serving_files(
            settings.state_dir, settings.tls_san + ([host] if host not in ("0.0.0.0", "::") else [])
        )
        tls = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
        ca_file = str(files.ca)
    else:
        log.warning("serving plain HTTP: tokens travel unencrypted (--insecure-http)")
    app = create_app(settings)
    if settings.metrics_listen:
        _serve_metrics(app, settings.metrics_listen)
    write_discovery_file(settings, ca_file)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **tls,
    )
    server = uvicorn.Server(config)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run()
    if not server.started:
        raise SystemExit(1)


def _serve_metrics(app, listen: str) -> None:
    """Plain-HTTP /metrics on its own port (Istio's 15014), from the app's metrics registry."""
    host, port = host_port(listen)

    def start_when_ready() -> None:
        import time

        for _ in range(600):
            comp = getattr(app.state, "components", None)
            if comp is not None:
                start_http_server(port, addr=host, registry=comp.metrics.registry)
                return
            time.sleep(0.1)

    threading.Thread(target=start_when_ready, daemon=True, name="metrics").start()


if __name__ == "__main__":
    main()
