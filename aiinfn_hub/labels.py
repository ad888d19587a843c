"""Label and annotation keys: the Kubernetes recommended ones plus our own prefix."""

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
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"

MANAGED_BY_VALUE = "aiinfn-hub"
PART_OF_VALUE = "aiinfn-hub"

POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
POD_SECURITY_ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
