"""A real local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler,
kwok).

Built once from the Go module proxy into a cache outside the repository; used by the tests and
by `aiinfn-dev demo`. See docs/devcluster.md.
"""
