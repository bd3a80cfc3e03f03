"""core.caches.BytesLRU: bounded by bytes, least recently used out, too-big values not kept."""
from core.caches import BytesLRU


def test_least_recently_used_go_first_within_the_budget():
    cache = BytesLRU(10, len)
    cache.put("a", "xxxx")
    cache.put("b", "yyyy")
    assert cache.get("a") == "xxxx"                  # a is now the most recent
    cache.put("c", "zzzz")                           # 12 > 10: b goes
    assert cache.get("b") is None and cache.get("a") == "xxxx" and cache.nbytes == 8
    assert not cache.put("big", "x" * 11) and cache.get("big") is None
    cache.put("a", "x")                              # replacing counts the new size
    assert cache.nbytes == 5 and cache.hits == 2
    cache.clear()
    assert cache.nbytes == 0 and cache.get("c") is None
