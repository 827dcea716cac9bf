"""The driver <-> dataplane process seam holds in the imports.

The control plane (``csi_vduse`` outside ``csi_vduse/dataplane``) may import only the
dataplane's contract modules: its arguments and readiness (``interface``), the layouts of the
files both sides map (``stats``, ``inflight_log``, ``qos``), the control socket's messages
(``control``) and the device both agree on (``blk.profile``). The dataplane may import only
the layers below both (``vduse``, the uAPI; ``virtio``, the spec's numbers; ``errors``, the
one error root; ``ceph``, RBD images through librbd), never the control plane.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "csi_vduse"
DATAPLANE = PACKAGE / "dataplane"
CONTRACT = {
    "csi_vduse.dataplane.interface",
    "csi_vduse.dataplane.stats",
    "csi_vduse.dataplane.inflight_log",
    "csi_vduse.dataplane.qos",
    "csi_vduse.dataplane.control",
    "csi_vduse.dataplane.blk.profile",
}
SHARED = ("csi_vduse.vduse", "csi_vduse.virtio", "csi_vduse.ceph", "csi_vduse.errors")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, ``from a import b`` counted as ``a.b`` too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def crossings(inside: Path, outside: Path | None, crosses: Callable[[str], bool]) -> set[str]:
    """``path: module`` for each import by a module under ``inside`` (but not under
    ``outside``) that ``crosses`` a line."""
    return {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in inside.rglob("*.py")
        if outside is None or not path.is_relative_to(outside)
        for module in imports(path)
        if crosses(module)
    }


def test_the_control_plane_imports_only_the_dataplanes_contract() -> None:
    def crosses(module: str) -> bool:
        return (
            within(module, "csi_vduse.dataplane")
            and module != "csi_vduse.dataplane"
            and not any(within(module, allowed) for allowed in CONTRACT)
        )

    assert crossings(PACKAGE, DATAPLANE, crosses) == set()


def test_the_dataplane_imports_nothing_of_the_control_plane() -> None:
    def crosses(module: str) -> bool:
        return (
            within(module, "csi_vduse")
            and not within(module, "csi_vduse.dataplane")
            and not any(within(module, shared) for shared in SHARED)
            and module != "csi_vduse"  # ``from csi_vduse import dataplane``
        )

    assert crossings(DATAPLANE, None, crosses) == set()


def test_the_reference_ring_is_out_of_the_serving_path() -> None:
    """The Python ring is the differential tests' oracle: no module outside it imports it."""
    reference = DATAPLANE / "reference"

    def crosses(module: str) -> bool:
        return within(module, "csi_vduse.dataplane.reference")

    assert crossings(PACKAGE, reference, crosses) == set()
