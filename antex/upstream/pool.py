"""Which upstream answers a request, and what each upstream has told us lately.

Pure state and arithmetic, no I/O: the caller passes `now` (unix seconds) and the answers it saw,
so every rule here is tested with tables of cases and no server.

- Choice: the upstreams that serve the model, best priority first; within a priority, rendezvous
  (highest random weight) hashing of the conversation, so every Antex instance picks the same
  upstream for a conversation without asking the others, and an upstream going down moves only
  its own conversations.
- Stickiness: a conversation stays bound to the upstream that last answered it (the prompt cache
  is per organisation) for as long as the cache lives, renewed on use; it moves only when that
  upstream is unavailable.
- Cooldowns per upstream and model family, from the upstream's own signals: 429 until its
  `retry-after` / `anthropic-ratelimit-*-reset`; 529 briefly, growing on repeats; connection
  failures and repeated 5xx open a circuit with one half-open probe; 401/403 (its key refused)
  takes it out, with one slow probe (a real request) after OUT_PROBE_BASE_S, then ever more
  rarely while it keeps being refused: a key fixed or re-enabled upstream comes back on its own.
- Every cooldown is capped (MAX_COOLDOWN_S): an absurd `retry-after` benches nothing for years.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

import orjson

from antex.upstream.config import UpstreamEntry

log = logging.getLogger("antex.upstream")

RATE_LIMIT_DEFAULT_S = 10.0  # a 429 without a usable time
MAX_COOLDOWN_S = 86400.0  # no signal benches an upstream longer than a day (1e12 s, a millisecond epoch...)
OUT_PROBE_BASE_S = 60.0  # a refused key: one probe request after 60 s, 120, 240, 480, then every 600 s
OUT_PROBE_CAP_S = 600.0
OVERLOAD_BASE_S = 2.0  # a 529: 2, 4, 8, 16, 30 s on repeats
OVERLOAD_CAP_S = 30.0
CIRCUIT_AFTER_5XX = 3  # consecutive 5xx answers that open the circuit (one connection failure does)
CIRCUIT_BASE_S = 5.0  # open for 5, 10, 20, 40, 60 s on repeats, then one probe request
CIRCUIT_CAP_S = 60.0
BINDING_TTL_S = 3600.0  # Anthropic's longest prompt-cache lifetime: a binding protects no more
MAX_BINDINGS = 200_000  # oldest dropped past this: a bounded map however many conversations
RENEW_EVERY_S = 60.0  # a binding in use is renewed at most this often


@dataclass
class Upstream:
    """One pool member: its settings, its key and connections, and its health as seen lately."""

    entry: UpstreamEntry
    key: str
    client: Any = None  # its http client (set by the app); the pool never calls it
    cooling: dict[str, float] = field(default_factory=dict)  # model family -> cooled down until (429, 529)
    overloads: dict[str, int] = field(default_factory=dict)  # model family -> 529s in a row
    failures: int = 0  # 5xx answers in a row
    open_until: float = 0.0  # circuit: 0 closed, else open until then, then half-open
    openings: int = 0  # circuit openings in a row (the next stays open longer)
    probing: bool = False  # the one half-open probe is in flight
    out_until: float = 0.0  # 401/403 (a refused key): 0 in, else out until then, then one probe
    refusals: int = 0  # refused answers in a row (the next probe waits longer)
    last_error: str = ""
    seed: int = 0  # the name's hash: with a conversation's, its rendezvous weight

    def __post_init__(self) -> None:
        self.seed = int.from_bytes(hashlib.blake2b(self.entry.name.encode(), digest_size=8).digest(), "big")

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def in_flight(self) -> int:
        return self.client.in_flight if self.client is not None else 0

    @property
    def out(self) -> bool:
        """Its key was refused (and no probe has been accepted since)."""
        return self.out_until > 0.0

    def available(self, family: str, now: float) -> bool:
        if self.cooling.get(family, 0.0) > now:
            return False
        benched = max(self.open_until, self.out_until)
        return not benched or (benched <= now and not self.probing)

    def recovers_at(self, family: str, now: float) -> float:
        """When it may be tried again for `family`."""
        benched = max(self.open_until, self.out_until)
        return max(self.cooling.get(family, 0.0), benched if benched > now else 0.0, now)

    def state(self, now: float) -> dict:
        """For /healthz and `antex upstreams`: no key, no URL credentials."""
        cooling = {family: until for family, until in self.cooling.items() if until > now}
        if self.out:
            state, until = "down", max(self.out_until, now)
        elif self.open_until > now:
            state, until = "down", self.open_until
        elif cooling:
            state, until = "cooling", min(cooling.values())
        else:
            state, until = "ok", None
        return {"name": self.name, "state": state, "until": until, "models": sorted(cooling) if cooling else [],
                "serves": list(self.entry.models), "priority": self.entry.priority, "in_flight": self.in_flight,
                "last_error": self.last_error or None}


class Pool:
    """Every upstream, the conversations bound to them, and the rules above."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        self.upstreams = upstreams
        self.bindings: dict[bytes, tuple[Upstream, float]] = {}  # conversation -> (upstream, until); oldest first
        self._serving: dict[str, list[Upstream]] = {}  # model ID -> its upstreams, best priority first

    def serving(self, model_id: str) -> list[Upstream]:
        found = self._serving.get(model_id)
        if found is None:
            found = self._serving[model_id] = sorted(
                (u for u in self.upstreams if u.entry.serves(model_id)), key=lambda u: u.entry.priority)
        return found

    def choose(self, model_id: str, family: str, conversation: bytes | None, now: float) -> list[Upstream]:
        """The upstreams to try, in order: the conversation's bound upstream when it is available,
        then the available ones by priority and rendezvous weight. Empty: all are cooling down."""
        serving = self.serving(model_id)
        if len(serving) == 1:  # nowhere else to go: its own answer is the best information
            return serving
        ready = [u for u in serving if u.available(family, now)]
        if len(ready) > 1:
            point = int.from_bytes(conversation[:8], "big") if conversation else 0
            ready.sort(key=lambda u: (u.entry.priority, -_weight(point, u.seed)))
            bound = self.bound(conversation, now)
            if bound is not None and bound is not ready[0] and bound in ready:
                ready.remove(bound)
                ready.insert(0, bound)
        return ready

    def begin(self, upstream: Upstream, now: float) -> bool:
        """Whether to send a request to `upstream` now: a half-open circuit (or a refused key due
        for its probe) lets one probe through (marked here, when it is really sent) and no other
        until that one's outcome is known."""
        benched = max(upstream.open_until, upstream.out_until)
        if not benched or benched > now:
            return True
        if upstream.probing:
            return False
        upstream.probing = True
        return True

    def states(self, now: float) -> list[dict]:
        return [upstream.state(now) for upstream in self.upstreams]

    def retry_after_s(self, model_id: str, family: str, now: float) -> int:
        """Seconds until the first upstream for the model may be tried again (at least 1)."""
        soonest = min((u.recovers_at(family, now) for u in self.serving(model_id)), default=math.inf)
        return max(1, math.ceil(soonest - now)) if soonest != math.inf else 60

    # bindings

    def bound(self, conversation: bytes | None, now: float) -> Upstream | None:
        found = self.bindings.get(conversation) if conversation is not None else None
        return found[0] if found is not None and found[1] > now else None

    def bind(self, conversation: bytes, upstream: Upstream, now: float) -> None:
        """(Re)bind the conversation to the upstream that answered it, for another BINDING_TTL_S."""
        bindings = self.bindings
        found = bindings.get(conversation)
        if found is not None and found[0] is upstream and found[1] - now > BINDING_TTL_S - RENEW_EVERY_S:
            return  # renewed less than a minute ago: nothing to do on this request
        bindings.pop(conversation, None)  # re-inserted last: the dict stays oldest first
        bindings[conversation] = (upstream, now + BINDING_TTL_S)
        while bindings:
            oldest = next(iter(bindings))
            if bindings[oldest][1] > now and len(bindings) <= MAX_BINDINGS:
                break
            del bindings[oldest]

    # what the upstream said

    def answered(self, upstream: Upstream, family: str, status: int, headers: Mapping[str, str], now: float) -> None:
        """Learn from an answer's status (and, for 429, its headers)."""
        upstream.probing = False
        if status == 429:
            self._alive(upstream)
            seconds = cooldown_s(headers, now)
            if seconds > 0:  # `retry-after: 0`: try again at once; nothing cools, nothing to say
                self._cool(upstream, family, now, now + seconds, f"429 rate limited on {family} models")
        elif status == 529:
            self._alive(upstream)
            streak = upstream.overloads.get(family, 0)
            if upstream.cooling.get(family, 0.0) <= now:  # grows once per cooldown, not per request in flight
                streak = upstream.overloads[family] = streak + 1
            until = now + min(OVERLOAD_BASE_S * 2 ** (max(streak, 1) - 1), OVERLOAD_CAP_S)
            self._cool(upstream, family, now, until, f"529 overloaded on {family} models")
        elif status in (401, 403):
            self._refused(upstream, status, now)
        elif status >= 500:
            upstream.failures += 1
            upstream.last_error = f"{status} from the upstream"
            if upstream.failures >= CIRCUIT_AFTER_5XX or upstream.open_until:
                self._open(upstream, now)
        else:  # a success, or the client's own mistake (4xx): the upstream itself is fine
            self._healthy(upstream, family)

    def inconclusive(self, upstream: Upstream) -> None:
        """An answer that says nothing about the upstream (it refused what any upstream refuses)."""
        upstream.probing = False

    def failed(self, upstream: Upstream, family: str, error: str, now: float) -> None:
        """No answer at all: refused, reset, DNS or TLS failure, a stall before the head."""
        upstream.probing = False
        upstream.last_error = error
        self._open(upstream, now)

    def _refused(self, upstream: Upstream, status: int, now: float) -> None:
        """Its key is refused: out of the pool, with one real request let through after a while
        (longer each time it is refused again), so a key fixed upstream comes back by itself."""
        upstream.last_error = f"{status}: the upstream refused its key"
        if upstream.out_until > now:  # requests that were in flight: one refusal, already counted
            return
        upstream.refusals += 1
        seconds = min(OUT_PROBE_BASE_S * 2 ** (upstream.refusals - 1), OUT_PROBE_CAP_S)
        if not upstream.out_until:
            log.error("upstream %s answered %d: its key (from %s) is refused; it is OUT of the pool, with one "
                      "probe request after %g s (then ever more rarely, at most every %g s) until the key works",
                      upstream.name, status, upstream.entry.api_key_env, seconds, OUT_PROBE_CAP_S)
        upstream.out_until = now + seconds

    def _cool(self, upstream: Upstream, family: str, now: float, until: float, why: str) -> None:
        upstream.last_error = why
        was = upstream.cooling.get(family, 0.0)
        if until > was:
            upstream.cooling[family] = until
            if was <= now:  # a change of state: said once, not per request
                log.warning("upstream %s cooling down for %s models until %s: %s", upstream.name, family,
                            _when(until), why)

    def _open(self, upstream: Upstream, now: float) -> None:
        if upstream.open_until > now:  # already open: the requests that were in flight fail too
            return
        upstream.openings += 1
        seconds = min(CIRCUIT_BASE_S * 2 ** (upstream.openings - 1), CIRCUIT_CAP_S)
        if not upstream.open_until:
            log.warning("upstream %s is down (%s): circuit open, one probe after %g s", upstream.name,
                        upstream.last_error, seconds)
        upstream.open_until = now + seconds

    def _alive(self, upstream: Upstream) -> None:
        """It answered (if only to say 429 or 529, which come after its key was checked): whatever
        its circuit said, it is reachable, and its key works."""
        self._key_works(upstream)
        if upstream.open_until:
            log.info("upstream %s is reachable again", upstream.name)
            upstream.open_until = 0.0
            upstream.openings = 0
        upstream.failures = 0

    @staticmethod
    def _key_works(upstream: Upstream) -> None:
        if upstream.out_until:
            log.warning("upstream %s accepts its key again: back in the pool", upstream.name)
            upstream.out_until = 0.0
            upstream.refusals = 0

    def _healthy(self, upstream: Upstream, family: str) -> None:
        self._key_works(upstream)
        if upstream.open_until or family in upstream.cooling:
            log.info("upstream %s is healthy again for %s models", upstream.name, family)
            upstream.cooling.pop(family, None)
            upstream.open_until = 0.0
            upstream.openings = 0
        upstream.overloads.pop(family, None)
        upstream.failures = 0


def _weight(point: int, seed: int) -> int:
    """The rendezvous weight of an upstream (its seed) for a conversation (its point): a 64-bit
    mix (splitmix64's finaliser) every instance computes the same, with no hashing per request."""
    x = point ^ seed
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_MASK64 = (1 << 64) - 1


def _when(until: float) -> str:
    """A moment for the log, whatever it is (never an exception for a moment out of range)."""
    try:
        return datetime.fromtimestamp(until).astimezone().isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return f"{until:.0f} (unix seconds)"


def cooldown_s(headers: Mapping[str, str], now: float) -> float:
    """How long a 429 benches its model family: `retry-after` (seconds or an HTTP date), else the
    latest `anthropic-ratelimit-*-reset` among the exhausted limits (RFC 3339, e.g.
    "2026-12-01T08:05:00Z"; unix seconds for the unified subscription limits), else the soonest
    reset given, else RATE_LIMIT_DEFAULT_S; never more than MAX_COOLDOWN_S."""
    return min(_cooldown_s(headers, now), MAX_COOLDOWN_S)


def _cooldown_s(headers: Mapping[str, str], now: float) -> float:
    retry_after = headers.get("retry-after")
    if retry_after:
        seconds = _seconds_until(retry_after, now, relative=True)
        if seconds is not None:
            return seconds
    resets, exhausted = [], []
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("anthropic-ratelimit-") and lower.endswith("-reset"):
            seconds = _seconds_until(value, now, relative=False)
            if seconds is not None:
                resets.append(seconds)
                remaining = headers.get(lower[:-len("reset")] + "remaining")
                if remaining is not None and remaining.strip() == "0":
                    exhausted.append(seconds)
    if exhausted:
        return max(exhausted)
    if resets:
        return min(resets)
    return RATE_LIMIT_DEFAULT_S


def _seconds_until(value: str, now: float, *, relative: bool) -> float | None:
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number) or number < 0:
            return None
        return number if relative or number < 1e9 else max(number - now, 0.0)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if value[:1].isdigit() else parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        return None
    return max(moment.timestamp() - now, 0.0)


def conversation_of(key_id: int, headers: Mapping[str, str], body: dict | None) -> bytes:
    """The name of the conversation a request belongs to, scoped to the Antex key (two people
    never share a binding): X-Claude-Code-Session-Id, else what its body says (see body_seed)."""
    return named_conversation(key_id, headers, None if headers.get("x-claude-code-session-id") else body_seed(body))


def named_conversation(key_id: int, headers: Mapping[str, str], seed: bytes | None) -> bytes:
    """conversation_of with the body's part already taken (body_seed, e.g. in a parse worker)."""
    name = headers.get("x-claude-code-session-id")
    seed = name.encode("utf-8", "surrogateescape") if name else seed or b""
    return hashlib.blake2b(seed, digest_size=16, key=str(key_id).encode()).digest()


def body_seed(body: dict | None) -> bytes:
    """What names a conversation in its body: metadata.user_id (the old
    "user_<hash>_account_<uuid>_session_<uuid>" string, or the JSON string Claude Code sends since
    2.1.78, e.g. '{"device_id":"…","session_id":"…"}'), then the Responses API's
    prompt_cache_key, else the system prompt and first message."""
    name = None
    if body is not None:
        metadata = body.get("metadata")
        user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
        if isinstance(user_id, str) and user_id:
            name = _session_of(user_id)
        elif isinstance(body.get("prompt_cache_key"), str) and body["prompt_cache_key"]:
            name = "cache:" + body["prompt_cache_key"]
    if name:
        return name.encode("utf-8", "surrogateescape")
    messages = body.get("messages") or body.get("input") if body is not None else None
    first = messages[0] if isinstance(messages, list) and messages else messages
    system = body.get("system") or body.get("instructions") if body is not None else None
    try:
        return orjson.dumps([system, first]) if (system or first) else b""
    except (orjson.JSONEncodeError, TypeError):
        return repr([system, first]).encode("utf-8", "surrogateescape")


def _session_of(user_id: str) -> str:
    if user_id.startswith("{"):
        try:
            parsed = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("session_id"), str):
            return "session:" + parsed["session_id"]
    marker = user_id.rfind("_session_")
    if marker >= 0:
        return "session:" + user_id[marker + len("_session_"):]
    return "user:" + user_id
