"""The `manifests` target: the rendered objects as YAML files, one folder per client (GitOps).

`<dir>/<client>/NN-<kind>-<name>.yaml` plus a `kustomization.yaml` listing them, so Argo CD or
Flux can sync the folder. Files are written atomically (temporary file, then rename) and only
when their content changes, so a redelivered purchase leaves the folder untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from iotgw.contracts.names import check_dns_label
from iotgw.provisioner.errors import TransientError
from iotgw.provisioner.render import Manifest
from iotgw.provisioner.targets import object_ref


class ManifestsTarget:
    """Writes each client's objects under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def client_dir(self, client: str) -> Path:
        """The client's folder; the name is a DNS label, so it cannot leave `root`."""
        return self.root / check_dns_label(client, "client")

    def apply(self, client: str, objects: list[Manifest]) -> list[str]:
        """Write the objects and the kustomization; delete files of objects no longer rendered."""
        folder = self.client_dir(client)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            names = []
            for index, obj in enumerate(objects):
                kind = str(obj["kind"]).lower()
                name = f"{index:02d}-{kind}-{obj['metadata']['name']}.yaml"
                _write_if_changed(folder / name, yaml.safe_dump(obj, sort_keys=False))
                names.append(name)
            kustomization = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": names,
            }
            _write_if_changed(
                folder / "kustomization.yaml", yaml.safe_dump(kustomization, sort_keys=False)
            )
            for stale in folder.glob("*.yaml"):
                if stale.name not in names and stale.name != "kustomization.yaml":
                    stale.unlink()
        except OSError as exc:
            raise TransientError(f"writing manifests for {client}: {exc}") from exc
        return [object_ref(obj) for obj in objects]

    def remove(self, client: str) -> list[str]:
        """Delete the client's folder."""
        folder = self.client_dir(client)
        if not folder.exists():
            return []
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            raise TransientError(f"removing manifests of {client}: {exc}") from exc
        return [f"Namespace/{client}"]


def _write_if_changed(path: Path, text: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
