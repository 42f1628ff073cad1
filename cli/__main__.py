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


def _cmd_node(args: argparse.Namespace) -> int:
    from . import nodes

    state = _state_dir(args.state_dir)
    out = Path(args.token_file) if args.token_file else nodes.token_path(state, args.name)
    try:
        with _client(args) as client:
            path = (nodes.create if args.node_command == "create" else nodes.rotate)(client, args.name, out)
    except (nodes.NodeError, kubeconfig.KubeconfigError) as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1
    verb = "registered" if args.node_command == "create" else "has a new token"
    print(f"node/{args.name} {verb}; its token is in {path} (mode 0600)")
    return 0


def _node_token(args: argparse.Namespace, state: Path) -> str | None:
    """The node token (--token-file, else the one `meshctl node create` saved); None after saying
    how to get one."""
    from . import nodes

    token_file = Path(args.token_file) if args.token_file else nodes.token_path(state, args.node)
    cluster_token = state / "nodes" / args.node / "token"  # a `meshctl cluster up` node's own
    if not args.token_file and not token_file.exists() and cluster_token.exists():
        token_file = cluster_token
    if not token_file.exists():
        print(
            f"meshctl: {token_file} not found (register the node with: meshctl node create {args.node})",
            file=sys.stderr,
        )
        return None
    return token_file.read_text().strip()


def _node_address(args: argparse.Namespace, state: Path, key: str, given: str | None, fallback: str) -> str:
    """An address flag's value: as given, else the node's node.json (a `meshctl cluster up` node
    knows where its control plane is), else `fallback`."""
    if given:
        return given
    import json

    info = state / "nodes" / args.node / "node.json"
    if info.exists():
        try:
            return str(json.loads(info.read_text())[key])
        except (OSError, ValueError, KeyError):
            pass
    return fallback


def _cmd_cert(args: argparse.Namespace) -> int:
    from . import cert

    state = _state_dir(args.state_dir)
    token = _node_token(args, state)
    if token is None:
        return 1
    roots = None if args.plaintext else cert.roots_from(state)
    ca = _node_address(args, state, "ca", args.ca, "127.0.0.1:15012")
    report = cert.request(ca, roots, token, args.identity, args.ttl)
    print(f"{args.node} asks for {args.identity}: {report}")
    return 0 if report.startswith("issued") else 3


def _cmd_proxy_status(args: argparse.Namespace) -> int:
    import json

    from . import xds

    try:
        text, streams = xds.proxy_status(args.xds_admin)
    except OSError as e:
        print(f"meshctl: cannot reach mesh-xds's admin port at {args.xds_admin} ({e})", file=sys.stderr)
        return 1
    print(json.dumps(streams, indent=2) if args.output == "json" else text)
    return 0


def _cmd_xds_config(args: argparse.Namespace) -> int:
    import asyncio

    from . import cert, xds

    state = _state_dir(args.state_dir)
    token = _node_token(args, state)
    if token is None:
        return 1
    roots = None if args.plaintext else cert.roots_from(state)
    address = _node_address(args, state, "xds", args.xds, "127.0.0.1:15010")
    try:
        client = asyncio.run(xds.fetch(address, roots, token))
    except Exception as e:
        print(f"meshctl: mesh-xds at {address} did not answer: {e or type(e).__name__}", file=sys.stderr)
        return 1
    print(xds.render(client))
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    import json

    from .cluster import manager, network

    state = _state_dir(args.state_dir)

    def progress(message: str) -> None:
        print(f"==> {message}", flush=True)

    try:
        if args.cluster_command == "up":
            manager.up(state, args.nodes, progress)
            print(f"cluster up: {args.nodes} node(s). Use it with: export KUBECONFIG={state / 'kubeconfig'}")
        elif args.cluster_command == "down":
            left = manager.down(state, progress)
            if left:
                print("could not remove:\n  " + "\n  ".join(left), file=sys.stderr)
                return 1
            print("cluster down: every namespace, link, route and process it made is gone")
        else:
            print(json.dumps(manager.status(state), indent=2))
    except network.ClusterError as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    import subprocess

    from mesh import netns

    with _client(args) as client:
        response = client.get(f"/api/v1/namespaces/{args.namespace}/pods/{args.pod}")
    if response.status_code != 200:
        print(f"meshctl: pod {args.namespace}/{args.pod}: {response.json().get('message')}", file=sys.stderr)
        return 1
    name = f"mesh-pod-{response.json()['metadata']['uid'].replace('-', '')[:12]}"
    if not netns.exists(name):
        print(
            f"meshctl: pod {args.namespace}/{args.pod} has no network namespace here (is it running?)", file=sys.stderr
        )
        return 1
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return subprocess.run(["ip", "netns", "exec", name, *command]).returncode


def _cmd_ztunnel_config(args: argparse.Namespace) -> int:
    import json

    from . import ztunnel_config as zc

    logging_asked = args.what == "log"
    if (args.level or args.reset) and not logging_asked:
        print("meshctl: --level and --reset go with `ztunnel-config log`", file=sys.stderr)
        return 2
    if logging_asked and args.file:
        print("meshctl: `ztunnel-config log` asks a running ztunnel; -f reads a saved dump", file=sys.stderr)
        return 2
    try:
        if args.file:
            dump = json.loads(Path(args.file).read_text())
        else:
            state = _state_dir(args.state_dir)
            node = args.node or zc.default_node(state)
            admin = zc.locate(state, node, args.proxy_admin_port)
            if logging_asked:
                print(f"{node}: {zc.log_levels(admin, args.level, args.reset)}")
                return 0
            dump = zc.fetch(admin)
    except (zc.ZtunnelConfigError, OSError, ValueError) as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1
    print(zc.render(zc.in_namespace(dump, args.namespace) if args.namespace else dump, args.what, args.output))
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
    node = sub.add_parser("node", help="register a node (create) or rotate its token (token)")
    node.add_argument("node_command", choices=["create", "token"])
    node.add_argument("name")
    node.add_argument("--state-dir", help="istiod's state directory (env MESH_STATE_DIR)")
    node.add_argument("--kubeconfig", help="use this kubeconfig instead of the state directory")
    node.add_argument("--token-file", help="where to write the token (default {state-dir}/nodes/NAME.token)")
    node.set_defaults(func=_cmd_node)
    x = sub.add_parser("x", help="experimental and diagnostic commands")
    xsub = x.add_subparsers(dest="x_command", required=True)
    cert = xsub.add_parser("cert", help="ask the CA for a workload certificate as a node would")
    cert.add_argument("--node", required=True, help="the node whose token to use")
    cert.add_argument("--identity", required=True, help="spiffe://cluster.local/ns/NS/sa/SA")
    cert.add_argument("--token-file", help="the node's token (default {state-dir}/nodes/NODE.token)")
    cert.add_argument(
        "--ca",
        default=os.environ.get("MESH_CA"),
        help="mesh-ca's address (default: the node's node.json, else 127.0.0.1:15012)",
    )
    cert.add_argument("--state-dir", help="state directory holding root-cert.pem (env MESH_STATE_DIR)")
    cert.add_argument("--ttl", type=int, default=3600)
    cert.add_argument("--plaintext", action="store_true", help="the CA serves without TLS")
    cert.set_defaults(func=_cmd_cert)
    xc = xsub.add_parser(
        "xds-config", help="what a node's ztunnel receives from mesh-xds (workloads, services, policies)"
    )
    xc.add_argument("--node", required=True, help="the node whose token to use")
    xc.add_argument("--token-file", help="the node's token (default {state-dir}/nodes/NODE.token)")
    xc.add_argument(
        "--xds",
        default=os.environ.get("MESH_XDS"),
        help="mesh-xds's address (default: the node's node.json, else 127.0.0.1:15010)",
    )
    xc.add_argument("--state-dir", help="state directory holding root-cert.pem (env MESH_STATE_DIR)")
    xc.add_argument("--plaintext", action="store_true", help="mesh-xds serves without TLS")
    xc.set_defaults(func=_cmd_xds_config)
    ps = sub.add_parser("proxy-status", help="the proxies connected to mesh-xds and whether they are in sync")
    ps.add_argument("--xds-admin", default=os.environ.get("MESH_XDS_ADMIN", "http://127.0.0.1:15011"))
    ps.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ps.set_defaults(func=_cmd_proxy_status)
    cl = sub.add_parser("cluster", help="a local multi-node cluster of network namespaces (needs root)")
    cl.add_argument("cluster_command", choices=["up", "down", "status"])
    cl.add_argument("--nodes", type=int, default=2)
    cl.add_argument("--state-dir", help="where the cluster keeps its state (env MESH_STATE_DIR)")
    cl.set_defaults(func=_cmd_cluster)
    ex = xsub.add_parser("exec", help="run a command inside a pod's network namespace (like kubectl exec)")
    ex.add_argument("pod")
    ex.add_argument("-n", "--namespace", default="default")
    ex.add_argument("--state-dir", help="istiod's state directory (env MESH_STATE_DIR)")
    ex.add_argument("--kubeconfig", help="use this kubeconfig instead of the state directory")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(func=_cmd_exec)
    zc = sub.add_parser(
        "ztunnel-config", aliases=["zc"], help="a node's ztunnel configuration (its /config_dump), like istioctl's"
    )
    zc.add_argument(
        "what",
        choices=_ztunnel_config_choices(),
        help="workloads, services, policies, certificates, connections, all, or log (its log levels)",
    )
    zc.add_argument(
        "--level",
        help="with log: set levels, LEVEL or TARGET:LEVEL, comma-separated (info,access:debug); "
        "levels off, error, warn, info, debug",
    )
    zc.add_argument("--reset", action="store_true", help="with log: back to the level ztunnel started with")
    zc.add_argument("--node", help="the node whose ztunnel to ask (default: the first node)")
    zc.add_argument("-n", "--namespace", help="only the entries of this namespace (default: all)")
    zc.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    zc.add_argument("-f", "--file", help="read a saved config_dump instead of asking a ztunnel")
    zc.add_argument("--proxy-admin-port", type=int, default=15000, help="ztunnel's admin port")
    zc.add_argument("--state-dir", help="the cluster's state directory (env MESH_STATE_DIR)")
    zc.set_defaults(func=_cmd_ztunnel_config)
    from . import waypoint

    waypoint.add_parser(sub, _cmd_waypoint)
    from . import analyze, authz_check, describe, gateway

    gateway.add_parser(sub, _cmd_gateway)
    analyze.add_parser(sub, _cmd_analyze)
    describe.add_parser(xsub, _cmd_describe)
    authz_check.add_parser(xsub, _cmd_authz_check)
    return parser


def _cmd_waypoint(args: argparse.Namespace) -> int:
    from . import waypoint

    return waypoint.run(args, _client)


def _cmd_gateway(args: argparse.Namespace) -> int:
    from . import gateway

    return gateway.run(args, _client)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from . import analyze

    return analyze.run(args, _client)


def _cmd_describe(args: argparse.Namespace) -> int:
    from . import describe

    return describe.run(args, _client, _state_dir(args.state_dir))


def _cmd_authz_check(args: argparse.Namespace) -> int:
    from . import authz_check

    return authz_check.run(args, _client)


def _ztunnel_config_choices() -> list[str]:
    from .ztunnel_config import choices

    return choices()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except kubeconfig.KubeconfigError as e:  # no mesh at the state directory: say so, no traceback
        print(f"meshctl: {e} (or set MESH_STATE_DIR / --state-dir to the mesh's state directory)", file=sys.stderr)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
