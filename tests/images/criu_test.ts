import assert from "node:assert/strict";
import { join } from "node:path";
import { fromBinary, type Message } from "@bufbuild/protobuf";
import { e2eTest } from "../e2e/env.ts";
import {
  canBeLazy,
  decodeFraming,
  encodeImage,
  ImageDir,
  type ImageKind,
  locatePages,
  PAGE_SIZE,
  PE_LAZY,
  PE_PRESENT,
  recordSchema,
  VMA_AREA_VSYSCALL,
} from "../../src/images/mod.ts";
import { critBig, critFlags, critShow } from "./_crit.ts";
import { assertImageError, readSegment } from "./_helpers.ts";
import { makeRealDumps } from "./_real_dump.ts";

const WORKLOAD_PAGES = (8 << 20) / PAGE_SIZE;

e2eTest("images: real CRIU 4.1.1 dumps decode as crit decodes them", {
  needs: ["root", "criu", "crit", "gcc"],
}, async (t) => {
  const dumps = await makeRealDumps();
  try {
    await t.step(
      "plain dump",
      () => compareWithCrit(dumps.plain, { lazyDump: false }),
    );
    await t.step(
      "--lazy-pages dump",
      () => compareWithCrit(dumps.lazy, { lazyDump: true }),
    );
    await t.step("re-encoding gives CRIU's bytes", () => {
      reencodes(dumps.plain);
      reencodes(dumps.lazy);
    });
  } finally {
    Deno.removeSync(dumps.base, { recursive: true });
  }
});

async function compareWithCrit(
  path: string,
  options: { lazyDump: boolean },
): Promise<void> {
  const dir = ImageDir.open(path);

  const inv = (await critShow(dir.file("inventory.img"))).entries[0];
  assert.equal(dir.inventory().imgVersion, inv.img_version);
  assert.equal(inv.fdinfo_per_id, true);

  const crPstree = (await critShow(dir.file("pstree.img"))).entries;
  assert.deepEqual(dir.pstree(), crPstree);
  // root, child, zombie
  assert.equal(dir.pstree().length, 3);
  const alive = dir.pstree().filter((p) => dir.hasPagemap(p.pid));
  assert.equal(alive.length, 2, "the zombie has no memory images");

  const [mms, pms] = await Promise.all([
    Promise.all(alive.map((p) => critShow(dir.file(`mm-${p.pid}.img`)))),
    Promise.all(alive.map((p) => critShow(dir.file(`pagemap-${p.pid}.img`)))),
  ]);
  alive.forEach(({ pid }, i) => {
    // VMAs: all of crit's but the vsyscall page, which we leave out.
    const crVmas = mms[i].entries[0].vmas;
    const above = crVmas.filter((v: { start: string }) =>
      critBig(v.start) >= 2n ** 53n
    );
    assert.ok(
      above.every((v: { status: string }) =>
        critFlags(v.status) & VMA_AREA_VSYSCALL
      ),
    );
    assert.deepEqual(
      dir.mm(pid).vmas,
      crVmas.filter((v: unknown) => !above.includes(v)).map((
        v: Record<string, string>,
      ) => ({
        start: Number(critBig(v.start)),
        end: Number(critBig(v.end)),
        prot: critFlags(v.prot),
        flags: critFlags(v.flags),
        status: critFlags(v.status),
        pgoff: Number(v.pgoff),
        shmid: Number(v.shmid),
      })),
    );
    const lazyVma = dir.mm(pid).vmas.filter(canBeLazy);
    assert.ok(
      lazyVma.some((v) => v.end - v.start >= 8 << 20),
      "the workload's buffer is lazy-able",
    );

    // Pagemap entries and page counts.
    const pm = dir.pagemap(pid);
    const [head, ...crEntries] = pms[i].entries;
    assert.equal(pm.pagesId, head.pages_id);
    assert.deepEqual(
      pm.entries.map((e) => ({
        vaddr: e.vaddr,
        nrPages: e.nrPages,
        flags: e.flags,
      })),
      crEntries.map((e: Record<string, string>) => ({
        vaddr: Number(critBig(e.vaddr)),
        nrPages: Number(e.nr_pages),
        flags: critFlags(e.flags),
      })),
    );
    const count = (want: number) =>
      pm.entries.filter((e) => e.flags === want).reduce(
        (n, e) => n + e.nrPages,
        0,
      );
    const lazyFlags = options.lazyDump ? PE_LAZY : PE_LAZY | PE_PRESENT;
    assert.ok(
      count(lazyFlags) >= WORKLOAD_PAGES,
      `${count(lazyFlags)} lazy pages`,
    );
    assert.ok(
      count(PE_PRESENT) >= 1,
      "some pages are never lazy (the stack page)",
    );
    assert.equal(
      count(lazyFlags) + count(PE_PRESENT),
      pm.entries.reduce((n, e) => n + e.nrPages, 0),
    );
    assert.equal(dir.pagesFile(pm.pagesId).size, pm.presentBytes);

    // Every entry's data can be located, except lazy pages of a lazy dump.
    for (const e of pm.entries) {
      const request = { pid, addr: e.vaddr, pages: e.nrPages };
      if (!(e.flags & PE_PRESENT)) {
        assertImageError(() => locatePages(dir, request), {
          reason: /lazy pages without data/,
        });
        continue;
      }
      const segs = locatePages(dir, request);
      assert.equal(segs.length, 1);
      assert.ok(!segs[0].zero && segs[0].offset === e.dataOffset);
      assert.ok(
        readSegment(segs[0]).some((b) => b !== 0),
        "dumped pages are not all zero",
      );
    }
  });
}

/** Decoding every record and encoding it again reproduces CRIU's file. */
function reencodes(path: string): void {
  let files = 0;
  for (const { name } of Deno.readDirSync(path)) {
    const kind = name.match(/^(inventory|pstree|mm|pagemap)(-\d+)?\.img$/)
      ?.[1] as ImageKind | undefined;
    if (!kind) continue;
    const original = Deno.readFileSync(join(path, name));
    const records = decodeFraming(original, {
      file: name,
      kind,
      imgVersion: 2,
    });
    const messages: Message[] = records.map((r, i) =>
      fromBinary(recordSchema(kind, i), r.data)
    );
    assert.deepEqual(
      encodeImage(kind, messages),
      original,
      `${name} re-encodes byte for byte`,
    );
    files++;
  }
  // inventory, pstree, and mm + pagemap of the two live processes
  assert.equal(files, 6);
}
