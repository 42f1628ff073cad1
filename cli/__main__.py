"""`meshctl`: the mesh's command-line tool."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import kubeconfig


def _state_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("MESH_STATE_DIR") or "/var/lib/mesh")


def _cmd_kubeconfig(args: argparse.Namespace) -> int:
    try:
        path = kubeconfig.write_kubeconfig(
            _state_dir(args.state_dir),
            server=args.server,
            output=Path(args.output) if args.output else None,
            token_file=Path(args.token_file) if args.token_file else None,
        )
    except kubeconfig.KubeconfigError as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}\nuse it with: kubectl --kubeconfig {path} get pods -A   (or export KUBECONFIG={path})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshctl", description="Operate the mesh: kubeconfig, clusters, waypoints, diagnostics."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    kc = sub.add_parser("kubeconfig", help="write a kubeconfig for istiod (CA data and admin token included)")
    kc.add_argument("--state-dir", help="istiod's state directory (env MESH_STATE_DIR; default /var/lib/mesh)")
    kc.add_argument("--server", help="API URL to write (default: the address istiod recorded)")
    kc.add_argument("-o", "--output", help="where to write it (default {state-dir}/kubeconfig)")
    kc.add_argument("--token-file", help="token to embed (default: the admin token)")
    kc.set_defaults(func=_cmd_kubeconfig)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
