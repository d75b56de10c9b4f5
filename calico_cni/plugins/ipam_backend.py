"""Where the `calico` plugin gets addresses: calico-ipam in this process, or any other IPAM
plugin by exec (`ipam.type` found in CNI_PATH)."""

from __future__ import annotations

import logging

from calico_cni.config import CalicoSettings
from calico_cni.datastore.errors import DatastoreError, DatastoreUnavailable
from calico_cni.datastore.store import Datastore, Hint
from calico_cni.journal import Journal
from calico_cni.plugins.calico_ipam import assign_addresses, check_addresses, family_requests, handle_id, ipam_result, release_addresses
from calico_cni.protocol.delegate import delegate, find_plugin
from calico_cni.protocol.errors import CniError
from calico_cni.protocol.request import CniRequest
from calico_ipam import allocator
from calico_ipam.allocator import Assigned, BlockMemory, FamilyRequest

log = logging.getLogger(__name__)

CALICO_IPAM = "calico-ipam"


class InProcessIpam:
    """calico-ipam's functions, called directly: no second exec, no second interpreter."""

    deleted = False

    def __init__(self, request: CniRequest, settings: CalicoSettings, store: Datastore, memory: BlockMemory, hint: Hint | None = None) -> None:
        self.request = request
        self.settings = settings
        self.store = store
        self.memory = memory
        self.hint = hint
        self.families: list[FamilyRequest] = []
        self.new: list[Assigned] = []
        self.assigned: list[Assigned] = []

    @property
    def handle_id(self) -> str:
        """The attachment's IPAM handle."""
        return handle_id(self.request)

    def holding(self) -> list[Assigned]:
        """What the attachment holds after `add` (block, ordinal, sequence of each address)."""
        return self.assigned

    def validate(self) -> None:
        """Check the addresses asked for (CNI_ARGS IP=, runtimeConfig.ips) before any write."""
        self.families = family_requests(self.request, self.settings.ipam)

    def add(self) -> dict:
        """Assign the attachment's addresses; the IPAM result."""
        assert self.settings.node is not None
        assigned = assign_addresses(self.request, self.store, self.settings.node, self.families, self.memory, self.hint)
        self.assigned = assigned
        self.new = [a for a in assigned if a.new]
        return ipam_result(assigned)

    def undo(self) -> None:
        """Release exactly what `add` allocated (never what an earlier ADD holds)."""
        if not self.new:
            return
        try:
            allocator.release_exact(self.store, self.handle_id, self.new)
            log.info("rolled back: released %s", ", ".join(str(a.address) for a in self.new))
        except DatastoreUnavailable:
            self._journal_undo()
        except Exception:  # noqa: BLE001 - the original error is what the runtime must see
            log.exception("could not release %s during rollback", ", ".join(str(a.address) for a in self.new))

    def _journal_undo(self) -> None:
        """etcd went away during the rollback: record the exact release for a later invocation."""
        r = self.request
        try:
            path = Journal(self.settings.journal_dir).add_pending(
                r.network, r.container_id, r.ifname, self.handle_id, self.settings.etcd.endpoints,
                {"allocations": [{"address": str(a.address), "block": a.block, "ordinal": a.ordinal, "sequence": a.sequence} for a in self.new]},
            )
            log.warning("etcd unreachable during rollback: release of %s recorded in %s", ", ".join(str(a.address) for a in self.new), path)
        except OSError:
            log.exception("could not record the rollback of %s in the release journal", ", ".join(str(a.address) for a in self.new))

    def delete(self) -> list[str]:
        """Release the attachment's addresses; the addresses released."""
        return [str(a.address) for a in release_addresses(self.request, self.store, self.memory, self.settings.node, self.hint)]

    def check(self) -> list[str]:
        """What differs between prevResult and what IPAM holds (empty: nothing)."""
        try:
            check_addresses(self.request, self.store)
        except (CniError, DatastoreError) as err:
            return [err.msg]
        return []


class DelegatedIpam:
    """Another IPAM plugin, run by exec as the CNI spec describes."""

    def __init__(self, request: CniRequest, plugin: str) -> None:
        self.request = request
        self.plugin = plugin
        self.added = False
        self.deleted = False

    @property
    def handle_id(self) -> str:
        """The attachment's handle, as calico-ipam would name it (recorded in the journal)."""
        return handle_id(self.request)

    def holding(self) -> list:
        """The delegated plugin keeps its own allocations: nothing of ours to record."""
        return []

    def validate(self) -> None:
        """The plugin must be found in CNI_PATH before any side effect."""
        find_plugin(self.plugin, self.request.cni_path)

    def add(self) -> dict:
        """ADD through the plugin; its result."""
        result = delegate(self.request, self.plugin, "ADD")
        self.added = True
        return result

    def undo(self) -> None:
        """DEL through the plugin, if its ADD succeeded (failures are logged)."""
        if not self.added:
            return
        try:
            delegate(self.request, self.plugin, "DEL")
            log.info("rolled back: %s released its addresses", self.plugin)
        except Exception:  # noqa: BLE001
            log.exception("IPAM plugin %s failed DEL during rollback", self.plugin)

    def delete(self) -> list[str]:
        """DEL through the plugin (it reports no addresses)."""
        delegate(self.request, self.plugin, "DEL")
        self.deleted = True
        return []

    def check(self) -> list[str]:
        """CHECK through the plugin; its error message, if any."""
        try:
            delegate(self.request, self.plugin, "CHECK")
        except CniError as err:
            return [f"IPAM plugin {err.msg}"]
        return []


def backend_for(
    request: CniRequest, settings: CalicoSettings, store: Datastore, memory: BlockMemory, hint: Hint | None = None
) -> InProcessIpam | DelegatedIpam:
    """calico-ipam in this process (with `memory`, the process's block memory, and `hint`,
    calico-node's watch cache), or the configured IPAM plugin by exec."""
    return InProcessIpam(request, settings, store, memory, hint) if settings.ipam_type == CALICO_IPAM else DelegatedIpam(request, settings.ipam_type)
