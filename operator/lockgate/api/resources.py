"""Whole resources (apiVersion, kind, metadata, spec, status) and readable validation errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lockgate.names import API_VERSION

from .application import ApplicationSpec, ApplicationStatus
from .deployment import DeploymentSpec, DeploymentStatus


class ObjectMeta(BaseModel):
    """The parts of metadata lockgate reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    namespace: str | None = None
    generation: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class _Resource(BaseModel):
    """What every lockgate object has besides its spec and status."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["lockgate.dev/v1alpha1"] = Field(
        "lockgate.dev/v1alpha1", alias="apiVersion"
    )
    metadata: ObjectMeta


class Application(_Resource):
    kind: Literal["Application"] = "Application"
    spec: ApplicationSpec
    status: ApplicationStatus | None = None


class Deployment(_Resource):
    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec
    status: DeploymentStatus | None = None


class InvalidManifest(ValueError):
    """A manifest that does not match the API; the message names every offending field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def field_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'steps', 1, 'setWeight') -> 'spec.steps[1].setWeight'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"int", "CanaryStep", "str"} or "[" in str(part):
            continue  # union branch names pydantic inserts; not part of the user's path
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_errors(err: ValidationError) -> list[str]:
    problems: list[str] = []
    for e in err.errors():
        loc = tuple(e["loc"])
        # A union of int and object reports a failure for each branch; keep the branch that
        # matches what the user wrote.
        if ("int" in loc and isinstance(e["input"], dict)) or (
            "CanaryStep" in loc and isinstance(e["input"], int)
        ):
            continue
        path = field_path(loc)
        msg = str(e["msg"]).removeprefix("Value error, ")
        if msg.startswith(("spec.", "spec:")):
            problems.append(msg)  # our own messages already name the field
        elif e["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown field")
        else:
            problems.append(f"{path}: {msg}" if path else msg)
    # A union reports one error per branch; say each thing once.
    return list(dict.fromkeys(problems))


def parse_resource(doc: dict[str, Any], source: str = "manifest") -> Application | Deployment:
    kind = doc.get("kind")
    model: type[Application] | type[Deployment]
    if kind == "Application":
        model = Application
    elif kind == "Deployment":
        model = Deployment
    else:
        raise InvalidManifest(source, [f"kind: expected Application or Deployment, got {kind!r}"])
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidManifest(source, [f"apiVersion: expected {API_VERSION}"])
    try:
        # by_name=False: only the wire (camelCase) names, as the API server knows them; the
        # Python names stay usable in code (populate_by_name).
        return model.model_validate(doc, by_name=False)
    except ValidationError as err:
        raise InvalidManifest(source, describe_errors(err)) from None
