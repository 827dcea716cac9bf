"""Node-side volume state: what is staged and published where, and the steps between."""
