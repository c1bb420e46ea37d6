# Generated from proto/ by `make proto`. Do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_KIND_UNSPECIFIED: _ClassVar[ContextKind]
    CONTEXT_KIND_TEXT: _ClassVar[ContextKind]
    CONTEXT_KIND_BYTES: _ClassVar[ContextKind]
    CONTEXT_KIND_JSON: _ClassVar[ContextKind]

class SubcallKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBCALL_KIND_UNSPECIFIED: _ClassVar[SubcallKind]
    SUBCALL_KIND_LLM_QUERY: _ClassVar[SubcallKind]
    SUBCALL_KIND_LLM_QUERY_BATCHED: _ClassVar[SubcallKind]
    SUBCALL_KIND_RLM_QUERY: _ClassVar[SubcallKind]
    SUBCALL_KIND_RLM_QUERY_BATCHED: _ClassVar[SubcallKind]
    SUBCALL_KIND_TOOL: _ClassVar[SubcallKind]
CONTEXT_KIND_UNSPECIFIED: ContextKind
CONTEXT_KIND_TEXT: ContextKind
CONTEXT_KIND_BYTES: ContextKind
CONTEXT_KIND_JSON: ContextKind
SUBCALL_KIND_UNSPECIFIED: SubcallKind
SUBCALL_KIND_LLM_QUERY: SubcallKind
SUBCALL_KIND_LLM_QUERY_BATCHED: SubcallKind
SUBCALL_KIND_RLM_QUERY: SubcallKind
SUBCALL_KIND_RLM_QUERY_BATCHED: SubcallKind
SUBCALL_KIND_TOOL: SubcallKind

class HandshakeRequest(_message.Message):
    __slots__ = ("protocol_version", "host_version", "depth", "tools", "heartbeat_timeout")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    host_version: str
    depth: int
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    heartbeat_timeout: float
    def __init__(self, protocol_version: _Optional[int] = ..., host_version: _Optional[str] = ..., depth: _Optional[int] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., heartbeat_timeout: _Optional[float] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "host_callable", "json_value", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_CALLABLE_FIELD_NUMBER: _ClassVar[int]
    JSON_VALUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    host_callable: bool
    json_value: bytes
    source: str
    def __init__(self, name: _Optional[str] = ..., host_callable: _Optional[bool] = ..., json_value: _Optional[bytes] = ..., source: _Optional[str] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("protocol_version", "agent_version", "capabilities", "pid", "python_version")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    agent_version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    pid: int
    python_version: str
    def __init__(self, protocol_version: _Optional[int] = ..., agent_version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., pid: _Optional[int] = ..., python_version: _Optional[str] = ...) -> None: ...

class ContextChunk(_message.Message):
    __slots__ = ("index", "kind", "data", "total_bytes", "path")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    index: int
    kind: ContextKind
    data: bytes
    total_bytes: int
    path: str
    def __init__(self, index: _Optional[int] = ..., kind: _Optional[_Union[ContextKind, str]] = ..., data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class LoadContextResponse(_message.Message):
    __slots__ = ("received_bytes", "type_name", "length")
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    received_bytes: int
    type_name: str
    length: int
    def __init__(self, received_bytes: _Optional[int] = ..., type_name: _Optional[str] = ..., length: _Optional[int] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("code", "timeout")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    code: str
    timeout: float
    def __init__(self, code: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("stdout", "stderr", "error", "execution_time", "has_final_answer", "final_answer", "locals", "timed_out")
    class LocalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_FIELD_NUMBER: _ClassVar[int]
    HAS_FINAL_ANSWER_FIELD_NUMBER: _ClassVar[int]
    FINAL_ANSWER_FIELD_NUMBER: _ClassVar[int]
    LOCALS_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    stdout: str
    stderr: str
    error: str
    execution_time: float
    has_final_answer: bool
    final_answer: str
    locals: _containers.ScalarMap[str, str]
    timed_out: bool
    def __init__(self, stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., error: _Optional[str] = ..., execution_time: _Optional[float] = ..., has_final_answer: _Optional[bool] = ..., final_answer: _Optional[str] = ..., locals: _Optional[_Mapping[str, str]] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class GetVariableRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("found", "json", "repr", "type_name")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    REPR_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    found: bool
    json: bytes
    repr: str
    type_name: str
    def __init__(self, found: _Optional[bool] = ..., json: _Optional[bytes] = ..., repr: _Optional[str] = ..., type_name: _Optional[str] = ...) -> None: ...

class SetVariableRequest(_message.Message):
    __slots__ = ("name", "json", "extend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    EXTEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    json: bytes
    extend: bool
    def __init__(self, name: _Optional[str] = ..., json: _Optional[bytes] = ..., extend: _Optional[bool] = ...) -> None: ...

class SetVariableResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("request", "heartbeat")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    request: SubcallRequest
    heartbeat: Heartbeat
    def __init__(self, request: _Optional[_Union[SubcallRequest, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class HostMessage(_message.Message):
    __slots__ = ("response", "heartbeat")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    response: SubcallResponse
    heartbeat: Heartbeat
    def __init__(self, response: _Optional[_Union[SubcallResponse, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_at",)
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    sent_at: float
    def __init__(self, sent_at: _Optional[float] = ...) -> None: ...

class SubcallRequest(_message.Message):
    __slots__ = ("id", "kind", "prompts", "model", "has_model", "tool", "arguments")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HAS_MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: SubcallKind
    prompts: _containers.RepeatedScalarFieldContainer[bytes]
    model: str
    has_model: bool
    tool: str
    arguments: bytes
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[_Union[SubcallKind, str]] = ..., prompts: _Optional[_Iterable[bytes]] = ..., model: _Optional[str] = ..., has_model: _Optional[bool] = ..., tool: _Optional[str] = ..., arguments: _Optional[bytes] = ...) -> None: ...

class SubcallResponse(_message.Message):
    __slots__ = ("id", "completions", "result", "error", "error_type")
    ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    id: int
    completions: _containers.RepeatedScalarFieldContainer[bytes]
    result: bytes
    error: str
    error_type: str
    def __init__(self, id: _Optional[int] = ..., completions: _Optional[_Iterable[bytes]] = ..., result: _Optional[bytes] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ...) -> None: ...

class CloseRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CloseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
