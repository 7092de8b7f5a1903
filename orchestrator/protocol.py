"""The wire vocabulary: event names, error codes with their exact messages, the ack envelope.

Legacy codes and messages are part of the contract (the Unity login screen shows them), so they
are spelled exactly as the v2 orchestrator spells them. Codes added by this server live in the
5000 range, clear of every code used by v2 and by known forks (205-207, 701-703, 801, 803-807).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Err(IntEnum):
    OK = 0
    MISSING_CREDENTIALS = 204
    SESSION_ADD_FAILED = 404
    NOT_SESSION_ADMIN = 501
    SESSION_NOT_FOUND = 503
    SESSION_NOT_EMPTY = 504
    ALREADY_IN_OTHER_SESSION = 602
    ALREADY_IN_THIS_SESSION = 603
    NOT_JOINED_ANY_SESSION = 700
    NOT_IN_ANY_SESSION = 800
    TARGET_NOT_IN_SAME_SESSION = 802
    USER_NOT_FOUND = 1301
    USER_DATA_MISSING = 1700
    NTP_ERROR = 2001
    SCENE_NO_MASTER = 3001
    SCENE_NO_DATA = 3002
    SCENE_NOT_MASTER = 3012
    SCENE_NO_TARGET = 3014
    STREAM_MISSING_USER = 4001
    STREAM_MISSING_KIND = 4002
    # Codes added by this orchestrator.
    NOT_LOGGED_IN = 5001
    INVALID_REQUEST = 5002
    INVALID_JSON = 5003
    UNAUTHORIZED = 5004
    PAYLOAD_TOO_LARGE = 5005
    RATE_LIMITED = 5006
    NO_WORKER_AVAILABLE = 5007
    DRAINING = 5008
    LIMIT_REACHED = 5009
    INTERNAL_ERROR = 5010
    UNKNOWN_COMMAND = 5011
    STATE_UNAVAILABLE = 5012  # cluster: the shared state store (Redis) cannot be reached


MESSAGES: dict[Err, str] = {
    Err.OK: "OK",
    Err.MISSING_CREDENTIALS: "The user credentials are missing",
    Err.SESSION_ADD_FAILED: "Could not create session",
    Err.NOT_SESSION_ADMIN: "You are not the administrator of this session",
    Err.SESSION_NOT_FOUND: "The session was not found",
    Err.SESSION_NOT_EMPTY: "The session is not empty",
    Err.ALREADY_IN_OTHER_SESSION: "The user already in a session",
    Err.ALREADY_IN_THIS_SESSION: "The user already in this session",
    Err.NOT_JOINED_ANY_SESSION: "The user has not joined any session",
    Err.NOT_IN_ANY_SESSION: "The user is not in any session",
    Err.TARGET_NOT_IN_SAME_SESSION: "The target user is not in the same session",
    Err.USER_NOT_FOUND: "The user was not found",
    Err.USER_DATA_MISSING: "User data (JSON) missing",
    Err.NTP_ERROR: "Could not get NTP time",
    Err.SCENE_NO_MASTER: "No master for this session was found",
    Err.SCENE_NO_DATA: "No event data has been provided",
    Err.SCENE_NOT_MASTER: "The user is not the master of this session",
    Err.SCENE_NO_TARGET: "Missing target user ID",
    Err.STREAM_MISSING_USER: "Missing user parameter",
    Err.STREAM_MISSING_KIND: "Missing type for data stream",
    Err.NOT_LOGGED_IN: "The user is not logged in",
    Err.INVALID_REQUEST: "Invalid request",
    Err.INVALID_JSON: "Invalid JSON",
    Err.UNAUTHORIZED: "Not authorized",
    Err.PAYLOAD_TOO_LARGE: "Payload too large",
    Err.RATE_LIMITED: "Too many requests",
    Err.NO_WORKER_AVAILABLE: "No stream worker available",
    Err.DRAINING: "The orchestrator is shutting down",
    Err.LIMIT_REACHED: "A server limit was reached",
    Err.INTERNAL_ERROR: "Internal server error",
    Err.UNKNOWN_COMMAND: "Unknown command",
    Err.STATE_UNAVAILABLE: "State store unavailable",
}

# Codes whose message is part of the legacy contract: a detail is never appended to them.
LEGACY_CODES = frozenset(code for code in Err if code < 5000)


class CommandError(Exception):
    """Raised by a handler to answer its command with an error ack."""

    def __init__(self, code: Err, detail: str | None = None) -> None:
        super().__init__(detail or MESSAGES[code])
        self.code = code
        self.detail = detail


def envelope(code: Err, body: dict[str, Any] | None = None, *, detail: str | None = None,
             command_id: Any = None) -> dict[str, Any]:
    """The one ack argument every command gets; `body` is always an object (Unity reads it first)."""
    message = MESSAGES[code]
    if detail and code not in LEGACY_CODES:
        message = f"{message}: {detail}"
    reply: dict[str, Any] = {"error": int(code), "message": message, "body": body if body is not None else {}}
    if command_id is not None:
        reply["commandId"] = command_id
    return reply


class Ev:
    """Event names, client to server and server to client."""

    LOGIN = "Login"
    LOGOUT = "Logout"
    UPDATE_USER_DATA_JSON = "UpdateUserDataJson"
    GET_USER_DATA = "GetUserData"
    GET_ORCHESTRATOR_VERSION = "GetOrchestratorVersion"
    GET_NTP_TIME = "GetNTPTime"
    GET_SESSIONS = "GetSessions"
    ADD_SESSION = "AddSession"
    JOIN_SESSION = "JoinSession"
    LEAVE_SESSION = "LeaveSession"
    GET_SESSION_INFO = "GetSessionInfo"
    DELETE_SESSION = "DeleteSession"
    SEND_MESSAGE = "SendMessage"
    SEND_MESSAGE_TO_ALL = "SendMessageToAll"
    DUMP_DATA = "DumpData"
    RESET_ORCHESTRATOR = "ResetOrchestrator"
    TERMINATE_ORCHESTRATOR = "TerminateOrchestrator"

    DECLARE_DATA_STREAM = "DeclareDataStream"
    REMOVE_DATA_STREAM = "RemoveDataStream"
    REGISTER_FOR_DATA_STREAM = "RegisterForDataStream"
    UNREGISTER_FROM_DATA_STREAM = "UnregisterFromDataStream"
    SEND_DATA = "SendData"
    SEND_SCENE_EVENT_TO_MASTER = "SendSceneEventToMaster"
    SEND_SCENE_EVENT_TO_USER = "SendSceneEventToUser"
    SEND_SCENE_EVENT_TO_ALL_USERS = "SendSceneEventToAllUsers"

    SESSION_UPDATED = "SessionUpdated"
    SESSION_CLOSED = "SessionClosed"
    MESSAGE_SENT = "MessageSent"
    DATA_RECEIVED = "DataReceived"
    SCENE_EVENT_TO_MASTER = "SceneEventToMaster"
    SCENE_EVENT_TO_USER = "SceneEventToUser"


class SessionEvent:
    """`eventId` values of SessionUpdated."""

    USER_JOINED = "USER_JOINED_SESSION"
    USER_LEFT = "USER_LEFT_SESSION"
    USER_DATA_UPDATED = "USER_DATA_UPDATED"
    # Sent by this orchestrator when a session's stream worker was replaced: eventData is
    # {"sessionId", "reason", "users": {userId: sfuData}}; clients reconnect their streams.
    STREAM_WORKER_CHANGED = "STREAM_WORKER_CHANGED"
    # Sent when the orchestrator starts draining: eventData {"graceSeconds"}.
    ORCHESTRATOR_DRAINING = "ORCHESTRATOR_DRAINING"
