# One image for every mesh process (docker-compose.yml, docs/compose.md): istiod, mesh-ca,
# mesh-xds, mesh-worker, and mesh-node (a node: mesh-runtime, mesh-node-agent and ztunnel, with
# pods as network namespaces inside the container).
FROM python:3.11-slim-bookworm

# The node's tools: `ip` (namespaces, links, routes), iptables (in-pod redirection), the CNI
# bridge and host-local plugins, nsenter; curl for health checks and the demo's pods.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iproute2 iptables containernetworking-plugins util-linux curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mesh
# Dependencies first (a layer that survives source edits), then the project itself.
COPY pyproject.toml README.md ./
RUN mkdir -p mesh services dataplane cli \
    && pip install --no-cache-dir . \
    && pip uninstall -y ambient-mesh
COPY mesh ./mesh
COPY services ./services
COPY dataplane ./dataplane
COPY cli ./cli
RUN pip install --no-cache-dir --no-deps .
COPY samples ./samples
COPY scripts/compose-demo.sh ./scripts/compose-demo.sh

# The control plane runs as this user; its state directory (the shared volume's mount point) is
# created here so a new named volume starts owned by it, with mode 0700 (keys and tokens).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/mesh --no-create-home mesh \
    && install -d -o mesh -g mesh -m 0700 /var/lib/mesh
USER mesh
