"""A real-kernel test VM: a VDUSE-capable guest kernel under QEMU that runs host commands."""
