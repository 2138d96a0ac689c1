"""A real single-node Slurm for the tests: munge, slurmctld and slurmd on this host.

Installed from Debian's packages (``slurm-wlm``, ``munge``) when missing; configured
in a folder of its own (``SLURM_CONF``) with free ports, so nothing in ``/etc/slurm``
is touched and an earlier cluster cannot get in the way. Every daemon it starts runs
in the foreground as its child and is stopped by PID.

Up to ten jobs share a core (``OverSubscribe=FORCE:10``), each with 256 MiB unless it
asks for more, so the tests' short jobs run side by side. Memory limits are enforced the
portable way (``jobacct_gather/linux`` with ``OverMemoryKill``, sampled every
second), as on sites without cgroups; accounting storage is off, as on many small
clusters, so ``sacct`` is not available.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support import free_port, terminate, wait_until

PACKAGES = ("slurm-wlm", "munge")
_DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
_START_SECONDS = 60
_APT_SECONDS = 600

_CONF = """\
ClusterName=simbackendtest
SlurmctldHost={host}({address})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerNode=256
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
KillWait=2
MinJobAge=600
NodeName={host} NodeAddr={address} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:10
"""


class SlurmUnavailable(Exception):
    """Slurm is not installed here and cannot be installed (the reason is the message)."""


def ensure_installed() -> None:
    """Install Slurm and munge with apt-get unless they are there.

    Raises:
        SlurmUnavailable: missing, and apt-get is not usable or failed.
    """
    if all(shutil.which(name) or Path("/usr/sbin", name).exists() for name in _DAEMONS):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable("Slurm is not installed and cannot be installed here "
                               "(needs root and apt-get: apt-get install slurm-wlm munge)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(install, env=env, capture_output=True, text=True,
                          timeout=_APT_SECONDS)
    if done.returncode != 0:  # the package lists may be missing or stale
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True,
                       timeout=_APT_SECONDS)
        done = subprocess.run(install, env=env, capture_output=True, text=True,
                              timeout=_APT_SECONDS)
    if done.returncode != 0:
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: "
                               f"{done.stderr.strip()[-500:]}")


class SlurmCluster:
    """munged (unless one already answers), slurmctld and slurmd, in ``folder``."""

    def __init__(self, folder: Path, memory_mb: int = 8000) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.host = socket.gethostname()
        self.memory_mb = memory_mb
        self.procs: dict[str, subprocess.Popen] = {}
        self.setup_seconds = 0.0

    @property
    def env(self) -> dict[str, str]:
        """What a client (``sbatch``, the backend) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> SlurmCluster:
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(_CONF.format(
            host=self.host, address="127.0.0.1", ctld_port=free_port(),
            slurmd_port=free_port(), dir=self.folder, cpus=os.cpu_count() or 1,
            memory_mb=self.memory_mb))
        try:
            self._start_munge()
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
            wait_until(self._idle, _START_SECONDS, "the Slurm node to be idle")
        except BaseException:
            self.stop()
            raise
        return self

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True,
                              text=True, timeout=30, check=check)

    def _idle(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{self.logs()}")
        state = self.run("sinfo", "--noheader", "--format=%t", check=False).stdout.strip()
        return state == "idle"

    def logs(self) -> str:
        parts = []
        for path in sorted(self.folder.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def _spawn(self, name: str, argv: list[str], **kwargs: object) -> None:
        with open(self.folder / f"{name}.out", "ab") as out:
            self.procs[name] = subprocess.Popen(
                argv, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, **kwargs)

    def _munge_answers(self) -> bool:
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
            if cred.returncode != 0:
                return False
            return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True,
                                  timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start_munge(self) -> None:
        """Use the host's munged if one answers; start one of our own otherwise."""
        if self._munge_answers():
            return
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
        for folder in ("/etc/munge", "/run/munge", "/var/lib/munge", "/var/log/munge"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "munge", "munge")
            for path in Path(folder).rglob("*"):
                shutil.chown(path, "munge", "munge")
        self._spawn("munged", ["munged", "--foreground"], user="munge", group="munge")
        wait_until(self._munge_answers, _START_SECONDS, "munged to answer")

    def jobs(self) -> list[str]:
        """Ids of the jobs still pending or running."""
        out = self.run("squeue", "--noheader", "--format=%i", check=False).stdout
        return out.split()

    def cancel_all(self, timeout: float = 30.0) -> None:
        """Cancel every job and wait until none is left."""
        ids = self.jobs()
        if ids:
            self.run("scancel", *ids, check=False)
            wait_until(lambda: not self.jobs(), timeout, "the Slurm jobs to end")

    def stop(self) -> None:
        """Cancel the jobs, then stop the daemons (slurmd first), by PID."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.cancel_all()
            except (AssertionError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                terminate(proc, 10)


def start_cluster(folder: Path) -> SlurmCluster:
    """Install if needed, start, and return a single-node cluster.

    Raises:
        SlurmUnavailable: Slurm cannot be installed here.
    """
    began = time.monotonic()
    ensure_installed()
    cluster = SlurmCluster(folder).start()
    cluster.setup_seconds = time.monotonic() - began
    return cluster
