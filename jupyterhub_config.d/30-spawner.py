# Notebook servers run as Kubernetes pods, with the platform's restricted-safe defaults.
c.JupyterHub.spawner_class = "aiinfn"
c.KubeSpawner.image = "quay.io/jupyter/minimal-notebook:2025-10-20"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.start_timeout = 300
c.KubeSpawner.http_timeout = 60
