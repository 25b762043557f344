"""iotgw local stack: the project's own RabbitMQ and InfluxDB, for the demo and the tests."""
