"""`meshctl`: the mesh's command-line tool."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import kubeconfig
from .apply import ApplyError, apply
from .client import client_from_kubeconfig, client_from_state


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


def _client(args: argparse.Namespace):
    if getattr(args, "kubeconfig", None):
        return client_from_kubeconfig(Path(args.kubeconfig))
    return client_from_state(_state_dir(args.state_dir))


def _cmd_apply(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            for line in apply(client, [Path(f) for f in args.filename], args.namespace):
                print(line)
    except (ApplyError, kubeconfig.KubeconfigError) as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_changes(args: argparse.Namespace) -> int:
    from . import changes

    changes.run(args.redis_url, args.count, args.follow, args.stream)
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
    ap = sub.add_parser("apply", help="create or update objects from YAML files (for machines without kubectl)")
    ap.add_argument("-f", "--filename", action="append", required=True, help="a file or directory; repeatable")
    ap.add_argument("-n", "--namespace", default="default")
    ap.add_argument("--state-dir", help="istiod's state directory (env MESH_STATE_DIR)")
    ap.add_argument("--kubeconfig", help="use this kubeconfig instead of the state directory")
    ap.set_defaults(func=_cmd_apply)
    ch = sub.add_parser("changes", help="show (or follow) the change stream istiod publishes to Redis")
    ch.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ch.add_argument("--stream", default="mesh:changes")
    ch.add_argument("-n", "--count", type=int, default=10, help="how many of the newest entries to show")
    ch.add_argument("-f", "--follow", action="store_true", help="keep printing new entries")
    ch.set_defaults(func=_cmd_changes)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
