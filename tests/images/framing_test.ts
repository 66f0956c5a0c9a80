import assert from "node:assert/strict";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { PagemapHeadSchema } from "../../proto/gen/pagemap_pb.ts";
import {
  decodeFraming,
  decodeRecord,
  encodeFraming,
  hasHeadMagic,
  onlyRecord,
  readImageFile,
} from "../../src/images/mod.ts";
import { assertImageError, bytes, withTempDir } from "./_helpers.ts";

const file = "/x/pagemap-42.img";
// images.md §1.2: head magic, pagemap magic, head{pages_id=1}, one entry.
const PAGEMAP_42 = bytes(`
  19 43 56 54 25 40 08 56
  02 00 00 00 08 01
  0c 00 00 00 08 80 a0 80 80 80 e0 1f 10 03 20 04`);

Deno.test("framing: the spec's pagemap example splits into two records", () => {
  const records = decodeFraming(PAGEMAP_42, {
    file,
    kind: "pagemap",
    imgVersion: 2,
  });
  assert.deepEqual(records.map((r) => r.offset), [8, 14]);
  assert.deepEqual([...records[0].data], [0x08, 0x01]);
  assert.equal(records[1].data.length, 12);
  assert.deepEqual(
    encodeFraming(records.map((r) => r.data), {
      kind: "pagemap",
      imgVersion: 2,
    }),
    PAGEMAP_42,
  );
});

Deno.test("framing: head magic only for version 2 and never for the inventory", () => {
  assert.equal(hasHeadMagic({ kind: "pagemap", imgVersion: 2 }), true);
  assert.equal(hasHeadMagic({ kind: "pagemap", imgVersion: 1 }), false);
  assert.equal(hasHeadMagic({ kind: "inventory", imgVersion: 2 }), false);
  assert.throws(() => hasHeadMagic({ kind: "mm", imgVersion: 3 }), RangeError);
  const v1 = encodeFraming([new Uint8Array([8, 1])], {
    kind: "pstree",
    imgVersion: 1,
  });
  assert.deepEqual([...v1.subarray(0, 4)], [0x30, 0x30, 0x27, 0x50]);
  assert.equal(
    decodeFraming(v1, { file, kind: "pstree", imgVersion: 1 })[0].offset,
    4,
  );
  // A version-1 file read as version 2 lacks the head magic.
  assertImageError(
    () => decodeFraming(v1, { file, kind: "pstree", imgVersion: 2 }),
    {
      file,
      offset: 0,
      reason: /bad magic 0x50273030, expected 0x54564319/,
    },
  );
});

Deno.test("framing: magic words are checked in place", () => {
  const wrongKind = PAGEMAP_42.slice();
  wrongKind[5] ^= 0x01;
  assertImageError(
    () => decodeFraming(wrongKind, { file, kind: "pagemap", imgVersion: 2 }),
    {
      offset: 4,
      reason: /bad magic/,
    },
  );
  assertImageError(
    () => decodeFraming(PAGEMAP_42, { file, kind: "mm", imgVersion: 2 }),
    {
      offset: 4,
      reason: /expected 0x57492820/,
    },
  );
  for (const len of [0, 3, 7]) {
    assertImageError(
      () =>
        decodeFraming(PAGEMAP_42.subarray(0, len), {
          file,
          kind: "pagemap",
          imgVersion: 2,
        }),
      { offset: len < 4 ? 0 : 4, reason: /ends inside its magic/ },
    );
  }
});

Deno.test("framing: end of file only at a record boundary", () => {
  const opts = { file, kind: "pagemap", imgVersion: 2 } as const;
  assert.deepEqual(decodeFraming(PAGEMAP_42.subarray(0, 8), opts), []);
  assert.equal(decodeFraming(PAGEMAP_42.subarray(0, 14), opts).length, 1);
  for (let len = 9; len < PAGEMAP_42.length; len++) {
    if (len === 14) continue;
    const inLength = len < 12 || (len >= 14 && len < 18);
    assertImageError(() => decodeFraming(PAGEMAP_42.subarray(0, len), opts), {
      offset: len < 14 ? 8 : 14,
      reason: inLength
        ? /inside a record length/
        : /exceeds the \d+ bytes left/,
    });
  }
});

Deno.test("framing: a huge record length is refused before any allocation", () => {
  const huge = bytes("19 43 56 54 25 40 08 56 ff ff ff ff 08 01");
  const err = assertImageError(
    () => decodeFraming(huge, { file, kind: "pagemap", imgVersion: 2 }),
    { offset: 8, reason: /record length 4294967295 exceeds the 2 bytes left/ },
  );
  assert.equal(err.file, file);
});

Deno.test("framing: empty records are records", () => {
  const img = encodeFraming([new Uint8Array(0), new Uint8Array(0)], {
    kind: "pstree",
    imgVersion: 2,
  });
  const records = decodeFraming(img, { file, kind: "pstree", imgVersion: 2 });
  assert.deepEqual(records.map((r) => [r.offset, r.data.length]), [[8, 0], [
    12,
    0,
  ]]);
});

Deno.test("framing: protobuf errors become ImageErrors at the record", () => {
  const img = encodeFraming([
    toBinary(PagemapHeadSchema, create(PagemapHeadSchema, { pagesId: 1 })),
    bytes("08 ff ff"),
  ], {
    kind: "pagemap",
    imgVersion: 2,
  });
  const records = decodeFraming(img, { file, kind: "pagemap", imgVersion: 2 });
  assert.equal(
    decodeRecord(PagemapHeadSchema, records[0], { file }).pagesId,
    1,
  );
  const err = assertImageError(
    () => decodeRecord(PagemapHeadSchema, records[1], { file }),
    {
      file,
      offset: 14,
      reason: /cannot decode lazyd.images.PagemapHead/,
    },
  );
  assert.ok(err.cause instanceof Error);
});

Deno.test("framing: onlyRecord wants exactly one", () => {
  const rec = { offset: 8, data: new Uint8Array() };
  assert.equal(onlyRecord([rec], file), rec);
  assertImageError(() => onlyRecord([], file), {
    offset: 0,
    reason: /found 0/,
  });
  assertImageError(() => onlyRecord([rec, { ...rec, offset: 12 }], file), {
    offset: 12,
    reason: /found 2/,
  });
});

Deno.test("framing: readImageFile refuses what is not a small regular file", async () => {
  await withTempDir(async (dir) => {
    const missing = join(dir, "mm-1.img");
    assertImageError(() => readImageFile(missing), {
      file: missing,
      offset: 0,
      reason: /cannot stat: No such file/,
    });
    assertImageError(() => readImageFile(dir), {
      file: dir,
      reason: /not a regular file/,
    });
    // A FIFO would block open() forever.
    const fifo = join(dir, "fifo.img");
    const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.equal(mk.code, 0);
    assertImageError(() => readImageFile(fifo), {
      file: fifo,
      reason: /not a regular file/,
    });
    const big = join(dir, "big.img");
    Deno.writeFileSync(big, PAGEMAP_42);
    assert.deepEqual(readImageFile(big), PAGEMAP_42);
    assertImageError(() => readImageFile(big, { maxBytes: 29 }), {
      file: big,
      offset: 29,
      reason: /30 bytes, more than the 29 allowed/,
    });
    // The default cap is 256 MiB; a sparse file above it is never read.
    const f = Deno.openSync(big, { write: true });
    f.truncateSync(257 * 1024 * 1024);
    f.close();
    assertImageError(() => readImageFile(big), {
      reason: /more than the 268435456 allowed/,
    });
  });
});
