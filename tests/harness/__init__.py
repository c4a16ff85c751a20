"""What the station tests, the fault suite, the device tests and bench/ share: a real mosquitto, the station as a
subprocess, an MQTT probe (``station``), the OPC UA client side (``opcua``), Aravis' fake GigE camera
(``fake_camera``) and the real data beside the checkout (``data``). Imported as ``tests.harness``: pytest puts the
repository root on the path (``pythonpath`` in pyproject.toml), and the bench scripts that use it run as
``python -m bench.<script>`` from the root."""
