/**
 * Host pids of restored processes, against real processes: a child in a
 * new PID namespace (whose pid there is 1), a real zombie, a dead pid.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { childrenOf, findHostPid, isLive } from "../../src/daemon/host_pid.ts";
import { e2eTest, waitFor } from "../e2e/env.ts";
import { withTemp } from "./_helpers.ts";

function spawn(cmd: string, args: string[]): Deno.ChildProcess {
  return new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function stop(...procs: Deno.ChildProcess[]): Promise<void> {
  for (const p of procs) {
    try {
      p.kill("SIGKILL");
    } catch { /* exited */ }
    await p.status;
  }
}

/** The state letter of /proc/<pid>/stat, read independently of isLive. */
function state(pid: number): string | undefined {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return s.slice(s.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

/** Waits until `pid` has exactly one child and returns it. */
async function onlyChild(pid: number): Promise<number> {
  let child = 0;
  await waitFor(`a child of ${pid}`, () => {
    const c = childrenOf(pid);
    if (c.length === 1) child = c[0];
    return c.length === 1;
  }, { timeoutMs: 10_000 });
  return child;
}

e2eTest("findHostPid: pid 1 of a new PID namespace below this process", {
  needs: ["root"],
  sanitizeResources: true,
  sanitizeOps: true,
}, async () => {
  // `unshare --fork` makes its child pid 1 of the new namespace; with
  // --kill-child that child dies with it.
  const holder = spawn("unshare", [
    "--pid",
    "--fork",
    "--kill-child",
    "sleep",
    "30",
  ]);
  const other = spawn("sleep", ["30"]);
  try {
    const inner = await onlyChild(holder.pid);
    assert.notEqual(inner, 1);
    const nspid = Deno.readTextFileSync(`/proc/${inner}/status`).match(
      /^NSpid:\s+(.*)$/m,
    )![1].trim().split(/\s+/);
    assert.equal(nspid.at(-1), "1", "innermost pid is 1");
    assert.equal(nspid[0], String(inner));

    // Found below every ancestor: us, the unshare process, itself.
    assert.equal(findHostPid(1, { ancestor: Deno.pid }), inner);
    assert.equal(findHostPid(1, { ancestor: holder.pid }), inner);
    assert.equal(findHostPid(1, { ancestor: inner }), inner);
    // Not below an unrelated process (a sibling), nor a pid that is not one.
    assert.equal(findHostPid(1, { ancestor: other.pid }), undefined);
    assert.equal(findHostPid(1, { ancestor: 0x3fffffff }), undefined);
    // The host's own pid 1 (init) is never the answer.
    assert.notEqual(findHostPid(1, { ancestor: 1 }), 1);

    // A process in our own namespace: its innermost pid is its pid here.
    assert.equal(findHostPid(other.pid, { ancestor: Deno.pid }), other.pid);
    assert.equal(findHostPid(other.pid, { ancestor: holder.pid }), undefined);
    // No such innermost pid below us.
    assert.equal(
      findHostPid(0x3fffffff, { ancestor: Deno.pid }),
      undefined,
    );
  } finally {
    await stop(holder, other);
  }
});

Deno.test({
  name: "isLive: a live process, a real zombie, a dead pid",
  fn: async () => {
    // The shell starts a short sleep in the background and then becomes
    // the long sleep, which never waits: the short one stays a zombie.
    const parent = spawn("sh", ["-c", "sleep 0.05 & exec sleep 30"]);
    try {
      assert.equal(isLive(Deno.pid), true);
      assert.equal(isLive(parent.pid), true);
      const zombie = await onlyChild(parent.pid);
      await waitFor("the zombie", () => state(zombie) === "Z", {
        timeoutMs: 10_000,
      });
      assert.equal(isLive(zombie), false);
      assert.equal(isLive(parent.pid), true);
      // A zombie is still listed among its parent's children, and has none.
      assert.deepEqual(childrenOf(parent.pid), [zombie]);
      assert.deepEqual(childrenOf(zombie), []);
    } finally {
      await stop(parent);
    }

    // A child that exited and was reaped: no /proc entry any more.
    const gone = spawn("true", []);
    assert.equal((await gone.status).code, 0);
    assert.equal(state(gone.pid), undefined);
    assert.equal(isLive(gone.pid), false);
    const pidMax = Number(
      Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim(),
    );
    assert.equal(isLive(pidMax + 1), false);
  },
});

Deno.test("isLive: a command name with parentheses and ' Z ' in it", async () => {
  // comm is the executable's name: "a) Z (b" makes /proc/<pid>/stat read
  // "<pid> (a) Z (b) S ...": only the last ')' ends the name.
  await withTemp("comm", async (tmp) => {
    const exe = join(tmp, "a) Z (b");
    Deno.copyFileSync("/bin/sleep", exe);
    Deno.chmodSync(exe, 0o755);
    const p = spawn(exe, ["30"]);
    try {
      await waitFor(
        "the renamed sleep",
        () =>
          Deno.readTextFileSync(`/proc/${p.pid}/stat`).includes("(a) Z (b)"),
        { timeoutMs: 10_000 },
      );
      assert.equal(isLive(p.pid), true);
    } finally {
      await stop(p);
    }
  });
});

Deno.test("childrenOf: the children of every thread; none for leaves and dead pids", async () => {
  const a = spawn("sleep", ["30"]);
  const b = spawn("sh", ["-c", "sleep 30 & wait"]);
  let grandchild = 0;
  try {
    // Deno starts children from whichever of its threads it likes; they
    // are all found.
    const mine = childrenOf(Deno.pid);
    assert.ok(mine.includes(a.pid), `${a.pid} in ${mine}`);
    assert.ok(mine.includes(b.pid), `${b.pid} in ${mine}`);
    grandchild = await onlyChild(b.pid);
    assert.notEqual(grandchild, b.pid);
    assert.ok(!childrenOf(Deno.pid).includes(grandchild));
    assert.deepEqual(childrenOf(a.pid), []);
    assert.deepEqual(childrenOf(grandchild), []);
    assert.deepEqual(childrenOf(0x3fffffff), []);
  } finally {
    if (grandchild > 0) Deno.kill(grandchild, "SIGKILL");
    await stop(a, b);
  }
});
