"""Node-local volume pool: volumes and snapshots as sparse files in one directory."""
