"""aiinfn-hub's dev platform: the local dev cluster, its pod runner and storage, and the demo."""
