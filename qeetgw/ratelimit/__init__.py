"""
Rate limiting: the RateLimitGuard wrapper, the window arithmetic, and the
stores that count (in memory for one process, in Redis for every replica).
"""
