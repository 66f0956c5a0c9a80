/**
 * Reading (and, for tests and tools, writing) CRIU 4.1.1 image directories:
 * framing, the inventory, process tree, VMAs and pagemaps, parent chains,
 * and where each dumped page's contents are. Pure parsing with synchronous
 * I/O; every failure is an {@linkcode ImageError}.
 *
 * @module
 */
export * from "./constants.ts";
export { ImageError, type ImageErrorSite } from "./errors.ts";
export {
  decodeFraming,
  decodeRecord,
  encodeFraming,
  type FramingOptions,
  hasHeadMagic,
  IMAGE_MAGICS,
  type ImageKind,
  onlyRecord,
  type RawRecord,
  readImageFile,
} from "./framing.ts";
export { type Inventory, parseInventory } from "./inventory.ts";
export { parsePstree, type PstreeEntryInfo } from "./pstree.ts";
export { canBeLazy, type Mm, parseMm, type Vma } from "./mm.ts";
export {
  entryIndexAt,
  type Pagemap,
  type PagemapEntryInfo,
  parsePagemap,
} from "./pagemap.ts";
export { ImageDir, type ImageDirOptions, type PagesFile } from "./image_dir.ts";
export {
  type DataSegment,
  locatePages,
  type PageRequest,
  type PageSegment,
  type ZeroSegment,
} from "./locate.ts";
export {
  encodeImage,
  type EncodeOptions,
  mmRecord,
  pagemapRecords,
  readStamp,
  recordSchema,
  stampPage,
  type SyntheticDir,
  type SyntheticEntry,
  type SyntheticProcess,
  type SyntheticVma,
  writeImage,
  writeImageDir,
} from "./writer.ts";
