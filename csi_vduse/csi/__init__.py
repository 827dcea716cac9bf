"""The CSI gRPC services: the edge where requests are checked and errors get status codes."""
