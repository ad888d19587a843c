"""Label, annotation and taint keys, each named once: the Kubernetes recommended ones, our own
prefix, and those of Kueue, batch/v1, KubeSpawner and virtual-kubelet that we set or select on."""

PREFIX = "aiinfn.infn.it"

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"

OWNER = f"{PREFIX}/owner"
# Annotation with the exact username (label values are escaped and may be shortened).
OWNER_NAME = f"{PREFIX}/owner-name"

# Batch jobs (the job service): what kind of job, for which project, and how it was asked for.
JOB_KIND = f"{PREFIX}/job-kind"
PROJECT = f"{PREFIX}/project"
DISPLAY_NAME = f"{PREFIX}/display-name"
IDEMPOTENCY_KEY = f"{PREFIX}/idempotency-key"
REQUEST = f"{PREFIX}/request"
REQUEST_DIGEST = f"{PREFIX}/request-digest"
# A restore Job's archive and where it writes (the backup service's run status reads them back).
BACKUP_ARCHIVE = f"{PREFIX}/archive"
RESTORE_DESTINATION = f"{PREFIX}/restore-destination"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"
KUEUE_JOB_UID = "kueue.x-k8s.io/job-uid"
JOB_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# The Job a pod belongs to, as the Job controller labels it (the plain key is the older one).
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME = "job-name"

# KubeSpawner's annotations on notebook pods.
HUB_USERNAME = "hub.jupyter.org/username"
HUB_SERVERNAME = "hub.jupyter.org/servername"

# The catalog key of the accelerator a notebook or job pod was placed for.
ACCELERATOR = f"{PREFIX}/accelerator"
# Annotation on the identity ConfigMap telling administrators not to edit it.
NOTE = f"{PREFIX}/note"

# Virtual-kubelet (interLink) nodes: notebooks and ordinary jobs keep off them, offloadable jobs
# select and tolerate them. Nodes carry the plain `type` label or interLink's own keys.
VIRTUAL_NODE = "type"
VIRTUAL_NODE_VALUE = "virtual-kubelet"
INTERLINK_NODE = "virtual-node.interlink/type"
# The remote site a virtual node stands for (one Kueue flavor per site selects it).
INTERLINK_SITE = "virtual-node.interlink/site"
# Annotation on an offloadable Job: the sites whose policy accepts it (comma-separated).
SITES = f"{PREFIX}/sites"
INTERLINK_TAINT = "virtual-node.interlink/no-schedule"
INTERLINK_TAINT_PREFIX = "virtual-node.interlink/"
VIRTUAL_KUBELET_TAINT = "virtual-kubelet.io/provider"

MANAGED_BY_VALUE = "aiinfn-hub"
PART_OF_VALUE = "aiinfn-hub"

POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
POD_SECURITY_ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
# On a storage PersistentVolume: the mode its root directory must have (docs/storage.md).
ROOT_MODE = f"{PREFIX}/root-mode"
