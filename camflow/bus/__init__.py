"""The bus: topics of events, consumer groups, commit after processing."""

from camflow.bus.base import Bus, Consumer, Message
from camflow.bus.local import LocalBus

__all__ = ["Bus", "Consumer", "LocalBus", "Message"]
