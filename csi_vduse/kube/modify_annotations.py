"""The two PersistentVolume annotations a routed ControllerModifyVolume travels by.

The central controller, which sees no pool, writes what it wants on the volume's PV; the
node whose pool holds the volume applies it and answers on the same PV:

- ``csi-vduse.io/modify-request``: ``{"generation":N,"parameters":{...}}``, the mutable
  parameters the call gave (ours only, checked), as canonical JSON (sorted keys, no
  spaces), so the same request always reads the same;
- ``csi-vduse.io/modify-result``: ``{"code":"OK","generation":N,"message":"...",
  "node":"..."}``, the outcome of request N as a gRPC status code name.

A request is answered when a result carries its generation. A new request takes a
generation above both annotations', so no result left from an earlier request can answer
it. The API server's own resourceVersion guards the central's write; nothing else here is
secret or trusted beyond "the node said so".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "csi-vduse.io/"
REQUEST = PREFIX + "modify-request"
RESULT = PREFIX + "modify-result"
OK = "OK"


def canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _decoded(annotations: Mapping[str, str], key: str) -> dict[str, Any] | None:
    """The annotation's JSON object, or None when it is absent or not one."""
    try:
        value = json.loads(annotations[key])
    except (KeyError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _generation(value: dict[str, Any]) -> int | None:
    """A request's generation: a whole number above 0 (JSON true is no number here)."""
    generation = value.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        return None
    return generation


@dataclass(frozen=True)
class ModifyRequest:
    generation: int
    parameters: Mapping[str, str]

    def encode(self) -> str:
        return canonical({"generation": self.generation, "parameters": dict(self.parameters)})


@dataclass(frozen=True, kw_only=True)
class ModifyResult:
    generation: int
    code: str  # a grpc.StatusCode name
    message: str
    node: str

    @property
    def ok(self) -> bool:
        return self.code == OK

    def encode(self) -> str:
        return canonical(
            {
                "code": self.code,
                "generation": self.generation,
                "message": self.message,
                "node": self.node,
            }
        )


def request_of(annotations: Mapping[str, str]) -> ModifyRequest | None:
    """The request on a PV; None when there is none or it is not one (a hand edit)."""
    value = _decoded(annotations, REQUEST)
    if value is None:
        return None
    generation, parameters = _generation(value), value.get("parameters")
    if generation is None or not isinstance(parameters, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in parameters.items()):
        return None
    return ModifyRequest(generation, parameters)


def result_of(annotations: Mapping[str, str]) -> ModifyResult | None:
    """The last result on a PV; None when there is none or it is not one."""
    value = _decoded(annotations, RESULT)
    if value is None:
        return None
    generation = _generation(value)
    fields = [value.get(name) for name in ("code", "message", "node")]
    if generation is None or not all(isinstance(f, str) for f in fields):
        return None
    code, message, node = (str(f) for f in fields)
    return ModifyResult(generation=generation, code=code, message=message, node=node)


def answer_to(annotations: Mapping[str, str], request: ModifyRequest) -> ModifyResult | None:
    """The result that answers ``request``, or None while it is pending."""
    result = result_of(annotations)
    return result if result is not None and result.generation == request.generation else None


def next_generation(annotations: Mapping[str, str]) -> int:
    """A generation no request or result on the PV has used yet."""
    used = [0]
    for key in (REQUEST, RESULT):
        value = _decoded(annotations, key)
        generation = _generation(value) if value is not None else None
        if generation is not None:
            used.append(generation)
    return max(used) + 1
