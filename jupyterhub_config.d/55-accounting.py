# Accounting (docs/accounting.md): GPU-hours and CPU-hours per user, project, model and kind in
# PostgreSQL, from the start and end of every allocation the hub's inventory watch sees. Off
# unless c.AiInfnAccounting.database_url is set, by default from the hub's environment variable
# AIINFN_ACCOUNTING_DATABASE_URL (from a Secret; never passed to the services or the pods).
from aiinfn_hub.accounting.hub_start import start_at_hub_start

start_at_hub_start()
