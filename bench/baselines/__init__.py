"""Raw baselines: what the client libraries alone do at msarch's durability, measured in the
same `python -m bench` run as msarch's figures they are compared with (bench.targets).

- batch.py: N messages end to end with raw aio-pika (publisher and consumer processes) or
  raw nats-py JetStream (one process): items/s against msarch's batch of the same size;
- chain.py: the roundtrip path (HTTP app -> broker -> worker with Redis -> broker ->
  websocket server -> client) without msarch: POST -> frame latency one at a time, and
  completed roundtrips/s under 32 keep-alive connections, against msarch's through the
  gateway.

Every object they create on the shared servers is under a "test-bench-" namespace of their
own and deleted afterwards (topology.py); every process they start is stopped on any exit
(processes.py).
"""
