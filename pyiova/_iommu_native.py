"""The page table and IOTLB bindings' former home, kept so that checkpoints
pickled before they moved (which name pyiova._iommu_native.IoPgtable and
.Iotlb) still load. New code imports pyiova.pgtable and pyiova.iotlb."""
from .iotlb import Iotlb  # noqa: F401
from .pgtable import IoPgtable  # noqa: F401
