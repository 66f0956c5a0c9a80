import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { InventoryEntrySchema } from "../../proto/gen/inventory_pb.ts";
import { encodeImage, parseInventory } from "../../src/images/mod.ts";
import { assertImageError, bytes } from "./_helpers.ts";

const file = "/x/inventory.img";

Deno.test("inventory: the spec's example", () => {
  // images.md §1.2: img_version 2, fdinfo_per_id, ns_per_id, lsmtype 0.
  const inv = parseInventory(
    bytes("16 31 31 58 08 00 00 00 08 02 10 01 20 01 30 00"),
    { file },
  );
  assert.equal(inv.imgVersion, 2);
  assert.equal(inv.entry.nsPerId, true);
});

Deno.test("inventory: img_version 1 and 2 only", () => {
  for (const imgVersion of [1, 2]) {
    const img = encodeImage("inventory", [
      create(InventoryEntrySchema, { imgVersion, fdinfoPerId: true }),
    ]);
    assert.equal(parseInventory(img, { file }).imgVersion, imgVersion);
  }
  for (const imgVersion of [0, 3, 0xffffffff]) {
    const img = encodeImage("inventory", [
      create(InventoryEntrySchema, { imgVersion, fdinfoPerId: true }),
    ]);
    assertImageError(() => parseInventory(img, { file }), {
      file,
      offset: 4,
      reason: new RegExp(`unsupported img_version ${imgVersion}`),
    });
  }
});

Deno.test("inventory: fdinfo_per_id must be present and true", () => {
  for (
    const init of [{ imgVersion: 2 }, { imgVersion: 2, fdinfoPerId: false }]
  ) {
    const img = encodeImage("inventory", [create(InventoryEntrySchema, init)]);
    assertImageError(() => parseInventory(img, { file }), {
      offset: 4,
      reason: /too old image/,
    });
  }
});

Deno.test("inventory: exactly one record and no head magic", () => {
  const entry = create(InventoryEntrySchema, {
    imgVersion: 2,
    fdinfoPerId: true,
  });
  assertImageError(
    () => parseInventory(encodeImage("inventory", [entry, entry]), { file }),
    {
      reason: /exactly one record, found 2/,
    },
  );
  assertImageError(
    () => parseInventory(encodeImage("inventory", []), { file }),
    {
      reason: /found 0/,
    },
  );
  const withHead = bytes("19 43 56 54 16 31 31 58 02 00 00 00 08 02");
  assertImageError(() => parseInventory(withHead, { file }), {
    offset: 0,
    reason: /bad magic/,
  });
});
