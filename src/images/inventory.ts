/**
 * `inventory.img`: the image set's version check (images.md §6.1).
 *
 * @module
 */
import {
  type InventoryEntry,
  InventoryEntrySchema,
} from "../../proto/gen/inventory_pb.ts";
import { isFieldSet } from "@bufbuild/protobuf";
import { IMG_VERSION_V1, IMG_VERSION_V1_1 } from "./constants.ts";
import { ImageError } from "./errors.ts";
import { decodeFraming, decodeRecord, onlyRecord } from "./framing.ts";

/** What the daemon needs from `inventory.img`. */
export interface Inventory {
  /** 1 (no head magic in the other images) or 2 (head magic). */
  imgVersion: 1 | 2;
  /** The decoded record, for diagnostics (`lazyd inspect`). */
  entry: InventoryEntry;
}

/**
 * Parses `inventory.img`. Like CRIU, accepts only `img_version` 1 or 2 and
 * requires `fdinfo_per_id` to be present and true ("too old image").
 */
export function parseInventory(
  bytes: Uint8Array,
  options: { file: string },
): Inventory {
  const { file } = options;
  // The inventory never has a head magic, whatever its version says.
  const records = decodeFraming(bytes, {
    file,
    kind: "inventory",
    imgVersion: 1,
  });
  const record = onlyRecord(records, file);
  const entry = decodeRecord(InventoryEntrySchema, record, { file });
  const v = entry.imgVersion;
  if (v !== IMG_VERSION_V1 && v !== IMG_VERSION_V1_1) {
    throw new ImageError(
      { file, offset: record.offset },
      `unsupported img_version ${v} (expected 1 or 2)`,
    );
  }
  if (
    !isFieldSet(entry, InventoryEntrySchema.field.fdinfoPerId) ||
    !entry.fdinfoPerId
  ) {
    throw new ImageError(
      { file, offset: record.offset },
      "too old image: fdinfo_per_id is not set",
    );
  }
  return { imgVersion: v, entry };
}
