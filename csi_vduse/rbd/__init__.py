"""RBD volumes: volumes that are images in a Ceph pool, as the controller makes, finds,
grows and removes them (``volumes``), named by ids that say where they are (``ids``) and
reached with the CO's secrets (``credentials``)."""
