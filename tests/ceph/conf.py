"""The cluster's ``ceph.conf``: one monitor and one OSD on loopback, sized for a small VM."""

from __future__ import annotations

from tests.ceph.layout import MON_ID, Layout, State

# BlueStore's floor (896 MiB): the default 4 GiB would have the OSD grow its caches past
# what the test VM has to spare; it stays far below this at the tests' load.
OSD_MEMORY_TARGET = 896 * 1024 * 1024


def render(layout: Layout, state: State, osd_size: int) -> str:
    """The config file; ``osd_size`` sizes the OSD's block file where it has no loop device.

    Daemon-only paths (admin socket, log file) are set per daemon section: set globally,
    every ``ceph`` and ``rbd`` command would claim the same socket and log.
    """
    root = layout.root
    return f"""\
[global]
fsid = {state.fsid}
mon_host = {state.mon_host}
mon_initial_members = {MON_ID}
public_network = 127.0.0.0/8
ms_bind_ipv4 = true
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = {layout.run_dir}
pid_file =
mon_data = {root}/mon/$cluster-$id
osd_data = {root}/osd/$cluster-$id
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false

[mon]
admin_socket = {layout.run_dir}/$name.asok
log_file = {layout.log_dir}/$name.log
# The directory may sit on a small tmpfs or a full disk: not a reason to stop.
mon_data_avail_warn = 1
mon_data_avail_crit = 0

[osd]
admin_socket = {layout.run_dir}/$name.asok
log_file = {layout.log_dir}/$name.log
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = {osd_size}
osd_memory_target = {OSD_MEMORY_TARGET}
# Freed space goes back to the sparse file under the loop device (a discard punches a hole):
# BlueStore writes each whole allocation unit it overwrites (4 KiB over tmpfs, which the
# loop device calls non-rotational) to new space, and its allocator walks the whole device
# before it reuses any, so without this the file grows toward the OSD's size under
# overwrites: in the test VM, in tmpfs, which is memory.
bdev_enable_discard = true
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2

[mgr]
admin_socket = {layout.run_dir}/$name.asok
log_file = {layout.log_dir}/$name.log
mgr_data = {root}/mgr/$cluster-$id

[client]
keyring = {root}/$name.keyring
"""
