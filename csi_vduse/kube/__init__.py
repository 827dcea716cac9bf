"""The Kubernetes API, as much of it as the driver itself uses: PersistentVolumes.

The sidecars talk to the API server for everything else. The driver reads and annotates
PersistentVolumes only to route a ControllerModifyVolume from the central controller to
the node whose pool holds the volume (``csi_vduse.csi.modify_routing`` and
``modify_watcher``). ``volumes`` is the seam (a small Protocol and the PV view the driver
needs); ``client`` implements it with the ``kubernetes`` package, imported only when
routing is turned on.
"""
