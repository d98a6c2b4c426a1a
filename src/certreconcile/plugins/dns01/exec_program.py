"""DNS-01 through an external program, called as lego's ``exec`` provider calls it.

``PROGRAM present FQDN VALUE`` adds the TXT value, ``PROGRAM cleanup FQDN VALUE`` removes it
(FQDN with its final dot, as lego passes it; no shell, no ``RAW`` mode), so the hook scripts
written for lego (and acme.sh wrappers of that shape) run unchanged. Exit status 0 is success.

The program gets a small environment, not certreconcile's (which holds the database URL and
other providers' secrets): PATH, HOME, the locale, the ``EXEC_*`` variables lego itself is
configured by (``EXEC_PATH``, ``EXEC_PROPAGATION_TIMEOUT``, ``EXEC_POLLING_INTERVAL``,
``EXEC_SEQUENCE_INTERVAL``, in seconds), the declaration's ``env`` and the variables it names
in ``pass_env``. Its output (stdout and stderr) is logged at debug level; a failure's message
holds its exit status and last line, with the values of ``pass_env`` variables masked. A run
past ``timeout`` is killed with its whole process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.exec_config import ExecConfig
from certreconcile.plugins.dns01.propagation import PropagationWaiter
from certreconcile.plugins.ports import DnsTxtRecord

__all__ = ["ExecProvider"]

log = logging.getLogger("certreconcile.dns")

#: Variables of certreconcile's environment every program gets (when set).
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_POLLING_INTERVAL = 2  # seconds: the longest interval between two propagation checks


class ExecProvider:
    """One declared ``exec`` provider: a program run once per present and per cleanup."""

    def __init__(
        self,
        name: str,
        config: ExecConfig,
        *,
        program: Path,
        env: Mapping[str, str],
        propagation: PropagationWaiter,
        propagation_timeout: timedelta,
    ) -> None:
        self.name = name
        self._config = config
        self._program = program
        self._env = env
        self._propagation = propagation
        self._propagation_timeout = propagation_timeout
        self._timeout = config.timeout.delta.total_seconds()  # one run, then it is killed

    def _environment(self) -> dict[str, str]:
        environment = {name: self._env[name] for name in _BASE_ENV if self._env.get(name)}
        environment.setdefault("PATH", _DEFAULT_PATH)
        seconds = str(round(self._propagation_timeout.total_seconds()))
        environment.update(
            {
                "EXEC_PATH": str(self._program),
                "EXEC_PROPAGATION_TIMEOUT": seconds,
                "EXEC_POLLING_INTERVAL": str(_POLLING_INTERVAL),
                "EXEC_SEQUENCE_INTERVAL": seconds,
            }
        )
        environment.update(self._config.env)
        for variable in self._config.pass_env:
            value = self._env.get(variable)
            if value is None:
                raise DnsError(
                    f"the environment variable {variable} (pass_env of the DNS provider {self.name}) is not set",
                    code="dns-credentials-missing",
                    hint=f"export {variable}, or remove it from pass_env",
                )
            environment[variable] = value
        return environment

    def _masked(self, text: str) -> str:
        for variable in self._config.pass_env:
            value = self._env.get(variable, "")
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def _last_line(self, output: bytes) -> str:
        lines = [line.strip() for line in output.decode(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            return ""
        printable = "".join(ch if ch.isprintable() else " " for ch in lines[-1])
        return self._masked(printable)[:300]

    def _run(self, action: str, record: DnsTxtRecord) -> None:
        fqdn = record.fqdn.rstrip(".") + "."
        argv = [str(self._program), action, fqdn, record.value]
        what = f"DNS provider {self.name}: `{self._program.name} {action} {fqdn}`"
        environment = self._environment()
        try:
            process = subprocess.Popen(
                argv,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills its children too
            )
        except OSError as exc:
            raise DnsError(
                f"DNS provider {self.name}: cannot run {self._program} ({exc.strerror or type(exc).__name__})",
                code="dns-exec-not-found",
                hint="set program to an executable file (chmod +x; a script needs its #! line)",
            ) from exc
        try:
            output, _ = process.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=5)  # a child that left the group may hold the pipe
            raise DnsError(
                f"{what} did not finish within {self._config.timeout} and was killed",
                code="dns-exec-timeout",
                hint="check what the program waits for, or raise timeout on the provider",
            ) from None
        for line in output.decode(errors="replace").splitlines():
            log.debug("%s: %s", self.name, self._masked(line))
        if process.returncode != 0:
            last = self._last_line(output)
            raise DnsError(
                f"{what} exited {process.returncode}" + (f": {last}" if last else ""),
                code="dns-exec-failed",
                hint=f"run {self._program} {action} {fqdn} VALUE by hand to see its whole output",
            )

    # ------------------------------------------------------------------ Dns01Provider

    def present(self, record: DnsTxtRecord) -> None:
        self._run("present", record)

    def cleanup(self, record: DnsTxtRecord) -> None:
        self._run("cleanup", record)

    def wait_until_visible(self, records: tuple[DnsTxtRecord, ...], timeout: timedelta) -> None:
        self._propagation.wait(records, timeout)
