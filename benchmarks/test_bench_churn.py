"""alloc+free churn: the C core through single calls, through batch calls, and
the pure-Python reference model, on one operation sequence.

Group "churn-<live>": 1k or 100k live ranges, sizes 1..64 pages,
size-aligned, 32-bit limit; each round of the body is 10 churn rounds of 100
frees then 100 allocs (1000 alloc+free pairs). Read the ratios off the table:
c-single / c-batch is what batching saves, py-reference / c-single what the
C core is worth.
"""
import pytest

import workloads
from workloads import Churn

ReferenceDomain = workloads.load_reference()

ROUNDS = 10                      # churn rounds per timed body: 1000 pairs
_digests = {}                    # live key -> fingerprint of the final live set


def _impl_params():
    ref = pytest.param("py-reference", marks=pytest.mark.skipif(
        ReferenceDomain is None, reason="tests/reference.py is not importable yet"))
    return ["c-single", "c-batch", ref]


@pytest.mark.parametrize("impl", _impl_params())
@pytest.mark.parametrize("live", ["1k", "100k"])
def test_churn(benchmark, live, impl, request):
    if impl == "py-reference" and live != "1k" and not request.config.getoption("--run-slow"):
        # Filling its sorted list to 100k ranges takes ~6 s (each insert
        # shifts the whole list) and each pair ~1 ms of walking: slow.
        pytest.skip("slow: the reference at 100k live needs --run-slow")
    churn = Churn(live, ROUNDS)
    benchmark.group = "churn-%s" % live
    benchmark.extra_info.update(pairs=churn.pairs, live=churn.live, granule=churn.granule)

    if impl == "c-batch":
        setup = lambda: (churn.fresh_batch()[:2], {})          # noqa: E731
        body = churn.run_batch
    elif impl == "c-single":
        setup = lambda: (churn.fresh()[:2], {})                # noqa: E731
        body = churn.run_single
    else:
        setup = lambda: (churn.fresh(ReferenceDomain)[:2], {})  # noqa: E731
        body = churn.run_single
    # The reference costs seconds per round at 100k: one round says enough.
    rounds = 1 if impl == "py-reference" and live != "1k" else 5
    final = benchmark.pedantic(body, setup=setup, rounds=rounds, iterations=1)

    # Every implementation replays the same sequence, so each must end with
    # the very same live set as the first one that ran.
    fp = workloads.digest(final)
    assert _digests.setdefault(live, fp) == fp, "%s handed out other pfns" % impl
