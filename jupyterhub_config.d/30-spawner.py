# Notebook servers run as Kubernetes pods. What users may pick (accelerators, environments,
# sizes) is the catalog's; who may pick what is the policy's.
c.JupyterHub.spawner_class = "aiinfn"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.start_timeout = 300
c.KubeSpawner.http_timeout = 60
c.AiInfnSpawner.default_policy = {"accelerators": "*", "environments": "*", "max_accelerators": 1}
c.AiInfnSpawner.group_policies = {}
