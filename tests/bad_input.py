"""What the bad-input catalogues share: how a message must name the bad
value, and an integer that is one only through __index__.

The catalogues, one per layer: test_bad_input_iova.py (IovaDomain,
PfnAllocator, DmaCookie), test_bad_input_dma.py (the DMA API, IOMMU domains,
drivers, devices), test_bad_input_runs.py (workload parameters, the run's
arguments, the command line).
"""

NOT_NAMED = object()        # the value has no useful text (an anonymous object)


def named(value, message):
    """Whether the message names the value: its str, its repr, or for an
    integer its hex form (pfns and addresses are written in hex)."""
    if value is NOT_NAMED:
        return True
    texts = {str(value), repr(value)}
    if isinstance(value, int) and not isinstance(value, bool):
        texts.add(hex(value))
    return any(t in message for t in texts)


class Index:
    """An integer through __index__ alone (no __int__, which cffi would read
    instead), of any value."""

    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v
