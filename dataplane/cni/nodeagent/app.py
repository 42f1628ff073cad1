"""mesh-node-agent's wiring: informers → pod cache → membership queue; plugin socket; ZDS server.

Start-up order matters for a restart without churn or loss: the informers list first (pods on
this node, all namespaces), every known pod is synced once (rules compared with what should be,
changed only where they differ), and only then does the ZDS socket open, so a reconnecting
ztunnel's snapshot names every pod that is still enrolled. SIGTERM leaves every rule in place
(pods stay captured while the agent is away); `--uninstall` is what removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import httpx

from mesh.kubeclient import NAMESPACES, PODS, ApiStatusError, Connection, Informer, KubeClient

from ..events import AgentReply, PluginEvent
from ..redirect import apply, rules
from .enrollment import REDIRECTION_ANNOTATION, annotated
from .membership import Membership, Outcome
from .plugin_server import PluginServer
from .podcache import PodCache, uid_of
from .settings import AgentSettings
from .zds import ZdsServer

log = logging.getLogger("mesh.cni.agent")
Json = dict[str, Any]
DEFAULT_WAIT = 5.0


def _labels(obj: Json | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


class NodeAgent:
    """One node's agent. `run()` until SIGTERM or cancellation."""

    def __init__(self, settings: AgentSettings, client: KubeClient, node: str):
        self.settings = settings
        self.client = client
        self.node = node
        self.cache = PodCache(settings.pods_file(), settings.runtime_dir(), settings.netns_dir)
        self.zds = ZdsServer(settings.zds_socket_path())
        self.pods = Informer(client, PODS, field_selector=f"spec.nodeName={node}")
        self.namespaces = Informer(client, NAMESPACES)
        self._fetched_namespaces: dict[str, Json] = {}
        self.membership = Membership(
            self.cache, self.zds, rules.build(), client, self.namespace_of, workers=settings.workers
        )
        self.plugin = PluginServer(settings.plugin_socket_path(), self.on_plugin_event)
        self.pods.handlers.append(self._on_pod)
        self.namespaces.handlers.append(self._on_namespace)

    def namespace_of(self, name: str) -> Json | None:
        return self.namespaces.get(name) or self._fetched_namespaces.get(name)

    # --- informer events ------------------------------------------------------------------------

    def _on_pod(self, event: str, pod: Json, _prev: Json | None) -> None:
        if event == "DELETED":
            entry = self.cache.deleted(pod)
        else:
            entry = self.cache.upsert(pod)
        if entry is not None:
            self.membership.enqueue(entry.uid)

    def _on_namespace(self, event: str, ns: Json, prev: Json | None) -> None:
        name = ns["metadata"]["name"]
        self._fetched_namespaces.pop(name, None)
        if event == "MODIFIED" and prev is not None and _labels(prev) == _labels(ns):
            return  # only labels decide enrollment
        for uid in self.cache.in_namespace(name):
            self.membership.enqueue(uid)

    # --- the plugin -----------------------------------------------------------------------------

    async def on_plugin_event(self, event: PluginEvent) -> AgentReply:
        """ADD: remember the netns and capture within `wait`; DEL: let ztunnel go."""
        if event.event == "DEL":
            await self.membership.sandbox_gone(event.pod_uid)
            return AgentReply(ok=True)
        entry = self.cache.set_netns(event.pod_uid, event.pod_namespace, event.pod_name, event.netns, event.ips)
        await self._learn(entry.namespace, entry.name, entry.uid)
        if entry.pod is None:
            return AgentReply(ok=True)  # not (yet) visible in the API: the informer will bring it
        decision = self.membership.decision(entry)
        if not decision.enrolled:
            self.membership.enqueue(entry.uid)
            return AgentReply(ok=True, enrolled=False)
        sync = asyncio.ensure_future(self.membership.sync(entry.uid))
        try:
            outcome = await asyncio.wait_for(asyncio.shield(sync), event.wait or DEFAULT_WAIT)
        except TimeoutError:
            outcome = Outcome.WAITING
        return AgentReply(ok=True, enrolled=True, captured=outcome is Outcome.CAPTURED)

    async def _learn(self, namespace: str, name: str, uid: str) -> None:
        """Fetch a pod (and its namespace) the informers have not delivered yet."""
        entry = self.cache.get(uid)
        try:
            if entry is not None and entry.pod is None:
                pod = await self.client.get(PODS, name, namespace)
                if uid_of(pod) == uid:
                    self.cache.upsert(pod)
            if self.namespace_of(namespace) is None:
                self._fetched_namespaces[namespace] = await self.client.get(NAMESPACES, namespace)
        except (ApiStatusError, httpx.HTTPError, OSError) as e:
            log.info("pod %s/%s not readable yet: %s", namespace, name, e)

    # --- life cycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Sync every pod once, open the ZDS socket, then follow changes until `stop` is set."""
        self.cache.load()
        tasks = [asyncio.create_task(self.namespaces.run()), asyncio.create_task(self.pods.run())]
        try:
            # The plugin is served at once: an ADD needs no informer (it reads the pod itself).
            await self.plugin.start()
            if not await self._synced(stop):
                return
            for uid in self.cache.uids():
                self.membership.enqueue(uid)  # pods recorded before a restart that the API no longer has
            tasks.append(asyncio.create_task(self.membership.run()))
            await self.membership.drained()
            await self.zds.start()
            log.info("ready", extra={"node": self.node, "pods": len(self.cache.uids())})
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.plugin.close()
            await self.zds.close()
            log.info("stopped", extra={"node": self.node})

    async def _synced(self, stop: asyncio.Event) -> bool:
        """Wait for both informers' first list (istiod may be late); False when stopped first."""
        synced = asyncio.ensure_future(asyncio.gather(self.namespaces.synced.wait(), self.pods.synced.wait()))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not synced.done():
                await asyncio.wait({synced, stopped}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                if stopped.done():
                    return False
                if not synced.done():
                    log.warning("still waiting for the first list of pods and namespaces from istiod")
            return True
        finally:
            for future in (synced, stopped):
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future


async def uninstall(settings: AgentSettings, client: KubeClient, node: str) -> int:
    """Remove every rule and annotation of ours from this node's pods; returns how many pods changed."""
    cache = PodCache(settings.pods_file(), settings.runtime_dir(), settings.netns_dir)
    cache.load()
    try:
        items, _ = await client.list(PODS, field_selector=f"spec.nodeName={node}")
    except (ApiStatusError, httpx.HTTPError, OSError) as e:
        # Still take the rules out of every pod we recorded; annotations need istiod.
        log.warning("istiod unreachable (%s): removing rules from recorded pods only", e)
        items = []
    for pod in items:
        cache.upsert(pod)
    ruleset = rules.build()
    changed = 0
    for uid in cache.uids():
        entry = cache.get(uid)
        assert entry is not None
        netns = cache.netns_for(entry)
        touched = bool(netns) and await asyncio.to_thread(apply.remove, netns, ruleset)
        if entry.pod is not None and annotated(entry.pod):
            patch = {"metadata": {"annotations": {REDIRECTION_ANNOTATION: None}}}
            with contextlib.suppress(ApiStatusError, httpx.HTTPError, OSError):
                await client.patch(PODS, entry.name, patch, entry.namespace)
                touched = True
        if touched:
            changed += 1
            log.info("uninstalled", extra={"pod": f"{entry.namespace}/{entry.name}", "uid": uid})
    return changed


async def run(settings: AgentSettings, node: str, conn: Connection) -> None:
    """The process: the agent until SIGTERM (or one uninstall pass)."""
    async with KubeClient(conn) as client:
        if settings.uninstall:
            changed = await uninstall(settings, client, node)
            log.info("uninstall complete", extra={"node": node, "pods_changed": changed})
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await NodeAgent(settings, client, node).run(stop)
