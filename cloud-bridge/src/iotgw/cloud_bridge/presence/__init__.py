"""`iotgw-presence`: device status and reported state into the registry, desired config out.

- `messages`: parse status/state/config messages (the domain, no I/O);
- `apply`: apply parsed status and state through the registry repository;
- `consumer`: q.status and q.state over AMQP, acked after the registry commit;
- `delivery`: q.config to retained MQTT `devices/<client>/<device>/config`, acked after PUBACK;
- `mqtt`: the service identity's MQTT connection; `metrics`, `settings`, `main`.
"""
