"""The product catalog: which image, ports, resources and env each product runs with.

Loaded from YAML (the copy shipped beside this module, or IOTGW_CATALOG_FILE) into frozen
pydantic models, so a wrong catalog fails at start with the field named.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from iotgw.contracts.names import DnsLabel

Quantities = dict[Literal["cpu", "memory"], str]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Port(_Frozen):
    """A named container port, exposed by the product's Service."""

    name: DnsLabel
    port: int = Field(ge=1, le=65535)


class Resources(_Frozen):
    """Container requests and limits (Kubernetes quantities)."""

    requests: Quantities
    limits: Quantities


class Product(_Frozen):
    """One product a client can buy."""

    image: str = Field(min_length=1, max_length=255, pattern=r"^[a-z0-9][a-z0-9./:_@-]*$")
    replicas: int = Field(default=1, ge=0, le=20)
    ports: tuple[Port, ...] = Field(min_length=1)
    resources: Resources
    env: dict[str, str] = Field(default_factory=dict)


class Tier(_Frozen):
    """What a hardware tier gets: a quota and container defaults."""

    quota: dict[str, str]
    default_request: Quantities
    default_limit: Quantities


class Catalog(_Frozen):
    """Products by name (as purchases spell them) and tiers by hardware."""

    products: dict[str, Product] = Field(min_length=1)
    tiers: dict[Literal["Classic", "Dedicated"], Tier]

    @model_validator(mode="after")
    def _every_tier(self) -> Catalog:
        missing = {"Classic", "Dedicated"} - set(self.tiers)
        if missing:
            raise ValueError(f"tiers missing: {', '.join(sorted(missing))}")
        return self

    def product(self, name: str) -> Product:
        """The product called `name`; KeyError when it is not sold."""
        return self.products[name]


def load_catalog(path: Path | None = None) -> Catalog:
    """Read the catalog from `path`, or the one shipped with the provisioner."""
    if path is None:
        text = resources.files("iotgw.provisioner").joinpath("catalog.yaml").read_text()
    else:
        text = path.read_text()
    return Catalog.model_validate(yaml.safe_load(text))
