"""A secret value lockgate read never shows in status, Events or the operator's log: in any
form a library may print it (plain, line by line, escaped, base64, URL-encoded), through
every path that writes text about an object."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote, quote_plus

import kopf
import kopf._core.engines.posting as kopf_posting
import pytest

from lockgate.controller import applications, deployments, handlers
from lockgate.controller.fleets import Census
from lockgate.controller.redact import (
    MASK,
    MIN_LENGTH,
    RedactingFilter,
    Redactor,
    install_log_redaction,
)
from lockgate.controller.runtime import Runtime
from tests.support.fakeworld import FakeWorld, dep_spec
from tests.unit.controller_fakes import FakeFleet, FakeKube, Operator, runtime_over

PASSWORD = "s3cr3t-Pa55word!"  # a planted value: the point of these tests
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBq8L5nYyHUZkzxPjZ8YVhtT0H3Xk7X8L2j2y9o1mN4HQAAAJgM7zO5DO8z\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
SECRET_LINES = PEM.splitlines()[1:3]  # the lines that are the key itself


def redactor(*values: str) -> Redactor:
    r = Redactor()
    for value in values:
        r.add(value)
    return r


def test_a_plain_value_is_masked_wherever_it_appears() -> None:
    r = redactor(PASSWORD)
    assert (
        r.text(f"login failed with {PASSWORD}, retrying") == f"login failed with {MASK}, retrying"
    )
    assert r.tree({"log": [{"message": f"pw={PASSWORD}"}], "n": 3}) == {
        "log": [{"message": f"pw={MASK}"}],
        "n": 3,
    }


def test_each_line_of_a_multi_line_value_is_masked_on_its_own() -> None:
    """An SSH or TLS library quotes the line it choked on, not the whole key."""
    r = redactor(PEM)
    for line in SECRET_LINES:
        assert line not in r.text(f"invalid key data: {line!r}")
    assert r.text(PEM).count(MASK) == 1  # the whole value at once, not line by line
    escaped = json.dumps({"key": PEM})  # line breaks as \\n, as in a repr or JSON body
    assert not any(line in r.text(escaped) for line in SECRET_LINES)


@pytest.mark.parametrize("prefix", ["", "u", "us", "user:"])
def test_the_base64_of_a_value_is_masked_at_any_alignment(prefix: str) -> None:
    """E.g. a registry auth `base64(user:password)`: the value does not start the encoded
    bytes, so its encoding depends on what comes before it."""
    r = redactor(PASSWORD)
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(f"{prefix}{PASSWORD}".encode()).decode()
        masked = r.text(f"auth: {encoded}")
        assert MASK in masked, (encoded, masked)
        # What is left is the prefix's part, an edge character of each side, the padding.
        left = masked.removeprefix("auth: ").replace(MASK, "")
        assert len(left) <= len(encode(prefix.encode())) + 4, masked


def test_the_url_encoded_value_is_masked() -> None:
    r = redactor(PASSWORD)
    assert quote(PASSWORD, safe="") != PASSWORD  # the value has characters that get encoded
    for encoded in (quote(PASSWORD, safe=""), quote_plus(PASSWORD)):
        assert r.text(f"GET /hook?token={encoded}") == f"GET /hook?token={MASK}"


def test_short_values_are_not_masked() -> None:
    """A value shorter than MIN_LENGTH would mask every word containing it ("on" in
    "connection"); masking it cannot protect it and would destroy the message."""
    assert MIN_LENGTH == 4
    r = redactor("on", "abc", "")
    message = "connection to abc-host: done"
    assert r.text(message) == message
    assert redactor("abcd").text(message) == message  # not contained: nothing changes
    assert redactor("conn").text(message) == f"{MASK}ection to abc-host: done"


# ---------------------------------------------------------------- the operator's own log


@pytest.fixture
def log_output() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    """A real logger under lockgate.*, its lines as a root handler formats them, with the
    redaction filter installed as the startup handler installs it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    r = redactor(PASSWORD, PEM)
    install_log_redaction(r)
    logger = logging.getLogger("lockgate.test_redact")
    logger.setLevel(logging.INFO)
    try:
        yield logger, out, r
    finally:
        root.removeHandler(handler)
        for h in [*root.handlers, *logging.getLogger("kopf.objects").handlers]:
            for f in [f for f in h.filters if isinstance(f, RedactingFilter)]:
                h.removeFilter(f)


def test_a_log_line_with_a_secret_argument_is_masked(
    log_output: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, out, _ = log_output
    logger.info("connecting with %s to %s", PASSWORD, "h1")
    assert out.getvalue() == f"connecting with {MASK} to h1\n"


def test_a_logged_exception_with_a_secret_is_masked(
    log_output: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, out, _ = log_output
    try:
        raise ValueError(f"bad key line {SECRET_LINES[0]} for {PASSWORD}")
    except ValueError:
        logger.exception("reconcile of %s failed", "default/shop")
    text = out.getvalue()
    assert "ValueError: bad key line" in text  # the traceback is there ...
    assert PASSWORD not in text and SECRET_LINES[0] not in text  # ... masked


def test_kopfs_lines_and_the_events_it_posts_from_them_are_masked(
    log_output: tuple[logging.Logger, io.StringIO, Redactor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf can post its per-object log lines (a handler's failure on an Application, say)
    as Events, through a handler of `kopf.objects`."""
    _, out, _ = log_output
    posted: list[str] = []
    monkeypatch.setattr(kopf_posting, "enqueue", lambda **event: posted.append(event["message"]))
    settings = kopf.OperatorSettings()
    settings.posting.loggers = True  # kopf's default is off; were it turned on, still masked
    about_the_application = {"k8s_ref": {"kind": "Application"}, "settings": settings}
    logging.getLogger("kopf.objects").error(
        "Handler failed: %s", PASSWORD, extra=about_the_application
    )
    assert posted == [f"Handler failed: {MASK}"]
    assert out.getvalue() == f"Handler failed: {MASK}\n"


def test_the_startup_handler_installs_the_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    rt = runtime_over(FakeKube())
    monkeypatch.setattr(Runtime, "from_env", classmethod(lambda cls: rt))
    monkeypatch.setattr(handlers.metrics, "serve", lambda port: None)
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(handler)
    try:
        asyncio.run(handlers.configure(settings=kopf.OperatorSettings(), memo=kopf.Memo()))
        (installed,) = [f for f in handler.filters if isinstance(f, RedactingFilter)]
        assert installed.redactor is rt.redactor  # the one that learns each Secret read
    finally:
        logging.getLogger().removeHandler(handler)
        handler.filters.clear()


# ---------------------------------------------------------------- status and Events


class ProblemFleet(FakeFleet):
    """A fleet whose hosts cannot be counted, for a reason that quotes a secret."""

    async def census(self, rolling_out: bool) -> Census:
        census = await super().census(rolling_out)
        return replace(census, ready=0, problem=f"host h1: key {SECRET_LINES[1]!r} refused")


def test_the_application_status_message_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = FakeKube()
    body = kube.add_application("shop", {"kubernetes": {"replicas": 1}})
    fleet = ProblemFleet(kube, FakeWorld(units=("replica-1",)))
    monkeypatch.setattr(applications, "fleet_for", fleet.made_for)
    rt = runtime_over(kube)
    rt.redactor.add(PEM)
    patch = kopf.Patch()
    asyncio.run(applications.reconcile_application(rt, body, patch))
    assert patch.status["message"] == f"0/1 instances ready (host h1: key '{MASK}' refused)"
    assert SECRET_LINES[1] not in json.dumps(dict(patch.status))  # conditions too


@pytest.mark.parametrize("failure", [RuntimeError, kopf.TemporaryError, kopf.PermanentError])
def test_a_failed_application_handler_says_why_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    """kopf logs the error (and posts it as an Event on the Application) and keeps it in the
    Application's progress annotation."""

    async def failing(*args: object, **kwargs: object) -> None:
        raise failure(f"ssh: permission denied for key {PASSWORD}")

    monkeypatch.setattr(handlers, "reconcile_application", failing)
    kube = FakeKube()
    body = kopf.Body(kube.add_application("shop", {"kubernetes": {"replicas": 1}}))
    rt = runtime_over(kube)
    rt.redactor.add(PASSWORD)
    memo = kopf.Memo(runtime=rt)
    for handler in (handlers.application_changed, handlers.application_tick):
        with pytest.raises((kopf.TemporaryError, kopf.PermanentError)) as err:
            asyncio.run(
                handler(body=body, patch=kopf.Patch(), memo=memo, **kube.handler_kwargs(body))
            )
        assert PASSWORD not in str(err.value)
        assert f"permission denied for key {MASK}" in str(err.value)
    # The kind of failure (retry or not) is kopf's to act on: it stays what it was.
    with pytest.raises(
        kopf.PermanentError if failure is kopf.PermanentError else kopf.TemporaryError
    ):
        asyncio.run(
            handlers.application_changed(
                body=body, patch=kopf.Patch(), memo=memo, **kube.handler_kwargs(body)
            )
        )


def test_a_refused_deployments_status_and_events_are_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeKube()
    kube.add_application("shop", {"kubernetes": {"replicas": 1}}, stable={"image": "app:1"})
    world = FakeWorld(units=("replica-1",))
    world.refusal = f"host h1 refused the key: {SECRET_LINES[0]}"
    fleet = FakeFleet(kube, world)
    monkeypatch.setattr(deployments, "fleet_for", fleet.made_for)
    monkeypatch.setattr(deployments, "now", lambda: world.now)
    rt = runtime_over(kube)
    rt.redactor.add(PEM)
    op = Operator(rt, kube, world)
    kube.add_deployment("dep", dep_spec())
    op.run("dep")
    status = kube.deployment("dep")["status"]
    assert MASK in status["message"]
    assert op.events and any(MASK in message for _, _, message in op.events)
    written = json.dumps([status, op.events])
    assert SECRET_LINES[0] not in written
