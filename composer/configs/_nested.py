"""Block configs nested inside another block's config (``lsthm_system.fusion``, ``map.block``).

A nested config is a plain mapping with a ``type`` and the block's own fields but no wiring
(``in``, ``share``, ``enabled``): the enclosing block feeds it. It is validated against the
registry when the enclosing config is, and stored with every default filled in.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from composer.registry import block_adapter, get_block
from composer.errors import ComposerError

__all__ = ["nested_block_config", "wire_nested"]

WIRING = ("in", "inputs", "share", "enabled")


def _inner_problem(err: dict, type_name: str, what: str) -> str:
    loc = [str(p) for p in err["loc"]]
    if loc and loc[0] == type_name:  # pydantic's union tag
        loc = loc[1:]
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    where = f"field '{'.'.join(loc)}' of the {type_name} {what}" if loc else f"the {type_name} {what}"
    got = "" if isinstance(err.get("input"), (dict, list)) else f" (got {err.get('input')!r})"
    return f"{where}: {message}{got}"


def nested_block_config(value: dict[str, Any], what: str, feeds: str) -> dict[str, Any]:
    """Validate a nested block config; raises ValueError (a readable pydantic error) when it is wrong.

    ``what`` names the nested role in messages (``fusion``, ``block``); ``feeds`` says what the
    enclosing block gives it (for the message refusing wiring keys)."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} is a block config: a mapping with `type:` and the block's fields")
    wiring = sorted(k for k in WIRING if k in value)
    if wiring:
        listed = ", ".join(f"`{k}`" for k in wiring)
        raise ValueError(f"{what}: leave out {listed}; {feeds}")
    if "type" not in value:
        raise ValueError(f"{what} needs `type:` naming a registered block (e.g. `{{type: mlp, out: 8}}`)")
    try:
        get_block(str(value["type"]))
    except ComposerError as exc:
        raise ValueError(f"{what}.type: {exc}") from None
    try:
        config = block_adapter().validate_python({**value, "in": "_"})
    except ValidationError as exc:
        raise ValueError("; ".join(_inner_problem(err, value["type"], what) for err in exc.errors())) from None
    return config.model_dump(mode="json", exclude={"inputs", "share", "enabled"})


def wire_nested(value: dict[str, Any], inputs: Any):
    """The nested config as a block config fed by ``inputs`` (a reference, list or port mapping)."""
    return block_adapter().validate_python({**value, "in": inputs})
