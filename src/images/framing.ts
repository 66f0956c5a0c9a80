/**
 * Framing of CRIU protobuf images (images.md §1): optional head magic, the
 * image magic, then (u32 little-endian length, protobuf message) records
 * until end of file.
 *
 * @module
 */
import {
  type DescMessage,
  fromBinary,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  CORE_MAGIC,
  IDS_MAGIC,
  IMG_COMMON_MAGIC,
  IMG_VERSION_V1,
  IMG_VERSION_V1_1,
  INVENTORY_MAGIC,
  MAX_IMAGE_BYTES,
  MM_MAGIC,
  PAGEMAP_MAGIC,
  PSTREE_MAGIC,
} from "./constants.ts";
import { ImageError } from "./errors.ts";
import { describe, hex, statFile } from "./_util.ts";

/** Image magic of each protobuf image kind this layer reads or writes. */
export const IMAGE_MAGICS = {
  inventory: INVENTORY_MAGIC,
  pstree: PSTREE_MAGIC,
  mm: MM_MAGIC,
  pagemap: PAGEMAP_MAGIC,
  core: CORE_MAGIC,
  ids: IDS_MAGIC,
} as const;

/** A protobuf image kind: `inventory`, `pstree`, `mm`, `pagemap`, `core`, `ids`. */
export type ImageKind = keyof typeof IMAGE_MAGICS;

/** How an image is framed. */
export interface FramingOptions {
  /** Which image this is (decides the image magic). */
  kind: ImageKind;
  /** The image set's `img_version` (1 or 2), from its inventory. */
  imgVersion: number;
}

/** One record of an image, not yet decoded. */
export interface RawRecord {
  /** Byte offset of the record's length word in the file. */
  offset: number;
  /** The packed protobuf message (a view into the file's bytes). */
  data: Uint8Array;
}

const WORD = 4;

/**
 * Whether an image of `kind` starts with the common head magic: every image
 * but the inventory does in image-set version 2, none does in version 1.
 */
export function hasHeadMagic(options: FramingOptions): boolean {
  if (
    options.imgVersion !== IMG_VERSION_V1 &&
    options.imgVersion !== IMG_VERSION_V1_1
  ) {
    throw new RangeError(`unsupported img_version ${options.imgVersion}`);
  }
  return options.kind !== "inventory" &&
    options.imgVersion === IMG_VERSION_V1_1;
}

function magicsOf(options: FramingOptions): number[] {
  const kind = IMAGE_MAGICS[options.kind];
  return hasHeadMagic(options) ? [IMG_COMMON_MAGIC, kind] : [kind];
}

/**
 * Splits an image's bytes into records after checking its magic words.
 * End of file exactly at a record boundary ends the list; a partial length
 * word or a length beyond the end of the file is an ImageError. Lengths are
 * checked against the bytes left before anything is sliced, and slices are
 * views, so a hostile length costs nothing.
 */
export function decodeFraming(
  bytes: Uint8Array,
  options: FramingOptions & { file: string },
): RawRecord[] {
  const { file } = options;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  for (const want of magicsOf(options)) {
    if (bytes.length - pos < WORD) {
      throw new ImageError(
        { file, offset: pos },
        `file ends inside its magic (${bytes.length} bytes)`,
      );
    }
    const got = view.getUint32(pos, true);
    if (got !== want) {
      throw new ImageError(
        { file, offset: pos },
        `bad magic ${hex(got)}, expected ${hex(want)}`,
      );
    }
    pos += WORD;
  }
  const records: RawRecord[] = [];
  while (pos < bytes.length) {
    const left = bytes.length - pos;
    if (left < WORD) {
      throw new ImageError(
        { file, offset: pos },
        `file ends inside a record length (${left} of 4 bytes)`,
      );
    }
    const len = view.getUint32(pos, true);
    if (len > left - WORD) {
      throw new ImageError(
        { file, offset: pos },
        `record length ${len} exceeds the ${left - WORD} bytes left`,
      );
    }
    records.push({
      offset: pos,
      data: bytes.subarray(pos + WORD, pos + WORD + len),
    });
    pos += WORD + len;
  }
  return records;
}

/** Builds an image from packed protobuf messages (the inverse of {@linkcode decodeFraming}). */
export function encodeFraming(
  payloads: readonly Uint8Array[],
  options: FramingOptions,
): Uint8Array {
  const magics = magicsOf(options);
  let size = magics.length * WORD;
  for (const p of payloads) size += WORD + p.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let pos = 0;
  for (const m of magics) {
    view.setUint32(pos, m, true);
    pos += WORD;
  }
  for (const p of payloads) {
    view.setUint32(pos, p.length, true);
    out.set(p, pos + WORD);
    pos += WORD + p.length;
  }
  return out;
}

/**
 * Decodes one record with `schema`. Protobuf errors (truncated varints,
 * bad wire types, ...) become an ImageError at the record's offset. Missing
 * required fields read as 0, unknown fields are skipped (images.md §5).
 */
export function decodeRecord<D extends DescMessage>(
  schema: D,
  record: RawRecord,
  options: { file: string },
): MessageShape<D> {
  try {
    return fromBinary(schema, record.data);
  } catch (err) {
    throw new ImageError(
      { file: options.file, offset: record.offset },
      `cannot decode ${schema.typeName}: ${describe(err)}`,
      { cause: err },
    );
  }
}

/**
 * The record of an image that must hold exactly one (inventory, mm).
 * CRIU reads only the first; a second one means the file is not what it
 * claims to be.
 */
export function onlyRecord(records: RawRecord[], file: string): RawRecord {
  if (records.length !== 1) {
    const offset = records.length === 0 ? 0 : records[1].offset;
    throw new ImageError(
      { file, offset },
      `expected exactly one record, found ${records.length}`,
    );
  }
  return records[0];
}

/**
 * Reads a whole protobuf image. Refuses anything but a regular file (a FIFO
 * would block forever) and files above `maxBytes` (default
 * {@linkcode MAX_IMAGE_BYTES}); never use it for `pages-<n>.img`.
 */
export function readImageFile(
  path: string,
  options: { maxBytes?: number } = {},
): Uint8Array {
  const maxBytes = options.maxBytes ?? MAX_IMAGE_BYTES;
  const info = statFile(path);
  if (!info.isFile) {
    throw new ImageError({ file: path, offset: 0 }, "not a regular file");
  }
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(path, { read: true });
  } catch (err) {
    throw new ImageError(
      { file: path, offset: 0 },
      `cannot open: ${describe(err)}`,
      {
        cause: err,
      },
    );
  }
  try {
    // The size of the file actually opened, not of whatever the path named
    // at stat time.
    const size = f.statSync().size;
    if (size > maxBytes) {
      throw new ImageError(
        { file: path, offset: maxBytes },
        `image is ${size} bytes, more than the ${maxBytes} allowed`,
      );
    }
    const buf = new Uint8Array(size);
    let pos = 0;
    while (pos < size) {
      const n = f.readSync(buf.subarray(pos));
      if (n === null) break; // shrank since fstat: parse what is there
      pos += n;
    }
    return buf.subarray(0, pos);
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError(
      { file: path, offset: 0 },
      `cannot read: ${describe(err)}`,
      {
        cause: err,
      },
    );
  } finally {
    f.close();
  }
}
