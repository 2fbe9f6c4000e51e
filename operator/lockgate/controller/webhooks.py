"""The webhooks of a Deployment, called by the controller for the engine.

The engine records each call in `status.webhooks` and asks for it with a CallWebhook action;
the controller makes the call as a task once that status is written (so a round never waits
on a receiver, and an operator restart finds every call it made recorded), and the answer
comes back into the next round's observation. A gate's call lost to a restart is made
again (a gate needs its answer); an informational one is not (it was recorded as called).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from lockgate.api.deployment import GATE_TYPES, DeploymentSpec, DeploymentStatus, Webhook
from lockgate.engine import CallWebhook, WebhookAnswer
from lockgate.outbound.http import post_json

from .runtime import Runtime

log = logging.getLogger("lockgate.webhooks")
LOST = "the operator restarted before the answer came (not sent again)"


class SecretProblem(Exception):
    """A Secret a webhook needs cannot be read; the message names the field."""


def body(
    hook: Webhook,
    *,
    namespace: str,
    deployment: str,
    spec: DeploymentSpec,
    status: DeploymentStatus,
) -> dict[str, Any]:
    """What a receiver gets: where the rollout is and what it last measured."""
    step = status.step
    last = status.analysis[-1] if status.analysis else None
    return {
        "type": hook.type,
        "name": hook.name,
        "namespace": namespace,
        "application": spec.application,
        "deployment": deployment,
        "revision": status.revision,
        "attempt": status.attempt,
        "image": status.image or spec.image,
        "previousImage": status.previous_image,
        "phase": status.phase,
        "message": status.message,
        "step": (
            {"index": step.index, "total": step.total, "description": step.description}
            if step is not None
            else None
        ),
        "weights": status.weights.wire() if status.weights is not None else None,
        "analysis": last.model_dump(by_alias=True, mode="json", exclude_none=True)
        if last is not None
        else None,
    }


def delivery_id(uid: str, status: DeploymentStatus, call_id: str) -> str:
    """The same for the same call of the same rollout attempt (a call made again after an
    operator restart keeps it, so a receiver can drop the repeat)."""
    return f"{uid}/{status.revision}.{status.attempt}/{call_id}"


def forget_calls(rt: Runtime, uid: str, before: tuple[int, int] | None = None) -> None:
    """Drop a Deployment's calls from the Runtime: all of them, cancelled (it was deleted),
    or, given `before` (revision, attempt), the finished ones of earlier attempts, whose
    answers no round will ask for again."""
    if not uid:
        return
    prefix = f"{uid}/"
    for key in [k for k in rt.webhook_calls if k.startswith(prefix)]:
        task = rt.webhook_calls[key]
        if before is not None:
            revision, _, attempt = key[len(prefix) :].partition("/")[0].partition(".")
            if not task.done() or (int(revision), int(attempt)) >= before:
                continue
        del rt.webhook_calls[key]
        task.cancel()


async def secrets_of(
    rt: Runtime, namespace: str, hook: Webhook, index: int
) -> tuple[dict[str, str], bytes | None]:
    """(headers, signing key) from the hook's Secrets, each value registered with the
    Redactor before anything can print it."""
    cache: dict[str, dict[str, str]] = {}

    async def read(name: str, where: str) -> dict[str, str]:
        if name not in cache:
            try:
                data = await rt.kube.read_secret(namespace, name)
            except ApiException as err:
                if err.status != 403:
                    raise
                raise SecretProblem(
                    f"{where}: the operator may not read Secret {name!r} (the Helm chart "
                    "grants it with rbac.readSecrets=true)"
                ) from err
            if data is None:
                raise SecretProblem(f"{where}: Secret {name!r} not found")
            for value in data.values():
                rt.redactor.add(value)
            cache[name] = data
        return cache[name]

    headers: dict[str, str] = {}
    if hook.headers_secret_ref is not None:
        where = f"spec.webhooks[{index}].headersSecretRef"
        headers = dict(await read(hook.headers_secret_ref.name, where))
    key: bytes | None = None
    if hook.signing_secret_ref is not None:
        ref = hook.signing_secret_ref
        where = f"spec.webhooks[{index}].signingSecretRef"
        data = await read(ref.name, where)
        if ref.key not in data:
            raise SecretProblem(f"{where}: Secret {ref.name!r} has no key {ref.key!r}")
        key = data[ref.key].encode()
    return headers, key


async def call(
    rt: Runtime,
    namespace: str,
    hook: Webhook,
    index: int,
    payload: Mapping[str, Any],
    delivery: str,
) -> WebhookAnswer:
    """One call; never raises (whatever goes wrong is the answer)."""
    try:
        headers, key = await secrets_of(rt, namespace, hook, index)
        answer = await post_json(
            rt.http,
            hook.url,
            payload,
            timeout_seconds=hook.timeout_seconds,
            headers=headers,
            signing_key=key,
            delivery_id=delivery,
            event=hook.type,
        )
    except SecretProblem as err:
        return WebhookAnswer(None, str(err))
    except Exception as err:  # a header the HTTP library refuses, an API error: an answer too
        log.warning("webhook %s of %s failed: %s", hook.name, namespace, err)
        return WebhookAnswer(None, type(err).__name__)
    error = answer.error.replace(hook.url, hook.shown_url) if answer.error else None
    return WebhookAnswer(answer.status, error)


class Calls:
    """The webhook calls of one Deployment in one round, against the Runtime's tasks."""

    def __init__(
        self,
        rt: Runtime,
        namespace: str,
        name: str,
        uid: str,
        spec: DeploymentSpec,
        wake: Callable[[], None] | None,
    ) -> None:
        self.rt = rt
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.spec = spec
        self.wake = wake

    def _hook(self, name: str) -> tuple[int, Webhook] | None:
        for i, hook in enumerate(self.spec.webhooks):
            if hook.name == name:
                return i, hook
        return None

    def answers(self, status: DeploymentStatus) -> dict[str, WebhookAnswer]:
        """The answers that came for the calls status records as waiting. A gate call with
        no task (lost to an operator restart) is made again; an informational one is
        answered as lost."""
        out: dict[str, WebhookAnswer] = {}
        for recorded in status.webhooks:
            if not recorded.pending:
                continue
            key = delivery_id(self.uid, status, recorded.call_id)
            task = self.rt.webhook_calls.get(key)
            if task is None:
                found = self._hook(recorded.name)
                if found is None:
                    out[recorded.call_id] = WebhookAnswer(None, "removed from spec.webhooks")
                elif recorded.type in GATE_TYPES:
                    self.start(status, recorded.name, recorded.call_id)
                else:
                    out[recorded.call_id] = WebhookAnswer(None, LOST)
            elif task.done():
                del self.rt.webhook_calls[key]
                out[recorded.call_id] = (
                    task.result() if not task.cancelled() else WebhookAnswer(None, "cancelled")
                )
        forget_calls(self.rt, self.uid, before=(status.revision, status.attempt))
        return out

    def start(self, status: DeploymentStatus, name: str, call_id: str) -> None:
        """Make the call in a task (once per call id)."""
        key = delivery_id(self.uid, status, call_id)
        found = self._hook(name)
        if found is None or key in self.rt.webhook_calls:
            return
        index, hook = found
        payload = self.rt.redactor.tree(
            body(
                hook, namespace=self.namespace, deployment=self.name, spec=self.spec, status=status
            )
        )
        task = asyncio.create_task(call(self.rt, self.namespace, hook, index, payload, key))
        self.rt.webhook_calls[key] = task
        if self.wake is not None:
            wake = self.wake
            task.add_done_callback(lambda _: wake())

    def run(self, actions: list[CallWebhook], status: DeploymentStatus) -> None:
        for action in actions:
            self.start(status, action.name, action.call_id)
