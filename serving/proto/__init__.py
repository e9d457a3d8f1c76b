"""Open Inference Protocol (KServe v2) gRPC messages and service stubs, generated from
`grpc_predict_v2.proto` by `grpc_tools.protoc` (regeneration command in the .proto file).

The generated modules pin the grpcio and protobuf versions they were generated with as their
minimum runtime versions (they refuse to import on older ones).
"""
