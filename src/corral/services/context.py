"""Wires the services to their adapters once, for the CLI and the REST API alike."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.adapters.libvirt_host import LibvirtHost
from corral.config import Settings, load_settings
from corral.services.guests import GuestService
from corral.services.host import HostService
from corral.services.images import ImageService

if TYPE_CHECKING:
    from corral.services.monitoring import MonitoringService
    from corral.services.plans import PlanService


@dataclass
class Corral:
    settings: Settings
    libvirt: LibvirtHost
    images: ImageService
    host: HostService
    guests: GuestService

    @functools.cached_property
    def monitoring(self) -> MonitoringService:
        # Loaded on first use: the store and sampler are not needed by `corral list`.
        from corral.services.monitoring import MonitoringService

        return MonitoringService(self.settings, self.libvirt)

    @functools.cached_property
    def plans(self) -> PlanService:
        from corral.services.plans import PlanService

        return PlanService(self.settings)

    def close(self) -> None:
        self.libvirt.close()


def open_corral(settings: Settings | None = None) -> Corral:
    settings = settings or load_settings()
    libvirt_host = LibvirtHost(settings.libvirt_uri)
    images = ImageService(settings)
    host = HostService(settings, libvirt_host)
    return Corral(settings, libvirt_host, images, host, GuestService(settings, libvirt_host, images, host))
