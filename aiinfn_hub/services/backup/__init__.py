"""Backups with BorgBackup: the pure core (repositories, borg commands and their output, restore
paths, the stale-lock rule, Job manifests) that the backup service stands on. docs/backup.md."""
