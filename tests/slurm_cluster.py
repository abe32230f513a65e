"""A real two-node Slurm cluster on this host, for the tests: munged, slurmctld and two slurmd ("nodes" n1 and
n2, both at 127.0.0.1, each on its own port), configured and logging in one folder, stopped by their pids.
Debian's slurm-wlm and munge packages are all it needs (.ci/run installs them). A requeued job starts again
within seconds: the credential lifetime (cred_expire) and the scheduler's pass (sched_interval) are short,
where Slurm's defaults hold it back about 3 minutes; KillWait is the time between SIGTERM and SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")
NODES = ("n1", "n2")
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")

SLURM_CONF = """\
ClusterName=tests
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
AuthType=auth/munge
AuthInfo=socket={folder}/munge/munge.socket,cred_expire=5
CredType=cred/munge
SlurmUser={user}
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool/%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.%n.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/linear
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=15
MinJobAge=3600
{nodes}
PartitionName=tests Nodes={node_list} Default=YES MaxTime=INFINITE State=UP
"""


def unavailable() -> str | None:
    """Why a cluster cannot run here (None when it can)."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).is_file()]
    if missing:
        return f"{', '.join(missing)} not found: apt-get install slurm-wlm munge (.ci/run does where it can)"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their users only when started as root: run the Slurm tests as root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """Two nodes, one partition; `env` is what a client (sbatch, scontrol) needs to reach it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
        self.pid_files = [folder / "munge" / "munged.pid", folder / "slurmctld.pid",
                          *(folder / f"slurmd.{n}.pid" for n in NODES)]

    def start(self, timeout: float = 60) -> None:
        folder = self.folder
        for sub in ("munge", "state", "log", *(f"spool/{n}" for n in NODES)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        key = folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (folder / "munge").chmod(0o700)
        nodes = "\n".join(f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={free_port()} CPUs="
                          f"{os.cpu_count()} State=UNKNOWN" for n in NODES)
        (folder / "slurm.conf").write_text(SLURM_CONF.format(
            folder=folder, ctld_port=free_port(), user="root", nodes=nodes, node_list=",".join(NODES)))
        munge = folder / "munge"
        self._daemon([_binary("munged"), "--force", f"--key-file={key}", f"--socket={munge / 'munge.socket'}",
                      f"--pid-file={munge / 'munged.pid'}", f"--log-file={folder / 'log' / 'munged.log'}",
                      f"--seed-file={munge / 'seed'}"])
        self._daemon([_binary("slurmctld"), "-f", str(folder / "slurm.conf")])
        for node in NODES:
            self._daemon([_binary("slurmd"), "-N", node, "-f", str(folder / "slurm.conf")])
        deadline = time.time() + timeout
        while self.idle_nodes() < len(NODES):
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"the test cluster's nodes are not idle after {timeout:.0f}s: see {folder / 'log'}")
            time.sleep(0.5)

    def _daemon(self, command: list[str]) -> None:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if result.returncode:
            self.stop()
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}; logs in {self.folder / 'log'}")

    def idle_nodes(self) -> int:
        result = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False)
        return sum(line.split()[1] == "idle" for line in result.stdout.splitlines() if len(line.split()) == 2)

    def run(self, command: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """A client command (sbatch, scontrol, ...) against this cluster."""
        result = subprocess.run(command, env={**self.env, **kwargs.pop("env", {})}, capture_output=True, text=True,
                                timeout=kwargs.pop("timeout", 60), **kwargs)
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def submit(self, arguments: list[str], **kwargs) -> str:
        """sbatch `arguments`; the job's id."""
        return self.run(["sbatch", "--parsable", *arguments], **kwargs).stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """The job's fields as `scontrol show job` gives them (the first task's, for an array)."""
        text = self.run(["scontrol", "show", "job", "-o", job_id]).stdout.splitlines()[0]
        return dict(field.split("=", 1) for field in text.split() if "=" in field)

    def states(self, job_id: str) -> list[str]:
        """The state of each of the job's tasks."""
        lines = self.run(["scontrol", "show", "job", "-o", job_id]).stdout.splitlines()
        return [dict(f.split("=", 1) for f in line.split() if "=" in f)["JobState"] for line in lines]

    def wait(self, job_id: str, timeout: float = 600) -> list[str]:
        """Wait until every task of the job has ended; their states."""
        deadline = time.time() + timeout
        while not set(states := self.states(job_id)) <= set(ENDED):
            if time.time() > deadline:
                self.run(["scancel", job_id], check=False)
                raise TimeoutError(f"job {job_id} still {states} after {timeout:.0f}s")
            time.sleep(1)
        return states

    def stop(self) -> None:
        """Cancel what still runs, then stop the daemons by their pids."""
        if (self.folder / "slurmctld.pid").is_file():
            self.run(["scancel", "--user", "root"], check=False)
        for pid_file in reversed(self.pid_files):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    time.sleep(0.1)
                    os.kill(pid, 0)  # ProcessLookupError once it has gone
            except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
                continue
