"""The base of every config section: unknown keys, non-finite numbers and YAML booleans where
a number or a name is expected (``device: no`` is read as false, not as the word) are refused."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            kind = cls.model_fields[info.field_name].annotation
            if kind is not bool and bool not in get_args(kind):
                raise ValueError("YAML read this as a boolean (yes/no/on/off/true/false are "
                                 "booleans): quote it, or give a number or a name")
        return value
