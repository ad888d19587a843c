"""Our writes ask the API server for strict field validation: a misspelled field is refused.

One real write path stands for all of them (tests/unit/test_field_validation.py checks that
every write in the product passes the flag): the jobs service's sandbox ConfigMap.
"""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio.client.rest import ApiException

from aiinfn_hub.services.jobs.store import JobStore

pytestmark = pytest.mark.integration


def _sandbox(name: str, data_key: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        data_key: {"run.sh": "echo hello\n"},
    }


async def test_a_misspelled_field_in_our_write_is_refused(api_client, namespace):
    store = JobStore(api_client, namespace)
    with pytest.raises(ApiException) as refused:
        await store.create_sandbox(_sandbox("misspelled", "dat"))
    assert refused.value.status == 400
    assert 'unknown field "dat"' in json.loads(refused.value.body)["message"]
    assert await store.get_sandbox("misspelled") is None

    created = await store.create_sandbox(_sandbox("spelled", "data"))
    assert created["data"] == {"run.sh": "echo hello\n"}
