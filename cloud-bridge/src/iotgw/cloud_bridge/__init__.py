"""iotgw cloud bridge: ingest, presence, config delivery and the HTTP api."""
