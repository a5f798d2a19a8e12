"""pyiova: a userspace model of the Linux IOMMU IOVA allocator."""

from .errors import *  # noqa: F401,F403
