"""Hub-managed services of aiinfn-hub (each runs as its own process beside the hub)."""
