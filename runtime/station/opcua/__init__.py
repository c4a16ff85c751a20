"""The station's OPC UA server (OPC 40100-1 Machine Vision, a PLC handshake): optional, needs asyncua."""
