"""On-disk caches of frozen-backbone outputs: SAM region tokens (``regionspot extract-tokens``)
and, for augmentation-free runs, CLIP image memories. See :mod:`regionspot.cache.shards` for the
sharded, resumable, integrity-checked store both use.

Submodules are imported on demand (``from regionspot.cache.token_cache import TokenCache``);
only the error type is re-exported here, so importing it stays cheap.
"""

from regionspot.cache.shards import CacheError

__all__ = ["CacheError"]
