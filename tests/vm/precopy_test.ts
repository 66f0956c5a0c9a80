/**
 * The pre-copy lazy migration of the project's headline scenario, in a QEMU
 * guest running Debian's stock kernel (soft-dirty tracking, which
 * `criu pre-dump` needs and this project's CI kernel lacks):
 *
 *   source:       criu pre-dump -D cp/1 -t PID
 *                 (the workload rewrites 10% / 50% of its pages)
 *                 criu dump -D cp/2 -t PID --prev-images-dir ../1 --track-mem
 *                   --lazy-pages --port 27
 *                 rsync -a cp/ to the destination
 *   destination:  lazyd --page-server --address SOURCE --port 27 -D cp/2 &
 *                 criu restore --lazy-pages -D cp/2
 *
 * with the source in the guest's root network namespace and lazyd in a
 * second one joined by a veth pair (169.254.83.1 <-> .2). Checked: every
 * word of memory (the workload's own verification), and from lazyd's
 * statistics that the pages asked of and received from the page server are
 * exactly the PE_LAZY pages of cp/2 (counted by lazyd's image layer), while
 * cp/2 has PE_PARENT pages: none of those was requested.
 *
 * The guest is built by scripts/vm/guest.ts; a guest that cannot be built
 * or booted fails the test (it is never skipped for that).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildWorkload, e2eTest, ROOT } from "../e2e/env.ts";
import { parseResults, runInGuest } from "../../scripts/vm/guest.ts";
import type { PrecopyResult } from "../../scripts/vm/scenarios.ts";

const PERMILLES = [100, 500];

e2eTest(
  "in a VM: pre-dump, dump --prev-images-dir --track-mem --lazy-pages, rsync, lazyd over a veth fetches only PE_LAZY pages",
  { needs: ["root", "criu", "gcc"] },
  async () => {
    await buildWorkload(); // the checkout is read-only in the guest
    const r = await runInGuest(
      [
        Deno.execPath(),
        "run",
        "-A",
        join(ROOT, "scripts", "vm", "scenarios.ts"),
        "precopy",
        ...PERMILLES.map(String),
        "--size",
        "32",
      ].join(" "),
      { timeoutSec: 420, memMiB: 2048 },
    );
    console.log(
      `guest: ${r.accel}, kernel ${r.release}, boot ${r.bootMs} ms, ` +
        `whole run ${r.durationMs} ms`,
    );
    const results = parseResults<PrecopyResult>(r.output);
    const detail = `guest status ${r.code}${
      r.timedOut ? " (timed out)" : ""
    }, share ${r.shareDir}:\n${r.output}`;
    assert.equal(results.length, PERMILLES.length, detail);
    for (const [i, x] of results.entries()) {
      assert.equal(x.permille, PERMILLES[i]);
      assert.equal(x.error, undefined, `${x.permille}‰: ${x.error}`);
      assert.equal(x.verified, true, `${x.permille}‰: memory verified`);
      assert.equal(x.lazydExit, 0);
      assert.equal(x.dumpExit, 0, `${x.permille}‰: criu dump ended cleanly`);
      assert.equal(x.processes, 2);
      // The dirty round rewrote the share it was asked to, and those pages
      // (plus a few the workload touched meanwhile) are the lazy ones.
      const dirtied = x.dirtied!.reduce((a, b) => a + b, 0);
      assert.ok(dirtied > 0 && x.lazyPages! >= dirtied, JSON.stringify(x));
      assert.ok(
        x.parentPages! > 0,
        `${x.permille}‰: cp/2 has PE_PARENT pages, so the check means something`,
      );
      assert.equal(x.remotePagesAsked, x.lazyPages, "asked == PE_LAZY pages");
      assert.equal(
        x.remotePagesReceived,
        x.lazyPages,
        "received == PE_LAZY pages",
      );
      assert.deepEqual(x.bytesReadLocally, {}, "no page read from images");
      console.log(
        `${x.permille}‰: ${x.lazyPages} PE_LAZY pages fetched in ` +
          `${x.remoteRequests} requests, ${x.parentPages} PE_PARENT pages ` +
          `not requested; pre-dump ${x.preDumpMs} ms, dump ${x.dumpMs} ms, ` +
          `restore+transfer ${x.transferMs} ms`,
      );
    }
    assert.equal(r.code, 0, detail);
  },
);
