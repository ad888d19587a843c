# Notebook servers run as Kubernetes pods. What users may pick (accelerators, environments,
# sizes) is the catalog's; who may pick what is the policy's.
c.JupyterHub.spawner_class = "aiinfn"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.start_timeout = 300
c.KubeSpawner.http_timeout = 60
c.AiInfnSpawner.default_policy = {"accelerators": "*", "environments": "*", "max_accelerators": 1}
c.AiInfnSpawner.group_policies = {}
# Storage (docs/storage.md): the claims of helm-values/storage.yaml in the spawner's namespace.
# Scratch is an emptyDir until the cluster has a node-local provisioner ("aiinfn-scratch");
# JuiceFS and the object-store bucket (a CSI driver given the user's token Secret) are opt-in.
c.AiInfnStorage.home_claim = "aiinfn-home"
c.AiInfnStorage.public_claim = "aiinfn-shared"
c.AiInfnStorage.project_claim_prefix = "aiinfn-project"
c.AiInfnStorage.envs_claim = "aiinfn-envs"
c.AiInfnStorage.envs_curator_group = "envs-admins"
c.AiInfnStorage.cvmfs_claim = "aiinfn-cvmfs"
c.AiInfnStorage.scratch_storage_class = ""
c.AiInfnStorage.juicefs_claim = ""
c.AiInfnStorage.bucket_csi_driver = ""
