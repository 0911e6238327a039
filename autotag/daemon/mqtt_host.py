"""mqtt.host → the outbox's publisher in a thread of the daemon, started, reloaded, stopped.

This daemon is the instance Home Assistant sees (its status online, its last will offline);
the events themselves are written by the tagging step into the store's outbox, and the
publisher (autotag/mqtt.py) delivers them.
"""

from __future__ import annotations

from collections.abc import Callable

from autotag.config import Config


class MqttHost:
    """The daemon's MQTT publisher (mqtt.Publisher), when mqtt.host is set. status(): what
    the sensors show besides the store's counts."""

    def __init__(self, status: Callable[[], dict]) -> None:
        self.status = status
        self._publisher = None

    def start(self, config: Config) -> None:
        if not config.mqtt.enabled:
            return
        from autotag.mqtt import Publisher

        self._publisher = Publisher(config.mqtt, config.state.store_path, config.labels,
                                    self.status, persistent=True)
        self._publisher.start()

    def stop(self) -> None:
        from autotag.mqtt import STOP_DRAIN_SECONDS

        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop(STOP_DRAIN_SECONDS)

    def reload(self, old: Config, new: Config) -> None:
        """New MQTT settings start a new publisher; a new vocabulary is announced (a tag gone
        from it loses its Home Assistant entity)."""
        if old.mqtt != new.mqtt or old.state != new.state:
            self.stop()
            self.start(new)
        elif self._publisher is not None and old.labels != new.labels:
            self._publisher.set_labels(new.labels)

    def wake(self) -> None:
        """A clip's event is in the outbox."""
        if self._publisher is not None:
            self._publisher.wake()
