# Generated from proto/ by `make proto`. Do not edit.
"""Generated gRPC/protobuf code for the agent protocol (see proto/rlm/v1)."""
