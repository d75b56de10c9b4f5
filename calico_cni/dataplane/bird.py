"""BIRD 2 (Debian's bird2, 2.0.12): its process, its configuration file, its control socket. The
only code that talks to BIRD.

- The configuration is written to a temporary file beside the installed one, checked with
  `bird -p -c`, and renamed into place only when BIRD accepts it (design rule 28). A rejected text
  is kept as `<config>.rejected` so the line and column BIRD names can be read.
- BIRD is started as `bird -R -s <socket> -P <pid file> -c <config>`: `-R` applies graceful-restart
  recovery (the kernel routes a previous BIRD left are kept until the sessions are back). BIRD
  forks into the background itself; it is started in a session of its own, so a SIGTERM or SIGKILL
  of the daemon that started it (or of its process group) never reaches it. A BIRD already
  answering on the socket is adopted, never started twice; one whose socket accepts but does not
  answer (hung) is reported, never replaced. A socket path longer than 107 bytes (what a Unix
  socket holds, and BIRD accepts) is refused with a clear error before anything runs.
- The control socket speaks BIRD's CLI protocol: each line starts with a four-digit reply code,
  then `-` (more lines follow) or a space (the last line of the reply); a line starting with a
  space continues the previous code; `+` lines are spontaneous messages. 0xxx is success, 1xxx a
  table row, 2xxx a table heading, 8xxx a run-time error, 9xxx a parse error. On connecting,
  BIRD greets with `0001 BIRD <version> ready.`. Every exchange has a deadline (2 s by default):
  a hung BIRD makes a call fail, never hang.

BIRD 2 differs from the BIRD 1.x fork Calico ships: one daemon serves IPv4 and IPv6 (no bird6,
no bird6.ctl); `show protocols` capitalises its heading (`Name Proto Table State Since Info`) and
shows `---` as the table of protocols with channels (BGP); Since is `hh:mm:ss.mmm` (a date after
20 hours). `graceful restart` is a CLI command (since 2.0.5): BIRD shuts its protocols down
without withdrawing anything (the kernel protocol leaves its routes, BGP closes its sessions
without a notification, so peers keep the routes as stale) and exits.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket as _socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from calico_cni.dataplane.errors import DataplaneError

# Every exchange on the control socket finishes within this many seconds (as Calico's tools).
TIMEOUT = 2.0
# How long start() waits for a freshly started BIRD to answer, and graceful_restart() for BIRD to exit.
START_WAIT = 10.0
EXIT_WAIT = 10.0
# `bird -p` and the forking `bird` parent finish in milliseconds; this only bounds a wedged one.
RUN_TIMEOUT = 30.0
# A Unix socket's path holds at most this many bytes (sun_path is 108 with its NUL); BIRD refuses longer.
MAX_SOCKET_PATH = 107

# Replies of `configure` that mean the new configuration is being loaded.
RECONFIGURING = {"0003", "0004", "0005"}  # Reconfigured; in progress; already in progress, queued
GRACEFUL_RESTART_ORDERED = "0025"
GRACEFUL_RESTART_STATUS = "0024"  # in `show status`: graceful-restart recovery is in progress

HEADINGS = ("name", "proto", "table", "state", "since", "info")

_LINE = re.compile(r"^(\d{4})([ -])(.*)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?$")


class BirdError(DataplaneError):
    """BIRD refused, failed or did not answer."""


class BirdUnreachable(BirdError):
    """Nothing answers on BIRD's control socket (absent, or no process listening): BIRD is not running."""


@dataclass(frozen=True)
class Line:
    """One line of a reply: its code (a continuation line carries the code it continues) and text."""

    code: str
    text: str


@dataclass(frozen=True)
class Reply:
    """A whole reply of BIRD's CLI; its code is the code of its last line."""

    lines: tuple[Line, ...]

    @property
    def code(self) -> str:
        """The code of the last line: the reply's outcome ("" for an empty reply)."""
        return self.lines[-1].code if self.lines else ""

    @property
    def ok(self) -> bool:
        """A success code (0xxx)."""
        return self.code.startswith("0")

    def text(self) -> str:
        """The lines' text, one per line, without codes (empty lines left out)."""
        return "\n".join(line.text.strip() for line in self.lines if line.text.strip())

    def has(self, code: str) -> bool:
        """Whether any line carries `code`."""
        return any(line.code == code for line in self.lines)


class _ReplyParser:
    """Feeds on lines of text and says when a reply is complete."""

    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.done = False

    def feed(self, raw: str) -> None:
        """One line (without its newline); BirdError for a line that is not BIRD's CLI protocol."""
        if raw.startswith("+"):
            return  # a spontaneous message (`echo`), not part of the reply
        if raw.startswith(" "):
            if not self.lines:
                raise BirdError("unexpected output line from BIRD", repr(raw))
            self.lines.append(Line(self.lines[-1].code, raw[1:]))
            return
        match = _LINE.match(raw)
        if match is None:
            raise BirdError("unexpected output line from BIRD", repr(raw))
        code, sep, text = match.groups()
        self.lines.append(Line(code, text))
        self.done = sep == " "


def parse_reply(data: bytes | str) -> Reply:
    """The first whole reply in `data` (recorded output of the control socket, without the
    greeting); BirdError when it is incomplete or malformed."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    parser = _ReplyParser()
    for raw in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        parser.feed(raw)
        if parser.done:
            return Reply(tuple(parser.lines))
    raise BirdError("BIRD's reply ended before its last line", repr(text[-200:]))


@dataclass(frozen=True)
class Protocol:
    """One row of `show protocols`."""

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str  # e.g. "Established", "Active Socket: Connection refused", "" (whitespace runs made single spaces)

    @property
    def bgp_state(self) -> str:
        """The first word of info: a BGP protocol's session state (Established, Active, Connect, Passive, ...)."""
        return self.info.split(" ", 1)[0] if self.info else ""


def parse_protocol_row(text: str) -> Protocol | None:
    """A `show protocols` row (its text without the code), or None when it has too few columns."""
    columns = text.split()
    if len(columns) < 5:
        return None
    name, proto, table, state, since, *rest = columns
    # A `timeformat protocol` with a date and a time ("iso long") gives Since two words.
    if _DATE.match(since) and rest and _TIME.match(rest[0]):
        since = f"{since} {rest.pop(0)}"
    return Protocol(name, proto, table, state, since, " ".join(rest))


def parse_protocols(reply: Reply) -> list[Protocol]:
    """The rows of a `show protocols` reply (heading checked: BIRD 2 capitalises it, BIRD 1 not)."""
    if not reply.ok:
        raise BirdError("BIRD refused show protocols", reply.text())
    rows: list[Protocol] = []
    for line in reply.lines:
        if line.code == "2002":
            if tuple(line.text.lower().split()) != HEADINGS:
                raise BirdError("unknown BIRD table output format", line.text.strip())
        elif line.code == "1002":
            row = parse_protocol_row(line.text)
            if row is not None:
                rows.append(row)
    return rows


# Calico's BGP protocol names: Mesh_/Node_/Global_ then the peer's address with `_` for `.` or `:`
# (and `_port_<n>` when the peer has a port).
PEER_TYPES = {"Global": "global", "Mesh": "node-to-node mesh", "Node": "node specific"}
_PEER_NAME = re.compile(r"^(Global|Node|Mesh)_(.+)$")
_PORT_SUFFIX = re.compile(r"_port_\d+$")


@dataclass(frozen=True)
class Peer:
    """A Calico BGP peer, from its BIRD protocol's name and row."""

    address: str  # rebuilt from the name as Calico does (`_` back to `.` or `:`)
    version: int  # 4 or 6
    kind: str  # "node-to-node mesh", "node specific" or "global"
    protocol: Protocol

    @property
    def established(self) -> bool:
        """Whether the BGP session is up (BIRD's info column says Established)."""
        return self.protocol.bgp_state == "Established"


def calico_peer(protocol: Protocol) -> Peer | None:
    """The Calico peer a BGP protocol row stands for; None for other protocols and names. One BIRD
    2 serves both families, so the family comes from the address in the name."""
    if protocol.proto != "BGP":
        return None
    match = _PEER_NAME.match(protocol.name)
    if match is None:
        return None
    kind, encoded = PEER_TYPES[match.group(1)], match.group(2)
    bare = _PORT_SUFFIX.sub("", encoded)
    for version, sep, parse in ((4, ".", ipaddress.IPv4Address), (6, ":", ipaddress.IPv6Address)):
        try:
            parse(bare.replace("_", sep))
        except ValueError:
            continue
        return Peer(encoded.replace("_", sep), version, kind, protocol)
    return None


def calico_peers(protocols: list[Protocol], version: int | None = None) -> list[Peer]:
    """The Calico peers among `protocols` (of one family when `version` is given), in BIRD's order."""
    peers = [p for p in map(calico_peer, protocols) if p is not None]
    return [p for p in peers if version is None or p.version == version]


class Control:
    """BIRD's control socket: one connection per command, each within `timeout` seconds."""

    def __init__(self, socket: str, timeout: float = TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout

    def _check_path(self) -> None:
        """BirdError when the socket's path is too long for a Unix socket (BIRD would refuse it)."""
        length = len(os.fsencode(self.socket))
        if length > MAX_SOCKET_PATH:
            raise BirdError(f"BIRD's control socket path {self.socket} is {length} bytes long",
                            f"a Unix socket's path has at most {MAX_SOCKET_PATH}: use a shorter run directory")

    def _open(self) -> tuple[_socket.socket, _Reader]:
        """A connection that BIRD greeted, and its reader (the deadline runs from here)."""
        self._check_path()
        deadline = time.monotonic() + self.timeout
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket)
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
                raise BirdUnreachable(f"nothing answers on BIRD's control socket {self.socket}", exc.strerror or str(exc)) from None
            except OSError as exc:
                raise BirdError(f"cannot connect to BIRD's control socket {self.socket}", exc.strerror or str(exc)) from None
            reader = _Reader(sock, deadline, self.socket)
            welcome = reader.reply()
            if welcome.code != "0001":
                raise BirdError(f"BIRD did not greet on {self.socket}", welcome.text())
        except BaseException:
            sock.close()
            raise
        return sock, reader

    def command(self, text: str) -> Reply:
        """Send one CLI command; BIRD's whole reply (8xxx/9xxx replies are returned, not raised).
        BirdUnreachable when nothing listens, BirdError on a timeout or garbled answer."""
        if "\n" in text or "\r" in text:
            raise ValueError(f"one command, one line: {text!r}")
        sock, reader = self._open()
        try:
            try:
                sock.sendall(text.encode() + b"\n")
            except OSError as exc:
                raise BirdError(f"cannot write to BIRD's control socket {self.socket}", str(exc)) from None
            return reader.reply()
        finally:
            sock.close()

    def running(self) -> bool:
        """Whether a BIRD answers on the socket (greets within the deadline)."""
        try:
            self.greet()
        except BirdError:
            return False
        return True

    def greet(self) -> None:
        """Connect and wait for BIRD's greeting: BirdUnreachable when nothing listens, BirdError
        when something listens but does not greet within the deadline (a hung BIRD)."""
        sock, _ = self._open()
        sock.close()

    def show_protocols(self) -> list[Protocol]:
        """Every protocol row of `show protocols`."""
        return parse_protocols(self.command("show protocols"))

    def show_status(self) -> Reply:
        """The `show status` reply (0024 lines: graceful-restart recovery in progress)."""
        reply = self.command("show status")
        if not reply.ok:
            raise BirdError("BIRD refused show status", reply.text())
        return reply

    def graceful_restart_in_progress(self) -> bool:
        """Whether BIRD is still recovering from a graceful restart (waiting for its peers)."""
        return self.show_status().has(GRACEFUL_RESTART_STATUS)


class _Reader:
    """Lines from the socket until a reply is complete, within one deadline."""

    def __init__(self, sock: _socket.socket, deadline: float, path: str) -> None:
        self.sock = sock
        self.deadline = deadline
        self.path = path
        self.buffer = b""

    def _line(self) -> str:
        while b"\n" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise BirdError(f"BIRD did not answer on {self.path} within the deadline")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise BirdError(f"BIRD did not answer on {self.path} within the deadline") from None
            except OSError as exc:
                raise BirdError(f"reading BIRD's control socket {self.path} failed", str(exc)) from None
            if not chunk:
                raise BirdError(f"BIRD closed its control socket {self.path} in the middle of a reply")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\n", 1)
        return raw.decode("utf-8", "replace")

    def reply(self) -> Reply:
        """The next whole reply, within the deadline (BirdError past it)."""
        parser = _ReplyParser()
        while not parser.done:
            parser.feed(self._line())
        return Reply(tuple(parser.lines))


def kernel_has_bird_routes() -> bool:
    """Whether this network namespace's main tables hold `proto bird` routes (left by a BIRD that
    died or was stopped for a graceful restart: its kernel protocol persists them). When the kernel
    cannot be read, True: recovering needlessly costs time, not routes.

    Netlink is imported here, not with the module: `calicoctl node status` and the probes (run
    every few seconds) import this module and never start BIRD."""
    from calico_cni.dataplane.rtnl import RTPROT_BIRD, NetlinkError, Rtnl  # noqa: PLC0415

    try:
        with Rtnl.open() as rtnl:
            return any(rtnl.routes(version, protocol=RTPROT_BIRD) for version in (4, 6))
    except (NetlinkError, OSError):
        return True


def _binary() -> str:
    """`bird` on PATH, else where Debian's bird2 installs it (a PATH without /usr/sbin)."""
    return shutil.which("bird") or "/usr/sbin/bird"


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs and is a bird (not a zombie, not a recycled pid of something else)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    return state != [b"Z"] and os.path.basename(argv[0]) == b"bird"


class Bird(Control):
    """The node's BIRD: its configuration file, control socket and pid file (keep the socket and the
    pid file in the run directory). `netns`: a network namespace file BIRD is started in (tests);
    None starts it in the caller's namespace. `binary`: the `bird` executable (default: `bird` on
    PATH, else /usr/sbin/bird)."""

    def __init__(self, config: str, socket: str, pid_file: str, netns: str | None = None, timeout: float = TIMEOUT,
                 binary: str | None = None) -> None:
        super().__init__(socket, timeout)
        self.config = config
        self.pid_file = pid_file
        self.netns = netns
        self.binary = binary

    def _run(self, argv: list[str], what: str, **options) -> subprocess.CompletedProcess:
        """Run `argv` (a `bird` command line) within RUN_TIMEOUT; BirdError naming `what` and the
        executable when it cannot be run at all (BIRD missing or broken: not an answer of BIRD's)."""
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT, **options)
        except subprocess.TimeoutExpired:
            raise BirdError(f"cannot {what}: {' '.join(argv)} did not finish within {RUN_TIMEOUT:.0f} s") from None
        except OSError as exc:
            raise BirdError(f"cannot {what}: cannot run {exc.filename or argv[0]}", f"{exc.strerror or exc} (is bird2 installed?)") from None

    def check(self, path: str) -> str | None:
        """`bird -p -c path`: None when BIRD accepts the file, else its error text. BirdError when
        `bird` cannot be run (the file was not checked)."""
        proc = self._run([self.binary or _binary(), "-p", "-c", path], "check BIRD's configuration", capture_output=True)
        if proc.returncode == 0:
            return None
        text = (proc.stderr or proc.stdout).decode("utf-8", "replace")
        lines = [line.removeprefix("bird: ").strip() for line in text.splitlines() if line.strip()]
        return "; ".join(lines) or f"bird -p exited with status {proc.returncode}"

    def install(self, text: str) -> str | None:
        """Make `text` the configuration file when BIRD accepts it (None); otherwise the file is
        left as it was, the text is kept as `<config>.rejected`, and BIRD's error is returned.
        BirdError when `bird` cannot be run, OSError when the file cannot be written (the file is
        left as it was)."""
        directory = os.path.dirname(os.path.abspath(self.config))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(self.config)}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            problem = self.check(tmp)
            if problem is not None:
                rejected = f"{self.config}.rejected"
                os.replace(tmp, rejected)
                return problem.replace(tmp, rejected)
            os.replace(tmp, self.config)
            tmp = ""
            return None
        finally:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)

    def pid(self) -> int | None:
        """The pid in the pid file when that process is a running bird, else None."""
        try:
            with open(self.pid_file, encoding="ascii") as f:
                pid = int(f.read().strip() or "0")
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and _process_alive(pid) else None

    def start(self, recover: bool | None = None) -> bool:
        """Start BIRD unless one already answers on the socket (then adopt it: False). True once a
        started BIRD answers; BirdError with BIRD's own message when it does not start. A socket
        that accepts but does not greet (a hung BIRD) is a BirdError too, never a reason to start
        a second BIRD: whoever supervises calico-node decides what to do with the hung one (its
        -bird-live probe fails). A stale socket file and pid file are BIRD's to replace.

        `recover` (None: when the kernel holds routes an earlier BIRD left, see
        `kernel_has_bird_routes`) starts BIRD with `-R`: graceful-restart recovery keeps those
        routes until every peer is back or 240 s have passed, and programs nothing new meanwhile.
        On a first start there is nothing to keep, and a peer that never comes (a router not yet
        up) would leave a new node without routes for those 240 s."""
        try:
            self.greet()
            return False
        except BirdUnreachable:
            pass
        for path in (self.socket, self.pid_file):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if recover is None:
            recover = self.netns is not None or kernel_has_bird_routes()  # another namespace: cannot look
        argv = [self.binary or _binary(), *(["-R"] if recover else []), "-s", self.socket, "-P", self.pid_file, "-c", self.config]
        if self.netns is not None:
            argv = ["nsenter", f"--net={self.netns}", *argv]
        # stderr to a file, not a pipe: the daemonized child must not keep our read end open.
        with tempfile.TemporaryFile() as err:
            proc = self._run(argv, "start BIRD", stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, close_fds=True)
            err.seek(0)
            message = err.read().decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            detail = "; ".join(line.removeprefix("bird: ") for line in message.splitlines()) or f"exit status {proc.returncode}"
            raise BirdError(f"BIRD did not start ({' '.join(argv)})", detail)
        deadline = time.monotonic() + START_WAIT
        while not self.running():
            if time.monotonic() > deadline:
                raise BirdError(f"BIRD started but does not answer on {self.socket} after {START_WAIT:g} s")
            time.sleep(0.05)
        return True

    def configure(self) -> str | None:
        """Have BIRD load its configuration file (`configure`): None when it does, else why not
        (BIRD's own reply, e.g. the file's line and column that it refused)."""
        try:
            reply = self.command("configure")
        except BirdError as exc:
            return str(exc)
        if reply.code in RECONFIGURING:
            return None
        lines = [line for line in reply.lines if line.code != "0002"]  # "Reading configuration from ..."
        return f"{reply.code} " + "; ".join(line.text.strip() for line in lines if line.text.strip())

    def graceful_restart(self, wait: float = EXIT_WAIT) -> str | None:
        """`graceful restart`: BIRD keeps the kernel routes, closes its BGP sessions without
        withdrawing (peers keep the routes as stale for the restart time) and exits. Waits until it
        has exited; None on success, else what went wrong."""
        pid = self.pid()
        try:
            reply = self.command("graceful restart")
        except BirdError as exc:
            return str(exc)
        if reply.code != GRACEFUL_RESTART_ORDERED:
            return f"{reply.code} {reply.text()}"
        deadline = time.monotonic() + wait
        while (pid is not None and _process_alive(pid)) or self.running():
            if time.monotonic() > deadline:
                return f"BIRD accepted graceful restart but still runs after {wait:g} s"
            time.sleep(0.05)
        return None

