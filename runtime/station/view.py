"""What the station's page and its OPC UA server read of the station, and nothing more: a read-only view, so
neither reaches into workers, inspectors or bundles, and neither imports the service that implements it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from runtime.signing import TrustList
    from runtime.station.config import CameraConfig, StationConfig
    from runtime.station.evidence import EvidenceStore
    from runtime.station.inspection import LoadedBundle
    from runtime.station.messages import BundleInfo


@dataclass(frozen=True)
class CameraView:
    """One camera as the page and the OPC UA server see it."""

    name: str
    mode: str  # continuous, trigger or folder
    bundle: BundleInfo
    signer: str | None  # the key id of the bundle's signature
    signed: bool

    @classmethod
    def of(cls, camera: CameraConfig, loaded: LoadedBundle) -> CameraView:
        signature = loaded.signature
        return cls(camera.name, camera.mode, loaded.info, signature.key_id if signature else None,
                   signature is not None)


class StationView(Protocol):
    @property
    def config(self) -> StationConfig: ...

    @property
    def evidence(self) -> EvidenceStore | None: ...

    @property
    def trust(self) -> TrustList | None: ...

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus metrics /metrics serves."""

    def camera_views(self) -> dict[str, CameraView]: ...

    def status(self) -> dict:
        """The retained status message."""

    def heartbeat(self) -> dict:
        """The heartbeat message, as it would be published now."""

    def problems(self) -> list[str]:
        """Everything that keeps the station from doing its job right now; empty when healthy."""

    def health(self) -> tuple[bool, dict]: ...

    def page_url(self) -> str | None:
        """Where the station's page answers (None: no page)."""
