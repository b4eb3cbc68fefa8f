"""Wires the services to their adapters once, for the CLI and the REST API alike: the wiring root.
Services never import it; they are handed what they need."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from corral.adapters.hoststore import HostStore
from corral.adapters.libvirt_host import LibvirtHost
from corral.config import Settings, load_settings
from corral.services.guests import GuestService
from corral.services.host import HostService
from corral.services.images import ImageService
from corral.services.registry import HostRegistry

if TYPE_CHECKING:
    from corral.services.balancer import BalancerService
    from corral.services.demo import DemoService
    from corral.services.devices import DeviceService
    from corral.services.edit import EditService
    from corral.services.migration import MigrationService
    from corral.services.monitoring import MonitoringService
    from corral.services.plans import PlanService
    from corral.services.prometheus import PrometheusService


@dataclass
class Corral:
    settings: Settings
    hosts: HostRegistry
    images: ImageService
    host: HostService
    guests: GuestService

    @property
    def libvirt(self) -> LibvirtHost:
        """The default (local) host's libvirt connection: the one host of a one-host installation."""
        return self.hosts.default.libvirt

    @functools.cached_property
    def monitoring(self) -> MonitoringService:
        # Loaded on first use: the store and sampler are not needed by `corral list`.
        from corral.services.monitoring import MonitoringService

        return MonitoringService(self.settings, self.hosts)

    @functools.cached_property
    def devices(self) -> DeviceService:
        from corral.services.devices import DeviceService

        return DeviceService(self.settings, self.hosts, self.guests.storage, self.host)

    @functools.cached_property
    def plans(self) -> PlanService:
        from corral.services.plans import PlanService

        return PlanService(self.settings)

    @functools.cached_property
    def migration(self) -> MigrationService:
        from corral.services.migration import MigrationService

        return MigrationService(self.settings, self.hosts, self.guests)

    @functools.cached_property
    def edit(self) -> EditService:
        from corral.services.edit import EditService

        return EditService(self.hosts, self.guests)

    @functools.cached_property
    def balancer(self) -> BalancerService:
        from corral.services.balancer import BalancerService

        return BalancerService(self.settings, self.hosts, self.guests, self.host, self.migration, self.monitoring)

    @functools.cached_property
    def prometheus(self) -> PrometheusService:
        from corral.services.prometheus import PrometheusService

        return PrometheusService(self.settings, self.hosts, self.host, self.guests, self.monitoring, self.balancer)

    @functools.cached_property
    def demo(self) -> DemoService:
        from corral.services.demo import DemoService

        return DemoService(self.settings, self.hosts, self.guests, self.images, self.plans, self.monitoring)

    def balancer_for(self, **changes: Any) -> BalancerService:
        """A balancer with some of its settings changed (the demo's shortened rounds)."""
        from corral.services.balancer import BalancerService

        settings = replace(self.settings, balancer=replace(self.settings.balancer, **changes))
        return BalancerService(settings, self.hosts, self.guests, self.host, self.migration, self.monitoring)

    def close(self) -> None:
        self.hosts.close()


def open_corral(settings: Settings | None = None, hosts: HostRegistry | None = None) -> Corral:
    settings = settings or load_settings()
    registry = hosts or HostRegistry(settings.hosts, HostStore(settings.data_dir / "hosts.sqlite"))
    images = ImageService(settings)
    host = HostService(settings, registry)
    return Corral(settings, registry, images, host, GuestService(settings, registry, images, host))
