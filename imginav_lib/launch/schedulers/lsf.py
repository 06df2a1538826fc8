"""IBM LSF 10.1 (`bsub`, `bjobs`)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from imginav_lib.launch.schedulers.base import QueueJob, env_job_id, mem, query, quoted

if TYPE_CHECKING:
    from imginav_lib.config.schema import Cluster, ClusterResources


# What LSF's termination reasons (bjobs/bhist "exit_reason", IBM LSF 10.1 "Termination reasons") mean for a run.
TERM_REASONS = {
    "TERM_MEMLIMIT": "killed: over its memory reservation, raise mem_per_core_gb",
    "TERM_RUNLIMIT": "killed: walltime reached, raise walltime (or lower the epochs of one job)",
    "TERM_CPULIMIT": "killed: CPU time limit reached",
    "TERM_SWAP": "killed: over its swap limit",
    "TERM_OWNER": "killed by its owner (bkill)",
    "TERM_ADMIN": "killed by an LSF administrator",
    "TERM_REQUEUE_OWNER": "killed and requeued by its owner (brequeue)",
    "TERM_REQUEUE_ADMIN": "killed and requeued by an LSF administrator",
    "TERM_PREEMPT": "killed: preempted by a higher-priority job",
    "TERM_LOAD": "killed: the host's load was too high",
    "TERM_UNKNOWN": "killed for a reason LSF does not know",
}
# The same reasons as IBM's table words them, for an exit_reason printed without its TERM_ name.
TERM_PHRASES = {"memory usage limit": "TERM_MEMLIMIT", "run time limit": "TERM_RUNLIMIT", "cpu time limit": "TERM_CPULIMIT"}
# bsub's words when the scheduler is busy or unreachable for a moment (the job was not accepted): worth another try.
TRANSIENT_BSUB = ("LSF is processing your request", "Cannot connect to LSF", "Request from non-LSF host rejected",
                  "lsb_init", "Failed in an LSF library call", "batch system daemon not responding",
                  "Timeout on connect", "LIM is down")  # fmt: skip


class Lsf:
    """IBM LSF 10.1. States (bjobs): PROV (dispatched to a host being woken up) and WAIT (a chunk job member waiting
    its turn) are still queued; SSUSP (by LSF: load, preemption) and USUSP (by its owner or an admin: bstop) are
    suspended while running; PSUSP is held while pending (by the site after too many requeues, or by bstop); UNKWN
    (the host's sbatchd lost contact with mbatchd) and ZOMBI are for the admins. EXIT rows failed (LSF says why in
    exit_code/exit_reason); DONE rows succeeded (run.json says the rest)."""

    name = "lsf"
    submit_tool = "bsub"
    query_tool = "bjobs"
    job_env = ("LSB_JOBID", "LSB_JOBINDEX")  # job id, array index
    STATES = {"PEND": "pending", "PROV": "pending", "WAIT": "pending", "RUN": "running", "SSUSP": "suspended",
              "USUSP": "suspended", "PSUSP": "held", "UNKWN": "unknown", "ZOMBI": "unknown", "EXIT": "exited"}  # fmt: skip
    release = "bresume '{job}[{i}]'"  # a held element
    held = "held after too many requeues or by bstop"
    # bjobs -o fields (IBM LSF 10.1, "bjobs -o"): pend_reason last, so that a reason with a "|" in it stays whole.
    FIELDS = "jobid stat jobindex exit_code exit_reason estimated_start_time pend_reason"
    BASIC_FIELDS = "jobid stat jobindex"  # an LSF that knows fewer -o fields
    retry_pauses_s = (10.0, 30.0, 60.0)  # pauses before each new try of a bsub that failed transiently
    pause = staticmethod(time.sleep)  # tests put a recorder here

    def directives(self, name: str, res: ClusterResources, logs: Path, log_stem: str, extra: list[str],
                   c: Cluster) -> list[str]:  # fmt: skip
        d = [f"-J {name}"]
        if res.queue:
            d.append(f"-q {res.queue}")
        if res.project:
            d.append(f"-P {res.project}")
        if res.cores:
            d += [f"-n {res.cores}", '-R "span[hosts=1]"']  # all slots on one host: one process uses them
        if res.mem_per_core_gb:  # per slot where the site reserves per task (per_slot), or per task explicitly
            per = "/task" if c.mem_reserve == "per_task" else ""
            d.append(f'-R "rusage[mem={mem(res.mem_per_core_gb, "GB", "MB")}{per}]"')
        if res.gpus:
            d.append(f'-gpu "num={res.gpus}:mode={c.gpu_mode}"')  # LSF's default mode is shared
        if res.walltime:
            d.append(f"-W {res.walltime}")
        d += extra
        # A fallback: LSF writes these when the job ends (unless LSB_STDOUT_DIRECT=Y) and drops them on a requeue;
        # the job script appends its own output to a .log in the same folder.
        d += [f"-o {quoted(logs / f'{log_stem}.out')}", f"-e {quoted(logs / f'{log_stem}.err')}"]
        return [f"#BSUB {x}" for x in d]

    def array_directives(self, name: str, spec: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        """`spec`: "[1-3,7]%2" (elements, and at most that many at once)."""
        extra = ["-wa USR2", f"-wt {c.warning_minutes}", f'-Q "{c.requeue_exit_code}"']
        return self.directives(f'"{name}{spec}"', res, logs, f"{name}_%J_%I", extra, c)

    def job_directives(self, name: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        """A job that is not an array: the prepare job, the report job."""
        return self.directives(name, res, logs, f"{name}_%J", [], c)

    def submit_command(self, script: Path, done: list[str] = (), ended: list[str] = ()) -> list[str]:
        """Waits for the jobs in `done` to succeed (the prepare job) and for those in `ended` to end, failed ones
        included (the arrays, for the report). A failed prepare job leaves the waiting jobs pending for ever."""
        # bsub reads #BSUB lines only from a script on stdin: `bsub < script` (stdin is passed separately).
        wait = [f"done({j})" for j in done] + [f"ended({j})" for j in ended]
        return ["bsub"] + (["-w", " && ".join(wait)] if wait else [])

    def show(self, cmd: list[str], script: Path) -> str:
        return shlex.join(cmd) + f" < {shlex.quote(str(script))}"

    def submit(self, cmd: list[str], script: Path) -> str:
        """Submit; the job id. A transient failure (TRANSIENT_BSUB: LSF busy or unreachable, nothing accepted) is
        tried again after each of `retry_pauses_s`; any other failure ("No such queue", "Request aborted by esub")
        is not. A bsub that timed out is not tried again either: it may have been accepted."""
        tries = len(self.retry_pauses_s) + 1
        for k in range(tries):
            with script.open() as stdin:
                out = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, timeout=120)
            m = re.search(r"Job <(\d+)> is submitted", out.stdout)
            if out.returncode == 0 and m:
                return m.group(1)
            said = " ".join(x.strip() for x in (out.stderr + "\n" + out.stdout).splitlines() if x.strip()) or "no output"
            transient = any(t.lower() in said.lower() for t in TRANSIENT_BSUB)
            if not transient or k == tries - 1:
                after = f" after {tries} tries" if transient else ""
                raise RuntimeError(f"{self.show(cmd, script)} failed{after} (exit {out.returncode}), LSF says: {said}")
            print(f"imginav: bsub: LSF says: {said}; trying again in {self.retry_pauses_s[k]:g} s "
                  f"({k + 2}/{tries})", flush=True)  # fmt: skip
            self.pause(self.retry_pauses_s[k])
        raise AssertionError("unreachable")

    def queue_load(self, queues: list[str | None]) -> list[str]:
        """One line per queue: its pending and running jobs as `bqueues <queue>` prints them (NJOBS PEND RUN SUSP
        columns, IBM LSF 10.1 bqueues), or a note when bqueues is missing or does not answer."""
        named = sorted({q for q in queues if q})
        lines = [] if len(named) == len(set(queues)) else ["queue load: the site's default queue (no queue set) not asked"]
        if not named:
            return lines
        if not shutil.which("bqueues"):
            return lines + ["queue load: bqueues not found on PATH (not asked)"]
        out = query(["bqueues", *named])
        rows = (out.stdout if out else "").splitlines()
        header = rows[0].split() if rows else []
        if out is None or "PEND" not in header or "RUN" not in header or "QUEUE_NAME" not in header:
            said = " ".join((out.stderr if out else "no answer").split())[:200]
            return lines + [f"queue load: bqueues gave no table ({said or 'no output'})"]
        at = {h: header.index(h) for h in ("QUEUE_NAME", "STATUS", "PEND", "RUN")}
        seen = set()
        for row in rows[1:]:
            parts = row.split()
            if len(parts) == len(header) and parts[at["QUEUE_NAME"]] in named:
                q = parts[at["QUEUE_NAME"]]
                seen.add(q)
                lines.append(f"queue {q}: {parts[at['PEND']]} pending, {parts[at['RUN']]} running jobs "
                             f"({parts[at['STATUS']]}; bqueues)")  # fmt: skip
        err = " ".join(out.stderr.split())
        lines += [f"queue {q}: not in bqueues' answer{f' ({err[:200]})' if err else ''}" for q in named if q not in seen]
        return lines

    def states(self, job_ids: set[str]) -> dict[tuple[str, int], str] | None:
        """{(job id, index): 'pending' | 'running' | 'suspended' | 'held' | 'unknown' | 'exited'} for our jobs still
        listed (index 0: a job that is not an array); None: cannot tell."""
        jobs = self.jobs(job_ids)
        return None if jobs is None else {k: j.state for k, j in jobs.items()}

    def jobs(self, job_ids: set[str]) -> dict[tuple[str, int], QueueJob] | None:
        """Our jobs as bjobs lists them, with LSF's exit code and reason or pending reason and estimated start.
        {}: every job has left the queue (bjobs: "not found" for each); None: cannot tell (no bjobs, no answer, an
        empty answer, or nothing in it that reads as a job: bjobs may print nothing and exit 0 on a busy cluster)."""
        if not shutil.which(self.query_tool):
            return None
        for fields in (self.FIELDS, self.BASIC_FIELDS):
            out = query(["bjobs", "-noheader", "-o", f"{fields} delimiter='|'", *sorted(job_ids)])
            if out is None:
                return None
            jobs = self.parse_jobs(out.stdout)
            if jobs:
                return jobs
            if not out.stdout.strip() and "not found" in out.stderr:
                found = re.findall(r"Job <(\d+)(?:\[\d+\])?> is not found", out.stderr)
                return {} if set(found) >= set(job_ids) else None  # every listed job has left the queue
            # nothing readable: an LSF that does not know one of the newer fields is asked again with the basic ones
        return None  # an empty or unreadable answer both times: cannot tell

    @classmethod
    def parse_states(cls, stdout: str) -> dict[tuple[str, int], str]:
        """{(job id, index): state} of `parse_jobs`."""
        return {k: j.state for k, j in cls.parse_jobs(stdout).items()}

    @classmethod
    def parse_jobs(cls, stdout: str) -> dict[tuple[str, int], QueueJob]:
        """`bjobs -noheader -o "<FIELDS or BASIC_FIELDS> delimiter='|'"`; sites with LSB_BJOBS_DISPLAY_ENH=Y print an
        element's id as `101[3]`, others as `101`. bjobs prints "-" for a field without a value. DONE rows (ended
        well) and lines that are not a job row are left out."""
        jobs = {}
        for line in stdout.splitlines():
            parts = [p.strip() for p in line.split("|", 6)]
            if len(parts) not in (3, 7):
                continue
            m = re.fullmatch(r"(\d+)(?:\[(\d+)\])?", parts[0])
            if not m or parts[1] not in cls.STATES:
                continue
            index = int(parts[2]) if parts[2].isdigit() else int(m.group(2) or 0)
            value = lambda k: parts[k] if len(parts) == 7 and parts[k] not in ("", "-") else None  # noqa: E731
            code = value(3)
            jobs[(m.group(1), index)] = QueueJob(
                cls.STATES[parts[1]], parts[1], int(code) if code and code.isdigit() else None, value(4),
                value(6), value(5))  # fmt: skip
        return jobs

    @staticmethod
    def exit_words(job: QueueJob) -> str:
        """What LSF says about a job that exited, in a person's words: "killed: over its memory reservation, raise
        mem_per_core_gb (LSF: TERM_MEMLIMIT, exit 137)"."""
        said = ", ".join(x for x in (job.exit_reason, f"exit {job.exit_code}" if job.exit_code is not None else None) if x)
        term = re.search(r"TERM_[A-Z_]+", job.exit_reason or "")
        key = term.group(0) if term else next((k for phrase, k in TERM_PHRASES.items() if phrase in (job.exit_reason or "").lower()), None)
        meaning = TERM_REASONS.get(key)
        if meaning is None:
            meaning = "ended with an error" if job.exit_code is None else f"ended with exit code {job.exit_code}"
        return f"{meaning} (LSF: {said or 'EXIT, no reason given'})"

    def job_id_from_env(self) -> str | None:
        """"<job id>[<array index>]" inside a job (just the id outside an array), else None."""
        return env_job_id(*self.job_env)
