/**
 * Mapping restored processes to host pids, so that the daemon can watch
 * them (pidfd) and stop one whose memory it cannot deliver.
 *
 * Restore sends each process's pid as the images know it, which is its pid
 * in its own (possibly new) pid namespace. The host pid is found in
 * `/proc/<pid>/status`: the last `NSpid` field is the innermost pid, and
 * the process must descend from the `criu restore` that connected to us
 * (SO_PEERCRED), which rules out same-numbered processes elsewhere.
 *
 * @module
 */

interface Status {
  ppid: number;
  nspid: number;
}

function status(pid: number): Status | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return undefined; // gone, or not ours to read
  }
  const ppid = /^PPid:\s+(\d+)/m.exec(text);
  const ns = /^NSpid:\s+([\d\s]+)$/m.exec(text);
  if (!ppid) return undefined;
  const nspids = ns ? ns[1].trim().split(/\s+/) : [String(pid)];
  return { ppid: Number(ppid[1]), nspid: Number(nspids[nspids.length - 1]) };
}

function descends(pid: number, ancestor: number): boolean {
  for (let p = pid, depth = 0; p > 1 && depth < 4096; depth++) {
    if (p === ancestor) return true;
    const s = status(p);
    if (!s) return false;
    p = s.ppid;
  }
  return false;
}

/**
 * The host pid of the process whose innermost pid is `nsPid` and that
 * descends from `ancestor`, or undefined when there is no such process.
 *
 * Restore waits for the answer before its processes can be served (the
 * first faults come during restore), so the search walks down from
 * `ancestor` (a handful of processes) rather than reading every
 * process's status: the whole-/proc scan costs milliseconds on a busy
 * host and far more on a slow one. The scan remains the fallback, for a
 * kernel without `/proc/<pid>/task/<tid>/children`.
 */
export function findHostPid(
  nsPid: number,
  options: { ancestor: number },
): number | undefined {
  const seen = new Set<number>();
  const queue = [options.ancestor];
  for (let i = 0; i < queue.length && seen.size < 65536; i++) {
    const pid = queue[i];
    if (seen.has(pid)) continue;
    seen.add(pid);
    if (pid > 1 && status(pid)?.nspid === nsPid) return pid;
    queue.push(...childrenOf(pid));
  }
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid) || pid <= 1 || seen.has(pid)) continue;
    const s = status(pid);
    if (s && s.nspid === nsPid && descends(pid, options.ancestor)) return pid;
  }
  return undefined;
}

/** Whether `pid` is a live process (not a zombie, not gone). */
export function isLive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The state follows the parenthesised command, which may contain spaces.
    const state = stat.slice(
      stat.lastIndexOf(")") + 2,
      stat.lastIndexOf(")") + 3,
    );
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Host pids of the children of `pid` (all its threads' children). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      const s = Deno.readTextFileSync(`/proc/${pid}/task/${t}/children`);
      for (const c of s.trim().split(/\s+/)) if (c) out.push(Number(c));
    } catch { /* thread exited */ }
  }
  return out;
}
