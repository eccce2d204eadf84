"""Word, Excel and PowerPoint 97-2003 files (.doc, .xls, .ppt), converted by LibreOffice.

``soffice --headless --convert-to`` turns each into its OpenDocument counterpart (.odt,
.ods, .odp), which ``ingest.parse.odf`` reads with its pages, sheets and slides: LibreOffice
lays the document out as it converts, so the .odt holds where the pages broke.

LibreOffice is a child of the parser, in the parser's process group: when the sandbox kills
a parser at its deadline it kills the conversion with it. The conversion runs in a temporary
directory with a user profile of its own, under the file's limits (wall clock, processor
time, address space), and is killed, with everything it started, when it overruns them.

A document can point at the network (a linked picture, a web query) or at files on the
server (a linked section, an external reference). LibreOffice fetched a linked picture's URL
while converting a .doc, so its profile sends every HTTP, HTTPS and FTP request to a proxy
that does not exist (127.0.0.1:9), never updates links, never recalculates on load and runs
no macros: what is converted is what the file itself holds.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from ingest.errors import CorruptDocument, IngestError
from ingest.parse.detect import DOC, LABELS, PPT, XLS
from ingest.parse.elements import ParsedDocument
from ingest.parse.limits import MIB, ParseLimits, timeout_reason
from ingest.parse.odf import parse_odf

# What each old format becomes, and how the ODF reader reads that.
_TARGETS = {DOC: ("odt", "text"), XLS: ("ods", "spreadsheet"), PPT: ("odp", "presentation")}
_SUFFIXES = {DOC: ".doc", XLS: ".xls", PPT: ".ppt"}
_SAVE_AS = {DOC: ".docx", XLS: ".xlsx", PPT: ".pptx"}
# LibreOffice maps about 0.4 GiB before it reads a byte; the file's memory limit comes on top.
_SOFFICE_BASE_MB = 1024
_DEAD_PROXY = ("127.0.0.1", 9)  # the discard port: nothing listens there
_SCRIPTING = "/org.openoffice.Office.Common/Security/Scripting"
_SETTINGS: tuple[tuple[str, str, str], ...] = (
    # (configuration path, property, value)
    ("/org.openoffice.Inet/Settings", "ooInetProxyType", "1"),  # manual proxies
    ("/org.openoffice.Inet/Settings", "ooInetNoProxy", ""),
    *(
        ("/org.openoffice.Inet/Settings", f"ooInet{scheme}Proxy{part}", value)
        for scheme in ("HTTP", "HTTPS", "FTP")
        for part, value in (("Name", _DEAD_PROXY[0]), ("Port", str(_DEAD_PROXY[1])))
    ),
    (_SCRIPTING, "MacroSecurityLevel", "3"),  # very high: no macro runs
    (_SCRIPTING, "DisableMacrosExecution", "true"),
    (_SCRIPTING, "BlockUntrustedRefererLinks", "true"),
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "0"),  # never (sw NEVER)
    ("/org.openoffice.Office.Calc/Content/Update", "Link", "1"),  # never (LM_NEVER)
    ("/org.openoffice.Office.Calc/Formula/Load", "OOXMLRecalcMode", "1"),  # never
    ("/org.openoffice.Office.Calc/Formula/Load", "ODFRecalcMode", "1"),  # never
)
INSTALL_HINT = (
    "apt-get install --no-install-recommends libreoffice-writer-nogui "
    "libreoffice-calc-nogui libreoffice-impress-nogui"
)


def soffice_path() -> str | None:
    """The LibreOffice program on the PATH, or None when it is not installed."""
    return shutil.which("soffice") or shutil.which("libreoffice")


def parse_legacy_office(path: Path, mime: str, limits: ParseLimits) -> ParsedDocument:
    """Convert a .doc, .xls or .ppt file with LibreOffice and read the result."""
    program = soffice_path()
    label = LABELS[mime]
    if program is None:
        raise IngestError(
            f"{label[0].upper()}{label[1:]}s are read through LibreOffice, which is not "
            f"installed on this server. Save the file as {_SAVE_AS[mime]} (or PDF) and upload "
            f"that, or ask an admin to install LibreOffice: `{INSTALL_HINT}`.",
            code="converter_unavailable",
        )
    extension, kind = _TARGETS[mime]
    with tempfile.TemporaryDirectory(prefix="appliance-soffice-") as work:
        root = Path(work)
        source = root / f"document{_SUFFIXES[mime]}"
        shutil.copyfile(path, source)
        out = root / "out"
        _write_profile(root / "profile")
        command = [
            program,
            f"-env:UserInstallation={(root / 'profile').as_uri()}",
            "--headless",
            "--invisible",
            "--norestore",
            "--nolockcheck",
            "--nodefault",
            "--convert-to",
            extension,
            "--outdir",
            str(out),
            str(source),
        ]
        returncode = _run_limited(command, root, limits)
        converted = out / f"document.{extension}"
        if returncode != 0 or not converted.exists() or converted.stat().st_size == 0:
            # LibreOffice reports no reason: its launcher's code says only that it failed.
            raise CorruptDocument(
                f"LibreOffice could not convert this {label} (it ended with code "
                f"{returncode}): the file may be damaged, protected with a password, or not "
                f"really a {label}, or converting it needed more than the per-file limits "
                "(settings `ingest.parse_cpu_seconds` and `ingest.parse_memory_mb`). Open it "
                f"in its application, save it as {_SAVE_AS[mime]}, and upload the saved copy."
            )
        return parse_odf(converted, mime, kind)


def _run_limited(command: list[str], home: Path, limits: ParseLimits) -> int:
    """Run LibreOffice under the file's limits; kill it and its children if it overruns."""
    cpu, memory = _child_limits(limits)

    def limit() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    proxy = f"http://{_DEAD_PROXY[0]}:{_DEAD_PROXY[1]}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "SAL_USE_VCLPLUGIN": "svp",
        **dict.fromkeys(("http_proxy", "https_proxy", "ftp_proxy", "all_proxy"), proxy),
        "no_proxy": "",
    }
    process = subprocess.Popen(  # noqa: S603 - a fixed program and arguments, no shell
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=home,
        preexec_fn=limit,  # a parser process is single-threaded: safe between fork and exec
    )
    try:
        return process.wait(timeout=limits.timeout_seconds)
    except subprocess.TimeoutExpired:
        raise IngestError(timeout_reason(limits), code="parse_timeout") from None
    finally:
        if process.poll() is None:  # not yet reaped, so its pid and children are still its own
            _kill_tree(process.pid)
            process.wait()


def _write_profile(profile: Path) -> None:
    """A LibreOffice user profile with the settings above, before its first start."""
    from xml.sax.saxutils import escape, quoteattr

    items = "".join(
        f'<item oor:path={quoteattr(path)}><prop oor:name={quoteattr(name)} oor:op="fuse">'
        f"<value>{escape(value)}</value></prop></item>\n"
        for path, name, value in _SETTINGS
    )
    (profile / "user").mkdir(parents=True)
    (profile / "user" / "registrymodifications.xcu").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        f"{items}</oor:items>\n",
        encoding="utf-8",
    )


def _child_limits(limits: ParseLimits) -> tuple[int, int]:
    """Processor seconds and address space for LibreOffice.

    Inside a parser process the CPU limit counts this process's own time, so LibreOffice
    gets what is left of it; its address space is its own baseline plus the file's limit,
    never more than this process may map.
    """
    cpu = limits.cpu_seconds
    soft, _ = resource.getrlimit(resource.RLIMIT_CPU)
    if soft != resource.RLIM_INFINITY:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = min(cpu, max(soft - math.ceil(usage.ru_utime + usage.ru_stime), 1))
    memory = (_SOFFICE_BASE_MB + limits.memory_mb) * MIB
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        memory = min(memory, soft)
    return cpu, memory


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (soffice starts soffice.bin)."""
    victims = [pid]
    children = _children()
    index = 0
    while index < len(victims):
        victims.extend(children.get(victims[index], []))
        index += 1
    for victim in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: read after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree
