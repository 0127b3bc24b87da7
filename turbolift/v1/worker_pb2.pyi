from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    RETURNED: _ClassVar[Outcome]
    RAISED: _ClassVar[Outcome]
    BUNDLE_MISSING: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
RETURNED: Outcome
RAISED: Outcome
BUNDLE_MISSING: Outcome

class FunctionRef(_message.Message):
    __slots__ = ("bundle_id", "module", "qualname")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    QUALNAME_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    module: str
    qualname: str
    def __init__(self, bundle_id: _Optional[str] = ..., module: _Optional[str] = ..., qualname: _Optional[str] = ...) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("function", "arguments", "call_id", "parent_call_id", "arguments_blob")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_BLOB_FIELD_NUMBER: _ClassVar[int]
    function: FunctionRef
    arguments: bytes
    call_id: str
    parent_call_id: str
    arguments_blob: str
    def __init__(self, function: _Optional[_Union[FunctionRef, _Mapping]] = ..., arguments: _Optional[bytes] = ..., call_id: _Optional[str] = ..., parent_call_id: _Optional[str] = ..., arguments_blob: _Optional[str] = ...) -> None: ...

class RemoteException(_message.Message):
    __slots__ = ("exception", "type_name", "message", "traceback")
    EXCEPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    exception: bytes
    type_name: str
    message: str
    traceback: str
    def __init__(self, exception: _Optional[bytes] = ..., type_name: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class CallReply(_message.Message):
    __slots__ = ("outcome", "result", "error", "elapsed_seconds", "worker_id", "result_blob")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_BLOB_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    result: bytes
    error: RemoteException
    elapsed_seconds: float
    worker_id: str
    result_blob: BlobRef
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., result: _Optional[bytes] = ..., error: _Optional[_Union[RemoteException, _Mapping]] = ..., elapsed_seconds: _Optional[float] = ..., worker_id: _Optional[str] = ..., result_blob: _Optional[_Union[BlobRef, _Mapping]] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("function", "items", "call_id", "count", "with_kwargs")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    WITH_KWARGS_FIELD_NUMBER: _ClassVar[int]
    function: FunctionRef
    items: bytes
    call_id: str
    count: int
    with_kwargs: bool
    def __init__(self, function: _Optional[_Union[FunctionRef, _Mapping]] = ..., items: _Optional[bytes] = ..., call_id: _Optional[str] = ..., count: _Optional[int] = ..., with_kwargs: _Optional[bool] = ...) -> None: ...

class BatchReply(_message.Message):
    __slots__ = ("outcome", "results", "elapsed_seconds", "worker_id")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    results: bytes
    elapsed_seconds: float
    worker_id: str
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., results: _Optional[bytes] = ..., elapsed_seconds: _Optional[float] = ..., worker_id: _Optional[str] = ...) -> None: ...

class CallEvent(_message.Message):
    __slots__ = ("reply", "yielded", "output", "log")
    REPLY_FIELD_NUMBER: _ClassVar[int]
    YIELDED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    reply: CallReply
    yielded: bytes
    output: OutputChunk
    log: LogRecord
    def __init__(self, reply: _Optional[_Union[CallReply, _Mapping]] = ..., yielded: _Optional[bytes] = ..., output: _Optional[_Union[OutputChunk, _Mapping]] = ..., log: _Optional[_Union[LogRecord, _Mapping]] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("stream", "text")
    class Stream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STREAM_UNSPECIFIED: _ClassVar[OutputChunk.Stream]
        STDOUT: _ClassVar[OutputChunk.Stream]
        STDERR: _ClassVar[OutputChunk.Stream]
    STREAM_UNSPECIFIED: OutputChunk.Stream
    STDOUT: OutputChunk.Stream
    STDERR: OutputChunk.Stream
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    stream: OutputChunk.Stream
    text: str
    def __init__(self, stream: _Optional[_Union[OutputChunk.Stream, str]] = ..., text: _Optional[str] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("logger", "level", "message", "created")
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    logger: str
    level: int
    message: str
    created: float
    def __init__(self, logger: _Optional[str] = ..., level: _Optional[int] = ..., message: _Optional[str] = ..., created: _Optional[float] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("size", "data")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    size: int
    data: bytes
    def __init__(self, size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class BlobRef(_message.Message):
    __slots__ = ("blob_id", "size")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    size: int
    def __init__(self, blob_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class BundleChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: BundleHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[BundleHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class BundleHeader(_message.Message):
    __slots__ = ("bundle_id", "size")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    size: int
    def __init__(self, bundle_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class PutBundleReply(_message.Message):
    __slots__ = ("bundle_id", "already_present")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    already_present: bool
    def __init__(self, bundle_id: _Optional[str] = ..., already_present: _Optional[bool] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeReply(_message.Message):
    __slots__ = ("worker_id", "pid", "python_version", "implementation", "turbolift_version", "bundles", "calls_served", "calls_running", "previous_exit")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMPLEMENTATION_FIELD_NUMBER: _ClassVar[int]
    TURBOLIFT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    CALLS_SERVED_FIELD_NUMBER: _ClassVar[int]
    CALLS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_EXIT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    pid: int
    python_version: str
    implementation: str
    turbolift_version: str
    bundles: _containers.RepeatedScalarFieldContainer[str]
    calls_served: int
    calls_running: int
    previous_exit: str
    def __init__(self, worker_id: _Optional[str] = ..., pid: _Optional[int] = ..., python_version: _Optional[str] = ..., implementation: _Optional[str] = ..., turbolift_version: _Optional[str] = ..., bundles: _Optional[_Iterable[str]] = ..., calls_served: _Optional[int] = ..., calls_running: _Optional[int] = ..., previous_exit: _Optional[str] = ...) -> None: ...
