# Last: once the hub has its whole configuration (also what a file loaded after this one sets),
# check the catalog, the policies and the cluster with the hub's own credentials. An error stops
# the hub, naming what is wrong; `aiinfn-hub check` runs the same checks for admins
# (docs/admin-check.md). c.AiInfnChecks.at_start = False turns them off.
from aiinfn_hub.checks import check_at_hub_start

check_at_hub_start()
