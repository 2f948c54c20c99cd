"""One protocol each (DNS, TCP, TLS, HTTP, UDP, stream): the only code that touches
aiohttp/aiodns/ssl internals.
"""
