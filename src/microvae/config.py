"""Validation of the workflow configuration against its JSON schema, with errors that name
the offending key (``sources[0].synthetic.shape[0]``), and loading of YAML configs."""

from __future__ import annotations

import os
from typing import Any

import yaml

from .errors import MicrovaeError


def key_path(parts) -> str:
    """``['sources', 0, 'name']`` -> ``sources[0].name``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def config_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every schema violation of ``config`` as 'config key K: message', sorted by key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for error in validator.iter_errors(config):
        message = error.message
        if error.validator == "additionalProperties":
            message = f"unknown key(s): {message.split('(')[-1].rstrip(')')}"
        errors.append(f"config key {key_path(error.absolute_path)}: {message}")
    return sorted(set(errors))


def load_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file with the safe loader (no Python objects are built)."""
    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise MicrovaeError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise MicrovaeError(f"{path}: not valid YAML ({exc})") from exc


def prepend_pythonpath(path: str | os.PathLike) -> None:
    """Put ``path`` first on PYTHONPATH of this process (and so of the jobs it starts),
    so that ``python -m microvae`` finds this checkout's library in any environment."""
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(path) not in entries:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(path), *entries])
