"""The provisioner's settings (`IOTGW_*` environment variables), loaded once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from iotgw.contracts.names import DnsLabel
from iotgw.contracts.settings import CommonSettings

Target = Literal["manifests", "kubernetes"]


class ProvisionerSettings(CommonSettings):
    """Where purchases come from and where their stacks go."""

    provisioner_target: Target = Field(
        default="manifests",
        description="manifests: write YAML into IOTGW_MANIFESTS_DIR (GitOps); kubernetes: apply",
    )
    manifests_dir: Path = Field(
        default=Path(".state/manifests"), description="one folder per client for `manifests`"
    )
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file; unset: in-cluster config, then ~/.kube/config"
    )
    kube_context: str | None = None
    kube_timeout_s: float = Field(default=10.0, gt=0, description="per Kubernetes API call")
    field_manager: str = Field(default="iotgw-provisioner", min_length=1, max_length=128)
    platform_namespace: DnsLabel = Field(
        default="iotgw", description="namespace of the platform, allowed into client namespaces"
    )
    catalog_file: Path | None = Field(
        default=None, description="product catalog YAML; unset: the catalog shipped with the code"
    )
    rabbitmq_management_user: str = "guest"
    rabbitmq_management_password: str = "guest"  # noqa: S105 - the local stack's loopback admin
    management_timeout_s: float = Field(default=10.0, gt=0)
    influx_database: str = Field(default="iotgw", pattern=r"^[A-Za-z0-9_]{1,64}$")
    influx_retention_policy: str = Field(default="iotgw", pattern=r"^[A-Za-z0-9_]{1,64}$")
    influx_retention: str = Field(
        default="30d", pattern=r"^(INF|\d+[hdw])$", description="InfluxQL duration, e.g. 30d"
    )
    influx_timeout_s: float = Field(default=10.0, gt=0)
    provisioner_workers: int = Field(
        default=4, ge=1, le=64, description="parallel consumers, one AMQP connection each"
    )
    prefetch: int = Field(default=1, ge=1, le=1000, description="unacked purchases per worker")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus; 0 = off")
