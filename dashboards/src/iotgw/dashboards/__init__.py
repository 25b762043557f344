"""iotgw Grafana dashboards, datasource and alert rules as code."""
