"""The usage service (docs/usage.md): GPU-hours and CPU-hours from the accounting ledger, with
what is left of each quota, as a page, a REST API and CSV."""
