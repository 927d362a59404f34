"""Network clients of the voice client: the signaling server connection."""

from voice.net.client import Delivery, SignalingClient

__all__ = ["Delivery", "SignalingClient"]
