"""The one reader of codesift's YAML files (training configs, mix specs): a mapping, or an error that names the file."""

from __future__ import annotations

from pathlib import Path


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The top-level mapping of the YAML file ``path`` (empty file: ``{}``); ``what`` names it in errors."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: expected a mapping of {what} keys, got {type(raw).__name__}")  # noqa: TRY004 (bad content)
    return raw
