"""The token Secret goes when JupyterHub has stopped a server (run_post_stop_hook), which it
does on every stop, also of a server whose pod never existed (a start the hub was killed in:
tests/faults/test_hub_restart.py), and never in KubeSpawner's own stop() within a start."""

from __future__ import annotations

from aiinfn_hub.spawner import AiInfnSpawner


class _Storage:
    def __init__(self) -> None:
        self.forgotten = 0

    async def forget_token(self) -> None:
        self.forgotten += 1


def _spawner(hook=None) -> tuple[AiInfnSpawner, _Storage]:
    spawner = AiInfnSpawner.__new__(AiInfnSpawner)
    storage = _Storage()
    spawner.__dict__["_storage"] = storage  # the cached collaborator
    spawner.post_stop_hook = hook
    return spawner, storage


async def test_the_post_stop_hook_forgets_the_token_and_runs_the_configured_hook():
    called = []
    spawner, storage = _spawner(lambda s: called.append(s))
    await spawner.run_post_stop_hook()
    assert (storage.forgotten, called) == (1, [spawner])


async def test_an_async_configured_hook_is_awaited_first():
    order = []

    async def hook(spawner):
        order.append("hook")

    spawner, storage = _spawner(hook)
    await spawner.run_post_stop_hook()
    assert order == ["hook"] and storage.forgotten == 1


def test_stop_is_kubespawners_own():
    # A stop() inside a start (a pod name taken, a start given up) leaves the Secret to the
    # spawn that goes on; only JupyterHub's stop ends with run_post_stop_hook.
    assert "stop" not in AiInfnSpawner.__dict__
