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
    ITERATOR: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
RETURNED: Outcome
RAISED: Outcome
BUNDLE_MISSING: Outcome
ITERATOR: Outcome

class FunctionRef(_message.Message):
    __slots__ = ("bundle_id", "module", "qualname")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    QUALNAME_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    module: str
    qualname: str
    def __init__(self, bundle_id: _Optional[str] = ..., module: _Optional[str] = ..., qualname: _Optional[str] = ...) -> None: ...

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

class BundleHeader(_message.Message):
    __slots__ = ("bundle_id", "size", "preload")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PRELOAD_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    size: int
    preload: _containers.RepeatedCompositeFieldContainer[FunctionRef]
    def __init__(self, bundle_id: _Optional[str] = ..., size: _Optional[int] = ..., preload: _Optional[_Iterable[_Union[FunctionRef, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("worker_id", "pid", "python_version", "implementation", "turbolift_version", "bundles", "calls_served", "calls_running", "previous_exit", "started", "memory_rss", "memory_peak", "held", "hostname", "slots")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMPLEMENTATION_FIELD_NUMBER: _ClassVar[int]
    TURBOLIFT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    CALLS_SERVED_FIELD_NUMBER: _ClassVar[int]
    CALLS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_EXIT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    pid: int
    python_version: str
    implementation: str
    turbolift_version: str
    bundles: _containers.RepeatedScalarFieldContainer[str]
    calls_served: int
    calls_running: int
    previous_exit: str
    started: float
    memory_rss: int
    memory_peak: int
    held: _containers.RepeatedCompositeFieldContainer[BundleInfo]
    hostname: str
    slots: int
    def __init__(self, worker_id: _Optional[str] = ..., pid: _Optional[int] = ..., python_version: _Optional[str] = ..., implementation: _Optional[str] = ..., turbolift_version: _Optional[str] = ..., bundles: _Optional[_Iterable[str]] = ..., calls_served: _Optional[int] = ..., calls_running: _Optional[int] = ..., previous_exit: _Optional[str] = ..., started: _Optional[float] = ..., memory_rss: _Optional[int] = ..., memory_peak: _Optional[int] = ..., held: _Optional[_Iterable[_Union[BundleInfo, _Mapping]]] = ..., hostname: _Optional[str] = ..., slots: _Optional[int] = ...) -> None: ...

class BundleInfo(_message.Message):
    __slots__ = ("bundle_id", "size")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    size: int
    def __init__(self, bundle_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ClientFrame(_message.Message):
    __slots__ = ("hello", "proof", "invoke", "chunk", "bundle", "credit", "stop", "nested_reply", "describe")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    NESTED_REPLY_FIELD_NUMBER: _ClassVar[int]
    DESCRIBE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    proof: Proof
    invoke: Invoke
    chunk: Chunk
    bundle: BundleHeader
    credit: Credit
    stop: Stop
    nested_reply: NestedReply
    describe: DescribeRequest
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., proof: _Optional[_Union[Proof, _Mapping]] = ..., invoke: _Optional[_Union[Invoke, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., bundle: _Optional[_Union[BundleHeader, _Mapping]] = ..., credit: _Optional[_Union[Credit, _Mapping]] = ..., stop: _Optional[_Union[Stop, _Mapping]] = ..., nested_reply: _Optional[_Union[NestedReply, _Mapping]] = ..., describe: _Optional[_Union[DescribeRequest, _Mapping]] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("challenge", "reply", "chunk", "item", "end", "output", "log", "warning", "heartbeat", "nested_call", "failure", "bundle_stored", "described")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    NESTED_CALL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_STORED_FIELD_NUMBER: _ClassVar[int]
    DESCRIBED_FIELD_NUMBER: _ClassVar[int]
    challenge: Challenge
    reply: Reply
    chunk: Chunk
    item: Item
    end: End
    output: OutputChunk
    log: LogRecord
    warning: WarningRecord
    heartbeat: Heartbeat
    nested_call: NestedCall
    failure: Failure
    bundle_stored: PutBundleReply
    described: DescribeReply
    def __init__(self, challenge: _Optional[_Union[Challenge, _Mapping]] = ..., reply: _Optional[_Union[Reply, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., item: _Optional[_Union[Item, _Mapping]] = ..., end: _Optional[_Union[End, _Mapping]] = ..., output: _Optional[_Union[OutputChunk, _Mapping]] = ..., log: _Optional[_Union[LogRecord, _Mapping]] = ..., warning: _Optional[_Union[WarningRecord, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., nested_call: _Optional[_Union[NestedCall, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., bundle_stored: _Optional[_Union[PutBundleReply, _Mapping]] = ..., described: _Optional[_Union[DescribeReply, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("nonce", "version")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    version: int
    def __init__(self, nonce: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("nonce", "proof", "version", "worker_id", "slots")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    proof: bytes
    version: int
    worker_id: str
    slots: int
    def __init__(self, nonce: _Optional[bytes] = ..., proof: _Optional[bytes] = ..., version: _Optional[int] = ..., worker_id: _Optional[str] = ..., slots: _Optional[int] = ...) -> None: ...

class Proof(_message.Message):
    __slots__ = ("proof",)
    PROOF_FIELD_NUMBER: _ClassVar[int]
    proof: bytes
    def __init__(self, proof: _Optional[bytes] = ...) -> None: ...

class Invoke(_message.Message):
    __slots__ = ("function", "arguments", "arguments_size", "count", "with_kwargs", "timeout", "call_id", "extra_bundles", "log_levels", "forward_events", "single_arguments")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_SIZE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    WITH_KWARGS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    EXTRA_BUNDLES_FIELD_NUMBER: _ClassVar[int]
    LOG_LEVELS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_EVENTS_FIELD_NUMBER: _ClassVar[int]
    SINGLE_ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    function: FunctionRef
    arguments: bytes
    arguments_size: int
    count: int
    with_kwargs: bool
    timeout: float
    call_id: str
    extra_bundles: _containers.RepeatedScalarFieldContainer[str]
    log_levels: str
    forward_events: bool
    single_arguments: bool
    def __init__(self, function: _Optional[_Union[FunctionRef, _Mapping]] = ..., arguments: _Optional[bytes] = ..., arguments_size: _Optional[int] = ..., count: _Optional[int] = ..., with_kwargs: _Optional[bool] = ..., timeout: _Optional[float] = ..., call_id: _Optional[str] = ..., extra_bundles: _Optional[_Iterable[str]] = ..., log_levels: _Optional[str] = ..., forward_events: _Optional[bool] = ..., single_arguments: _Optional[bool] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("outcome", "result", "result_size", "error", "elapsed_seconds", "worker_id", "missing_bundle")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_SIZE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MISSING_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    result: bytes
    result_size: int
    error: RemoteException
    elapsed_seconds: float
    worker_id: str
    missing_bundle: str
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., result: _Optional[bytes] = ..., result_size: _Optional[int] = ..., error: _Optional[_Union[RemoteException, _Mapping]] = ..., elapsed_seconds: _Optional[float] = ..., worker_id: _Optional[str] = ..., missing_bundle: _Optional[str] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("code", "details", "differences")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    code: int
    details: str
    differences: str
    def __init__(self, code: _Optional[int] = ..., details: _Optional[str] = ..., differences: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: int
    def __init__(self, items: _Optional[int] = ...) -> None: ...

class Stop(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Item(_message.Message):
    __slots__ = ("values", "size")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    size: int
    def __init__(self, values: _Optional[_Iterable[bytes]] = ..., size: _Optional[int] = ...) -> None: ...

class End(_message.Message):
    __slots__ = ("error", "stopped")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    error: RemoteException
    stopped: bool
    def __init__(self, error: _Optional[_Union[RemoteException, _Mapping]] = ..., stopped: _Optional[bool] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("stream", "text", "data")
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
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: OutputChunk.Stream
    text: str
    data: bytes
    def __init__(self, stream: _Optional[_Union[OutputChunk.Stream, str]] = ..., text: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("logger", "level", "message", "created", "exc_text", "pathname", "lineno", "func_name", "thread_name", "stack_info", "process")
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXC_TEXT_FIELD_NUMBER: _ClassVar[int]
    PATHNAME_FIELD_NUMBER: _ClassVar[int]
    LINENO_FIELD_NUMBER: _ClassVar[int]
    FUNC_NAME_FIELD_NUMBER: _ClassVar[int]
    THREAD_NAME_FIELD_NUMBER: _ClassVar[int]
    STACK_INFO_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    logger: str
    level: int
    message: str
    created: float
    exc_text: str
    pathname: str
    lineno: int
    func_name: str
    thread_name: str
    stack_info: str
    process: int
    def __init__(self, logger: _Optional[str] = ..., level: _Optional[int] = ..., message: _Optional[str] = ..., created: _Optional[float] = ..., exc_text: _Optional[str] = ..., pathname: _Optional[str] = ..., lineno: _Optional[int] = ..., func_name: _Optional[str] = ..., thread_name: _Optional[str] = ..., stack_info: _Optional[str] = ..., process: _Optional[int] = ...) -> None: ...

class WarningRecord(_message.Message):
    __slots__ = ("category", "category_name", "message", "filename", "lineno", "at_import")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    LINENO_FIELD_NUMBER: _ClassVar[int]
    AT_IMPORT_FIELD_NUMBER: _ClassVar[int]
    category: bytes
    category_name: str
    message: str
    filename: str
    lineno: int
    at_import: bool
    def __init__(self, category: _Optional[bytes] = ..., category_name: _Optional[str] = ..., message: _Optional[str] = ..., filename: _Optional[str] = ..., lineno: _Optional[int] = ..., at_import: _Optional[bool] = ...) -> None: ...

class NestedCall(_message.Message):
    __slots__ = ("id", "function", "data", "size", "last", "pull", "stdin", "stdin_size")
    ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    PULL_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    id: int
    function: bytes
    data: bytes
    size: int
    last: bool
    pull: int
    stdin: str
    stdin_size: int
    def __init__(self, id: _Optional[int] = ..., function: _Optional[bytes] = ..., data: _Optional[bytes] = ..., size: _Optional[int] = ..., last: _Optional[bool] = ..., pull: _Optional[int] = ..., stdin: _Optional[str] = ..., stdin_size: _Optional[int] = ...) -> None: ...

class NestedReply(_message.Message):
    __slots__ = ("id", "ok", "data", "size", "last", "activate")
    ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    ok: bool
    data: bytes
    size: int
    last: bool
    activate: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., ok: _Optional[bool] = ..., data: _Optional[bytes] = ..., size: _Optional[int] = ..., last: _Optional[bool] = ..., activate: _Optional[_Iterable[str]] = ...) -> None: ...
