import assert from "node:assert/strict";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { PstreeEntrySchema } from "../../proto/gen/pstree_pb.ts";
import { e2eTest } from "../e2e/env.ts";
import {
  encodeImage,
  ImageDir,
  MAP_ANONYMOUS,
  MAP_GROWSDOWN,
  MAP_PRIVATE,
  PAGE_SIZE,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  readStamp,
  stampPage,
  type SyntheticProcess,
  VMA_ANON_PRIVATE,
  VMA_AREA_REGULAR,
  VMA_AREA_VSYSCALL,
  writeImage,
  writeImageDir,
} from "../../src/images/mod.ts";
import { critBig, critFlags, critShow } from "./_crit.ts";
import { withTempDir } from "./_helpers.ts";

const PROC: SyntheticProcess = {
  pid: 41,
  threads: [41, 45],
  vmas: [
    {
      start: 0x400000,
      end: 0x401000,
      prot: 5,
      flags: MAP_PRIVATE,
      status: 0x41,
      pgoff: 0,
      shmid: 3,
    },
    { start: 0x7f0000000000, end: 0x7f0100001000 },
    {
      start: 0x7ffd00000000,
      end: 0x7ffd00021000,
      flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN,
    },
    {
      start: 0xffffffffff600000,
      end: 0xffffffffff601000,
      prot: 4,
      status: VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE,
    },
  ],
  pagemap: [
    { vaddr: 0x400000, nrPages: 1, flags: PE_PRESENT },
    { vaddr: 0x7f0000000000, nrPages: 2, flags: PE_PARENT },
    { vaddr: 0x7f0000002000, nrPages: 3, flags: PE_LAZY | PE_PRESENT },
    { vaddr: 0x7f0000010000, nrPages: 0x100001, flags: PE_LAZY },
    { vaddr: 0x7ffd00020000, nrPages: 1, inParent: true },
  ],
};

Deno.test("writer: stamps round-trip", () => {
  assert.deepEqual(readStamp(stampPage(0x7f0000003000, 5)), {
    addr: 0x7f0000003000,
    tag: 5,
  });
  assert.equal(stampPage(0, 0).length, PAGE_SIZE);
});

Deno.test("writer: a written directory reads back", async () => {
  await withTempDir((tmp) => {
    writeImageDir(tmp, { processes: [PROC], tag: 3 });
    const dir = ImageDir.open(tmp);
    assert.deepEqual(dir.pstree(), [{
      pid: 41,
      ppid: 0,
      pgid: 41,
      sid: 41,
      threads: [41, 45],
    }]);
    assert.equal(dir.mm(41).vmas.length, 3); // the vsyscall page is left out
    const pm = dir.pagemap(41);
    assert.deepEqual(pm.entries.map((e) => e.flags), [
      PE_PRESENT,
      PE_PARENT,
      PE_LAZY | PE_PRESENT,
      PE_LAZY,
      PE_PARENT,
    ]);
    assert.equal(dir.pagesFile(pm.pagesId).size, pm.presentBytes);
    assert.equal(pm.presentBytes, 4 * PAGE_SIZE);
  });
});

Deno.test("writer: record types are checked", () => {
  const p = create(PstreeEntrySchema, { pid: 1, ppid: 0, pgid: 1, sid: 1 });
  assert.throws(() => encodeImage("pagemap", [p]), TypeError);
  assert.throws(
    () => encodeImage("mm", [p]),
    /mm record #0 must be lazyd.images.MmEntry/,
  );
});

e2eTest(
  "writer: crit decodes what the writer writes",
  { needs: ["crit"] },
  async () => {
    await withTempDir(async (tmp) => {
      writeImageDir(tmp, { processes: [PROC, { pid: 43, ppid: 41 }] });
      writeImage(join(tmp, "pstree-copy.img"), {
        kind: "pstree",
        records: [
          create(PstreeEntrySchema, {
            pid: 7,
            ppid: 0,
            pgid: 7,
            sid: 7,
            threads: [7],
          }),
        ],
      });

      // crit is slow to start: run it on every file at once.
      const [inv, ps, copy, mm, pm] = await Promise.all(
        [
          "inventory.img",
          "pstree.img",
          "pstree-copy.img",
          "mm-41.img",
          "pagemap-41.img",
        ]
          .map((f) => critShow(join(tmp, f))),
      );
      assert.equal(inv.magic, "INVENTORY");
      assert.equal(inv.entries[0].img_version, 2);
      assert.equal(inv.entries[0].fdinfo_per_id, true);

      assert.equal(ps.magic, "PSTREE");
      assert.deepEqual(ps.entries, [
        { pid: 41, ppid: 0, pgid: 41, sid: 41, threads: [41, 45] },
        { pid: 43, ppid: 41, pgid: 43, sid: 43, threads: [43] },
      ]);
      assert.equal(
        copy.entries[0].pid,
        7,
      );

      assert.equal(mm.magic, "MM");
      assert.deepEqual(
        mm.entries[0].vmas.map((v: Record<string, string>) => ({
          start: critBig(v.start),
          end: critBig(v.end),
          prot: critFlags(v.prot),
          flags: critFlags(v.flags),
          status: critFlags(v.status),
          shmid: Number(v.shmid),
          fd: v.fd,
        })),
        PROC.vmas!.map((v) => ({
          start: BigInt(v.start),
          end: BigInt(v.end),
          prot: v.prot ?? 3,
          flags: v.flags ?? 0x22,
          status: v.status ?? (VMA_AREA_REGULAR | VMA_ANON_PRIVATE),
          shmid: v.shmid ?? 0,
          fd: -1,
        })),
      );

      assert.equal(pm.magic, "PAGEMAP");
      assert.deepEqual(pm.entries[0], { pages_id: 1 });
      assert.deepEqual(pm.entries.slice(1), [
        { vaddr: "0x400000", nr_pages: 1, flags: "PE_PRESENT" },
        { vaddr: "0x7f0000000000", nr_pages: 2, flags: "PE_PARENT" },
        { vaddr: "0x7f0000002000", nr_pages: 3, flags: "PE_LAZY | PE_PRESENT" },
        { vaddr: "0x7f0000010000", nr_pages: 0x100001, flags: "PE_LAZY" },
        { vaddr: "0x7ffd00020000", nr_pages: 1, in_parent: true },
      ]);
    });
  },
);
