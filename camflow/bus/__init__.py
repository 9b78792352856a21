"""The bus: topics of events, consumer groups, commit after processing."""

from camflow.bus.base import Bus, Consumer, Following, LagReporting, Message, consumer_lag
from camflow.bus.commits import CommitTracker, commit_or_log
from camflow.bus.local import LocalBus

__all__ = [
    "Bus",
    "CommitTracker",
    "Consumer",
    "Following",
    "LagReporting",
    "LocalBus",
    "Message",
    "commit_or_log",
    "consumer_lag",
]
