"""Frozen backbones behind thin Protocols (see :mod:`regionspot.backbones.protocols`)."""
