"""regionspot: open-world region recognition (frozen SAM + frozen CLIP + a trained fusion head).

    import regionspot
    model = regionspot.load()              # zero-shot; load("head-folder-or-hub-id"), load("their.pth")
    predictor = model.predictor()
    predictor.set_image("photo.jpg")
    result = predictor.predict(boxes=[[10, 20, 200, 240]], vocabulary=["cat", "dog"])
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "RegionPredictor",
    "RegionResult",
    "RegionSpot",
    "RegionSpotConfig",
    "ZeroShotCLIP",
    "__version__",
    "load",
]


def __getattr__(name: str) -> Any:
    """Import heavy modules (torch, transformers) only when their names are used."""
    if name == "load":
        from regionspot.model.loader import load

        return load
    if name == "ZeroShotCLIP":
        from regionspot.model.zero_shot import ZeroShotCLIP

        return ZeroShotCLIP
    if name == "RegionSpot":
        from regionspot.model.regionspot import RegionSpot

        return RegionSpot
    if name == "RegionPredictor":
        from regionspot.predictor import RegionPredictor

        return RegionPredictor
    if name == "RegionResult":
        from regionspot.results import RegionResult

        return RegionResult
    if name == "RegionSpotConfig":
        from regionspot.config import RegionSpotConfig

        return RegionSpotConfig
    raise AttributeError(f"module 'regionspot' has no attribute {name!r}")
