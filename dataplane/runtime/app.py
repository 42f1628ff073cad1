"""mesh-runtime's wiring: the informer of this node's pods, one worker per pod, adoption of what a
previous run left, the Node heartbeat, and shutdown.

Like a kubelet, the runtime leaves the pods running when it stops: a restarted runtime reads its
records, adopts the processes that are still the recorded ones, and releases (kill, CNI DEL, netns
removal) the pods that were deleted from the API meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from mesh.kubeclient import PODS, ApiStatusError, Connection, Informer, KubeClient
from mesh.sa_tokens import PodToken, request_pod_token

from . import sandbox
from .heartbeat import heartbeat_loop
from .pod_env import MeshEndpoints
from .pod_token import RequestToken
from .pods import Deps, PodGone, PodWorker, release
from .policy import Backoff
from .records import PodRecord, RecordStore
from .settings import RuntimeConfig
from .spec import PodSpec, pod_from_json

log = logging.getLogger("mesh-runtime")
Json = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")


def make_deps(config: RuntimeConfig, publish: Any, client: KubeClient | None = None) -> Deps:
    """The shared parts every pod worker gets (`client`: where pods' tokens come from)."""
    config.records_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Deps(
        store=RecordStore(config.records_dir),
        backoff=Backoff(config.backoff_base, config.backoff_max, config.backoff_reset),
        logs_dir=config.logs_dir,
        host_ip=config.node_ip,
        cni_paths=config.cni_paths,
        cni_timeout=config.cni_timeout,
        load_network=lambda: sandbox.load_network(config.cni_conf),
        publish=publish,
        mesh=MeshEndpoints(config.node, config.root_cert, config.ca_address, config.xds_address),
        request_token=_token_requester(client) if client is not None and config.pod_tokens else None,
    )


def _token_requester(client: KubeClient) -> RequestToken:
    async def request(pod: PodSpec) -> PodToken:
        return await request_pod_token(client, pod.namespace, pod.service_account, pod.name, pod.uid)

    return request


class Runtime:
    """The pods of one node, kept in line with the API. Used from one event loop."""

    def __init__(self, config: RuntimeConfig, client: KubeClient):
        self.config = config
        self.client = client
        self.deps = make_deps(config, self._publish, client)
        self.informer = Informer(client, PODS, field_selector=f"spec.nodeName={config.node}")
        self.informer.handlers.append(self._on_event)
        self.workers: dict[str, PodWorker] = {}
        self._background: set[asyncio.Task] = set()
        self._started = False

    async def _publish(self, pod: PodSpec, status: Json) -> None:
        try:
            await self.client.patch(PODS, pod.name, {"status": status}, pod.namespace, status=True)
        except ApiStatusError as e:
            if e.code == 404:
                raise PodGone(pod.full_name) from e
            raise

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def grace(self, seconds: float) -> float:
        return min(seconds, self.config.grace_max)

    # --- events ----------------------------------------------------------------------------------

    def _on_event(self, event: str, obj: Json, prev: Json | None) -> None:
        if not self._started:
            return  # the first list is reconciled with the records in start()
        uid = obj["metadata"].get("uid", "")
        if event == "DELETED":
            self._terminate(uid)
            return
        if prev is not None and prev["metadata"].get("uid") != uid:
            self._terminate(prev["metadata"].get("uid", ""))  # deleted and re-created meanwhile
        self._ensure(obj, None)

    def _ensure(self, obj: Json, record: PodRecord | None) -> None:
        """Start a worker for a pod of this node that has none."""
        uid = obj["metadata"].get("uid", "")
        if uid in self.workers or (obj.get("spec") or {}).get("nodeName") != self.config.node:
            return
        if record is None and (obj.get("status") or {}).get("phase") in TERMINAL:
            return  # finished before this runtime knew it: never run a pod twice
        try:
            pod = pod_from_json(obj)
        except (KeyError, TypeError, ValueError) as e:
            log.error(
                "pod %s/%s: cannot read its spec: %s", obj["metadata"].get("namespace"), obj["metadata"]["name"], e
            )
            return
        if obj["spec"].get("initContainers"):
            log.warning("pod %s: initContainers are not run by mesh-runtime; starting the containers", pod.full_name)
        worker = PodWorker(pod, self.deps, record, obj.get("status"))
        self.workers[uid] = worker
        worker.start()

    def _terminate(self, uid: str) -> None:
        worker = self.workers.pop(uid, None)
        if worker is not None:
            self._spawn(worker.terminate(self.grace(worker.pod.grace_seconds)), f"terminate {uid}")
            return
        record = self.deps.store.load(uid)
        if record is not None:
            self._spawn(release(record, self.deps, self.config.grace_max), f"release {uid}")

    # --- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """First list, then adopt or release every record, then start the pods without one."""
        records = self.deps.store.load_all()
        self._spawn(self.informer.run(), "informer")
        await self.informer.synced.wait()
        pods = {o["metadata"].get("uid"): o for o in self.informer.cache.values()}
        adopted = 0
        for record in records:
            if record.uid in pods:
                adopted += 1
                self._ensure(pods[record.uid], record)
            else:
                log.info("pod %s/%s is gone from the API: releasing it", record.namespace, record.name)
                self._spawn(release(record, self.deps, self.config.grace_max), f"release {record.uid}")
        for obj in pods.values():
            self._ensure(obj, None)
        self._started = True  # no await since the cache was read: no event was missed
        log.info("mesh-runtime of node %s: %d pods, %d adopted", self.config.node, len(self.workers), adopted)

    async def stop(self) -> None:
        """Stop supervising; the pods' processes keep running for the next runtime to adopt."""
        for worker in list(self.workers.values()):
            await worker.detach_tasks()
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def run(config: RuntimeConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    conn = Connection(config.istiod, config.token, config.istiod_ca_file)
    async with KubeClient(conn) as client:
        runtime = Runtime(config, client)
        beat = asyncio.create_task(heartbeat_loop(client, config.node, config.node_ip, config.heartbeat_interval))
        try:
            await _until(runtime.start(), stopping)
            log.info("ready")
            await stopping.wait()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await runtime.stop()
    log.info("stopped")


async def _until(coro: Any, stopping: asyncio.Event) -> None:
    """Await `coro`, unless a stop is asked for first."""
    task = asyncio.create_task(coro)
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def cleanup(config: RuntimeConfig) -> int:
    """`--cleanup`: release every recorded pod without asking the API; the number released."""
    deps = make_deps(config, None)
    records = deps.store.load_all()
    await asyncio.gather(*(release(r, deps, config.grace_max) for r in records))
    return len(records)
