"""The user's current OIDC access token in a per-user Secret, mounted as a file in notebooks.

Only `access_token` is ever taken from auth_state: the refresh token, the id token and the hub's
client secret never leave the hub. The Secret is rewritten whenever the hub's copy changes (the
spawner compares a fingerprint at every poll), so a week-long session keeps a valid token: the
kubelet updates a Secret volume's files in place (never mount it with subPath, which freezes it).
It is deleted when the user's last server stops and when the user is deleted. Nothing here logs
or returns a token; errors carry the Kubernetes status only.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from . import k8s, labels, names

SECRET_PREFIX = "aiinfn-token"
KEY = "access_token"
MOUNT_DIR = "/var/run/secrets/aiinfn"
TOKEN_PATH = f"{MOUNT_DIR}/{KEY}"
VOLUME_NAME = "access-token"
COMPONENT = "access-token"
# JWTs from IAM are a few kB; anything much larger is not a token we should write into the cluster.
MAX_TOKEN_LENGTH = 16384


class TokenSyncError(RuntimeError):
    """Writing the Secret failed; the message has the Kubernetes status and reason, no token."""


def secret_name(username: str) -> str:
    """The user's token Secret: `aiinfn-token-<slug>`, distinct for distinct (validated) names."""
    return names.object_name(SECRET_PREFIX, names.username(username))


def access_token(auth_state: Mapping[str, Any] | None) -> str | None:
    """The access token from auth_state, if there is a usable one; nothing else is ever read."""
    if not isinstance(auth_state, Mapping):
        return None
    token = auth_state.get(KEY)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        return None
    return token


def fingerprint(token: str) -> str:
    """A digest to notice that the token changed without keeping a second copy of it."""
    return hashlib.sha256(token.encode()).hexdigest()


def make_secret(username: str, token: str) -> dict:
    """The Secret: one key, labelled with its owner so it can be listed and cleaned up by label."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(username),
            "labels": {
                labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                labels.PART_OF: labels.PART_OF_VALUE,
                labels.COMPONENT: COMPONENT,
                labels.OWNER: names.label_value(username),
            },
            "annotations": {labels.OWNER_NAME: username},
        },
        "data": {KEY: base64.b64encode(token.encode()).decode()},
    }


def _failure(action: str, error: ApiException) -> TokenSyncError:
    return TokenSyncError(f"{action} the access-token Secret failed: {error.status} {error.reason}")


async def sync(
    api_client: client.ApiClient, namespace: str, username: str, token: str, exists: bool = True
) -> None:
    """Create or overwrite the user's Secret with this token. `exists` says which write to try
    first: a spawn after a stop finds no Secret, and creating first costs it one request, not two.
    """
    api = client.CoreV1Api(api_client)
    body = make_secret(username, token)
    name = body["metadata"]["name"]

    async def replace() -> None:
        await api.replace_namespaced_secret(name, namespace, body, field_validation=k8s.STRICT)

    async def create() -> None:
        await api.create_namespaced_secret(namespace, body, field_validation=k8s.STRICT)

    # Each write, the status that means "the other one is needed", and what a failure says.
    writes = [(replace, 404, "replacing"), (create, 409, "creating")]
    for _ in range(3):
        for write, other, action in writes if exists else writes[::-1]:
            try:
                await write()
                return
            except ApiException as error:
                if error.status != other:
                    raise _failure(action, error) from None
    raise TokenSyncError(
        "the access-token Secret kept appearing and disappearing; giving up for now"
    )


async def delete(api_client: client.ApiClient, namespace: str, username: str) -> bool:
    """Delete the user's Secret; False if there was none."""
    try:
        await client.CoreV1Api(api_client).delete_namespaced_secret(
            secret_name(username), namespace
        )
    except ApiException as error:
        if error.status == 404:
            return False
        raise _failure("deleting", error) from None
    return True
