"""
The upstream side: where a request on /api/* goes, and how it gets there.

- L{qeetgw.upstream.routes}: the route table, C{/api/v1/<service>} to a
  service, and the path rewrite;
- L{qeetgw.upstream.proxy}: C{ReverseProxyResource}, which forwards a
  request to an instance of its service and streams the answer back;
- L{qeetgw.upstream.forwarding}: which header fields are forwarded each way;
- L{qeetgw.upstream.services}: a service's instances and the policies
  around them; L{qeetgw.upstream.balancing}: the pure logic of those
  policies (picking, ejection, the breaker, retries);
- L{qeetgw.upstream.discovery}: instances from DNS;
- L{qeetgw.upstream.health} and L{qeetgw.upstream.activehealth}: what
  the gateway knows about its upstreams' health, and the checks that learn it;
- L{qeetgw.upstream.pool} and L{qeetgw.upstream.tls}: the keep-alive
  connections to the upstreams, and how an https upstream is verified;
- L{qeetgw.upstream.client}: one connection's exchanges (the response
  parsed by httptools, the body streamed with backpressure), and
  L{qeetgw.upstream.requesthead}: the request head sent as bytes.
"""
