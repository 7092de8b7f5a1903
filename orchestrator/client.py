"""An asyncio client for lightweight VR2Gather clients: bots, tools, dashboards and tests.

One method per command, returning the ack's body or raising `OrchestratorError` with the code
and message; server events arrive as callbacks (`on`) or through `events()`/`next_event()`;
binary payloads are `bytes` both ways.

    async with OrchestratorClient("http://127.0.0.1:8090") as client:
        await client.login("bot")
        session = await client.add_session("demo", protocol="socketio")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import socketio

SERVER_EVENTS = ("SessionUpdated", "SessionClosed", "MessageSent", "DataReceived",
                 "SceneEventToMaster", "SceneEventToUser")


class OrchestratorError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class OrchestratorClient:
    def __init__(self, url: str, *, operator_token: str | None = None, timeout_s: float = 10.0,
                 transports: list[str] | None = None, max_queued_events: int = 10_000) -> None:
        self.url = url
        self.operator_token = operator_token
        self.timeout_s = timeout_s
        self.transports = transports or ["websocket"]
        self.user_id: str | None = None
        self._sio = socketio.AsyncClient(reconnection=False)
        self._events: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue(max_queued_events)
        self._callbacks: dict[str, list[Callable[..., Any]]] = {}
        for name in SERVER_EVENTS:
            self._sio.on(name, self._dispatcher(name))

    async def __aenter__(self) -> OrchestratorClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        auth = {"token": self.operator_token} if self.operator_token else None
        await self._sio.connect(self.url, transports=self.transports, auth=auth,
                                wait_timeout=self.timeout_s)

    async def disconnect(self) -> None:
        if self._sio.connected:
            await self._sio.disconnect()

    @property
    def connected(self) -> bool:
        return self._sio.connected

    # -- server events -----------------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> None:
        """Call `callback(*args)` for every `event` (sync or async callables)."""
        self._callbacks.setdefault(event, []).append(callback)

    def _dispatcher(self, name: str) -> Callable[..., Any]:
        async def dispatch(*args: Any) -> None:
            for callback in self._callbacks.get(name, ()):
                result = callback(*args)
                if asyncio.iscoroutine(result):
                    await result
            if self._events.full():
                self._events.get_nowait()  # a consumer that stopped reading loses the oldest
            self._events.put_nowait((name, args))
        return dispatch

    async def next_event(self, name: str | None = None,
                         timeout_s: float | None = None) -> tuple[str, tuple[Any, ...]]:
        """The next server event (of `name`, skipping others), waiting at most `timeout_s`."""
        async with asyncio.timeout(timeout_s if timeout_s is not None else self.timeout_s):
            while True:
                event = await self._events.get()
                if name is None or event[0] == name:
                    return event

    async def events(self) -> AsyncIterator[tuple[str, tuple[Any, ...]]]:
        while True:
            yield await self._events.get()

    # -- plumbing ----------------------------------------------------------------------------

    async def call(self, command: str, data: dict[str, Any] | None = None) -> Any:
        """Send a command and return its ack body; raise OrchestratorError on an error code."""
        reply = await self._sio.call(command, data, timeout=self.timeout_s)
        if not isinstance(reply, dict) or "error" not in reply:
            raise OrchestratorError(-1, f"malformed reply to {command}: {reply!r}")
        if reply["error"] != 0:
            raise OrchestratorError(reply["error"], reply.get("message", ""))
        return reply.get("body", {})

    async def emit(self, event: str, *args: Any) -> None:
        """Send an event without ack (SendData, scene events, stream declarations)."""
        await self._sio.emit(event, args)

    # -- commands ----------------------------------------------------------------------------

    async def login(self, user_name: str) -> str:
        self.user_id = (await self.call("Login", {"userName": user_name}))["userId"]
        return self.user_id

    async def logout(self) -> None:
        await self.call("Logout", {})
        self.user_id = None

    async def update_user_data(self, user_data: dict[str, Any] | str) -> dict[str, Any]:
        return await self.call("UpdateUserDataJson", {"userDataJson": user_data})

    async def get_user_data(self, user_id: str | None = None) -> dict[str, Any]:
        return await self.call("GetUserData", {"userId": user_id} if user_id else {})

    async def get_orchestrator_version(self) -> dict[str, Any]:
        return await self.call("GetOrchestratorVersion", {})

    async def get_ntp_time(self) -> dict[str, Any]:
        return await self.call("GetNTPTime", {})

    async def get_sessions(self) -> dict[str, Any]:
        return await self.call("GetSessions", {})

    async def add_session(self, name: str, *, description: str = "", protocol: str = "socketio",
                          scenario_id: str = "", scenario_name: str = "",
                          scenario_description: str = "") -> dict[str, Any]:
        return await self.call("AddSession", {
            "sessionName": name, "sessionDescription": description, "sessionProtocol": protocol,
            "scenarioDefinition": {"scenarioId": scenario_id, "scenarioName": scenario_name,
                                   "scenarioDescription": scenario_description},
        })

    async def join_session(self, session_id: str) -> dict[str, Any]:
        return await self.call("JoinSession", {"sessionId": session_id})

    async def leave_session(self) -> None:
        await self.call("LeaveSession", {})

    async def get_session_info(self) -> dict[str, Any]:
        return await self.call("GetSessionInfo", {})

    async def delete_session(self, session_id: str) -> None:
        await self.call("DeleteSession", {"sessionId": session_id})

    async def send_message(self, user_id: str, message: Any) -> None:
        await self.call("SendMessage", {"userId": user_id, "message": message})

    async def send_message_to_all(self, message: Any) -> None:
        await self.call("SendMessageToAll", {"message": message})

    async def dump_data(self) -> dict[str, Any]:
        return await self.call("DumpData", self._operator_data())

    async def reset_orchestrator(self) -> None:
        await self.call("ResetOrchestrator", self._operator_data())

    async def terminate_orchestrator(self) -> None:
        await self.call("TerminateOrchestrator", self._operator_data())

    def _operator_data(self) -> dict[str, Any]:
        return {"operatorToken": self.operator_token} if self.operator_token else {}

    # -- streams and scene events (acked here, so errors surface) ----------------------------

    async def declare_data_stream(self, kind: str, description: str = "") -> dict[str, Any]:
        return await self._acked("DeclareDataStream", kind, description)

    async def remove_data_stream(self, kind: str) -> dict[str, Any]:
        return await self._acked("RemoveDataStream", kind)

    async def register_for_data_stream(self, sender_id: str, kind: str) -> dict[str, Any]:
        return await self._acked("RegisterForDataStream", sender_id, kind)

    async def unregister_from_data_stream(self, sender_id: str, kind: str) -> dict[str, Any]:
        return await self._acked("UnregisterFromDataStream", sender_id, kind)

    async def send_data(self, kind: str, payload: bytes) -> None:
        await self.emit("SendData", kind, payload)

    async def send_scene_event_to_master(self, payload: bytes) -> dict[str, Any]:
        return await self._acked("SendSceneEventToMaster", payload)

    async def send_scene_event_to_user(self, user_id: str, payload: bytes) -> dict[str, Any]:
        return await self._acked("SendSceneEventToUser", user_id, payload)

    async def send_scene_event_to_all(self, payload: bytes) -> dict[str, Any]:
        return await self._acked("SendSceneEventToAllUsers", payload)

    async def _acked(self, event: str, *args: Any) -> dict[str, Any]:
        reply = await self._sio.call(event, args, timeout=self.timeout_s)
        if not isinstance(reply, dict):
            raise OrchestratorError(-1, f"malformed reply to {event}: {reply!r}")
        if reply.get("error") != 0:
            raise OrchestratorError(reply.get("error", -1), reply.get("message", ""))
        return reply.get("body", {})
