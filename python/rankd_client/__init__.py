"""rankd_client — a Python client of the rankd ranking server.

build_request() turns a user and candidates given as dicts (feature name ->
value) into a rankd.v1.RankRequest; Client sends it to a running rankd and
returns one pCTR per candidate, in order. The grpcio stubs (rank_pb2,
rank_pb2_grpc, health_pb2, health_pb2_grpc) are generated from proto/ when
the package is built.
"""
from .client import Client, build_request, __version__

__all__ = ["Client", "build_request", "__version__"]
