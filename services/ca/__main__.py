"""`mesh-ca`: the mesh's certificate authority.

`mesh-ca [flags]` serves; `mesh-ca rotate-root --state-dir DIR [--activate-after 1h]` adds a new
root to a running CA's keystore (trusted at once, signing from the activation time on).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mesh import logs
from mesh.settings import parse_settings

from .app import CaApp
from .keystore import KeyStore, KeyStoreError
from .settings import CaSettings


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `2h30m`, `1d`."""
    parts = re.findall(r"(\d+)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h, 2h30m, 1d)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return timedelta(seconds=sum(int(n) * unit[u] for n, u in parts))


def rotate_root(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mesh-ca rotate-root", description="Add a new root to the CA's keystore.")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--trust-domain", default="cluster.local")
    parser.add_argument(
        "--activate-after",
        type=parse_duration,
        default=timedelta(hours=1),
        help="how long the new root is trusted before it starts signing (default 1h)",
    )
    parser.add_argument(
        "--max-cert-ttl",
        type=parse_duration,
        default=timedelta(hours=24),
        help="how long the old root stays trusted after the switch (default 24h)",
    )
    args = parser.parse_args(argv)
    try:
        store = KeyStore.open(args.state_dir, args.trust_domain)
        now = datetime.now(UTC)
        store.rotate(now, activate_after=args.activate_after, max_cert_ttl=args.max_cert_ttl)
        store.write_bundle(args.state_dir / "root-cert.pem")
    except KeyStoreError as e:
        print(f"mesh-ca: {e}", file=sys.stderr)
        return 1
    print(f"new root added; it signs from {(now + args.activate_after).isoformat(timespec='seconds')}")
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "rotate-root":
        raise SystemExit(rotate_root(argv[1:]))
    settings = parse_settings(CaSettings, "mesh-ca", "The mesh's certificate authority (gRPC, istio.v1.auth).", argv)
    logs.setup(settings.log_level)
    try:
        asyncio.run(CaApp(settings).run())
    except KeyStoreError as e:
        print(f"mesh-ca: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError as e:
        print(
            f"mesh-ca: {e.filename} not found (is istiod running with the same --state-dir? or pass --istiod)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
