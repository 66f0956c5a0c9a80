import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { PstreeEntrySchema } from "../../proto/gen/pstree_pb.ts";
import { encodeImage, parsePstree } from "../../src/images/mod.ts";
import { assertImageError, bytes } from "./_helpers.ts";

const file = "/x/pstree.img";
const opts = { file, imgVersion: 2 };

Deno.test("pstree: the spec's example, unpacked threads", () => {
  const img = bytes(`19 43 56 54 30 30 27 50
    0c 00 00 00 08 2a 10 00 18 2a 20 01 28 2a 28 2b
    0a 00 00 00 08 2c 10 2a 18 2a 20 01 28 2c`);
  assert.deepEqual(parsePstree(img, opts), [
    { pid: 42, ppid: 0, pgid: 42, sid: 1, threads: [42, 43] },
    { pid: 44, ppid: 42, pgid: 42, sid: 1, threads: [44] },
  ]);
});

Deno.test("pstree: packed threads are accepted too", () => {
  // threads = [5, 6] as one length-delimited field (tag 0x2a).
  const img = bytes(
    "19 43 56 54 30 30 27 50 0c 00 00 00 08 07 10 00 18 07 20 07 2a 02 05 06",
  );
  assert.deepEqual(parsePstree(img, opts)[0].threads, [5, 6]);
});

Deno.test("pstree: the writer's output is CRIU's byte for byte", () => {
  const img = encodeImage("pstree", [
    create(PstreeEntrySchema, {
      pid: 42,
      ppid: 0,
      pgid: 42,
      sid: 1,
      threads: [42, 43],
    }),
    create(PstreeEntrySchema, {
      pid: 44,
      ppid: 42,
      pgid: 42,
      sid: 1,
      threads: [44],
    }),
  ]);
  assert.deepEqual(
    img,
    bytes(`19 43 56 54 30 30 27 50
      0c 00 00 00 08 2a 10 00 18 2a 20 01 28 2a 28 2b
      0a 00 00 00 08 2c 10 2a 18 2a 20 01 28 2c`),
  );
});

Deno.test("pstree: pids are non-zero and unique; a tree has a process", () => {
  const entry = (pid: number) =>
    create(PstreeEntrySchema, { pid, ppid: 0, pgid: 0, sid: 0 });
  assertImageError(
    () => parsePstree(encodeImage("pstree", [entry(1), entry(1)]), opts),
    {
      offset: 20,
      reason: /duplicate pid 1/,
    },
  );
  assertImageError(() => parsePstree(encodeImage("pstree", [entry(0)]), opts), {
    offset: 8,
    reason: /pid 0/,
  });
  assertImageError(() => parsePstree(encodeImage("pstree", []), opts), {
    offset: 8,
    reason: /no processes/,
  });
});
