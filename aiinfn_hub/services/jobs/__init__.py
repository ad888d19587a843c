"""The job service: batch jobs and Bunshin notebook clones for hub users, queued by Kueue."""
