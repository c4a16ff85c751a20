"""The edge daemon: inspect frames on the line and publish results and alerts over MQTT."""
