"""Where the `calico` plugin gets addresses: calico-ipam in this process, or any other IPAM
plugin by exec (`ipam.type` found in CNI_PATH)."""

from __future__ import annotations

import logging

from calico_cni.datastore.errors import DatastoreError
from calico_cni.protocol.errors import CniError
from calico_cni.protocol.request import CniRequest

log = logging.getLogger(__name__)

CALICO_IPAM = "calico-ipam"


class InProcessIpam:
    """calico-ipam's functions, called directly: no second exec, no second interpreter."""

    deleted = False

    def __init__(self, request: CniRequest, store) -> None:
        self.request = request
        self.store = store
        self.new: list = []
        self.assigned: list = []

    @property
    def handle_id(self) -> str:
        return f"{self.request.network}.{self.request.container_id}"

    def holding(self) -> list:
        """What the attachment holds after `add` (block, ordinal, sequence of each address)."""
        return self.assigned

    def validate(self) -> None:
        from calico_cni.plugins.calico_ipam import family_requests

        family_requests(self.request)

    def add(self) -> dict:
        from calico_cni.plugins.calico_ipam import assign_addresses, ipam_result

        assigned = assign_addresses(self.request, self.store)
        self.assigned = assigned
        self.new = [a for a in assigned if a.new]
        return ipam_result(assigned)

    def undo(self) -> None:
        """Release exactly what `add` allocated (never what an earlier ADD holds)."""
        if not self.new:
            return
        from calico_ipam.allocator import release_exact
        from calico_cni.plugins.calico_ipam import handle_id

        from calico_cni.datastore.errors import DatastoreUnavailable

        try:
            release_exact(self.store, handle_id(self.request), self.new)
            log.info("rolled back: released %s", ", ".join(str(a.address) for a in self.new))
        except DatastoreUnavailable:
            self._journal_undo()
        except Exception:  # noqa: BLE001 - the original error is what the runtime must see
            log.exception("could not release %s during rollback", ", ".join(str(a.address) for a in self.new))

    def _journal_undo(self) -> None:
        """etcd went away during the rollback: record the exact release for a later invocation."""
        from calico_cni.config import etcd_settings
        from calico_cni.journal import Journal, journal_dir

        r = self.request
        try:
            path = Journal(journal_dir(r.config, r.environ)).add_pending(
                r.network, r.container_id, r.ifname, self.handle_id, etcd_settings(r.config, r.environ).endpoints,
                {"allocations": [{"address": str(a.address), "block": a.block, "ordinal": a.ordinal, "sequence": a.sequence} for a in self.new]},
            )
            log.warning("etcd unreachable during rollback: release of %s recorded in %s", ", ".join(str(a.address) for a in self.new), path)
        except OSError:
            log.exception("could not record the rollback of %s in the release journal", ", ".join(str(a.address) for a in self.new))

    def delete(self) -> list[str]:
        from calico_cni.plugins.calico_ipam import release_addresses

        return [str(a.address) for a in release_addresses(self.request, self.store)]

    def check(self) -> list[str]:
        from calico_cni.plugins.calico_ipam import check_addresses

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
        return f"{self.request.network}.{self.request.container_id}"

    def holding(self) -> list:
        """The delegated plugin keeps its own allocations: nothing of ours to record."""
        return []

    def validate(self) -> None:
        from calico_cni.protocol.delegate import find_plugin

        find_plugin(self.plugin, self.request.cni_path)

    def add(self) -> dict:
        from calico_cni.protocol.delegate import delegate

        result = delegate(self.request, self.plugin, "ADD")
        self.added = True
        return result

    def undo(self) -> None:
        if not self.added:
            return
        from calico_cni.protocol.delegate import delegate

        try:
            delegate(self.request, self.plugin, "DEL")
            log.info("rolled back: %s released its addresses", self.plugin)
        except Exception:  # noqa: BLE001
            log.exception("IPAM plugin %s failed DEL during rollback", self.plugin)

    def delete(self) -> list[str]:
        from calico_cni.protocol.delegate import delegate

        delegate(self.request, self.plugin, "DEL")
        self.deleted = True
        return []

    def check(self) -> list[str]:
        from calico_cni.protocol.delegate import delegate

        try:
            delegate(self.request, self.plugin, "CHECK")
        except CniError as err:
            return [f"IPAM plugin {err.msg}"]
        return []


def backend_for(request: CniRequest, ipam_type: str, store) -> InProcessIpam | DelegatedIpam:
    return InProcessIpam(request, store) if ipam_type == CALICO_IPAM else DelegatedIpam(request, ipam_type)
